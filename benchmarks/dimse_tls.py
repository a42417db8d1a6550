"""C-STORE over DICOM TLS vs plain TCP: what serving TLS associations through pynetdicom costs.

The lean storage receiver (``dimse/fast_store.py``) serves plain storage associations only; TLS associations go
through pynetdicom (``dimse/tls_server.py``). This stores one generated CT series (default 200 instances, 512x512,
16-bit) with dcmtk's storescu over one association, fresh server per measurement, three ways:

* plain TCP, lean receiver (the default for modalities on the plain port);
* plain TCP, pynetdicom (``dimse_fast_store = false``): the receive path TLS associations take, without TLS;
* DICOM TLS (``storescu +tls``, TLS 1.3, a P-256 ECDSA certificate made here).

Prints instances/s and the server's CPU time per instance for each, medians over the runs.

    .venv/bin/python benchmarks/dimse_tls.py [--instances 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks.common import dicomvault, free_port, generate_ct_series, median, wait_port
from benchmarks.dimse_store import cpu_seconds


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for localhost (the client trusts it directly)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def store(port: int, files: list[Path], tls: list[str]) -> float:
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    r = subprocess.run(["storescu", *tls, "-aec", "DICOMVAULT", "127.0.0.1", str(port), *map(str, files)],
                       env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0 or "E:" in r.stdout + r.stderr:
        raise RuntimeError(f"storescu failed:\n{(r.stdout + r.stderr)[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        files = generate_ct_series(Path(tmp) / "ct", args.instances)
        cert, key = self_signed(Path(tmp))
        client = ["+tls", str(key), str(cert), "+cf", str(cert)]
        print(f"series: {len(files)} instances, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB")
        results: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name in ("plain, lean receiver", "plain, pynetdicom", "DICOM TLS (pynetdicom)"):
                os.sync()
                time.sleep(1)
                tls_port = free_port()
                extra = ["--dimse-tls-port", str(tls_port), "--dimse-tls-cert", str(cert), "--dimse-tls-key",
                         str(key)] if "TLS" in name else []
                env = {"DICOMVAULT_DIMSE_FAST_STORE": "false"} if name == "plain, pynetdicom" else {}
                with dicomvault(args=extra, env=env) as server:
                    port = tls_port if extra else server.dimse_port
                    wait_port(port)
                    cpu0 = cpu_seconds(server.process.pid)
                    elapsed = store(port, files, client if extra else [])
                    cpu = cpu_seconds(server.process.pid) - cpu0
                results.setdefault(name, []).append((len(files) / elapsed, cpu / len(files) * 1000))
                print(f"  {name:24s} {len(files) / elapsed:7.1f} inst/s   "
                      f"server CPU {cpu / len(files) * 1000:5.2f} ms/inst")
        print("medians:")
        for name, values in results.items():
            print(f"  {name:24s} {median([v[0] for v in values]):7.1f} inst/s   "
                  f"server CPU {median([v[1] for v in values]):5.2f} ms/inst")


if __name__ == "__main__":
    main()
