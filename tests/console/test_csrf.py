"""The console's CSRF tokens: bound to the session, checked against every key, same origin."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from console import CsrfTokens
from console.errors import CsrfRejected
from gateway.types import GatewayState, Scope
from tests.console._support import person

KEY = secrets.token_bytes(32)


def scope(*headers: tuple[bytes, bytes]) -> Scope:
    return {
        "type": "http",
        "headers": list(headers),
        "gateway": GatewayState(request_id="r", client_ip=None, host="gateway.test"),
    }


def refusal(tokens: CsrfTokens, request: Scope, token: str | None, **who: object) -> str:
    identity = replace(person("incident_responder"), **who)  # type: ignore[arg-type]
    with pytest.raises(CsrfRejected) as caught:
        tokens.check(request, identity, token)
    return caught.value.message


class TestCsrfTokens:
    def test_own_token_passes(self) -> None:
        """The token issued for a session is accepted for that session."""
        tokens = CsrfTokens(keys=[KEY])
        who = person("incident_responder")
        tokens.check(scope(), who, tokens.issue(who))

    def test_missing_token_refused(self) -> None:
        """No token is refused."""
        assert refusal(CsrfTokens(keys=[KEY]), scope(), None) == "token_missing"

    def test_wrong_token_refused(self) -> None:
        """A made-up token is refused."""
        assert refusal(CsrfTokens(keys=[KEY]), scope(), "A" * 43) == "token_invalid"

    def test_token_of_another_session_refused(self) -> None:
        """A token is bound to its session: another session's token does not pass."""
        tokens = CsrfTokens(keys=[KEY])
        theirs = tokens.issue(person("incident_responder", subject="other"))
        assert refusal(tokens, scope(), theirs) == "token_invalid"

    def test_old_key_still_accepted_after_rotation(self) -> None:
        """A token made with the previous session key passes while that key is configured."""
        old = CsrfTokens(keys=[KEY])
        who = person("incident_responder")
        token = old.issue(who)
        CsrfTokens(keys=[secrets.token_bytes(32), KEY]).check(scope(), who, token)

    def test_token_of_removed_key_refused(self) -> None:
        """Once the old key is gone, its tokens are refused."""
        token = CsrfTokens(keys=[KEY]).issue(person("incident_responder"))
        assert refusal(CsrfTokens(keys=[secrets.token_bytes(32)]), scope(), token) == (
            "token_invalid"
        )

    def test_no_session_no_token(self) -> None:
        """A bearer-token caller has no token and cannot change anything."""
        tokens = CsrfTokens(keys=[KEY])
        bearer = replace(person("incident_responder"), method="bearer", session_id=None)
        assert tokens.issue(bearer) is None
        assert refusal(tokens, scope(), "x", method="bearer", session_id=None) == "no_session"

    def test_cross_site_fetch_refused(self) -> None:
        """Sec-Fetch-Site: cross-site is refused even with the right token."""
        tokens = CsrfTokens(keys=[KEY])
        token = tokens.issue(person("incident_responder"))
        request = scope((b"sec-fetch-site", b"cross-site"))
        assert refusal(tokens, request, token) == "cross_site"

    def test_foreign_origin_refused(self) -> None:
        """An Origin other than the gateway's is refused even with the right token."""
        tokens = CsrfTokens(keys=[KEY])
        token = tokens.issue(person("incident_responder"))
        request = scope((b"origin", b"https://evil.test"))
        assert refusal(tokens, request, token) == "foreign_origin"

    def test_same_origin_with_default_port_passes(self) -> None:
        """``https://gateway.test`` and the host ``gateway.test:443`` are the same origin."""
        tokens = CsrfTokens(keys=[KEY])
        who = person("incident_responder")
        request = scope((b"origin", b"https://gateway.test"))
        request["gateway"].host = "gateway.test:443"
        tokens.check(request, who, tokens.issue(who))

    def test_no_keys_refused_at_start(self) -> None:
        """The console does not start without a key to derive tokens from."""
        with pytest.raises(ValueError, match="session key"):
            CsrfTokens(keys=[])
