"""Implementations of the ports. Only ``bootstrap`` imports this package."""
