"""WADO-RS metadata from the cached DICOM JSON of each instance, never from the blobs.

Ingest stores every instance's DICOM JSON once, with relative BulkDataURIs (``bulk/<tag>``). Serving metadata is
then a database read and string work: each text is spliced into a JSON array as is, and only texts that contain a
BulkDataURI are touched, by one ``str.replace`` that makes the URI absolute (the index hands over each
instance's UIDs with its text, so nothing is searched for). No JSON is parsed or re-encoded.

Viewers ask for the same series' metadata again and again (every time a study is opened), so assembled study and
series documents are also kept in a small per-process LRU. An entry is used only if the index's version token
for the study/series (instance count, highest instance id, the study's last change; ``metadata_version``) is the
one it was built under: one indexed aggregate query instead of reading and joining every instance's text, and
still correct after ingest, delete or replacement by this or any other process sharing the index.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from dicomvault.domain.errors import NotFound
from dicomvault.ports.index import IndexRepository

_BULK = '"BulkDataURI":"bulk/'
#: How many instance texts are joined into one chunk of the streamed array (fewer, larger writes).
_BATCH = 64
#: Cache bounds: documents larger than ``_ENTRY_MAX`` are never kept; the total stays under ``_TOTAL_MAX``.
_ENTRIES = 64
_ENTRY_MAX = 16 << 20
_TOTAL_MAX = 128 << 20

Document = tuple[str, str, str]  # (Series Instance UID, SOP Instance UID, DICOM JSON text)


class _DocumentCache:
    """(study, series, base URL) → (version token, assembled bytes), least recently used evicted, thread-safe
    (FastAPI runs sync endpoints on a thread pool)."""

    def __init__(self, entries: int, total_bytes: int) -> None:
        self.entries, self.total_bytes = entries, total_bytes
        self._map: OrderedDict[tuple[str, str | None, str], tuple[Any, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str | None, str], version: Any) -> bytes | None:
        with self._lock:
            found = self._map.get(key)
            if found is None or found[0] != version:
                return None
            self._map.move_to_end(key)
            return found[1]

    def put(self, key: tuple[str, str | None, str], version: Any, body: bytes) -> None:
        if len(body) > _ENTRY_MAX:
            return
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self._size -= len(old[1])
            self._map[key] = (version, body)
            self._size += len(body)
            while self._map and (len(self._map) > self.entries or self._size > self.total_bytes):
                _, (_, evicted) = self._map.popitem(last=False)
                self._size -= len(evicted)


class MetadataService:
    def __init__(self, index: IndexRepository, *, cache_entries: int = _ENTRIES,
                 cache_bytes: int = _TOTAL_MAX) -> None:
        self.index = index
        self._cache = _DocumentCache(cache_entries, cache_bytes)

    def documents(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[Document]:
        """Cached JSON texts (with their UIDs) of the addressed instances; raises ``NotFound`` when there are
        none."""
        found = self.index.metadata_documents(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        if not found:
            raise NotFound("no instances match")
        return found

    def document(self, study_uid: str, series_uid: str | None, sop_uid: str | None, base: str,
                 *, max_instances: int | None = None) -> bytes | None:
        """The whole ``application/dicom+json`` array in one piece (one write, a Content-Length), from the cache
        when it is current; ``None`` when more than ``max_instances`` instances match (the caller streams
        ``array_chunks`` instead). Raises ``NotFound`` when none match."""
        version = None
        key = (study_uid, series_uid, base)
        if sop_uid is None:  # one instance's metadata is a single text: nothing worth caching
            version = self.index.metadata_version(study_uid=study_uid, series_uid=series_uid)
            if version is None:
                raise NotFound("no instances match")
            if max_instances is not None and version[0] > max_instances:
                return None
            cached = self._cache.get(key, version)
            if cached is not None:
                return cached
        docs = self.documents(study_uid, series_uid, sop_uid)
        if max_instances is not None and len(docs) > max_instances:
            return None
        body = ("[" + ",".join(self.absolute(d, base, study_uid) for d in docs) + "]").encode("utf-8")
        if version is not None:
            # The version was read before the documents: if a store slipped in between, the entry holds newer
            # content under an older token and is simply rebuilt next time; it can never serve older content.
            self._cache.put(key, version, body)
        return body

    @staticmethod
    def absolute(doc: Document, base: str, study_uid: str) -> str:
        """The text of ``doc`` with its relative BulkDataURIs prefixed by the instance URL under ``base``
        (…/dicom-web)."""
        series, sop, text = doc
        if _BULK not in text:
            return text
        return text.replace(_BULK, f'"BulkDataURI":"{base}/studies/{study_uid}/series/{series}/instances/{sop}/bulk/')

    def array_chunks(self, docs: list[Document], base: str, study_uid: str) -> Iterator[bytes]:
        """The ``application/dicom+json`` array, produced in batches so a large study streams."""
        yield b"["
        for start in range(0, len(docs), _BATCH):
            batch = [self.absolute(d, base, study_uid) for d in docs[start:start + _BATCH]]
            yield (("," if start else "") + ",".join(batch)).encode("utf-8")
        yield b"]"
