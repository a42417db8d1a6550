"""WADO-RS metadata from the cached DICOM JSON of each instance, never from the blobs.

Ingest stores every instance's DICOM JSON once, with relative BulkDataURIs (``bulk/<tag>``). Serving metadata is
then a database read and string work: each text is spliced into a JSON array as is, and only texts that contain a
BulkDataURI are touched, by one ``str.replace`` that makes the URI absolute. No JSON is parsed or re-encoded, which
is what keeps a 600-instance series in the low milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

from dicomvault.domain.errors import NotFound
from dicomvault.ports.index import IndexRepository

_BULK = '"BulkDataURI":"bulk/'
#: How many instance texts are joined into one chunk of the streamed array (fewer, larger writes).
_BATCH = 64


def _uid_value(text: str, tag: str) -> str | None:
    """The first value of UI element ``tag`` in a compact DICOM JSON text, found by string search."""
    key = f'"{tag}":{{"vr":"UI","Value":["'
    start = text.find(key)
    if start < 0:
        return None
    start += len(key)
    end = text.find('"', start)
    if end < 0:
        return None
    return text[start:end].replace("\\u0000", "").strip()


class MetadataService:
    def __init__(self, index: IndexRepository) -> None:
        self.index = index

    def texts(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[str]:
        """Cached JSON texts of the addressed instances; raises ``NotFound`` when there are none."""
        found = list(self.index.metadata(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid))
        if not found:
            raise NotFound("no instances match")
        return found

    @staticmethod
    def absolute(text: str, base: str, study_uid: str, series_uid: str | None, sop_uid: str | None) -> str:
        """``text`` with its relative BulkDataURIs prefixed by the instance URL under ``base`` (…/dicom-web)."""
        if _BULK not in text:
            return text
        series = series_uid or _uid_value(text, "0020000E")
        sop = sop_uid or _uid_value(text, "00080018")
        if not series or not sop:
            return text
        prefix = f'"BulkDataURI":"{base}/studies/{study_uid}/series/{series}/instances/{sop}/bulk/'
        return text.replace(_BULK, prefix)

    def array_chunks(
        self, texts: list[str], base: str, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> Iterator[bytes]:
        """The ``application/dicom+json`` array, produced in batches so a large study streams."""
        yield b"["
        for start in range(0, len(texts), _BATCH):
            batch = [self.absolute(t, base, study_uid, series_uid, sop_uid) for t in texts[start:start + _BATCH]]
            yield (("," if start else "") + ",".join(batch)).encode("utf-8")
        yield b"]"

    def document(self, study_uid: str, series_uid: str | None, sop_uid: str | None, base: str) -> bytes:
        """The whole array at once (small results: one write, a Content-Length, no chunked encoding)."""
        texts = self.texts(study_uid, series_uid, sop_uid)
        return b"".join(self.array_chunks(texts, base, study_uid, series_uid, sop_uid))
