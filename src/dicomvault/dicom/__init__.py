"""Byte-level DICOM handling: reading elements, headers and Part 10 framing straight from the bytes, and the upper
layer's PDUs on a socket for the lean DIMSE paths (``pdu``, ``acceptor``, ``store_link``).

The package the ingest path's byte walks move into (issue #10, "one parse per object"); it depends on pydicom,
pynetdicom's encoders and the domain only, so the DIMSE front end, services and adapters alike can use it.
"""
