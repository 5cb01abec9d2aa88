"""The Kubernetes side of kbench: Job templates, rendering, validation and the API backend.

Empty in this version: the local backend is the only one so far.
"""
