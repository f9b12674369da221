"""gateway/types.py: accessors fail loudly when a stage did not run."""

from __future__ import annotations

import pytest

from gateway.types import (
    ANONYMOUS,
    SCOPE_KEY,
    Decision,
    GatewayState,
    Identity,
    StageMissing,
    canonical_path,
    decision,
    identity,
    state,
)


class TestAccessors:
    def test_state_missing(self) -> None:
        """Without the https stage there is no state, and reading it raises."""
        with pytest.raises(StageMissing, match="https stage"):
            state({"type": "http"})

    @pytest.mark.parametrize(
        ("accessor", "stage"),
        [(canonical_path, "path"), (identity, "authenticate"), (decision, "authorize")],
    )
    def test_unset_result_names_the_stage(self, accessor: object, stage: str) -> None:
        """Each accessor names the stage that should have set its value."""
        scope = {"type": "http", SCOPE_KEY: GatewayState(request_id="r", client_ip=None)}
        with pytest.raises(StageMissing, match=stage):
            accessor(scope)  # type: ignore[operator]

    def test_set_results_are_returned(self) -> None:
        """Values written by the stages are read back unchanged."""
        who = Identity(
            issuer="https://idp",
            subject="42",
            roles=frozenset({"teacher"}),
            tenant="school-a",
            method="session",
        )
        verdict = Decision(allowed=True, reason="allowed", rule="p, teacher, ...")
        gw = GatewayState(
            request_id="r", client_ip="192.0.2.1", path="/x", identity=who, decision=verdict
        )
        scope = {"type": "http", SCOPE_KEY: gw}
        assert canonical_path(scope) == "/x"
        assert identity(scope) is who
        assert decision(scope) is verdict


class TestIdentity:
    def test_user_id_is_issuer_qualified(self) -> None:
        """The same subject at two issuers is two users."""
        a = Identity(
            issuer="https://a", subject="1", roles=frozenset(), tenant=None, method="bearer"
        )
        b = Identity(
            issuer="https://b", subject="1", roles=frozenset(), tenant=None, method="bearer"
        )
        assert a.user_id == "https://a|1"
        assert a.user_id != b.user_id

    def test_anonymous(self) -> None:
        """The anonymous identity has only the anonymous role and no user id."""
        assert ANONYMOUS.is_anonymous
        assert ANONYMOUS.roles == frozenset({"anonymous"})
        assert ANONYMOUS.user_id is None
