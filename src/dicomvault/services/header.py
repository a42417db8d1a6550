"""Reading a DICOM header once at ingest: validation, index columns, and the cached DICOM JSON.

The header is read with pydicom without loading pixel data (``stop_before_pixels``), and large non-pixel values
are deferred, so a multi-GB instance costs a few kilobytes of memory here. A Deflated Explicit VR Little Endian
data set is first inflated, bounded, into a spool file (``services.inflate``) and read from there the same way:
pydicom's own reader would inflate all of it into memory.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

import orjson
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomvault.dicom.header_reader import read_header
from dicomvault.domain.errors import TRUNCATED, InvalidDicom, InvalidIdentity, MalformedDicom, NotDicom
from dicomvault.domain.query import fold_pn, normalise_time
from dicomvault.domain.tags import INDEXED, Level
from dicomvault.services import inflate
from dicomvault.services.frames import PIXEL_TAGS, PixelLayout, pixel_layout, pixel_length_problem
from dicomvault.services.header_json import header_json

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: Values longer than this are not read while parsing (pydicom's ``defer_size``): large private blobs stay on disk.
_DEFER_SIZE = 64_000
#: Values longer than this go to BulkDataURI in the cached metadata, as PS3.18 asks for bulk data.
BULK_THRESHOLD = 1024

#: What pydicom raises reading or converting damaged bytes: a garbled preamble or meta group
#: (``InvalidDicomError``), an unknown VR (``NotImplementedError``), a value length that is not a multiple of the
#: VR's value size (``BytesLengthException``), a cut or garbled sequence item (``OSError`` "No tag to read",
#: ``struct.error``, ``EOFError``), a value or length it refuses (``ValueError``, ``UnicodeDecodeError`` among
#: them; ``KeyError``, ``IndexError`` from its tables). Deliberately not ``MemoryError`` (nor ``TooLarge`` from
#: ``inflate``): running out of a resource says nothing about the object, so it is not refused as malformed. An
#: ``OSError`` with an ``errno`` is a real I/O failure, not pydicom's verdict: re-raised (``_reraise_io_failure``).
_PYDICOM_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError, BytesLengthException, NotImplementedError, ValueError, KeyError, IndexError, struct.error,
    EOFError, OSError,
)
#: pydicom reads nested sequences recursively (a few Python frames per level): a crafted object of a few kilobytes
#: with a few hundred levels exhausts the interpreter's recursion limit. No real object comes near that depth.
_TOO_DEEP = "malformed DICOM object: sequences nested too deeply to be read"
#: ``reason`` values (``DicomVaultError.reason``) of the refusals whose messages vary from object to object.
MALFORMED = "malformed DICOM object"
NOT_DICOM = "not a DICOM object"
_NOT_DICOM_TEXT = "not a DICOM object (no DICM prefix, not a data set either)"
#: Image Pixel Module attributes the pixel data checks read (``frames.expected_pixel_bytes``, ``json_dict``).
_PIXEL_MODULE_TAGS = (0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280100)


@dataclass
class ParsedHeader:
    dataset: Dataset
    transfer_syntax_uid: str
    #: offset of the pixel data element's tag in the data set as read (for a deflated object: in its inflated
    #: data set), or None if the object has no pixel data
    pixel_data_offset: int | None
    file_size: int
    #: why the native pixel data cannot be decoded (shorter than the header describes), None when it can
    pixel_problem: str | None = None
    #: where the pixel data element's value and fragments lie (found once; the frame index is built from it)
    pixel_layout: PixelLayout | None = None
    #: a deflated object's inflated data set (a spool file the deferred values are read from): see ``close``
    inflated: IO[bytes] | None = None

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax_uid == DeflatedExplicitVRLittleEndian

    def close(self) -> None:
        """Release the inflated spool of a deflated object (deferred values cannot be read afterwards)."""
        if self.inflated is not None:
            self.inflated.close()


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID_RE.match(value) is not None


def parse_header(stream: BinaryIO, limits: inflate.Limits) -> ParsedHeader:
    """Parse everything but pixel data; leave ``stream`` anywhere (callers seek). A deflated data set is
    inflated within ``limits`` (``TooLarge`` above them) into a spool the result owns: ``close`` it."""
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    if size == 0:
        raise NotDicom("empty object")
    meta_problem: MalformedDicom | None = None
    try:
        meta, meta_end = inflate.read_file_meta(stream)
    except MalformedDicom as exc:
        # pydicom's reader below reports what is wrong, or reads nothing (then this is the reason)
        meta, meta_end = None, 0
        meta_problem = exc
    if meta is not None:
        _decode_elements(meta, [0x00020010] if 0x00020010 in meta else [])  # a damaged Transfer Syntax UID
    if meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return _parse_deflated(stream, size, limits)
    fast = None
    if meta is not None:
        fast = read_header(stream, meta, meta_end, size, defer_size=_DEFER_SIZE)
    ds = fast[0] if fast is not None else _read_with_pydicom(stream)
    if len(ds) == 0:
        # pydicom reads a File Meta cut short, or one followed by nothing (a C-STORE with an empty data set), as an
        # empty data set without complaint: nothing to understand, not a data set lacking its UIDs (0xA900).
        if meta_problem is not None:
            raise meta_problem
        raise MalformedDicom("the object has no data set (truncated after its File Meta?)",
                             reason="empty data set")
    pos = stream.tell()
    tsuid = ""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        tsuid = str(meta.TransferSyntaxUID)
    if not tsuid:
        tsuid = ImplicitVRLittleEndian if ds.original_encoding == (True, True) else "1.2.840.10008.1.2.1"
    try:
        # A header read by ``read_header`` has every value inside the object (it declines anything else).
        return _finish(ds, stream, tsuid, pos, size, size, checked=fast is not None)
    except InvalidDicom as exc:
        exc.naming(*_uids(ds))
        raise



def _read_with_pydicom(stream: BinaryIO) -> Dataset:
    """The header as pydicom reads it: every object ``read_header`` leaves to pydicom (no File Meta, big endian,
    undefined lengths, anything unusual), with pydicom's errors turned into the archive's refusals."""
    stream.seek(0)
    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=True, defer_size=_DEFER_SIZE, force=False)
    except InvalidDicomError as exc:
        # Files without a preamble/meta are still DICOM if they parse as a raw dataset (force).
        stream.seek(0)
        try:
            ds = pydicom.dcmread(stream, stop_before_pixels=True, defer_size=_DEFER_SIZE, force=True)
        except _PYDICOM_ERRORS as exc2:
            _reraise_io_failure(exc2)
            raise NotDicom(_NOT_DICOM_TEXT, reason=NOT_DICOM) from exc2
        except RecursionError as exc2:
            raise MalformedDicom(_TOO_DEEP, reason=MALFORMED) from exc2
        if len(ds) == 0 or "SOPInstanceUID" not in ds:
            raise NotDicom(_NOT_DICOM_TEXT, reason=NOT_DICOM) from exc
    except _PYDICOM_ERRORS as exc:
        # The message goes to the sender (Error Comment, FailureReason) and to the log at INFO: the exception's
        # own text can quote the value it failed on (patient data), so only its type is named; it stays chained.
        _reraise_io_failure(exc)
        raise MalformedDicom(f"malformed DICOM object ({type(exc).__name__})", reason=MALFORMED) from exc
    except RecursionError as exc:
        raise MalformedDicom(_TOO_DEEP, reason=MALFORMED) from exc
    return ds


def _uids(ds: Dataset) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) of a data set that was read, each empty unless a valid UID: they name a
    refused instance in a STOW-RS response (never in a message or log line)."""
    found = []
    for tag in (0x00080016, 0x00080018):
        try:
            elem = ds.get(tag)
            value = str(elem.value).strip("\x00 ") if elem is not None and elem.value is not None else ""
        except Exception:  # a damaged element: the instance is simply not named
            value = ""
        found.append(value if is_valid_uid(value) else "")
    return found[0], found[1]


def _parse_deflated(stream: BinaryIO, size: int, limits: inflate.Limits) -> ParsedHeader:
    stream.seek(0)
    inflated = inflate.inflate_object(stream, limits)
    try:
        ds = inflated.dataset(defer_size="64 KB")
        try:
            parsed = _finish(ds, inflated.file, DeflatedExplicitVRLittleEndian, inflated.file.tell(),
                             inflated.size, size)
        except InvalidDicom as exc:
            exc.naming(*_uids(ds))
            raise
        parsed.inflated = inflated.file
        return parsed
    except BaseException:
        inflated.close()
        raise


def _finish(ds: Dataset, stream: BinaryIO | IO[bytes], tsuid: str, pos: int, size: int,
            file_size: int, *, checked: bool = False) -> ParsedHeader:
    """Checks common to every syntax on the data set as read (``stream``, ``size`` bytes; for a deflated object
    the inflated spool): nothing cut short (unless ``checked`` already), pixel data present and long enough."""
    syntax = ExplicitVRLittleEndian if tsuid == DeflatedExplicitVRLittleEndian else tsuid
    pixel_offset: int | None = None
    if pos < size:
        stream.seek(pos)
        tag_bytes = stream.read(4)
        if len(tag_bytes) == 4:
            little = syntax != "1.2.840.10008.1.2.2"
            group = int.from_bytes(tag_bytes[:2], "little" if little else "big")
            elem = int.from_bytes(tag_bytes[2:], "little" if little else "big")
            if (group << 16 | elem) in PIXEL_TAGS:
                pixel_offset = pos
    if not checked:
        _check_complete(ds, size)
    # The pixel checks below (and json_dict) read these through pydicom: a damaged one is refused here, by name.
    _decode_elements(ds, [tag for tag in _PIXEL_MODULE_TAGS if tag in ds])
    problem = None
    layout = None
    if pixel_offset is not None:
        if not UID(syntax).is_transfer_syntax:
            # Neither the pixel data's encoding nor how to locate its frames is known (nothing in the archive
            # could serve or check them); a UID is no patient data, but a damaged one is not echoed either.
            named = f" {syntax}" if is_valid_uid(syntax) else ""
            raise MalformedDicom(f"unknown transfer syntax{named}: its pixel data cannot be read",
                                 reason="unknown transfer syntax")
        layout = pixel_layout(stream, syntax, pixel_offset, size)
        if not layout.encapsulated:
            problem = pixel_length_problem(ds, layout.length)
    elif all(k in ds for k in ("Rows", "Columns", "BitsAllocated")) and "FloatPixelData" not in ds:
        raise MalformedDicom("the object describes an image but has no pixel data (truncated?)", reason=TRUNCATED)
    return ParsedHeader(ds, tsuid, pixel_offset, file_size, problem, pixel_layout=layout)


def _check_complete(ds: Dataset, size: int) -> None:
    """pydicom reads a truncated element silently (a short value); a value that ends past the end of the
    object means the transfer was cut."""
    for tag in list(ds.keys()):
        # keep_deferred: the position and length are all this needs; without it pydicom reads (and converts)
        # every deferred value, raising on a damaged one and holding large values in memory.
        raw = ds.get_item(tag, keep_deferred=True)
        tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF:
            continue
        if tell + length > size:
            raise MalformedDicom(f"the object is truncated: element ({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X}) "
                                 "ends past the end of the data", reason=TRUNCATED)


def _reraise_io_failure(exc: BaseException) -> None:
    """Re-raise an ``OSError`` the operating system raised (it has an ``errno``: a disk or spool failure, nothing
    wrong with the object); pydicom's own ``OSError`` for a cut sequence item has none."""
    if isinstance(exc, OSError) and exc.errno is not None:
        raise exc


def _tag_text(tag: int) -> str:
    return f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"


def _damage(tag: int, raw: object, exc: Exception, where: str) -> str:
    """Why pydicom could not read an element, for the sender and the log: the element's tag and VR and what is
    wrong, never the value (pydicom's own message quotes the bytes, which can be patient data)."""
    vr = getattr(raw, "VR", None)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = None
    name = f"element {_tag_text(tag)}{where}"
    if isinstance(exc, NotImplementedError):
        shown = f" {vr}" if isinstance(vr, str) and re.fullmatch(r"[A-Z]{2}", vr) else ""
        return f"{name} has an unknown VR{shown}"
    if isinstance(exc, BytesLengthException):
        return f"{name} has a value length not valid for VR {vr}"
    if vr == "SQ":
        return f"sequence {_tag_text(tag)}{where} is malformed (an item is cut short or garbled)"
    return f"{name} cannot be read as VR {vr} ({type(exc).__name__})"


def _decode_elements(ds: Dataset, tags: list[int], where: str = "") -> None:
    """Convert the elements ``tags`` of ``ds`` as pydicom does when a value is first read, and every element of
    the items of a sequence among them: a damaged element raises ``MalformedDicom`` naming it (and the sequence
    items it is in) instead of pydicom's error escaping later, from whichever code reads the value first."""
    for tag in tags:
        try:
            elem = ds[tag]
        except _PYDICOM_ERRORS as exc:
            _reraise_io_failure(exc)
            raise MalformedDicom(_damage(tag, ds.get_item(tag, keep_deferred=True), exc, where),
                                 reason="an element cannot be read") from exc
        if elem.VR == "SQ" and isinstance(elem.value, Sequence):
            for i, item in enumerate(elem.value, 1):
                inside = f" in item {i} of sequence {_tag_text(tag)}{where}"
                _decode_elements(item, list(map(int, item.keys())), inside)


def _int_value(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute read leniently: ``default`` when it is missing, empty or not one number."""
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


#: Inflated bytes of a deflated data set ``identity`` looks at (the identifying UIDs come first).
IDENTITY_INFLATED = 4 << 20
_IDENTITY_TAGS = (0x00080016, 0x00080018, 0x0020000D)


def identity(stream: BinaryIO | IO[bytes]) -> tuple[str | None, str | None, str | None]:
    """(SOP Class, SOP Instance, Study Instance UID) of an object, or Nones where they cannot be read: checks a
    STOW-RS part against its target study and names a refused instance. Values other than those three are skipped,
    and a deflated data set is inflated only up to ``IDENTITY_INFLATED`` bytes (pydicom's reader would inflate all
    of it into memory). Leaves ``stream`` at 0."""
    try:
        meta, offset = inflate.read_file_meta(stream)
        stream.seek(0)
        if meta is None or meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            ds: Dataset = pydicom.dcmread(stream, stop_before_pixels=True, force=True,
                                          specific_tags=list(_IDENTITY_TAGS))
        else:
            stream.seek(offset)
            unbounded = inflate.Limits(max_inflated_bytes=1 << 62, max_inflate_ratio=0)
            prefix = bytearray()
            try:
                for chunk in inflate.inflate_chunks(cast(BinaryIO, stream), unbounded):
                    prefix += chunk
                    if len(prefix) >= IDENTITY_INFLATED:
                        break
            except MalformedDicom:
                pass  # a cut or corrupt stream: what was inflated may still name the instance

            def past_study_uid(tag: BaseTag, vr: str | None, length: int) -> bool:
                return int(tag) > 0x0020000D

            ds = read_dataset(io.BytesIO(bytes(prefix[:IDENTITY_INFLATED])), False, True, stop_when=past_study_uid)
        values = []
        for tag in _IDENTITY_TAGS:
            elem = ds.get(tag)
            text = str((elem.value if elem is not None else None) or "").strip("\x00 ")
            values.append(text or None)
        return values[0], values[1], values[2]
    except Exception:
        return None, None, None
    finally:
        stream.seek(0)


def validate(data: dict[str, Any]) -> None:
    """Reject objects the archive cannot index (PS3.4 B.2.3: 0xA900 dataset does not match SOP class) with
    ``InvalidIdentity``, naming the attribute and, where they are valid, the SOP Class and Instance UIDs."""
    uids = [_json_text(data.get(tag_hex)) or "" for tag_hex in ("00080016", "00080018")]
    sop_class, sop_instance = (u.strip("\x00 ") if is_valid_uid(u.strip("\x00 ")) else "" for u in uids)
    for keyword, tag_hex in (("SOPClassUID", "00080016"), ("SOPInstanceUID", "00080018"),
                             ("StudyInstanceUID", "0020000D"), ("SeriesInstanceUID", "0020000E")):
        value = _json_text(data.get(tag_hex))
        problem = None
        if value is None:
            problem = f"{keyword} is missing"
        elif not is_valid_uid(value.strip("\x00 ")):
            problem = f"{keyword} is not a valid UID"
        if problem is not None:
            raise InvalidIdentity(problem, keyword=keyword, sop_class_uid=sop_class, sop_instance_uid=sop_instance)


def _json_text(elem: dict[str, Any] | None) -> str | None:
    """A JSON element's value as DICOM writes it (multiple values joined by backslashes)."""
    if not elem:
        return None
    values = elem.get("Value")
    if not values:
        return None
    parts = []
    for v in values:
        if isinstance(v, dict):  # PN: the alphabetic group is what queries match
            v = v.get("Alphabetic", "")
        parts.append("" if v is None else str(v))
    text = "\\".join(parts).strip()
    return text or None


def index_columns(data: dict[str, Any], transfer_syntax_uid: str) -> dict[Level, dict[str, Any]]:
    """Values of every indexed attribute, by level, plus the normalised shadow columns (``_n``), taken from the
    DICOM JSON already built for the metadata cache (pydicom converts each value once)."""
    out: dict[Level, dict[str, Any]] = {lvl: {} for lvl in Level}
    for attr in INDEXED:
        if attr.computed:
            continue
        value: Any = _json_text(data.get(attr.tag_hex))
        if attr.vr in _INT_VRS:
            try:
                value = int(float(value.split("\\")[0])) if value is not None else None
            except ValueError:
                value = None
        elif value is not None:
            value = value.strip("\x00 ")[:324] if attr.vr == "UI" else value[:324]
        out[attr.level][attr.column] = value
        if attr.vr == "PN":
            out[attr.level][attr.column + "_n"] = fold_pn(value) if value else None
        elif attr.vr == "TM":
            out[attr.level][attr.column + "_n"] = normalise_time(value.split("\\")[0]) if value else None
        elif attr.vr == "DA" and value:
            out[attr.level][attr.column] = value.replace(".", "")[:8]
    out[Level.IMAGE]["transfer_syntax_uid"] = transfer_syntax_uid
    return out


_INT_VRS = ("IS", "US", "UL", "SS", "SL")


def _bulk_uri(elem: DataElement) -> str:
    return f"bulk/{int(elem.tag):08X}"


def _nest_bulk_uris(data: dict[str, Any], prefix: str) -> None:
    """BulkDataURIs inside sequence items become ``bulk/<seq tag>/<item index>/<tag>`` (pydicom's handler only
    sees the element, so a nested value would otherwise be addressed like a top-level one)."""
    for tag, elem in data.items():
        if not isinstance(elem, dict):
            continue
        if prefix and "BulkDataURI" in elem:
            elem["BulkDataURI"] = f"bulk/{prefix}{tag}"
        if elem.get("vr") == "SQ":
            for i, item in enumerate(elem.get("Value") or []):
                if isinstance(item, dict):
                    _nest_bulk_uris(item, f"{prefix}{tag}/{i}/")


def json_dict(ds: Dataset, parsed: ParsedHeader) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of the non-bulk attributes, with relative BulkDataURIs (``bulk/<tag>``) that
    the DICOMweb front end prefixes with the instance URL when serving."""
    try:
        data = header_json(ds, bulk_threshold=BULK_THRESHOLD, bulk_uri=_bulk_uri)
    except MemoryError:
        raise
    except Exception:
        # Either an element pydicom cannot read (damaged bytes: the object is refused, the element named) or a
        # vendor value it reads but cannot encode as JSON, which must not block archiving: drop the offenders.
        try:
            _decode_elements(ds, list(map(int, ds.keys())))
        except RecursionError as exc:
            raise MalformedDicom(_TOO_DEEP, reason=MALFORMED) from exc
        except InvalidDicom as exc:
            exc.naming(*_uids(ds))
            raise
        data = {}
        for tag in list(ds.keys()):
            try:
                data.update(Dataset({tag: ds[tag]}).to_json_dict(
                    bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=_bulk_uri))
            except MemoryError:
                raise
            except Exception:
                continue
    _nest_bulk_uris(data, "")
    if parsed.pixel_data_offset is not None:
        syntax = UID(parsed.transfer_syntax_uid)
        compressed = syntax.is_transfer_syntax and syntax.is_compressed
        vr = "OB" if _int_value(ds, "BitsAllocated", 16) <= 8 or compressed else "OW"
        data["7FE00010"] = {"vr": vr, "BulkDataURI": "bulk/7FE00010"}
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        data.pop("00020010", None)
    # AvailableTransferSyntaxUID (0008,3002) tells a viewer what it can ask for without transcoding.
    data["00083002"] = {"vr": "UI", "Value": [parsed.transfer_syntax_uid]}
    return data


def dumps(data: dict[str, Any]) -> str:
    """The cached metadata text, by orjson (~10x faster than ``json``). A float NaN or infinity pydicom read from
    a DS/FL/FD value becomes null: JSON has no such numbers, and ``json``'s ``NaN`` made the whole document
    unreadable to browsers. ``json`` writes only what orjson refuses (an IS value beyond 64 bits)."""
    try:
        return orjson.dumps(data).decode("utf-8")
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
