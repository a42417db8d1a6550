"""Attribute coercion on ingest (issue #12 item 2): make what several PACS and modalities send consistent before it
is stored, and keep every replaced value in the object itself.

Rules (``coercion_settings.CoercionRule``, ``[[coercion]]``) are chosen by who sent the object (calling AE title,
STOW-RS client, a known peer) and by modality and SOP class; every matching rule applies, in file order. When a
rule changes anything, the stored object gets an item in its Original Attributes Sequence (0400,0561) as PS3.3
C.12.1 describes: the Modified Attributes Sequence (0400,0550) with the previous value of every attribute changed
or removed (an attribute that was added appears with zero length), the Attribute Modification DateTime, the
Modifying System (``dicomvault``), the Source of Previous Values (the sender) and the Reason "COERCE" — so every
change is traceable and reversible from the object alone.

Why only the header is re-encoded: the object may be gigabytes of pixel data. The data set up to the Pixel Data
element (already parsed by ingest, values deferred) is written again with pydicom in the object's own transfer
syntax, then the original bytes from the Pixel Data element to the end are copied unchanged behind it, into a spool
file that ingest stores as if it had been received. A deflated object is written as Explicit VR Little Endian (the
same data set, inflated: its deflate stream cannot be extended). Group lengths (gggg,0000, retired) are dropped
from a coerced object, since changed values would make them wrong.

Routing (issue #12 item 3, "optionally after coercion for that destination"): a route may name rules
(``coerce = [...]``) that ``coerced_copy`` applies to the copy it forwards, never to the stored object; rules with
``ingest = false`` apply only there. On a forwarded copy a rule's modality and SOP class conditions hold, its
source and peer conditions are not read (the route's own ``when`` chooses senders), and the Source of Previous
Values is the archive's AE title (the system that held them).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from dicomvault.coercion_settings import CoercionRule, label, parse_attribute
from dicomvault.domain.tiers import source_names
from dicomvault.services import inflate
from dicomvault.services.header import ParsedHeader, parse_header

log = logging.getLogger(__name__)

MODIFYING_SYSTEM = "dicomvault"
REASON = "COERCE"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Change:
    """One attribute a rule changed: the tag, its previous element (None: it was added), the rule's name."""

    tag: int
    before: DataElement | None
    rule: str

    def describe(self, after: Dataset) -> str:
        old = "(absent)" if self.before is None else repr(_text(self.before))
        new = repr(_text(after[self.tag])) if self.tag in after else "(removed)"
        return f"{label(self.tag)}: {old} -> {new} [{self.rule}]"


def _text(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


class Coercion:
    """The coercion rules of the configuration, applied to headers (``apply``) and objects (``rewrite``)."""

    def __init__(self, rules: Sequence[CoercionRule], *, spool_dir: Path | None = None) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.spool_dir = spool_dir

    def __bool__(self) -> bool:
        return bool(self.rules)

    def names(self) -> set[str]:
        return {r.name for r in self.rules}

    def rules_for(self, source: str, modality: str | None, sop_class: str | None) -> list[CoercionRule]:
        """The rules that apply on ingest to an object from ``source`` (rules with ``ingest = false`` never do)."""
        names = set(source_names(source)) if source else set()
        out = []
        for rule in self.rules:
            if not rule.ingest:
                continue
            sources = rule.sources()
            peer = rule.when.peer
            if sources and not names.intersection(sources):
                continue
            if peer is not None and peer.strip() not in names:
                continue
            if rule.modalities() and (modality or "").upper() not in rule.modalities():
                continue
            if rule.sop_classes() and (sop_class or "") not in rule.sop_classes():
                continue
            out.append(rule)
        return out

    # -- the data set ---------------------------------------------------------------------------------------

    def apply(self, ds: Dataset, rules: Sequence[CoercionRule]) -> list[Change]:
        """Apply ``rules`` to ``ds`` in place; returns what changed (previous elements first seen)."""
        changes: dict[int, Change] = {}

        def before(tag: int, rule: CoercionRule) -> None:
            if tag not in changes:
                changes[tag] = Change(tag, copy.deepcopy(ds[tag]) if tag in ds else None, rule.name)

        def write(tag: int, value: str, rule: CoercionRule) -> None:
            current = _text(ds[tag]) if tag in ds else None
            if current == value:
                return
            before(tag, rule)
            if tag in ds:
                ds[tag].value = value
            else:
                ds.add_new(tag, dictionary_VR(tag), value)

        for rule in rules:
            for key in rule.remove:
                tag = parse_attribute(key)
                if tag in ds:
                    before(tag, rule)
                    del ds[tag]
            for key, value in rule.set.items():
                write(parse_attribute(key), value, rule)
            for key, value in rule.replace.items():
                tag = parse_attribute(key)
                if tag in ds:
                    write(tag, value, rule)
            for key, table in rule.map.items():
                tag = parse_attribute(key)
                if tag in ds and _text(ds[tag]) in table:
                    write(tag, table[_text(ds[tag])], rule)
            for key, text in rule.prefix.items():
                tag = parse_attribute(key)
                if tag in ds and _text(ds[tag]) and not _text(ds[tag]).startswith(text):
                    write(tag, text + _text(ds[tag]), rule)
            for key, text in rule.suffix.items():
                tag = parse_attribute(key)
                if tag in ds and _text(ds[tag]) and not _text(ds[tag]).endswith(text):
                    write(tag, _text(ds[tag]) + text, rule)
            if rule.issuer_of_patient_id and not str(ds.get("IssuerOfPatientID", "") or "").strip():
                write(0x00100021, rule.issuer_of_patient_id, rule)
                if rule.issuer_qualifiers and "IssuerOfPatientIDQualifiersSequence" not in ds:
                    before(0x00100024, rule)
                    item = Dataset()
                    for keyword, value in rule.issuer_qualifiers.items():
                        setattr(item, keyword, value)
                    ds.IssuerOfPatientIDQualifiersSequence = DicomSequence([item])
            if rule.character_set is not None:
                self._recode(ds, rule, before)
        return list(changes.values())

    @staticmethod
    def _recode(ds: Dataset, rule: CoercionRule, before: Any) -> None:
        target = rule.character_set or ""
        current = ds.get("SpecificCharacterSet")
        current_text = "\\".join(current) if isinstance(current, (list, tuple)) or type(current).__name__ == \
            "MultiValue" else str(current or "")
        if current_text == target:
            return
        for elem in ds.iterall():  # decoded now, with the object's own character set, before it changes
            _ = elem.value
        before(0x00080005, rule)
        ds.SpecificCharacterSet = target

    @staticmethod
    def record(ds: Dataset, changes: Sequence[Change], source: str, now: datetime | None = None) -> None:
        """Append the Original Attributes Sequence item describing ``changes`` (PS3.3 C.12.1)."""
        modified = Dataset()
        for change in changes:
            if change.before is not None:
                modified.add(change.before)
            else:
                modified.add_new(change.tag, dictionary_VR(change.tag), None)
        item = Dataset()
        item.ModifiedAttributesSequence = DicomSequence([modified])
        item.AttributeModificationDateTime = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S.%f+0000")
        item.ModifyingSystem = MODIFYING_SYSTEM
        names = source_names(source) if source else ("",)
        item.SourceOfPreviousValues = (names[1] if len(names) == 3 else names[0])[:64]  # the sender itself
        item.ReasonForTheAttributeModification = REASON
        if "OriginalAttributesSequence" in ds:
            ds.OriginalAttributesSequence.append(item)
        else:
            ds.OriginalAttributesSequence = DicomSequence([item])

    # -- the object ---------------------------------------------------------------------------------------------

    def rewrite(self, parsed: ParsedHeader, stream: BinaryIO, *, source: str, modality: str | None,
                sop_class: str | None) -> tuple[IO[bytes], list[Change]] | None:
        """The coerced object in a spool file (the caller closes it) and the changes, or None when no rule
        changes anything. ``parsed`` must still be open (deferred values are read from ``stream``)."""
        return self._rewrite(parsed, stream, self.rules_for(source, modality, sop_class), source)

    def copy_rules(self, names: Sequence[str], modality: str | None, sop_class: str | None) -> list[CoercionRule]:
        """The rules named by a route that apply to an object of this modality and SOP class, in file order."""
        wanted = set(names)
        return [r for r in self.rules if r.name in wanted
                and (not r.modalities() or (modality or "").upper() in r.modalities())
                and (not r.sop_classes() or (sop_class or "") in r.sop_classes())]

    @contextlib.contextmanager
    def coerced_copy(self, path: Path, names: Sequence[str], *, holder: str,
                     limits: inflate.Limits) -> Iterator[Path]:
        """The Part 10 file at ``path`` with the rules ``names`` applied, as a file valid inside the ``with`` (the
        same path when no rule changes anything). ``holder``: the Source of Previous Values recorded."""
        with open(path, "rb") as f:
            parsed = parse_header(cast(BinaryIO, f), limits)
            try:
                ds = parsed.dataset
                rules = self.copy_rules(names, str(ds.get("Modality", "") or ""), str(ds.get("SOPClassUID", "")))
                rewritten = self._rewrite(parsed, cast(BinaryIO, f), rules, holder)
            finally:
                parsed.close()
        if rewritten is None:
            yield path
            return
        spool, _ = rewritten
        with spool, tempfile.NamedTemporaryFile(dir=self.spool_dir, suffix=".dcm") as out:
            shutil.copyfileobj(spool, out, _CHUNK)
            out.flush()
            yield Path(out.name)

    def _rewrite(self, parsed: ParsedHeader, stream: BinaryIO, rules: Sequence[CoercionRule],
                 source: str) -> tuple[IO[bytes], list[Change]] | None:
        if not rules:
            return None
        ds = parsed.dataset
        changes = self.apply(ds, rules)
        if not changes:
            return None
        self.record(ds, changes, source)
        for elem in list(ds):
            if elem.tag.element == 0 and elem.tag.group != 0x0002:
                del ds[elem.tag]
        tail_source: IO[bytes] = parsed.inflated if parsed.inflated is not None else stream
        if parsed.inflated is not None:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        out = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115 - handed to the caller, who closes it
        try:
            header = io.BytesIO()
            pydicom.dcmwrite(header, ds, enforce_file_format=True)
            out.write(header.getvalue())
            if parsed.pixel_data_offset is not None:
                tail_source.seek(parsed.pixel_data_offset)
                shutil.copyfileobj(tail_source, out, _CHUNK)
            out.seek(0)
        except BaseException:
            out.close()
            raise
        log.info("coerced an object from %s: %d attribute(s) changed by %s", source or "(unknown)", len(changes),
                 ", ".join(dict.fromkeys(c.rule for c in changes)))
        return out, changes


__all__ = ["MODIFYING_SYSTEM", "REASON", "Change", "Coercion"]
