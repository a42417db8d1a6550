"""Which archive a command works on: the one the administrator means, never a new empty one by accident.

Why: the CLI opens the index and the stores itself (no server round trip), so it must find them. Before, a command
run from another folder than the server's silently opened (and created) ``./vault-data`` and reported an empty
archive. Now ``dicomvault serve`` leaves a *server record* — where its archive is (configuration file, data folder,
index and storage URLs without passwords), its ports and its process id — in a per-user state folder, and every
other command resolves its archive in this order, the first that applies winning:

1. options: ``--config``, ``--data-dir``, ``--index-url``, ``--storage-url``;
2. environment: ``DICOMVAULT_CONFIG``, ``DICOMVAULT_DATA_DIR``, ``DICOMVAULT_INDEX_URL``, ``DICOMVAULT_STORAGE_URL``;
3. ``./dicomvault.toml`` in the current folder (``serve`` reads it too, so both agree when run from one folder);
4. the record of the last ``dicomvault serve`` started by this user (running or not), named on stderr;
5. ``./vault-data`` — which read-only commands open only if it exists (``open_archive(create=False)``).

The record lives at ``$DICOMVAULT_STATE_DIR/server.json``, else ``$XDG_STATE_HOME/dicomvault/server.json``, else
``~/.local/state/dicomvault/server.json`` (mode 0600: it names paths, never a password). Each ``serve`` overwrites
it when it starts and marks it stopped when it exits, so it is "the last server run" — with several servers on one
account, name the archive explicitly (``--config``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dicomvault.settings import Settings

log = logging.getLogger(__name__)

#: The configuration file a command picks up from the current folder.
LOCAL_CONFIG = Path("dicomvault.toml")
#: Environment variables that say where the archive is (others, e.g. query limits, do not).
LOCATION_ENV = ("DICOMVAULT_CONFIG", "DICOMVAULT_DATA_DIR", "DICOMVAULT_INDEX_URL", "DICOMVAULT_STORAGE_URL")
RECORD_NAME = "server.json"
RECORD_VERSION = 1


def state_dir() -> Path:
    """The per-user folder of the server record (``DICOMVAULT_STATE_DIR`` overrides it, e.g. for tests)."""
    explicit = os.environ.get("DICOMVAULT_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "dicomvault"


def record_path() -> Path:
    return state_dir() / RECORD_NAME


def has_password(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").password is not None


@dataclass(frozen=True)
class ServerRecord:
    """What ``serve`` writes: enough to open its archive again (no secret) and to tell the operator which it is."""

    pid: int
    hostname: str
    started_at: str
    data_dir: str
    index_url: str
    config_file: str | None = None
    storage_url: str | None = None
    #: the index URL held a password (left out): it must come from the configuration file or the environment
    index_password: bool = False
    storage_password: bool = False
    host: str = ""
    http_port: int = 0
    dimse_port: int = 0
    aet: str = ""
    stopped_at: str | None = None
    version: int = RECORD_VERSION

    @classmethod
    def of(cls, settings: Settings, redact: Any) -> ServerRecord:
        """The record of a server running on ``settings`` (``redact`` removes a URL's password)."""
        return cls(
            pid=os.getpid(), hostname=socket.gethostname(), started_at=_now(),
            data_dir=str(settings.data_dir.resolve()), index_url=redact(settings.resolved_index_url),
            config_file=str(settings.config_file.resolve()) if settings.config_file is not None else None,
            storage_url=redact(settings.storage_url) if settings.storage_url else None,
            index_password=has_password(settings.index_url), storage_password=has_password(settings.storage_url),
            host=settings.host, http_port=settings.http_port, dimse_port=settings.dimse_port, aet=settings.aet,
        )

    @property
    def running(self) -> bool:
        """Whether its process still runs (on this machine, not marked stopped, its pid alive)."""
        if self.stopped_at is not None or self.hostname != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def overrides(self) -> dict[str, Any]:
        """The settings to open its archive with, beside its configuration file: the data folder, and the URLs
        unless they held a password (then the file or the environment must give them)."""
        out: dict[str, Any] = {"data_dir": Path(self.data_dir)}
        if not self.index_password:
            out["index_url"] = self.index_url
        if self.storage_url and not self.storage_password:
            out["storage_url"] = self.storage_url
        return out

    def describe(self) -> str:
        state = "running" if self.running else f"stopped {self.stopped_at or '(not cleanly)'}"
        where = f"config {self.config_file}" if self.config_file else f"data dir {self.data_dir}"
        return (f"using the archive of the last `dicomvault serve` (pid {self.pid}, {state}, started "
                f"{self.started_at}): {where} — pass --config or --data-dir for another")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_record(record: ServerRecord) -> Path | None:
    """Write ``record`` atomically (mode 0600); a state folder that cannot be written is logged, never fatal."""
    path = record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(record), out, indent=2)
        os.replace(tmp, path)
        return path
    except OSError as exc:
        log.warning("cannot write the server record %s (%s): other commands will not find this archive by "
                    "themselves", path, exc)
        return None


def mark_stopped(pid: int) -> None:
    """Mark the record stopped if it is still the one of process ``pid`` (a later server may have replaced it)."""
    record = read_record()
    if record is None or record.pid != pid or record.hostname != socket.gethostname():
        return
    data = asdict(record)
    data["stopped_at"] = _now()
    with contextlib.suppress(TypeError):
        write_record(ServerRecord(**data))


def read_record() -> ServerRecord | None:
    """The record of the last server, or None (none, unreadable or of another format: logged at DEBUG)."""
    path = record_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            return None
        known = set(ServerRecord.__dataclass_fields__)
        return ServerRecord(**{k: v for k, v in data.items() if k in known})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.debug("server record %s ignored: %s", path, exc)
        return None


@dataclass(frozen=True)
class Location:
    """Where a command's settings come from: a configuration file and overrides, and, when the server record
    chose them, that record (to say so on stderr)."""

    config: Path | None
    overrides: dict[str, Any]
    record: ServerRecord | None = None


def resolve(config: Path | None, overrides: dict[str, Any], *, use_record: bool = True) -> Location:
    """The archive a command opens (the order in the module doc). ``overrides`` are the command's options."""
    given = {k: v for k, v in overrides.items() if v is not None}
    explicit = config is not None or any(given.get(k) is not None for k in ("data_dir", "index_url", "storage_url"))
    if explicit or any(os.environ.get(name) for name in LOCATION_ENV):
        return Location(config, given)
    if LOCAL_CONFIG.is_file():
        return Location(LOCAL_CONFIG, given)
    record = read_record() if use_record else None
    if record is not None:
        return Location(Path(record.config_file) if record.config_file else None,
                        {**record.overrides(), **given}, record)
    return Location(None, given)


__all__ = ["LOCAL_CONFIG", "Location", "ServerRecord", "mark_stopped", "read_record", "record_path", "resolve",
           "state_dir", "write_record"]
