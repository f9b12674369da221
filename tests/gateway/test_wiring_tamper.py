"""gateway/_wiring.py: tamper evidence wired from settings (signing key, keys route, digests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from audit import Keyring, Scope, sqlite_store
from audit._digests import digest_store_beside
from audit._verify import Verifier
from gateway._wiring import build, demo_settings, retention_recorder
from gateway.settings import SettingsError
from tests.gateway.test_wiring import HOST, settings_for


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit-signing.pem"
    path.write_bytes(pem(Ed25519PrivateKey.generate()))
    return path


def keys_from(path: Path) -> Keyring:
    return Keyring.from_pem(path.read_bytes())


class TestAuditKeysRoute:
    def test_public_keys_are_published(self, tmp_path: Path, key_file: Path) -> None:
        """/_gateway/audit-keys.json serves the signing key's public half, anonymously."""
        settings = settings_for(
            tmp_path, "http://127.0.0.1:9", GATEWAY_AUDIT__SIGNING_KEY_FILE=str(key_file)
        )
        with TestClient(build(settings).app, base_url=f"https://{HOST}") as http:
            response = http.get("/_gateway/audit-keys.json")
        assert response.status_code == 200
        keys = response.json()["keys"]
        assert [k["kid"] for k in keys] == [keys_from(key_file).signing_key_id]
        assert all("d" not in key for key in keys)

    def test_retired_keys_stay_published(self, tmp_path: Path, key_file: Path) -> None:
        """Keys of verifier_keys_file are published beside the signing key."""
        retired = Keyring(private=[Ed25519PrivateKey.generate()])
        jwks = tmp_path / "retired.json"
        jwks.write_bytes(Keyring.from_jwks(retired.jwks_json()).jwks_json())
        settings = settings_for(
            tmp_path,
            "http://127.0.0.1:9",
            GATEWAY_AUDIT__SIGNING_KEY_FILE=str(key_file),
            GATEWAY_AUDIT__VERIFIER_KEYS_FILE=str(jwks),
        )
        with TestClient(build(settings).app, base_url=f"https://{HOST}") as http:
            kids = {k["kid"] for k in http.get("/_gateway/audit-keys.json").json()["keys"]}
        assert kids == {keys_from(key_file).signing_key_id, retired.signing_key_id}

    def test_no_keys_no_route(self, tmp_path: Path) -> None:
        """Without keys configured there is nothing to publish."""
        settings = settings_for(tmp_path, "http://127.0.0.1:9")
        with TestClient(build(settings).app, base_url=f"https://{HOST}") as http:
            assert http.get("/_gateway/audit-keys.json").status_code == 404


class TestDigestsFromSettings:
    def test_gateway_events_are_chained(self, tmp_path: Path, key_file: Path) -> None:
        """Events the built gateway records end up in a signed digest that verifies."""
        settings = settings_for(
            tmp_path,
            "http://127.0.0.1:9",
            GATEWAY_AUDIT__SIGNING_KEY_FILE=str(key_file),
            GATEWAY_AUDIT__INSTANCE_ID="gw-test",
        )
        with TestClient(build(settings).app, base_url=f"https://{HOST}") as http:
            assert http.get("/api/me", headers={"accept": "application/json"}).status_code == 401
        events = sqlite_store(path=settings.audit.sqlite_path)
        digests = digest_store_beside(events)
        [digest] = digests.records(kind="digest", instance="gw-test")
        assert digest["events.count"] == events.count(Scope()) >= 1
        report = Verifier(events=events, digests=digests, keyring=keys_from(key_file)).verify()
        assert report.ok and [i.status for i in report.intervals] == ["intact"]
        events.close()

    def test_bad_signing_key_is_a_settings_error(self, tmp_path: Path) -> None:
        """A signing key that is not Ed25519 PEM fails at load, naming the setting."""
        bad = tmp_path / "bad.pem"
        bad.write_text("not a key")
        with pytest.raises(SettingsError, match=r"audit\.signing_key"):
            settings_for(tmp_path, "http://127.0.0.1:9", GATEWAY_AUDIT__SIGNING_KEY_FILE=str(bad))

    def test_retention_recorder_only_with_a_key(self, tmp_path: Path, key_file: Path) -> None:
        """Retention signs its records with the same key, and describes each rule."""
        without = settings_for(tmp_path, "http://127.0.0.1:9")
        events = sqlite_store(path=without.audit.sqlite_path)
        assert retention_recorder(without, events) is None
        with_key = settings_for(
            tmp_path, "http://127.0.0.1:9", GATEWAY_AUDIT__SIGNING_KEY_FILE=str(key_file)
        )
        assert retention_recorder(with_key, events) is not None
        events.close()


class TestDemo:
    def test_demo_generates_a_signing_key(self, tmp_path: Path) -> None:
        """Demo mode makes an Ed25519 signing key once and keeps it in its state dir."""
        first = demo_settings(None, environ={"GATEWAY_DEMO__STATE_DIR": str(tmp_path)})
        again = demo_settings(None, environ={"GATEWAY_DEMO__STATE_DIR": str(tmp_path)})
        assert first.audit.signing_key is not None
        assert first.audit.signing_key == again.audit.signing_key
        Keyring.from_pem(first.audit.signing_key.reveal().encode())
        assert (tmp_path / "audit-signing-key.pem").stat().st_mode & 0o077 == 0
