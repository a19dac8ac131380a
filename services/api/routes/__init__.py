"""Routers: ``jobs``, ``batches``, ``health`` (health, readiness, metrics) and ``ui`` (the status page)."""
