"""Clients of remote systems: DIMSE (pynetdicom) and DICOMweb (httpx) implementations of ``ports.remote``."""
