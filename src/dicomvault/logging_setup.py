"""Process-wide logging configuration for the command-line entry points.

PHI policy: the format carries no patient attributes, and modules log identifiers of patients, studies and
instances only at DEBUG, so the default INFO log of a production archive holds no patient data. pynetdicom logs
whole datasets and association details at DEBUG, so its loggers are held at WARNING unless DEBUG is asked for.

pydicom is the exception the project does not control: its warnings quote the offending value (``Invalid value
for VR UI: '1.2.3.abc'``, an invalid UID, a too-long patient name) and it emits each one twice, through its
``pydicom`` logger and through ``warnings.warn`` (``pydicom.misc.warn_and_log``). A 10,000-part STOW-RS of
objects with one bad value each wrote 20,000 such lines. So:

* ``PydicomWarningFilter`` sits on the process's log handler. A pydicom record at WARNING or above becomes a
  scrubbed summary — a fixed description of the check that failed (``invalid value for VR UI``), never the value —
  written at most once per kind per ``REPEAT_WINDOW`` seconds, with the count of repeats it stands for. The full
  text is kept only at DEBUG (as a DEBUG record, when DEBUG is enabled).
* pydicom's ``warnings.warn`` half is ignored with a warnings filter on pydicom's modules. Every pydicom warning
  is also a log record (pydicom 3.0 issues all of them through ``warn_and_log``), so nothing is lost; the filter
  stops the raw print to stderr from any thread, and it avoids what ``logging.captureWarnings`` would cost: each
  record twice, plus Python's ``default`` warning action remembering every distinct message text in the module's
  ``__warningregistry__`` forever — one entry per distinct invalid value received, a slow leak in a server.
  Other libraries' warnings keep Python's default behaviour (printed once per code location; they do not quote
  the objects' values).
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: third-party loggers that would print identifiers or whole datasets below WARNING
_CHATTY = ("pynetdicom", "pydicom")

#: Seconds during which repeats of one kind of pydicom warning are counted instead of written.
REPEAT_WINDOW = 60.0
#: Kinds tracked at once; past this, unknown kinds share one bucket (the set of pydicom's messages is finite, so
#: this only matters if a message ever started with a value).
MAX_KINDS = 256
#: pydicom's module names (``warnings.filterwarnings`` matches the start of the issuing module's ``__name__``).
_PYDICOM_MODULES = r"pydicom(\.|$)"

#: pydicom message → fixed description of the failed check. The VR code (two capitals) is the only part of the
#: text that is carried over; values, lengths and positions are not.
_KINDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Invalid value for VR (?P<vr>[A-Z]{2})\b"), "invalid value for VR {vr}"),
    (re.compile(r"is not valid for elements with a VR of (?P<vr>[A-Z]{2})\b"), "invalid value for VR {vr}"),
    (re.compile(r"exceeds the maximum length of \d+ allowed for VR (?P<vr>[A-Z]{2})\b"),
     "value longer than VR {vr} allows"),
    (re.compile(r"cannot be assigned to a tag with VR (?P<vr>[A-Z]{2})\b"), "value of the wrong type for VR {vr}"),
    (re.compile(r"PN component"), "person name with too many or too long components"),
    (re.compile(r"tag with VR (?P<vr>[A-Z]{2}) must be between"), "value out of range for VR {vr}"),
    (re.compile(r"tag with VR (?P<vr>[A-Z]{2}) must be a multiple"), "value length not a multiple for VR {vr}"),
    (re.compile(r"Unknown encoding|Specific Character Set"), "unknown or invalid Specific Character Set"),
    (re.compile(r"Failed to (de|en)code"), "text not representable in its Specific Character Set"),
    (re.compile(r"Person Name \(PN\)"), "person name not formatted correctly"),
    (re.compile(r"'Number of Frames'"), "invalid Number of Frames"),
    (re.compile(r"'Photometric Interpretation'"), "Photometric Interpretation differs from the codestream"),
    (re.compile(r"end of the encapsulated pixel data"), "encapsulated pixel data shorter than described"),
    (re.compile(r"doesn't allow a value of '60'"), "seconds value 60 in a date or time"),
    (re.compile(r"End of file|in file "), "data set ends early"),
    (re.compile(r"Deferred read"), "file changed while deferred values were read"),
    (re.compile(r"will be removed in v4|is deprecated"), "deprecated pydicom interface used"),
    (re.compile(r"Expected explicit VR|Expected implicit VR"), "VR encoding differs from the transfer syntax"),
    (re.compile(r"Unknown VR"), "unknown VR"),
    (re.compile(r"VR lookup failed"), "element of unknown tag read as VR UN"),
    (re.compile(r"unknown escape sequence"), "unknown character set escape sequence"),
    (re.compile(r"Error while processing tag"), "element that cannot be converted to JSON"),
    (re.compile(r"not a valid private creator"), "invalid private creator"),
    (re.compile(r"Expected (sequence )?[Ii]tem|after delimiter"), "malformed sequence item or delimiter"),
    (re.compile(r"Expected length"), "value length not valid for its VR"),
)
#: Fallback description: the message's leading plain words — one capitalised or lower-case word, then lower-case
#: words and single spaces only — so it ends before any quote, digit, bracket, punctuation or upper-case run that
#: could be a value. (Every pydicom 3.0 message starts with fixed text; this guards against a future one that
#: starts with a value.)
_LEADING_WORDS = re.compile(r"[A-Z]?[a-z]+(?: [a-z]+){0,5}")


def describe_pydicom_message(text: str) -> str:
    """A fixed, value-free description of a pydicom warning text (what was checked, not what was found)."""
    for pattern, description in _KINDS:
        m = pattern.search(text)
        if m is not None:
            return description.format(**m.groupdict())
    lead = _LEADING_WORDS.match(text)
    return f"other: {lead.group(0)}" if lead else "other"


def _is_pydicom(name: str) -> bool:
    return name == "pydicom" or name.startswith("pydicom.")


@dataclass
class _Window:
    started: float
    suppressed: int = 0


class PydicomWarningFilter(logging.Filter):
    """Handler filter: pydicom records at WARNING and above → a scrubbed, rate-limited summary; full text at DEBUG.

    Per kind (see ``describe_pydicom_message``): the first record is written as a summary at once; repeats within
    ``window`` seconds are only counted; the first record after the window writes one line with the count of
    records it stands for, and opens the next window. So a flood costs one line per kind per window. When the
    record's logger is enabled for DEBUG (``--log-level DEBUG``), the original text is also written, as DEBUG.
    ``flush`` writes the counts still pending (at exit). Other records pass untouched.
    """

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], _Window] = {}
        self._handlers: list[logging.Handler] = []

    def attach(self, handler: logging.Handler) -> None:
        handler.addFilter(self)
        self._handlers.append(handler)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _is_pydicom(record.name) or getattr(record, "dv_summary", False):
            return True
        mark = f"dv_pass_{id(self)}"  # per filter: another filter's window says nothing about this one's
        decided = getattr(record, mark, None)
        if decided is not None:  # the same record on a second handler of this filter: counted once
            return bool(decided)
        passed = self._decide(record)
        setattr(record, mark, passed)
        return passed

    def _decide(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: describe it without its arguments
            text = str(record.msg)
        kind = describe_pydicom_message(text)
        summary = self._count(kind, record.levelno)
        detail = logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if summary is not None:
            if not detail:
                _rewrite(record, summary, record.levelno)
                setattr(record, "dv_summary", True)  # noqa: B010
                return True
            self._emit(record.name, record.levelno, summary)
        if detail:
            _rewrite(record, f"pydicom warning detail: {text}", logging.DEBUG)
            return True
        return False

    def _count(self, kind: str, level: int) -> str | None:
        """The summary line to write now for one record of ``kind``, or None (counted)."""
        now = self.clock()
        with self._lock:
            key = (kind, level)
            if key not in self._windows and len(self._windows) >= MAX_KINDS:
                key = ("other", level)
                kind = "other"
            window = self._windows.get(key)
            if window is None:
                self._windows[key] = _Window(now)
                return (f"pydicom warning: {kind} (values are logged only at DEBUG; repeats are counted and "
                        f"summarised at most once every {self.window:.0f} s)")
            if now - window.started < self.window:
                window.suppressed += 1
                return None
            count, elapsed = window.suppressed + 1, now - window.started
            self._windows[key] = _Window(now)
            return f"pydicom warning: {kind}: {count} time(s) in the last {elapsed:.0f} s"

    def flush(self) -> None:
        """Write the counts of repeats not yet summarised (at exit, or before reconfiguring)."""
        with self._lock:
            pending = [(kind, level, w) for (kind, level), w in self._windows.items() if w.suppressed]
            self._windows.clear()
        now = self.clock()
        for kind, level, w in pending:
            self._emit("pydicom", level, f"pydicom warning: {kind}: {w.suppressed} time(s) in the last "
                                         f"{now - w.started:.0f} s")

    def _emit(self, name: str, level: int, message: str) -> None:
        record = logging.getLogger(name).makeRecord(name, level, __file__, 0, message, (), None,
                                                    extra={"dv_summary": True})
        for handler in self._handlers:
            if level >= handler.level:
                handler.handle(record)


def _rewrite(record: logging.LogRecord, message: str, level: int) -> None:
    record.msg, record.args = message, ()
    record.levelno, record.levelname = level, logging.getLevelName(level)
    record.exc_info = record.exc_text = None
    record.stack_info = None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced after configuration, e.g. by a test
    runner), never to a stream captured once and possibly closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_installed: PydicomWarningFilter | None = None


def silence_pydicom_warnings() -> None:
    """Ignore the ``warnings.warn`` half of pydicom's warnings (their log records carry the same text; see the
    module docstring). Idempotent: ``filterwarnings`` does not add an identical filter twice."""
    warnings.filterwarnings("ignore", module=_PYDICOM_MODULES)


def install_pydicom_filter(handler: logging.Handler, *, window: float = REPEAT_WINDOW) -> PydicomWarningFilter:
    """Put a ``PydicomWarningFilter`` on ``handler`` (and silence pydicom's ``warnings.warn``); returns it."""
    silence_pydicom_warnings()
    pydicom_filter = PydicomWarningFilter(window)
    pydicom_filter.attach(handler)
    return pydicom_filter


def _flush_at_exit() -> None:
    if _installed is not None:
        _installed.flush()


def configure_logging(level: str = "INFO") -> int:
    """Configure the root logger (stderr, one line per record, pydicom warnings summarised) and return the
    numeric level.

    Raises ``ValueError`` for an unknown level name.
    """
    global _installed
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
    root = logging.getLogger()
    if _installed is not None:
        _installed.flush()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    if _installed is None:
        atexit.register(_flush_at_exit)
    _installed = install_pydicom_filter(handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    _pynetdicom_event_logging(numeric <= logging.DEBUG)
    return numeric


def _pynetdicom_event_logging(enabled: bool) -> None:
    """pynetdicom's "standard" event handlers describe every PDU sent and received for its DEBUG log. They run
    whatever the level, and a malformed PDU makes them raise while formatting it (an A-ASSOCIATE-RJ with an invalid
    Source field: ``ValueError``), which pynetdicom logs as an ERROR with a traceback — two per 2,000 garbage
    streams in the abuse campaign. Bound only when DEBUG is asked for; set before any association exists."""
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if enabled else "none"
