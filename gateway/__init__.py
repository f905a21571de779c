"""API-key authenticating gateway."""

__version__ = "0.1.0"
