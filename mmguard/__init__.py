"""mmguard pipeline integration: `mmguard.client` (a typed httpx client for the service's REST API) and
the `mmguard remote` commands. Torch-free: nothing here imports the engine."""

__all__ = ["client"]
