"""``dicomvault peers add|list|echo|remove`` (issue #12 item 1), in-process, against a real C-ECHO SCP."""

from __future__ import annotations

import json

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.cli.cli_helpers import Invoke, cli_free_port


def test_cli_peers(invoke: Invoke) -> None:
    scp = AE(ae_title="PACS1")
    scp.add_supported_context(Verification)
    port = cli_free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    try:
        added = invoke("peers", "add", "PACS1", "--host", "127.0.0.1", "--port", str(port), "-p", "store",
                       "-p", "query", "--move-destination", "--allow-from", "127.0.0.0/8",
                       "--dicomweb-url", f"http://127.0.0.1:{cli_free_port()}/dicom-web",
                       "--dicomweb-token", "tok-123", "--description", "legacy PACS")
        assert added.exit_code == 0, added.output
        assert "peer PACS1 added" in added.output
        [peer] = json.loads(invoke("peers", "list", "--json").stdout)
        assert peer["aet"] == "PACS1" and peer["permissions"] == ["query", "store"] and peer["move_destination"]
        assert peer["hosts"] == ["127.0.0.0/8"] and peer["dicomweb_token"] == "***"
        table = invoke("peers", "list").output
        assert "PACS1" in table and f"127.0.0.1:{port}" in table and "tok-123" not in table

        echo = invoke("peers", "echo", "PACS1", "--json")
        assert echo.exit_code == 1, "the DICOMweb URL does not answer"
        results = json.loads(echo.stdout)
        assert results["dimse"]["ok"] is True and results["dimse"]["detail"] == "C-ECHO status 0x0000"
        assert results["dicomweb"]["ok"] is False and "ConnectError" in results["dicomweb"]["detail"]
        invoke("peers", "add", "PACS1", "--host", "127.0.0.1", "--port", str(port))
        ok = invoke("peers", "echo", "PACS1")
        assert ok.exit_code == 0 and "dimse: ok" in ok.output and "ms)" in ok.output

        bad = invoke("peers", "add", "BAD", "--host", "h")
        assert bad.exit_code == 1 and "both --host and --port" in bad.output
        assert invoke("peers", "remove", "PACS1").exit_code == 0
        gone = invoke("peers", "remove", "PACS1")
        assert gone.exit_code == 1 and "no registered peer" in gone.output
        assert invoke("peers", "echo", "PACS1").exit_code == 1
    finally:
        server.shutdown()
