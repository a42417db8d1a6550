"""Vocabulary of lossless compression at rest (issue #11 item 4): what switching an instance to its compressed
blob did, and the space compression saved (``services.compression``, ``adapters.index.compression``)."""

from __future__ import annotations

from dataclasses import dataclass

from dicomvault.domain.records import BlobInfo


@dataclass(frozen=True)
class CompressedSwitch:
    """What ``IndexRepository.switch_to_compressed`` did: ``done`` False when the instance changed meanwhile
    (nothing written); ``released``: the original blob, now a pending removal for the caller to remove through
    the claim protocol."""

    done: bool
    released: tuple[BlobInfo, ...] = ()


@dataclass(frozen=True)
class CompressionSavings:
    """Per modality: instances stored compressed, their original and stored bytes."""

    modality: str
    instances: int
    original_bytes: int
    stored_bytes: int

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else 0.0
