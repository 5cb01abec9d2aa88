"""Staging from the user's machine to the store, once per dataset and model: what pods read
instead of the internet. Runs where the data and the internet are (`kbench data stage`, `kbench
models stage`), with the training stack installed; the pods only read what it wrote
(kbench.staged, kbench.jobs.shards).
"""
