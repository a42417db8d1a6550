"""Core use cases (ingest, query, retrieve, render, lifecycle). They see ports and the domain, never adapters."""
