"""LiteBoxd gateway: the token-checked way in to sandbox Pods (HTTP and WebSocket)."""
from .version import __version__

__all__ = ["__version__"]
