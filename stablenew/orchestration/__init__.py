"""Orchestration: Prefect pool, deployments, worker, job service, embedded stack."""
