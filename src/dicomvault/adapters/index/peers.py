"""SqlPeerRegistry: the peer registry port on the index database (migration 0012, table ``peers``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.postgres import run_with_retries
from dicomvault.adapters.index.tables import peers
from dicomvault.domain.peers import Permission, RemotePeer


def _record(row: Any) -> RemotePeer:
    return RemotePeer(
        aet=row.aet, host=row.host or "", port=int(row.port or 0),
        permissions=frozenset(Permission(p) for p in json.loads(row.permissions)),
        move_destination=bool(row.move_destination), hosts=tuple(json.loads(row.hosts)), tls=bool(row.tls),
        dicomweb_url=row.dicomweb_url, dicomweb_token=row.dicomweb_token,
        transfer_syntaxes=tuple(json.loads(row.transfer_syntaxes)), description=row.description or "")


class SqlPeerRegistry:
    """Implements ``ports.peers.PeerRegistry``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def _writer(self) -> Any:
        return self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")

    def list(self) -> list[RemotePeer]:
        def run() -> list[RemotePeer]:
            with self.engine.connect() as conn:
                return [_record(r) for r in conn.execute(select(peers).order_by(peers.c.aet))]
        return run_with_retries(run, dialect=self.engine.dialect.name)

    def get(self, aet: str) -> RemotePeer | None:
        def run() -> RemotePeer | None:
            with self.engine.connect() as conn:
                row = conn.execute(select(peers).where(peers.c.aet == aet)).first()
                return _record(row) if row is not None else None
        return run_with_retries(run, dialect=self.engine.dialect.name)

    def put(self, peer: RemotePeer) -> bool:
        now = datetime.now(UTC)
        values = {
            "host": peer.host, "port": peer.port,
            "permissions": json.dumps(sorted(p.value for p in peer.permissions)),
            "move_destination": peer.move_destination, "hosts": json.dumps(list(peer.hosts)), "tls": peer.tls,
            "dicomweb_url": peer.dicomweb_url, "dicomweb_token": peer.dicomweb_token,
            "transfer_syntaxes": json.dumps(list(peer.transfer_syntaxes)), "description": peer.description,
            "updated_at": now,
        }

        def run() -> bool:
            with self._writer() as conn, conn.begin():
                existed = conn.execute(select(peers.c.aet).where(peers.c.aet == peer.aet)).first() is not None
                stmt = self._insert(peers).values(aet=peer.aet, created_at=now, **values)
                conn.execute(stmt.on_conflict_do_update(index_elements=["aet"], set_=values))
                return not existed
        return bool(run_with_retries(run, dialect=self.engine.dialect.name))

    def remove(self, aet: str) -> bool:
        def run() -> bool:
            with self._writer() as conn, conn.begin():
                return bool(conn.execute(delete(peers).where(peers.c.aet == aet)).rowcount)
        return bool(run_with_retries(run, dialect=self.engine.dialect.name))
