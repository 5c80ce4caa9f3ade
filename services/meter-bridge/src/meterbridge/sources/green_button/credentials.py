"""PG&E Share My Data client credentials: `meter-bridge pge keygen` and PEM text to 0600 files.

What PG&E asks for (Share My Data "Get started" and "Testing details" pages): mutual TLS 1.2
with an unexpired, unrevoked SHA-2 X.509 certificate whose RSA public key has at least 2048
bits, **issued by a recognised public certificate authority** (PG&E does not accept
self-signed certificates), uploaded with the registration; every request but the OAuth
browser redirects presents that same certificate. So `keygen` makes an RSA key (0600) and a
SHA-256 certificate signing request for the name the operator controls, to be signed by a
CA; the CA's certificate is what gets uploaded to PG&E and put on the device.

On a balena device the certificate and key come from the variables `PGE_CERT` and `PGE_KEY`
(`cert_pem: "${PGE_CERT}"`, `key_pem: "${PGE_KEY}"` in the source's config); `write_pem_files`
puts them into 0600 files at start, because `ssl` loads a client certificate only from files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ...errors import ConfigError

#: PG&E's floor for the RSA key ("public key length of at least 2048 bits").
MIN_RSA_BITS = 2048
KEY_NAME = "pge-client.key"
CSR_NAME = "pge-client.csr"


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a 0600 file, atomically (a reader never sees half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o600)  # O_CREAT's mode only applies to a new file
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def normalise_pem(text: str, what: str, source: str) -> bytes:
    """PEM text as pasted into a variable: `\\n` escapes (one-line fields) become line breaks.

    Raises `ConfigError` naming `source` when there is no PEM block of the expected kind.
    """
    pem = text.replace("\\n", "\n").replace("\r\n", "\n").strip()
    expected = "PRIVATE KEY-----" if what == "key" else "CERTIFICATE-----"
    if not pem.startswith("-----BEGIN ") or expected not in pem.splitlines()[0]:
        raise ConfigError([f"{source}: not a PEM {'private key' if what == 'key' else 'certificate'}"])
    return pem.encode("ascii", errors="replace") + b"\n"


def write_pem_files(cert_pem: str, key_pem: str, directory: Path, name: str, source: str) -> tuple[Path, Path]:
    """Write certificate and key (PEM text) to `<directory>/<name>.crt` and `.key`, both 0600.

    Raises `ConfigError` (naming `source`, the config key they came from) on text that is
    not PEM or a directory that cannot be written.
    """
    cert = normalise_pem(cert_pem, "cert", f"{source}.cert_pem")
    key = normalise_pem(key_pem, "key", f"{source}.key_pem")
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        _write_private(cert_file, cert)
        _write_private(key_file, key)
    except OSError as err:
        raise ConfigError([f"{source}: cannot write the client certificate into {directory}: {err}"]) from err
    return cert_file, key_file


def make_key_and_csr(
    common_name: str, bits: int = MIN_RSA_BITS, organization: str | None = None
) -> tuple[bytes, bytes]:
    """A new RSA private key (PKCS#8 PEM, unencrypted) and a SHA-256 CSR for `common_name` (PEM).

    The CSR carries `common_name` as CN and as DNS subjectAltName (what public CAs issue on).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if bits < MIN_RSA_BITS:
        raise ValueError(f"PG&E requires RSA keys of at least {MIN_RSA_BITS} bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `meter-bridge pge keygen`."""
    parser.add_argument(
        "--cn", required=True, help="the domain name the certificate is for (one you control: the CA checks it)"
    )
    parser.add_argument("--org", help="organisation name in the request (optional)")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the key and the request")
    parser.add_argument("--bits", type=int, default=MIN_RSA_BITS, help=f"RSA key size (at least {MIN_RSA_BITS})")
    parser.add_argument("--force", action="store_true", help="replace an existing key")


def run_keygen(args: argparse.Namespace) -> int:
    """`meter-bridge pge keygen`: exit 0 when written, 2 on bad input or an existing key."""
    key_file, csr_file = args.out / KEY_NAME, args.out / CSR_NAME
    if args.bits < MIN_RSA_BITS:
        print(f"--bits: PG&E requires at least {MIN_RSA_BITS}", file=sys.stderr)
        return 2
    if key_file.exists() and not args.force:
        print(f"{key_file} exists: keep it (its certificate is registered with PG&E) or use --force", file=sys.stderr)
        return 2
    key_pem, csr_pem = make_key_and_csr(args.cn, args.bits, args.org)
    _write_private(key_file, key_pem)
    csr_file.write_bytes(csr_pem)
    print(
        f"""Wrote {key_file} (RSA {args.bits}, mode 0600: keep it secret, it never leaves you)
and {csr_file} (certificate signing request, SHA-256, CN={args.cn}).

1. Have a public certificate authority sign {csr_file} (an SSL/TLS certificate for {args.cn};
   PG&E accepts SHA-2 X.509 certificates with an RSA key of 2048+ bits from recognised CAs,
   not self-signed ones). Keep the certificate it issues as PEM (with its chain).
2. Upload that certificate (not the key, not the request) in PG&E's Share My Data portal
   when registering (Self-Access User), then run PG&E's connectivity test against
   environment: test.
3. Give the bridge the certificate and this key: meter-bridge service variables PGE_CERT (the certificate's
   PEM) and PGE_KEY (the contents of {key_file}) with `cert_pem: "${{PGE_CERT}}"` and
   `key_pem: "${{PGE_KEY}}"` in the green_button source, or cert_file/key_file on the device.

The request (safe to share):
{csr_pem.decode()}"""
    )
    return 0
