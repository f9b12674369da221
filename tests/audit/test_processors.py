"""audit/processors.py: each processor of the audit chain, then the chain through structlog."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import structlog
from structlog.contextvars import bound_contextvars
from structlog.testing import capture_logs

from audit.processors import (
    EMITTED_NS,
    REDACTED,
    Normalise,
    Pseudonymise,
    Pseudonymiser,
    RedactSecrets,
    audit_processors,
    neutralise_control_chars,
    redact_text,
    render_json,
    run_chain,
    stamp,
)

KEY = b"k" * 32
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXBhcnQ"


def _call(processor: Any, event: dict[str, Any]) -> Any:
    return processor(None, "info", event)


class TestNormalise:
    def test_aliases_become_ecs_names(self) -> None:
        """Short names such as request_id and tenant map to their ECS fields."""
        out = _call(Normalise(), {"event": "logout", "request_id": "r1", "tenant": "school-a"})
        assert out == {"event.action": "logout", "trace.id": "r1", "organization.id": "school-a"}

    def test_ecs_name_beats_alias(self) -> None:
        """When both are given, the explicit ECS field wins over its alias."""
        out = _call(Normalise(), {"trace.id": "explicit", "request_id": "from-context"})
        assert out["trace.id"] == "explicit"

    def test_unknown_keys_become_string_labels(self) -> None:
        """A key the schema lacks is kept as a label, never dropped and never a new field."""
        out = _call(Normalise(), {"event.action": "x", "foo.bar": 3, "labels": {"a": True}})
        assert out["labels"] == {"foo_bar": "3", "a": "true"}

    def test_long_strings_cut(self) -> None:
        """Strings over the limit are truncated with a marker."""
        out = _call(Normalise(max_string=10), {"error.message": "x" * 50})
        assert out["error.message"] == "x" * 10 + "…[truncated]"


class TestStamp:
    def test_uses_emit_time_in_utc(self) -> None:
        """@timestamp is the emit time as ISO-8601 UTC with a Z."""
        out = _call(stamp, {"event.action": "logout", EMITTED_NS: 1_795_000_000_123_456_000})
        assert out["@timestamp"] == "2026-11-18T11:06:40.123456Z"
        assert EMITTED_NS not in out

    def test_defaults_from_taxonomy(self) -> None:
        """Kind, ECS categories, schema version and the retention category are filled in."""
        out = _call(stamp, {"event.action": "access_denied"})
        assert out["event.kind"] == "event"
        assert out["event.category"] == ["web"]
        assert out["event.type"] == ["denied"]
        assert out["audit.category"] == "access_denied"
        assert out["audit.schema_version"] == 1
        assert len(out["event.id"]) == 36

    def test_unknown_action_flagged(self) -> None:
        """An unknown action is kept, classed as backbone and flagged in labels."""
        out = _call(stamp, {"event.action": "typo_action"})
        assert out["audit.category"] == "backbone"
        assert out["labels"]["unknown_action"] == "true"

    def test_single_role_becomes_list(self) -> None:
        """A scalar where the schema wants a list is wrapped."""
        out = _call(stamp, {"event.action": "logout", "user.roles": "teacher"})
        assert out["user.roles"] == ["teacher"]


class TestRedactSecrets:
    @pytest.mark.parametrize(
        "key", ["password", "access_token", "id_token", "client_secret", "cookie", "code"]
    )
    def test_secret_named_keys_lose_their_value(self, key: str) -> None:
        """Any value under a secret-looking key is replaced whole."""
        out = _call(RedactSecrets(), {"labels": {key: "s3cr3t-value"}})
        assert out["labels"][key] == REDACTED

    def test_schema_fields_never_redacted_by_name(self) -> None:
        """status_code ends in "code" but is a schema field: its value stays."""
        out = _call(RedactSecrets(), {"http.response.status_code": 403})
        assert out == {"http.response.status_code": 403}

    def test_token_hash_is_kept(self) -> None:
        """audit.token_hash holds a hash by design and is not redacted."""
        out = _call(RedactSecrets(), {"audit.token_hash": "sha256:abc", "event.reason": "expired"})
        assert out == {"audit.token_hash": "sha256:abc", "event.reason": "expired"}

    @pytest.mark.parametrize(
        ("text", "secret"),
        [
            (f"token was {JWT} here", JWT),
            ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
            ("Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
            ("/callback?state=x&code=SplxlOBeZQQ&x=1", "SplxlOBeZQQ"),
            ("/cb#access_token=opaqueXYZ&t=1", "opaqueXYZ"),
            ("login failed password=hunter2 for user", "hunter2"),
            ('{"client_secret": "s3cr3t"}', "s3cr3t"),
            ("Cookie: gw_session=abcdef; other=1", "abcdef"),
            ("db_password: hunter3", "hunter3"),
            ("/maps?key=AIzaSyOpaqueKey123&q=x", "AIzaSyOpaqueKey123"),
            ("/f.pdf?X-Amz-Signature=abcdef0123&X-Amz-Date=1", "abcdef0123"),
            ("/blob?sv=2020&sig=Base64Sig%3D", "Base64Sig%3D"),
            ("?client_assertion=opaqueAssertion1", "opaqueAssertion1"),
            ("?SAMLResponse=PHNhbWw%2B", "PHNhbWw%2B"),
        ],
    )
    def test_secrets_in_text_redacted(self, text: str, secret: str) -> None:
        """Secrets inside free text are found by their shape or their name."""
        out = redact_text(text)
        assert secret not in out
        assert REDACTED in out

    def test_plain_text_unchanged(self) -> None:
        """Ordinary paths and messages pass untouched."""
        text = "GET /api/schools/school-a/students returned 502 after 30s"
        assert redact_text(text) == text

    def test_lists_and_label_keys_scanned(self) -> None:
        """Secrets in list items are redacted too."""
        out = _call(RedactSecrets(), {"user.roles": [f"x {JWT}"]})
        assert JWT not in out["user.roles"][0]


class TestNeutraliseControlChars:
    def test_newlines_escaped(self) -> None:
        """A forged second log line stays on one line, visibly escaped."""
        out = _call(neutralise_control_chars, {"url.path": "/a\r\nINFO fake event"})
        assert out["url.path"] == "/a\\x0d\\x0aINFO fake event"

    def test_bidi_and_separators_escaped(self) -> None:
        """Unicode line separators and bidi overrides cannot reorder or split what staff read."""
        out = _call(neutralise_control_chars, {"labels": {"k\n": ["a\u2028b\u202ec"]}})
        assert out == {"labels": {"k\\x0a": ["a\\u2028b\\u202ec"]}}

    def test_non_strings_untouched(self) -> None:
        """Numbers and booleans pass as they are."""
        event = {"http.response.status_code": 403, "audit.minimised": False}
        assert _call(neutralise_control_chars, dict(event)) == event


class TestPseudonymise:
    def test_configured_fields_replaced_deterministically(self) -> None:
        """The same subject gets the same pseudonym, and the lookup finds it."""
        p = Pseudonymiser(key=KEY)
        proc = Pseudonymise(pseudonymiser=p, fields=["user.id", "labels.email"])
        out = _call(proc, {"user.id": "iss|42", "labels": {"email": "a@b.nl"}, "url.path": "/x"})
        assert out["user.id"] == p.pseudonym("iss|42") != "iss|42"
        assert out["labels"]["email"] == p.pseudonym("a@b.nl")
        assert out["url.path"] == "/x"

    def test_key_matters(self) -> None:
        """Another key gives another pseudonym (no lookup without the key)."""
        assert Pseudonymiser(key=KEY).pseudonym("x") != Pseudonymiser(key=b"j" * 32).pseudonym("x")

    def test_short_key_refused(self) -> None:
        """Keys under 32 bytes are refused at construction."""
        with pytest.raises(ValueError, match="32 bytes"):
            Pseudonymiser(key=b"short")

    def test_ip_field_refused(self) -> None:
        """An ip-typed field cannot hold a pseudonym; configuring one fails fast."""
        with pytest.raises(ValueError, match="ip"):
            Pseudonymise(pseudonymiser=Pseudonymiser(key=KEY), fields=["source.ip"])

    def test_idempotent(self) -> None:
        """A pseudonym is not pseudonymised again (replays keep their value)."""
        p = Pseudonymiser(key=KEY)
        proc = Pseudonymise(pseudonymiser=p, fields=["user.id"])
        once = _call(proc, {"user.id": "iss|42"})
        assert _call(proc, dict(once)) == once


class TestRenderJson:
    def test_one_line_of_bytes(self) -> None:
        """The renderer produces compact JSON bytes, non-JSON values as strings."""
        out = render_json(None, "info", {"a": "b\nc", "n": {1, 2} and "set"})
        assert out == b'{"a":"b\\nc","n":"set"}'


class TestChain:
    def test_context_merged_and_caller_wins(self) -> None:
        """Context variables bound by the gateway fill in fields the caller did not give."""
        chain = audit_processors(render=False)
        with bound_contextvars(request_id="req-1", **{"user.id": "ctx-user"}):
            out = run_chain(chain, {"event.action": "logout", "user.id": "caller"})
        assert out["trace.id"] == "req-1"
        assert out["user.id"] == "caller"

    def test_rendered_document_is_clean(self) -> None:
        """Through the whole chain, secrets and newlines are gone from the bytes."""
        out = run_chain(
            audit_processors(),
            {
                "event.action": "login_failure",
                "url.path": f"/cb?code=abc123XYZ\n{JWT}",
                "password": "hunter2",
            },
        )
        assert isinstance(out, bytes)
        assert b"abc123XYZ" not in out and JWT.encode() not in out and b"hunter2" not in out
        assert b"\n" not in out
        assert orjson.loads(out)["labels"]["password"] == REDACTED

    def test_through_structlog_with_capture_logs(self) -> None:
        """A structlog logger with the audit chain yields a stamped, redacted event dict."""
        with capture_logs(processors=audit_processors(render=False)) as logs:
            structlog.get_logger().info(
                "bearer_token_rejected", reason="expired", authorization=f"Bearer {JWT}"
            )
        [entry] = logs
        assert entry["event.action"] == "bearer_token_rejected"
        assert entry["event.reason"] == "expired"
        assert entry["audit.category"] == "authentication"
        assert entry["labels"]["authorization"] == REDACTED
        assert entry["@timestamp"].endswith("Z")
