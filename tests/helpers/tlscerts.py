"""Certificates made at test time with `cryptography`: a throw-away CA and leaf certificates.

`TestCa(dir).issue(name)` gives a certificate valid for `localhost` and 127.0.0.1 and usable for
both TLS server and client authentication (OpenADR's VTN and VEN sign with theirs too);
`make_certs(dir)` is the PG&E-style set: a CA, a server certificate and a client certificate.
Private keys are written 0600, as the bridge requires of a key file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate and its key."""

    cert: Path
    key: Path


@dataclass
class CertSet:
    """Paths of the PEM files `make_certs` made."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(path, 0o600)


class TestCa:
    """`ca = TestCa(dir)`; `ca.issue("vtn")` -> CertFiles valid for 127.0.0.1; `ca.ca_file`."""

    __test__ = False  # not a pytest class

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name("HEMS test CA"))
            .issuer_name(_name("HEMS test CA"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = workdir / "ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, file_stem: str | None = None, dns_names: Sequence[str] = ()) -> CertFiles:
        """A certificate for `common_name`, also valid for IP 127.0.0.1, `localhost` and `dns_names`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        *(x509.DNSName(name) for name in dns_names),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = file_stem or common_name
        files = CertFiles(self.workdir / f"{stem}.pem", self.workdir / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files.key)
        return files

    def sign_csr(self, csr_pem: bytes) -> bytes:
        """What a CA does with a certificate signing request: a client+server certificate (PEM)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        for extension in csr.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_certs(directory: Path) -> CertSet:
    """A CA that signs a server certificate for 127.0.0.1 and a client certificate."""
    ca = TestCa(directory)
    server = ca.issue("127.0.0.1", file_stem="server")
    client = ca.issue("hems-client", file_stem="client")
    return CertSet(ca.ca_file, server.cert, server.key, client.cert, client.key)
