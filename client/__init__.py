"""toolvault Python SDK."""
