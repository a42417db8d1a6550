"""``/admin/peers`` (issue #12 item 1): register, list, verify and remove peers over HTTP with the admin scope; the
secret token is never returned; invalid definitions get 400 with the reason, configuration-file peers 409."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.conftest import free_port
from tests.dicomweb.dw_live import DwServer


def test_admin_peers_lifecycle(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(move_destinations={"STORESCP": "127.0.0.1:4242"})
    assert server.archive.tokens is not None
    _, secret = server.archive.tokens.create("ops", ["admin"])
    _, reader = server.archive.tokens.create("viewer", ["read"])
    admin = {"Authorization": f"Bearer {secret}"}
    scp = AE(ae_title="ECHOSCP")
    scp.add_supported_context(Verification)
    port = free_port()
    echo_server = scp.start_server(("127.0.0.1", port), block=False)
    base = f"{server.base_url}/admin/peers"
    try:
        with httpx.Client(timeout=30) as client:
            assert client.get(base).status_code == 401
            assert client.get(base, headers={"Authorization": f"Bearer {reader}"}).status_code == 403
            [configured] = client.get(base, headers=admin).json()
            assert configured["aet"] == "STORESCP" and configured["source"] == "config"

            body = {"host": "127.0.0.1", "port": port, "permissions": ["store"], "move_destination": True,
                    "dicomweb_url": server.dicomweb_url, "dicomweb_token": secret}
            created = client.put(f"{base}/ECHOSCP", json=body, headers=admin)
            assert created.status_code == 201, created.text
            assert created.json()["dicomweb_token"] == "***" and created.json()["permissions"] == ["store"]
            assert client.put(f"{base}/ECHOSCP", json=body, headers=admin).status_code == 200
            assert [p["aet"] for p in client.get(base, headers=admin).json()] == ["ECHOSCP", "STORESCP"]
            assert secret not in client.get(base, headers=admin).text

            echo = client.post(f"{base}/ECHOSCP/echo", headers=admin).json()
            assert echo["dimse"]["ok"] is True and echo["dicomweb"]["ok"] is True, echo
            assert echo["dicomweb"]["detail"] == "QIDO-RS HTTP 200"

            bad = client.put(f"{base}/BAD", json={"host": "h"}, headers=admin)
            assert bad.status_code == 400 and "port" in bad.json()["error"]
            assert client.put(f"{base}/X", json={"colour": 1}, headers=admin).status_code == 400  # unknown key
            assert client.put(f"{base}/STORESCP", json=body, headers=admin).status_code == 409
            assert client.delete(f"{base}/STORESCP", headers=admin).status_code == 409
            assert client.delete(f"{base}/ECHOSCP", headers=admin).status_code == 204
            assert client.delete(f"{base}/ECHOSCP", headers=admin).status_code == 404
            assert client.post(f"{base}/NOPE/echo", headers=admin).status_code == 404
    finally:
        echo_server.shutdown()
