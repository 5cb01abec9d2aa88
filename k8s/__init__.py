"""The Kubernetes side of kbench: Job templates, rendering and strict validation (`render`),
cluster settings in layers (`settings`), the API backend (`backend`), the cluster objects kbench
needs (`setup`) and the pre-flight checks (`doctor`). Only this package imports `kubernetes`.
"""
