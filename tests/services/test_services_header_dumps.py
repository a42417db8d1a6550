"""The cached metadata text: orjson's compact JSON, valid JSON whatever the values."""

from __future__ import annotations

import json

from dicomvault.services.header import dumps


def test_same_document_as_the_standard_library() -> None:
    data = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Hans"}]},
            "00280030": {"vr": "DS", "Value": [0.7, 1e-05]}, "00280010": {"vr": "US", "Value": [512]}}
    assert json.loads(dumps(data)) == data
    assert "Müller" in dumps(data)  # not \\u-escaped


def test_non_finite_numbers_become_null_and_huge_integers_still_serialise() -> None:
    text = dumps({"00181050": {"vr": "DS", "Value": [float("nan"), float("inf")]}})
    assert json.loads(text) == {"00181050": {"vr": "DS", "Value": [None, None]}}
    huge = {"00200013": {"vr": "IS", "Value": [10**30]}}
    assert json.loads(dumps(huge)) == huge
