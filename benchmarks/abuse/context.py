"""What every probe gets: the server under test, an authenticated HTTP client, the marker, and small helpers for
storing and reading back objects over DICOMweb."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.abuse.harness import Server, proc_status
from benchmarks.abuse.objects import Marker, Obj, dataset_bytes, multipart

LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+)\s+(?P<logger>[\w.]+): (?P<message>.*)$")


@dataclass
class Ctx:
    quick: bool
    minutes: float
    work: Path
    server: Server
    token: str
    marker: Marker
    say: Callable[[str], None]
    index_url: str | None = None
    seeds: list[Obj] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)
    _http: httpx.Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None or str(self._http.base_url).rstrip("/") != self.server.base_url:
                self._http = httpx.Client(base_url=self.server.base_url, headers=self.auth, timeout=120)
            return self._http

    def client(self, timeout: float = 120) -> httpx.Client:
        """A client of its own (for threads)."""
        return httpx.Client(base_url=self.server.base_url, headers=self.auth, timeout=timeout)

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    # -- storing and reading back -----------------------------------------------------------------------------------

    def stow(self, objs: list[Obj], *, client: httpx.Client | None = None, timeout: float = 300) -> StowAnswer:
        body, ctype = multipart([o.data for o in objs])
        r = (client or self.http).post("/dicom-web/studies", content=body, headers={"Content-Type": ctype},
                                       timeout=timeout)
        return StowAnswer.of(r)

    def wado_uri(self, obj: Obj, *, client: httpx.Client | None = None) -> tuple[int, bytes | None]:
        """(HTTP status, the Part 10 bytes) of one instance by WADO-URI; bytes None when the body broke off."""
        params = {"requestType": "WADO", "studyUID": obj.study, "seriesUID": obj.series, "objectUID": obj.sop,
                  "contentType": "application/dicom"}
        try:
            r = (client or self.http).get("/wado", params=params, timeout=60)
        except httpx.HTTPError:
            return -1, None
        return r.status_code, r.content if r.status_code == 200 else None

    def intact(self, obj: Obj, *, client: httpx.Client | None = None) -> bool:
        status, data = self.wado_uri(obj, client=client)
        return status == 200 and data is not None and dataset_bytes(data) == dataset_bytes(obj.data)

    def rss(self) -> dict[str, int]:
        return proc_status(self.server.pid) if self.server.alive() else {}


@dataclass
class StowAnswer:
    status: int
    stored: set[str]
    failed: dict[str, dict[str, Any]]
    body: Any

    @classmethod
    def of(cls, r: httpx.Response) -> StowAnswer:
        try:
            body = r.json()
        except ValueError:
            body = r.text[:500]
        stored: set[str] = set()
        failed: dict[str, dict[str, Any]] = {}
        if isinstance(body, dict):
            for item in body.get("00081199", {}).get("Value", []) or []:
                uid = (item.get("00081155", {}).get("Value") or [None])[0]
                if uid:
                    stored.add(uid)
            for item in body.get("00081198", {}).get("Value", []) or []:
                uid = (item.get("00081155", {}).get("Value") or ["?"])[0]
                failed[uid] = item
        return cls(r.status_code, stored, failed, body)
