"""Every login attempt ends up in the audit store, with its reason, through the real pipeline.

The gateway emits into ``audit.AuditPipeline`` over the embedded SQLite store (the one demo
mode and single-machine installs use; OpenSearch has the same interface and contract tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import respx

from audit import AuditPipeline, Scope, sqlite_store
from tests.gateway.oidc._idp import FakeIdP, Gateway, settings


async def test_login_attempts_are_in_the_store(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    """Success and each failure reason are stored as login events with the reason."""
    idp = FakeIdP(respx_mock)
    store = sqlite_store(path=tmp_path / "audit.sqlite")
    pipeline = AuditPipeline(store=store, spool_dir=tmp_path / "spool", flush_interval=0.05)
    await pipeline.start()
    cfg = settings(tmp_path, **{"THROTTLE__MAX_FAILURES": "5"})
    gw = Gateway(tmp_path, clock=idp.clock, oidc_settings=cfg, sink=pipeline)

    assert (await gw.login(idp)).status_code == 303  # success
    await gw.browser.get("/_gateway/callback?state=forged&code=x")  # state_mismatch
    await gw.browser.get("/_gateway/login?idp=nope")  # unknown_issuer
    idp.claim_overrides = {"aud": "other"}
    await gw.login(idp)  # invalid_token
    idp.claim_overrides = {"exp": int(idp.clock()) - 3600}
    await gw.login(idp)  # expired
    idp.claim_overrides = {}
    idp.claims = {"roles": ["janitor"]}
    await gw.login(idp)  # no_role_mapping
    idp.token_status = 400
    await gw.login(idp)  # idp_error, the fifth counted failure: blocked from now on
    await gw.browser.get("/_gateway/login")  # throttled
    await gw.browser.post("/_gateway/logout")

    assert pipeline.wait_idle(10)
    await pipeline.aclose()
    await gw.aclose()

    def found(action: str) -> list[dict[str, Any]]:
        return store.search(Scope(actions=[action]), size=100)

    (success,) = found("login_success")
    assert success["user.id"] == f"{idp.issuer}|user-1"
    assert success["source.ip"] == "198.51.100.9"
    reasons = sorted(str(e["event.reason"]) for e in found("login_failure"))
    assert reasons == sorted(
        [
            "state_mismatch",
            "unknown_issuer",
            "invalid_token",
            "expired",
            "no_role_mapping",
            "idp_error",
            "throttled",
        ]
    )
    (logout,) = found("logout")
    assert logout["user.id"] == f"{idp.issuer}|user-1"
