"""Certificates for the DICOM TLS tests, generated with ``cryptography``: a test CA, the archive's server
certificate (valid for localhost and 127.0.0.1), client certificates named after AE titles, and a second, untrusted
CA that issues a client certificate with a trusted-looking name."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (PEM) that issued server, ct1, viewer, other
    server: Pair  # the archive: CN DICOMVAULT, SAN localhost + 127.0.0.1, server and client authentication
    ct1: Pair  # client: CN CT1
    viewer: Pair  # client: CN viewer.example (SAN DNS viewer.example)
    other: Pair  # client: CN OTHER
    rogue_ca: Path  # an unrelated CA
    rogue_ct1: Pair  # client: CN CT1, issued by the rogue CA
    receiver: Pair  # server certificate of a TLS storage SCP (CN RECEIVER, SAN localhost + 127.0.0.1)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    pair = Pair(folder / f"{stem}.pem", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str, *, server: bool, client: bool = True,
          dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``cn``: TLS server and/or client authentication (a DICOM node that both accepts and opens
    TLS associations, like the archive, needs both)."""
    ca_cert, ca_key = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client),
                   critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca("DicomVault Test CA")
    rogue = _ca("Rogue CA")
    ca_path, rogue_path = folder / "ca.pem", folder / "rogue-ca.pem"
    ca_path.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    rogue_path.write_bytes(rogue[0].public_bytes(serialization.Encoding.PEM))
    local = {"dns": ("localhost",), "ips": ("127.0.0.1",)}
    return Pki(
        ca=ca_path,
        server=_write(folder, "server", *_leaf(ca, "DICOMVAULT", server=True, **local)),
        ct1=_write(folder, "ct1", *_leaf(ca, "CT1", server=False)),
        viewer=_write(folder, "viewer", *_leaf(ca, "viewer.example", server=False, dns=("viewer.example",))),
        other=_write(folder, "other", *_leaf(ca, "OTHER", server=False)),
        rogue_ca=rogue_path,
        rogue_ct1=_write(folder, "rogue-ct1", *_leaf(rogue, "CT1", server=False)),
        receiver=_write(folder, "receiver", *_leaf(ca, "RECEIVER", server=True, client=False, **local)),
    )
