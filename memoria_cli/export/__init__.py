"""The plan, written for another orchestrator: Kubernetes manifests and production-stack Helm values. Pure:
each reads the Plan `up` would run (no second sizing logic) and returns data for the command to write."""
