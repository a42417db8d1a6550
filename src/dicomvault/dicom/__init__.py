"""Byte-level DICOM handling: reading elements, headers and Part 10 framing straight from the bytes.

The package the ingest path's byte walks move into (issue #10, "one parse per object"); it depends on pydicom and
the domain only, so services and adapters alike can use it.
"""
