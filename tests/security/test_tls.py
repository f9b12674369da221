"""TLS of the HTTPS listener as deployed, checked by ``testssl`` (Debian package
``testssl.sh``; ``make test`` installs it when missing and fails loudly when it cannot).

Asserts on testssl's JSON findings: no protocol below TLS 1.2 (SSLv2, SSLv3, TLS 1.0 and 1.1
not offered; TLS 1.2 and 1.3 offered), no weak cipher category offered (NULL, anonymous,
EXPORT, LOW, 3DES/IDEA, obsoleted CBC, strong ciphers without forward secrecy), forward
secrecy offered, and HSTS present with a long max-age.

Guards CWE-326 (inadequate encryption strength), CWE-327 (broken or risky cryptographic
algorithm), CWE-757 (algorithm downgrade) and CWE-319 / CWE-523 (cleartext transmission:
HSTS), the TLS-configuration class of reverse-proxy advisories.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.security._harness import Deployment, deployed

TESTSSL_TIMEOUT = 300
OFFERED_NEVER = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")
#: testssl's cipher categories that must not be offered. Names of testssl 3.0 (Debian 12);
#: testssl 3.2 renamed AVERAGE (obsoleted CBC ciphers) to OBSOLETED: either is accepted.
WEAK_CIPHER_CATEGORIES = (
    ("cipherlist_NULL",),
    ("cipherlist_aNULL",),
    ("cipherlist_EXPORT",),
    ("cipherlist_LOW",),
    ("cipherlist_3DES_IDEA",),
    ("cipherlist_AVERAGE", "cipherlist_OBSOLETED"),
)
STRONG = ("cipherlist_STRONG", "cipherlist_STRONG_FS")
FORWARD_SECRECY = ("PFS", "FS")
HSTS_MIN_SECONDS = 180 * 24 * 3600


def _rsa_certificate(directory: Path) -> None:
    """An RSA certificate where demo mode looks for its own (``tls/cert.pem``, ``key.pem``),
    so the listener could negotiate static-RSA key exchange if its cipher list allowed it
    (with the demo's ECDSA certificate it never could, and the checks below would be moot)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    tls = directory / "tls"
    tls.mkdir(parents=True)
    (tls / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The deployment with an RSA certificate."""
    state = Path(tmp_path_factory.mktemp("tls")) / "state"
    _rsa_certificate(state)
    with deployed(state) as running:
        yield running


@pytest.fixture(scope="module")
def findings(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """testssl's findings against the module's deployment, by id (first finding of each)."""
    testssl = shutil.which("testssl")
    if testssl is None:
        pytest.fail(
            "testssl is not installed: `make test` installs the Debian package testssl.sh "
            "(apt-get install testssl.sh)",
            pytrace=False,
        )
    directory = Path(tmp_path_factory.mktemp("testssl"))
    return _run(testssl, deployment, directory / "testssl.json")


def _run(testssl: str, deployment: Deployment, output: Path) -> dict[str, dict[str, Any]]:
    command = [
        testssl,
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "batch",
        "--protocols",
        "--std",
        "--fs",
        "--headers",
        "--jsonfile",
        str(output),
        f"127.0.0.1:{deployment.https_port}",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TESTSSL_TIMEOUT, check=False
    )
    if not output.exists():
        pytest.fail(f"testssl wrote no JSON (exit {done.returncode}): {done.stdout[-2000:]}")
    items: list[dict[str, Any]] = json.loads(output.read_text())
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        found.setdefault(str(item.get("id")), item)
    if "scanProblem" in found:
        pytest.fail(f"testssl could not scan: {found['scanProblem']}")
    return found


def _item(findings: dict[str, dict[str, Any]], *names: str) -> dict[str, Any]:
    """The finding under the first of ``names`` testssl reported (names differ by version)."""
    for name in names:
        if name in findings:
            return findings[name]
    raise AssertionError(f"testssl reported none of {names}: {sorted(findings)}")


def _finding(findings: dict[str, dict[str, Any]], *names: str) -> str:
    return str(_item(findings, *names)["finding"]).lower()


class TestProtocols:
    @pytest.mark.parametrize("protocol", OFFERED_NEVER)
    def test_old_protocol_not_offered(
        self, findings: dict[str, dict[str, Any]], protocol: str
    ) -> None:
        """CWE-757 / CWE-327: nothing below TLS 1.2 is offered."""
        assert _finding(findings, protocol).startswith("not offered")

    @pytest.mark.parametrize("protocol", ["TLS1_2", "TLS1_3"])
    def test_current_protocol_offered(
        self, findings: dict[str, dict[str, Any]], protocol: str
    ) -> None:
        """TLS 1.2 and 1.3 are offered (the check above is not passing on a dead port)."""
        assert _finding(findings, protocol).startswith("offered")


class TestCiphers:
    @pytest.mark.parametrize("category", WEAK_CIPHER_CATEGORIES, ids=lambda c: c[0])
    def test_weak_category_not_offered(
        self, findings: dict[str, dict[str, Any]], category: tuple[str, ...]
    ) -> None:
        """CWE-326 / CWE-327: no NULL, anonymous, export, low, 3DES/IDEA or obsoleted (CBC)
        cipher is offered."""
        assert _finding(findings, *category).startswith("not offered")

    def test_strong_ciphers_offered(self, findings: dict[str, dict[str, Any]]) -> None:
        """Strong (AEAD) ciphers are what is offered (the checks above see a live port)."""
        assert _finding(findings, *STRONG).startswith("offered")

    def test_forward_secrecy(self, findings: dict[str, dict[str, Any]]) -> None:
        """CWE-326: forward secrecy is offered, and every cipher offered has it (ECDHE or
        TLS 1.3: no static-RSA key exchange)."""
        item = _item(findings, *FORWARD_SECRECY)
        assert item["severity"] == "OK", item

    def test_forward_secret_rsa_cipher_connects(self, deployment: Deployment) -> None:
        """The control of the test below: the same client with an ECDHE-RSA cipher connects."""
        with socket.create_connection(("127.0.0.1", deployment.https_port), timeout=10) as raw:
            tls = _tls12_client("ECDHE-RSA-AES128-GCM-SHA256").wrap_socket(
                raw, server_hostname="localhost"
            )
            assert tls.cipher() is not None
            tls.close()

    @pytest.mark.parametrize("cipher", ["AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA"])
    def test_static_rsa_key_exchange_refused(self, deployment: Deployment, cipher: str) -> None:
        """CWE-326: a TLS 1.2 client offering only a cipher without forward secrecy (static
        RSA key exchange) gets no connection, although the certificate is RSA (testssl 3.0
        does not report this category)."""
        with (
            socket.create_connection(("127.0.0.1", deployment.https_port), timeout=10) as raw,
            pytest.raises(ssl.SSLError),
        ):
            _tls12_client(cipher).wrap_socket(raw, server_hostname="localhost").close()


def _tls12_client(cipher: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    return context


class TestHSTS:
    def test_hsts_present_with_long_max_age(self, findings: dict[str, dict[str, Any]]) -> None:
        """CWE-319 / CWE-523: HSTS is sent, for at least 180 days."""
        hsts = findings.get("HSTS_time") or findings.get("HSTS")
        assert hsts is not None, sorted(findings)
        assert hsts["severity"] == "OK", hsts
        text = str(hsts["finding"])
        seconds = int(text.split("=")[1].split(maxsplit=1)[0]) if "=" in text else 0
        assert seconds >= HSTS_MIN_SECONDS, text


class TestBanner:
    def test_no_server_software_banner(self, findings: dict[str, dict[str, Any]]) -> None:
        """CWE-200 (FINDINGS 10): no ``Server`` header names the software on a forwarded page:
        the gateway sends none of its own and drops the upstream's (here uvicorn's)."""
        banner = findings.get("banner_server")
        assert banner is not None, sorted(findings)
        assert "uvicorn" not in str(banner["finding"]).lower(), banner
        assert "no server banner" in str(banner["finding"]).lower(), banner
