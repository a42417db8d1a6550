"""pydicom's warnings in the archive's log: scrubbed, rate-limited summaries above DEBUG, the full text at DEBUG, and
no raw ``warnings.warn`` output (issue #9, defect 9)."""

from __future__ import annotations

import io
import logging
import struct
import threading
import warnings
from collections.abc import Iterator

import pytest
from pydicom.filereader import read_dataset

from dicomvault.bootstrap import Archive
from dicomvault.logging_setup import (
    REPEAT_WINDOW,
    PydicomWarningFilter,
    configure_logging,
    describe_pydicom_message,
    install_pydicom_filter,
)
from tests.helpers import make_ct


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    """The records a handler writes (after its filters), formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))

    def above_debug(self) -> list[str]:
        return [text for level, text in self.lines if level > logging.DEBUG]

    def at_debug(self) -> list[str]:
        return [text for level, text in self.lines if level == logging.DEBUG]


@pytest.fixture
def captured() -> Iterator[tuple[Collect, PydicomWarningFilter, Clock]]:
    """A handler on the root logger with the filter ``configure_logging`` installs, pydicom's logger at WARNING (as
    at INFO), a controllable clock; pydicom's ``warnings.warn`` half silenced as in the server."""
    handler, clock = Collect(), Clock()
    root, pyd = logging.getLogger(), logging.getLogger("pydicom")
    old_level = pyd.level
    # Alone on the root logger: a handler left by an earlier test in this worker (``configure_logging`` run in
    # process by a CLI test) would carry its own filter, whose window may already hold these kinds.
    others = list(root.handlers)
    for other in others:
        root.removeHandler(other)
    pyd.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        filt = install_pydicom_filter(handler)
        filt.clock = clock
        root.addHandler(handler)
        try:
            yield handler, filt, clock
        finally:
            root.removeHandler(handler)
            for other in others:
                root.addHandler(other)
            pyd.setLevel(old_level)


def _warn_invalid_uid(value: str) -> None:
    """Read a data set whose (0008,1155) holds ``value`` and convert the element, as ingest does with a received
    object's values: pydicom validates it then, and warns."""
    raw = value.encode("ascii")
    raw += b"\0" * (len(raw) % 2)
    data = struct.pack("<HH2sH", 0x0008, 0x1155, b"UI", len(raw)) + raw
    ds = read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True)
    _ = ds.ReferencedSOPInstanceUID


def test_descriptions_carry_no_values() -> None:
    texts = {
        "Invalid value for VR UI: '1.2.3.MARKER'. Please see <https://dicom.nema.org/…> for allowed values": "VR UI",
        'Value "MARKER.5" is not valid for elements with a VR of IS': "VR IS",
        "The value length (70) exceeds the maximum length of 64 allowed for VR LO.": "VR LO",
        "The PN component length (70) exceeds the maximum allowed length of 64.": "person name",
        "Unknown encoding 'MARKER 100' - using default encoding instead": "Character Set",
        "MARKER starts this message of a kind pydicom does not have": "other",
    }
    for text, expected in texts.items():
        description = describe_pydicom_message(text)
        assert expected in description, (text, description)
        assert "MARKER" not in description and "70" not in description


def test_flood_of_invalid_values_gives_one_line_per_kind_per_window(
    captured: tuple[Collect, PydicomWarningFilter, Clock],
) -> None:
    handler, filt, clock = captured
    values = [f"1.2.3.{i}.MARKER{i}" for i in range(300)]
    for value in values[:200]:
        _warn_invalid_uid(value)
    assert handler.above_debug() == [
        "pydicom warning: invalid value for VR UI (values are logged only at DEBUG; repeats are counted and "
        f"summarised at most once every {REPEAT_WINDOW:.0f} s)"
    ]
    clock.now += REPEAT_WINDOW + 1
    for value in values[200:]:
        _warn_invalid_uid(value)
    lines = handler.above_debug()
    assert len(lines) == 2 and lines[1] == "pydicom warning: invalid value for VR UI: 200 time(s) in the last 61 s"
    filt.flush()  # at exit: the 99 repeats of the second window
    assert handler.above_debug()[2] == "pydicom warning: invalid value for VR UI: 99 time(s) in the last 0 s"
    assert not handler.at_debug()
    assert not any("MARKER" in text for _, text in handler.lines)


def test_at_debug_the_details_are_there(captured: tuple[Collect, PydicomWarningFilter, Clock]) -> None:
    handler, _, _ = captured
    logging.getLogger("pydicom").setLevel(logging.DEBUG)
    for i in range(5):
        _warn_invalid_uid(f"1.2.3.MARKER{i}")
    assert len(handler.above_debug()) == 1 and "MARKER" not in handler.above_debug()[0]
    details = handler.at_debug()
    assert len(details) == 5 and all(f"MARKER{i}" in details[i] for i in range(5))


def test_ingest_of_objects_with_invalid_values(
    archive: Archive, captured: tuple[Collect, PydicomWarningFilter, Clock],
) -> None:
    """Direct ingest (what STOW-RS, C-STORE and import call) of objects whose values make pydicom warn: stored, and
    the log above DEBUG holds a few summary lines and none of the values."""
    handler, _, _ = captured
    pyd = logging.getLogger("pydicom")
    pyd.setLevel(logging.CRITICAL)  # building the objects warns too: not what this test looks at
    objects = [make_ct(seed=i, SeriesNumber=f"{i}.5", ReferringPhysicianName=f"MARKER{i}^" + "X" * 64)
               for i in range(60)]
    pyd.setLevel(logging.WARNING)
    for data in objects:
        archive.ingest.ingest(io.BytesIO(data))
    lines = handler.above_debug()
    assert 1 <= len([t for t in lines if t.startswith("pydicom")]) <= 3, lines
    assert not any("MARKER" in t or "'" in t or '"' in t for t in lines)


def test_pydicom_warnings_do_not_reach_warnings_output_from_threads(
    captured: tuple[Collect, PydicomWarningFilter, Clock],
) -> None:
    """The ``warnings.warn`` half (what would print raw to stderr) is ignored, in any thread; the log half stays."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()  # Python's defaults, as in the server (not the test run's "error")
        warnings.simplefilter("always")
        install_pydicom_filter(logging.NullHandler())  # inside this block: its filters are the ones in force
        thread = threading.Thread(target=_warn_invalid_uid, args=("1.2.3.MARKER",))
        thread.start()
        thread.join()
        warnings.warn("other libraries' warnings still show", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["other libraries' warnings still show"]
    assert captured[0].above_debug()  # logged (summarised) instead


def test_records_of_other_loggers_are_untouched(captured: tuple[Collect, PydicomWarningFilter, Clock]) -> None:
    handler, _, _ = captured
    for _ in range(3):
        logging.getLogger("dicomvault.test").warning("same text %d", 1)
    assert handler.above_debug() == ["same text 1"] * 3


def test_pynetdicom_event_handlers_are_bound_only_at_debug() -> None:
    """pynetdicom's per-PDU event handlers (they raise while describing a malformed PDU: an ERROR and a traceback
    in the log) are switched off unless DEBUG is asked for."""
    from pynetdicom import _config as pynetdicom_config

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, pynetdicom_config.LOG_HANDLER_LEVEL,
             {name: logging.getLogger(name).level for name in ("pynetdicom", "pydicom")})
    try:
        configure_logging("INFO")
        assert pynetdicom_config.LOG_HANDLER_LEVEL == "none"
        configure_logging("DEBUG")
        assert pynetdicom_config.LOG_HANDLER_LEVEL == "standard"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        pynetdicom_config.LOG_HANDLER_LEVEL = saved[2]
        for name, level in saved[3].items():
            logging.getLogger(name).setLevel(level)
