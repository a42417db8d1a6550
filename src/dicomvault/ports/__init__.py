"""Contracts (typing.Protocol) the core depends on; adapters implement them, services never see the adapters."""
