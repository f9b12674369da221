"""TLS for the HTTPS listener: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers.

uvicorn has no minimum-version option (PITFALLS.md), so the context is built here and handed
to uvicorn through its ``ssl_context_factory``. Demo mode gets a self-signed certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: TLS 1.2 suites (TLS 1.3 suites are fixed by OpenSSL and all modern): ECDHE with AES-GCM or
#: ChaCha20-Poly1305 only, as in Mozilla's "intermediate" profile.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
DEMO_CERT_DAYS = 30


def build_ssl_context(certfile: Path, keyfile: Path, password: str | None = None) -> ssl.SSLContext:
    """A server context for ``certfile``/``keyfile``; raises ValueError naming a bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(str(certfile), str(keyfile), password=password)
    except FileNotFoundError as exc:
        raise ValueError(f"TLS certificate or key file not found: {exc.filename}") from exc
    except ssl.SSLError as exc:
        raise ValueError(
            f"cannot load the TLS certificate {certfile} with key {keyfile}: {exc.reason}"
        ) from exc
    return context


def ensure_self_signed(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed certificate for ``hosts`` in ``directory``, made once and reused."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists() and _still_valid(cert_path, hosts):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DEMO_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _still_valid(cert_path: Path, hosts: Sequence[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    names = {str(value) for value in sans.get_values_for_type(x509.DNSName)}
    names |= {str(value) for value in sans.get_values_for_type(x509.IPAddress)}
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return {host.strip("[]") for host in hosts} <= names and remaining.days >= 1
