"""The fast header JSON must be exactly what pydicom's ``to_json_dict`` gives, on every file pydicom ships."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement

from dicomvault.services.header_json import header_json
from tests.conftest import corpus_dir
from tests.helpers import make_ct


def _bulk(elem: DataElement) -> str:
    return f"bulk/{int(elem.tag):08X}"


def _both(data: bytes) -> tuple[dict[str, object], dict[str, object]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = header_json(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size="64 KB",
                                           force=True), bulk_threshold=1024, bulk_uri=_bulk)
        slow = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size="64 KB",
                               force=True).to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=_bulk)
    return fast, slow


def _readable(path: Path) -> bool:
    try:
        _both(path.read_bytes())
    except Exception:
        return False
    return True


def test_fast_json_equals_pydicom_on_the_whole_corpus() -> None:
    files = [p for p in sorted(corpus_dir().rglob("*")) if p.is_file() and _readable(p)]
    assert len(files) > 100
    for path in files:
        fast, slow = _both(path.read_bytes())
        assert fast == slow, path.name
        assert list(fast) == list(slow), path.name  # same element order


@pytest.mark.parametrize("value, expected", [
    (b"ORIGINAL\\PRIMARY\\AXIAL ", ["ORIGINAL", "PRIMARY", "AXIAL"]),
    (b"A\\\\B ", ["A", "", "B"]),
])
def test_multi_valued_strings_split_like_pydicom(value: bytes, expected: list[str]) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct(seed=3)))
    ds.ImageType = value.decode().rstrip()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    fast, slow = _both(buf.getvalue())
    assert fast == slow
    assert fast["00080008"] == {"vr": "CS", "Value": expected}


def _encoded(**attrs: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_ct(seed=4)))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_inner_padding_is_kept_where_pydicom_keeps_it() -> None:
    """CS (pydicom's multi_string) strips only the end of the whole value; LO strips every value."""
    fast, slow = _both(_encoded(ImageType="DERIVED \\PRIMARY", SeriesDescription="A  \\B"))
    assert fast == slow
    assert fast["00080008"]["Value"] == ["DERIVED ", "PRIMARY"]
    assert fast["0008103E"]["Value"] == ["A", "B"]


def test_ascii_values_skip_pydicom_under_any_character_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header written under ISO_IR 100 (most scanners) is converted without pydicom for its ASCII values, and
    still exactly as pydicom would, non-ASCII and multi-group names included."""
    data = _encoded(SpecificCharacterSet="ISO_IR 100", InstitutionName="Hôpital Général",
                    PatientName="Doe^John", ReferringPhysicianName="Yamada^Tarou=山田^太郎",
                    OperatorsName=["One^A", "Two^B"])
    fast, slow = _both(data)
    assert fast == slow
    converted: list[str] = []
    original = DataElement.to_json_dict

    def counting(self: DataElement, *args: object, **kwargs: object) -> dict[str, object]:
        converted.append(self.keyword)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DataElement, "to_json_dict", counting)
    header_json(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True), bulk_threshold=1024, bulk_uri=_bulk)
    assert "PatientName" not in converted and "StudyDescription" not in converted
    assert {"InstitutionName", "ReferringPhysicianName", "OperatorsName"} <= set(converted)
