"""Shared by the DIMSE and DICOMweb compression tests: a study compressed *while* a retrieve is under way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dicomvault.bootstrap import Archive
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.compression import CompressionWork


def locate_then_compress(archive: Archive, syntax: str) -> Callable[..., list[InstanceRecord]]:
    """A stand-in for ``archive.retrieve.locate`` that compresses (to ``syntax``) every instance it has just
    selected: what the compress job does when it switches a study right after a retrieve chose its instances."""
    locate = archive.retrieve.locate
    compression = archive.compression
    assert compression is not None

    def patched(**keys: Any) -> list[InstanceRecord]:
        records = locate(**keys)
        for record in records:
            if record.original is None:
                work = CompressionWork()
                compression.compress_instance(record, syntax, work)
                assert work.compressed == 1, work
        return records

    return patched
