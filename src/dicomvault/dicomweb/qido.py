"""QIDO-RS (PS3.18 10.6): search studies, series and instances over the query engine shared with C-FIND.

Query parameters: matching keys by keyword or tag (``PatientID``, ``00100020``, ``0010,0020``) with PS3.4 values
(``DOE*``, ``20200101-20201231``, UID lists separated by ``,`` or ``\\``); ``includefield`` (repeatable, comma
lists, ``all``); ``limit``; ``offset``; ``fuzzymatching=true|false``. Empty keys (``?&…``) are ignored; anything
else unknown is a 400 naming the parameter.

Results: ``application/dicom+json`` array, each with RetrieveURL (0008,1190). An empty result is ``200 []``:
PS3.18 8.3.4.4.1 currently says 204, but CP-2473 restores 200 with an empty payload (RFC 9110 forbids content with
204) and viewers that expect a JSON array work either way only with 200.

Paging (PS3.18 8.3.4.4): a request without ``limit`` gets ``qido_default_limit`` results, a ``limit`` above
``query_max_results`` is reduced to it. When the server's own limit (the default or the maximum, not a ``limit``
the client chose) cut the list short, the response carries the Warning PS3.18 specifies for this case
(``MORE_RESULTS``). PS3.18-2013 section 6.7 (QIDO-RS Search): "If the number of results exceeds the maximum
supported by the server, the server shall return the maximum supported results and the response shall include
the following HTTP/1.1 Warning header (see RFC 2616 Section 14.46): Warning: 299 {SERVICE}: "The number of
results exceeded the maximum supported by the server. Additional results can be requested."". Current editions
(8.3.4.4.1 Paging Behavior) state the rule with ``limit``, ``maxResults`` (the system limit) and ``remaining``.
The warn-agent here is the pseudonym ``dicomvault`` (RFC 7234 5.5 allows a host or a pseudonym; "{SERVICE}:" with
its colon is not valid header syntax).

Attributes the index does not hold are matched on at most ``query_max_scanned`` candidate records per request;
when that budget runs out before the page is full, the page holds what was found and a ``Warning: 299`` says
where to continue (``SCAN_STOPPED``).

Deep pages use keyset paging: each answered page leaves (query signature, next offset) → id of its last row in a
small per-app LRU map, so the usual walk ``offset=0,100,200…`` continues with ``id > last`` instead of an OFFSET
scan over all previous rows; an offset not in the map falls back to OFFSET. A page cut short by the scan budget
leaves the id of the last record examined, so asking for the next offset resumes the scan where it stopped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydicom.datadict import dictionary_VR
from starlette.concurrency import run_in_threadpool

from dicomvault.dicomweb import share_scope
from dicomvault.dicomweb.errors import error_response
from dicomvault.dicomweb.responses import DicomJSONResponse
from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.tags import DEFAULT_RETURN, Level, resolve_keyword
from dicomvault.services.query import EncodedResult, PageEnd

router = APIRouter(tags=["QIDO-RS"])

#: The PS3.18 Warning for a list cut short by the server's limit (text quoted in the module docstring).
MORE_RESULTS = ('299 dicomvault "The number of results exceeded the maximum supported by the server. '
                'Additional results can be requested."')
#: Not in PS3.18: the scan budget for non-indexed attributes ran out before the page was full.
SCAN_STOPPED = ('299 dicomvault "The search examined the maximum of {scanned} records for attributes the index does '
                'not hold and stopped; further results may exist from offset={next_offset}."')
DICOM_JSON = "application/dicom+json"
_LIST_VRS = ("UI", "CS")
_ACCEPTABLE = ("application/dicom+json", "application/json", "*/*", "application/*")


class KeysetCache:
    """(query signature, offset) → id of the last row before that offset, least recently used evicted."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._map: OrderedDict[tuple[Any, int], int] = OrderedDict()

    def get(self, signature: Any, offset: int) -> int | None:
        key = (signature, offset)
        found = self._map.get(key)
        if found is not None:
            self._map.move_to_end(key)
        return found

    def put(self, signature: Any, offset: int, last_id: int) -> None:
        self._map[(signature, offset)] = last_id
        self._map.move_to_end((signature, offset))
        while len(self._map) > self.size:
            self._map.popitem(last=False)


def _int_param(name: str, value: str, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise InvalidQuery(f"{name} must be an integer, got {value!r}") from None
    if n < minimum:
        raise InvalidQuery(f"{name} must be >= {minimum}")
    return n


def parse_params(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Split QIDO query parameters into matching keys and controls; raises ``InvalidQuery``."""
    keys: dict[str, str] = {}
    fields: list[str] = []
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in items:
        name = name.strip()
        if not name:
            continue
        low = name.lower()
        if low == "includefield":
            for f in value.split(","):
                f = f.strip()
                if not f:
                    continue
                if f.lower() == "all":
                    include_all = True
                else:
                    fields.append(f)
        elif low == "limit":
            limit = _int_param("limit", value, 0)
        elif low == "offset":
            offset = _int_param("offset", value, 0)
        elif low == "fuzzymatching":
            if value.strip().lower() not in ("true", "false"):
                raise InvalidQuery("fuzzymatching must be true or false")
            fuzzy = value.strip().lower() == "true"
        else:
            try:
                tag, keyword = resolve_keyword(name)
            except KeyError:
                raise InvalidQuery(f"unknown query parameter {name!r}") from None
            vr = _vr(tag)
            if vr == "SQ":
                raise InvalidQuery(f"matching on sequence attribute {keyword} is not supported")
            if vr in _LIST_VRS:
                value = value.replace(",", "\\")
            if keyword in keys:
                if vr not in _LIST_VRS:
                    raise InvalidQuery(f"{keyword} is given more than once")
                keys[keyword] = keys[keyword] + "\\" + value
            else:
                keys[keyword] = value
    return {"keys": keys, "fields": fields, "include_all": include_all, "limit": limit, "offset": offset,
            "fuzzy": fuzzy}


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _accepts_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in _ACCEPTABLE:
            return True
    return False


def _retrieve_url(base: str, level: Level, item: dict[str, Any], scope: dict[str, str]) -> str | None:
    def uid(tag: str, keyword: str) -> str | None:
        values = item.get(tag, {}).get("Value")
        return str(values[0]) if values else scope.get(keyword)

    study = uid("0020000D", "StudyInstanceUID")
    if study is None:
        return None
    if level == Level.STUDY:
        return f"{base}/studies/{study}"
    series = uid("0020000E", "SeriesInstanceUID")
    if series is None:
        return None
    if level == Level.SERIES:
        return f"{base}/studies/{study}/series/{series}"
    sop = uid("00080018", "SOPInstanceUID")
    return f"{base}/studies/{study}/series/{series}/instances/{sop}" if sop else None


async def search(request: Request, level: Level, scope: dict[str, str]) -> Response:
    if not _accepts_json(request):
        return error_response(406, "QIDO-RS answers application/dicom+json only")
    archive = request.app.state.archive
    cache: KeysetCache = request.app.state.qido_keyset
    p = parse_params(request.query_params.multi_items())
    keys: dict[str, str] = p["keys"]
    for keyword, uid in scope.items():
        given = keys.get(keyword)
        if given not in (None, "", "*") and given != uid:
            raise InvalidQuery(f"{keyword} is given by the path and differs in the query")
        keys[keyword] = uid
    if not share_scope.narrow_query(keys, share_scope.shared_study(request)):
        return DicomJSONResponse([], media_type=DICOM_JSON)
    # Outside a study (or series), the parent's identifying attributes are returned too (PS3.18 10.6.3.3).
    extra: list[str] = []
    if level in (Level.SERIES, Level.IMAGE) and "StudyInstanceUID" not in scope:
        extra += list(DEFAULT_RETURN[Level.STUDY])
    if level == Level.IMAGE and "SeriesInstanceUID" not in scope:
        extra += list(DEFAULT_RETURN[Level.SERIES])
    if level == Level.IMAGE:
        extra += ["StudyInstanceUID", "SeriesInstanceUID"]
    elif level == Level.SERIES:
        extra += ["StudyInstanceUID"]
    settings = archive.settings
    requested: int | None = p["limit"]
    maximum = settings.query_max_results
    limit = min(settings.qido_default_limit, maximum) if requested is None else min(requested, maximum)
    server_limited = requested is None or requested > maximum
    offset: int = p["offset"]
    spec = archive.query.build_spec(level, keys, return_keys=p["fields"] + extra, include_all=p["include_all"],
                                    fuzzy=p["fuzzy"], limit=limit, offset=offset)
    signature = (level.value, tuple(sorted(keys.items())), p["fuzzy"])
    after = cache.get(signature, offset) if offset else None
    if after is not None:
        spec.after_id, spec.offset = after, 0
    base = str(request.base_url).rstrip("/") + "/dicom-web"
    encoded = await run_in_threadpool(archive.query.search_page_encoded, spec)
    if encoded is not None:
        results: list[Any] = encoded[0]
        end: PageEnd = encoded[1]
        body = _encoded_array(encoded[0], base)
    else:
        results, end = await run_in_threadpool(archive.query.search_page, spec)
        for item in results:
            url = _retrieve_url(base, level, item, scope)
            if url is not None:
                item["00081190"] = {"vr": "UR", "Value": [url]}
    if end.last_id is not None:
        cache.put(signature, offset + len(results), end.last_id)
    headers = {}
    if not end.complete:
        headers["Warning"] = SCAN_STOPPED.format(scanned=settings.query_max_scanned,
                                                 next_offset=offset + len(results))
    elif end.more and server_limited:
        headers["Warning"] = MORE_RESULTS
    if encoded is not None:
        return Response(body, media_type=DICOM_JSON, headers=headers)
    return DicomJSONResponse(results, media_type=DICOM_JSON, headers=headers)


def _encoded_array(results: list[EncodedResult], base: str) -> bytes:
    """The JSON array of pre-serialized study objects, each with its RetrieveURL (0008,1190) spliced in as the
    last member, where the per-row path puts it too: the bytes are those ``DicomJSONResponse`` writes for the
    same objects, without decoding or re-encoding any of them. (A study object is never empty: it always
    holds the default return keys.)"""
    prefix = base + "/studies/"
    head, tail = b',"00081190":{"vr":"UR","Value":[', b"]}}"
    return b"[" + b",".join(r.json[:-1] + head + orjson.dumps(prefix + r.study_uid) + tail for r in results) + b"]"


@router.get("/studies", summary="Search for studies (QIDO-RS)")
async def search_studies(request: Request, _who: Principal = Depends(require_scope("read"))) -> Response:
    return await search(request, Level.STUDY, {})


@router.get("/series", summary="Search for series (QIDO-RS)")
async def search_series(request: Request, _who: Principal = Depends(require_scope("read"))) -> Response:
    return await search(request, Level.SERIES, {})


@router.get("/instances", summary="Search for instances (QIDO-RS)")
async def search_instances(request: Request, _who: Principal = Depends(require_scope("read"))) -> Response:
    return await search(request, Level.IMAGE, {})


@router.get("/studies/{study}/series", summary="Search for series of a study (QIDO-RS)")
async def search_study_series(
    study: str, request: Request, _who: Principal = Depends(require_scope("read"))
) -> Response:
    return await search(request, Level.SERIES, {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances", summary="Search for instances of a study (QIDO-RS)")
async def search_study_instances(
    study: str, request: Request, _who: Principal = Depends(require_scope("read"))
) -> Response:
    return await search(request, Level.IMAGE, {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series (QIDO-RS)")
async def search_series_instances(
    study: str, series: str, request: Request, _who: Principal = Depends(require_scope("read"))
) -> Response:
    return await search(request, Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})
