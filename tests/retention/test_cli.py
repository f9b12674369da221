"""retention/_cli.py: ``python -m retention`` subcommands."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Keyring, Scope, SQLiteStore, digest_store_beside
from audit._verify import Verifier
from retention._cli import main
from retention._runstore import SQLiteRunStore
from tests.retention.conftest import NOW, record, write

HOUR = timedelta(hours=1)
CONFIG = """
[server]
public_hosts = ["platform.example.nl"]
tls_cert_file = "/etc/gateway/cert.pem"
tls_key_file = "/etc/gateway/key.pem"

[assertion]
key_files = ["/etc/gateway/assertion-key.pem"]

[retention]
rules = ["errors=14/60"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        CONFIG + f'\n[audit]\nsqlite_path = "{tmp_path}/audit.db"\nspool_dir = "{tmp_path}/spool"\n'
    )
    return path


def events(config: Path) -> list[dict[str, object]]:
    store = SQLiteStore(path=config.parent / "audit.db")
    try:
        return store.search(Scope(), size=1000)
    finally:
        store.close()


def seed(config: Path, *ages: timedelta, **fields: str) -> None:
    store = SQLiteStore(path=config.parent / "audit.db")
    store.ensure_schema()
    write(store, *(record(age, **fields) for age in ages))
    store.close()


class TestInventory:
    def test_prints_configured_periods(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The inventory shows the periods of the settings file, not only the defaults."""
        assert main(["--config", str(config), "inventory"]) == 0
        out = capsys.readouterr().out
        errors = out.split("\nerrors\n", 1)[1].split("\n\n", 1)[0]
        assert "full detail:  14 days" in errors
        assert "deleted after 60 days" in errors

    def test_bad_setting_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed rule stops the command with a message, exit status 2."""
        path = tmp_path / "gateway.toml"
        path.write_text(CONFIG.replace("errors=14/60", "errors=99/60"))
        assert main(["--config", str(path), "inventory"]) == 2
        assert "retention.rules" in capsys.readouterr().err

    def test_defaults_without_settings(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without a settings file the inventory shows the defaults and says so."""
        monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
        assert main(["inventory"]) == 0
        captured = capsys.readouterr()
        assert "defaults" in captured.err
        assert "deleted after 90 days" in captured.out

    def test_module_runs(self, config: Path) -> None:
        """``python -m retention inventory`` runs as a program."""
        done = subprocess.run(
            [sys.executable, "-m", "retention", "--config", str(config), "inventory"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "personal_data_access" in done.stdout


class TestRun:
    def test_now_and_dry_run(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--dry-run reports without deleting; a real run at --now deletes; both are audited."""
        seed(config, timedelta(days=400))
        when = (NOW).isoformat()
        assert main(["--config", str(config), "run", "--dry-run", "--now", when]) == 0
        assert "would delete" in capsys.readouterr().out
        assert len([e for e in events(config) if e["event.action"] == "access_denied"]) == 1
        assert main(["--config", str(config), "run", "--now", when]) == 0
        out = capsys.readouterr().out
        assert "access_denied" in out
        actions = [e["event.action"] for e in events(config)]
        assert "access_denied" not in actions
        assert actions.count("retention_run") == 2

    def test_now_without_zone_refused(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run time without a time zone is refused before anything runs."""
        with pytest.raises(SystemExit):
            main(["--config", str(config), "run", "--now", "2027-01-01T00:00:00"])
        assert "time zone" in capsys.readouterr().err


class TestHolds:
    def test_place_list_release(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A hold placed from the CLI protects its events until released, all audited."""
        seed(config, timedelta(days=400), **{"user.id": "iss|mallory"})
        base = ["--config", str(config), "holds"]
        assert (
            main(
                [
                    *base,
                    "place",
                    "--by",
                    "ops|ann",
                    "--incident",
                    "INC-9",
                    "--reason",
                    "takeover",
                    "--user",
                    "iss|mallory",
                ]
            )
            == 0
        )
        hold = json.loads(capsys.readouterr().out)
        assert hold["scope"]["user_ids"] == ["iss|mallory"]
        assert main(["--config", str(config), "run", "--now", NOW.isoformat()]) == 0
        assert any(e["event.action"] == "access_denied" for e in events(config))
        assert main([*base, "release", hold["hold_id"], "--by", "ops|ann", "--reason", "done"]) == 0
        capsys.readouterr()
        assert main([*base, "list", "--state", "released"]) == 0
        [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert listed["release_reason"] == "done"
        assert main(["--config", str(config), "run", "--now", NOW.isoformat()]) == 0
        actions = [e["event.action"] for e in events(config)]
        assert "access_denied" not in actions
        assert {"hold_placed", "hold_released"} <= set(actions)

    def test_bad_hold_exits_2(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A hold without a scope is refused with the reason, exit status 2."""
        argv = ["--config", str(config), "holds", "place", "--by", "ops|ann"]
        assert main([*argv, "--incident", "INC-9", "--reason", "r"]) == 2
        assert "invalid_hold" in capsys.readouterr().err


class TestRunLoop:
    def test_every_and_now_are_exclusive(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A loop runs at the real time; a fixed --now with --every is refused."""
        with pytest.raises(SystemExit):
            main(["--config", str(config), "run", "--every", "1h", "--now", NOW.isoformat()])
        assert "not allowed with argument" in capsys.readouterr().err

    def test_bad_interval_refused(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An interval is a whole number with s, m, h or d."""
        with pytest.raises(SystemExit):
            main(["--config", str(config), "run", "--every", "1.5h"])
        assert "not an interval" in capsys.readouterr().err

    def test_locked_run_exits_3(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A single run while another holds the lock exits 3 and says who holds it."""
        seed(config, timedelta(days=400))
        runs = SQLiteRunStore(path=config.parent / "audit.db")
        runs.ensure_schema()
        assert runs.acquire(owner="other-host:7", now=datetime.now(UTC), duration=HOUR)
        assert main(["--config", str(config), "run"]) == 3
        assert "other-host:7 holds the retention run lock" in capsys.readouterr().err
        runs.close()
        assert any(e["event.action"] == "access_denied" for e in events(config))

    def test_loop_runs_until_sigterm(self, config: Path) -> None:
        """``run --every`` runs at once, keeps running, and stops cleanly on SIGTERM,
        leaving the lock free."""
        seed(config, NOW - datetime.now(UTC) + timedelta(days=400))  # expired at the real time
        loop = subprocess.Popen(
            [sys.executable, "-m", "retention", "--config", str(config), "run", "--every", "1h"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert loop.stdout is not None
            first = loop.stdout.readline()  # the first report's first line
            assert first.startswith("retention run "), first
            assert loop.poll() is None  # still running: waiting for its next turn
            loop.send_signal(signal.SIGTERM)
            _out, err = loop.communicate(timeout=60)
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait()
        assert loop.returncode == 0, err
        assert "SIGTERM" in err
        assert "stopped" in err
        runs = SQLiteRunStore(path=config.parent / "audit.db")
        assert runs.holder() is None
        assert [r.state for r in runs.runs()] == ["finished"]
        runs.close()
        assert not any(e["event.action"] == "access_denied" for e in events(config))


class TestRuns:
    def test_stored_reports_are_printed(
        self, config: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``runs`` prints the stored runs with their reports, newest last."""
        seed(config, timedelta(days=400))
        assert main(["--config", str(config), "run", "--dry-run", "--now", NOW.isoformat()]) == 0
        assert main(["--config", str(config), "run", "--now", NOW.isoformat()]) == 0
        capsys.readouterr()
        assert main(["--config", str(config), "runs", "--last", "1"]) == 0
        [line] = capsys.readouterr().out.splitlines()
        run = json.loads(line)
        assert run["state"] == "finished"
        [counts] = [c for c in run["report"]["categories"] if c["category"] == "access_denied"]
        assert counts["deleted"] == 1


class TestSignedEvents:
    def test_deleted_retention_run_event_is_reported_by_verify(self, config: Path) -> None:
        """With audit.signing_key the CLI signs its retention_run event into its own chain
        (in spool_dir/cli); deleting that event from the store is events_missing."""
        key = Ed25519PrivateKey.generate()
        pem = config.parent / "signing.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        config.write_text(config.read_text() + f'signing_key_file = "{pem}"\n')
        seed(config, timedelta(days=400))
        assert main(["--config", str(config), "run", "--now", NOW.isoformat()]) == 0
        assert (config.parent / "spool" / "cli" / "state.json").exists()
        store = SQLiteStore(path=config.parent / "audit.db")
        keys = Keyring(private=[key])
        verifier = Verifier(events=store, digests=digest_store_beside(store), keyring=keys)
        assert [i.status for i in verifier.verify().intervals] == ["intact"]
        [run] = store.search(Scope(actions=["retention_run"]), size=10)
        with sqlite3.connect(config.parent / "audit.db") as admin:
            admin.execute("DELETE FROM audit_events WHERE event_id = ?", (run["event.id"],))
        report = verifier.verify()
        assert [i.status for i in report.intervals] == ["events_missing"]
        assert report.intervals[0].findings[0].event_ids == (run["event.id"],)
        store.close()
