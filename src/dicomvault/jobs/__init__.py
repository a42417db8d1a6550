"""Background work through the JobQueue port (forwarding, lifecycle moves, fixity scans)."""
