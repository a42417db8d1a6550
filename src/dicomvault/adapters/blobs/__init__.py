"""Blob store adapters: filesystem (hot, embedded default), S3-compatible object storage, in-memory (tests)."""
