"""The gateway's version, printed at start and reported by /status.ok."""
__version__ = "0.1.0"
