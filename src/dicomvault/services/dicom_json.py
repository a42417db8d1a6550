"""Index values → DICOM JSON elements: moved to ``domain.dicom_json`` (the index adapter renders the same
objects when it caches a study's default QIDO answer); re-exported here for existing importers."""

from __future__ import annotations

from dicomvault.domain.dicom_json import element, indexed_element

__all__ = ["element", "indexed_element"]
