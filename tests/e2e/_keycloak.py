"""A Keycloak for the end-to-end test: fetched from Maven Central, started once per session.

``org.keycloak:keycloak-quarkus-dist`` (zip) is fetched with ``mvn dependency:copy`` into a cache
outside the repository (``/var/cache/onderwijs-gateway/keycloak`` as root, else
``~/.cache/onderwijs-gateway/keycloak``), unpacked once, and started in dev mode on loopback with
an in-memory database and the realm from ``tests/e2e/keycloak-realm.json`` imported. It needs
Java 21+ (``KEYCLOAK_JAVA_HOME``, default the Temurin 25 JDK in /usr/lib/jvm). It dies with the
test process (parent-death signal) and is stopped at the end of the session.

Environment:
    KEYCLOAK_URL            reuse a Keycloak that answers there (with the realm imported)
    KEYCLOAK_VERSION        default DEFAULT_VERSION
    KEYCLOAK_START_TIMEOUT  seconds to wait for the realm's discovery document (default 300)
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tools.opensearch_node import default_cache_dir, free_port

DEFAULT_VERSION = "26.4.0"
ARTIFACT = "org.keycloak:keycloak-quarkus-dist:{version}:zip"
DEFAULT_JAVA_HOME = "/usr/lib/jvm/temurin-25-jdk-amd64"
REALM_FILE = Path(__file__).with_name("keycloak-realm.json")
REALM = "platform"
PR_SET_PDEATHSIG = 1


class KeycloakError(RuntimeError):
    """Keycloak could not be fetched or started; the message says why (with its log tail)."""


@dataclass
class Keycloak:
    url: str  #: the realm's issuer, e.g. http://127.0.0.1:PORT/realms/platform
    started_in: float | None  #: seconds from launch to the realm answering (None: reused)
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _answers(issuer: str) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback http only
            f"{issuer}/.well-known/openid-configuration", timeout=2
        ) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def install(version: str) -> Path:
    cache = default_cache_dir() / "keycloak"
    home = cache / f"keycloak-{version}"
    if (home / "bin" / "kc.sh").exists():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"keycloak-quarkus-dist-{version}.zip"
    if not archive.exists():
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "dependency:copy",
                f"-Dartifact={ARTIFACT.format(version=version)}",
                f"-DoutputDirectory={cache}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not archive.exists():
            raise KeycloakError(f"cannot fetch Keycloak {version}: {result.stdout[-2000:]}")
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(cache)
    for script in (home / "bin").glob("*.sh"):
        script.chmod(0o755)
    return home


def _die_with_parent() -> None:
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start(log_path: Path) -> Keycloak:
    reuse = os.environ.get("KEYCLOAK_URL")
    if reuse:
        issuer = f"{reuse.rstrip('/')}/realms/{REALM}"
        if not _answers(issuer):
            raise KeycloakError(f"KEYCLOAK_URL={reuse} does not answer for realm {REALM}")
        return Keycloak(url=issuer, started_in=None)
    home = install(os.environ.get("KEYCLOAK_VERSION", DEFAULT_VERSION))
    imports = home / "data" / "import"
    imports.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REALM_FILE, imports / f"{REALM}-realm.json")
    port = free_port()
    env = {
        **os.environ,
        "JAVA_HOME": os.environ.get("KEYCLOAK_JAVA_HOME", DEFAULT_JAVA_HOME),
        "JAVA_OPTS_KC_HEAP": "-Xms128m -Xmx768m",
    }
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(home / "bin" / "kc.sh"),
                "start-dev",
                f"--http-port={port}",
                "--http-host=127.0.0.1",
                "--db=dev-mem",
                "--import-realm",
                "--health-enabled=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + parent-death signal only
        )
    keycloak = Keycloak(
        url=f"http://127.0.0.1:{port}/realms/{REALM}", started_in=None, process=process
    )
    deadline = started + float(os.environ.get("KEYCLOAK_START_TIMEOUT", "300"))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers(keycloak.url):
            keycloak.started_in = time.monotonic() - started
            return keycloak
        time.sleep(1)
    keycloak.stop()
    tail = log_path.read_text(errors="replace")[-3000:]
    raise KeycloakError(f"Keycloak did not start (log tail):\n{tail}")
