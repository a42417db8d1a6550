"""Process-wide logging configuration for the command-line entry points.

PHI policy: the format carries no patient attributes, and modules log identifiers of patients, studies and
instances only at DEBUG, so the default INFO log of a production archive holds no patient data. pynetdicom logs
whole datasets and association details at DEBUG, so its loggers are held at WARNING unless DEBUG is asked for.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: third-party loggers that would print identifiers or whole datasets below WARNING
_CHATTY = ("pynetdicom", "pydicom")


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


def configure_logging(level: str = "INFO") -> int:
    """Configure the root logger (stderr, one line per record) and return the numeric level.

    Raises ``ValueError`` for an unknown level name.
    """
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    return numeric
