"""Routing survives a crash (issue #12 item 3): ``dicomvault serve`` SIGKILLed right after acknowledging a C-STORE,
before its drain thread recorded the route's selection, then started again: the reconciliation finds the
acknowledged instances that have no delivery, and the destination receives every acknowledged instance exactly
once. The kill lands in the window because the drain gathers for ``services.routing.GATHER`` (20 ms) before it
records; the test checks that it did (some acknowledged instance has no row before the restart)."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicomvault.domain.routing import DeliveryState
from tests.cli.cli_helpers import ServeProcess
from tests.helpers import make_ct
from tests.routing_support import destination, wait_for

N_OBJECTS = 12


def _deliveries(data_dir: Path, dest: str) -> dict[str, str]:
    """SOP Instance UID → delivery state, read from the index (SQLite in WAL mode: a running server is fine)."""
    with closing(sqlite3.connect(data_dir / "index.sqlite", timeout=10)) as db:
        return dict(db.execute("SELECT sop_uid, state FROM route_deliveries WHERE destination = ?", (dest,)))


def test_serve_killed_right_after_acknowledging_routes_every_instance_once_after_restart(
        tmp_path: Path, serve_factory: Callable[..., ServeProcess]) -> None:
    data_dir = tmp_path / "vault"
    with destination("ROUTEDEST", started=False) as dest:
        config = tmp_path / "config.toml"
        config.write_text(f'[move_destinations]\nROUTEDEST = "127.0.0.1:{dest.port}"\n\n'
                          '[[route]]\nname = "everything"\nto = "ROUTEDEST"\n')
        # the destination is down while the first server runs: nothing is sent (or half-sent) before the kill
        server = serve_factory(data_dir, "--config", str(config))
        server.wait_ready()
        study = generate_uid()
        datasets = [pydicom.dcmread(io.BytesIO(make_ct(study=study, rows=32, columns=32, seed=i)))
                    for i in range(N_OBJECTS)]
        ae = AE(ae_title="CRASHSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DVTEST")
        assert assoc.is_established
        acked: list[str] = []
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                assert status.Status == 0x0000
                acked.append(str(ds.SOPInstanceUID))
            os.kill(server.proc.pid, signal.SIGKILL)  # at once: the last selections are still in memory
        finally:
            assoc.abort()
        server.proc.wait(10)
        server.stop()

        recorded = _deliveries(data_dir, dest.aet)
        assert set(recorded) < set(acked), "the kill came after the drain: the crash window was not exercised"

        dest.start()
        restarted = serve_factory(data_dir, "--config", str(config))
        restarted.wait_ready()
        wait_for(lambda: set(dest.stores) == set(acked), timeout=45, what="every acknowledged instance delivered")
        wait_for(lambda: _deliveries(data_dir, dest.aet) == dict.fromkeys(acked, DeliveryState.CONFIRMED.value),
                 timeout=20, what="every delivery confirmed")
        assert dest.stores == {u: 1 for u in acked}
        assert "are recorded now" in restarted.log_path.read_text(errors="replace")
