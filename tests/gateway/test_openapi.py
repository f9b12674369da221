"""gateway/openapi.py: the document matches what the gateway mounts and what it answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.routing import Route

from audit._search import FILTER_PARAMS
from gateway._wiring import build
from gateway.app import OwnEndpoints
from gateway.openapi import NOT_DESCRIBED, OPENAPI_PATH, OPERATIONS, openapi_document
from gateway.types import Identity
from tests.gateway._api_app import Conformance, api_app, person
from tests.gateway._asgi import Result, call, http_scope
from tests.gateway.test_wiring import settings_for

DOCUMENT = openapi_document()
OFFICER = person("security_officer", sub="sec")
RESPONDER = person("incident_responder", sub="ir")
ADMIN_A = person("school_admin", "school-a", sub="adm")
REVIEWER = person("compliance_reviewer", sub="cr")


def _own_endpoints(app: Any) -> OwnEndpoints:
    """Walk the built stage chain down to the router of the gateway's own endpoints."""
    todo, seen = [app], set()
    while todo:
        node = todo.pop()
        if isinstance(node, OwnEndpoints):
            return node
        if id(node) in seen or not hasattr(node, "__dict__"):
            continue
        seen.add(id(node))
        todo += [v for v in vars(node).values() if type(v).__module__.startswith("gateway.")]
    raise AssertionError("no OwnEndpoints in the built gateway")


def mounted(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the gateway mounts under /_gateway (HEAD goes with GET)."""
    router = _own_endpoints(app)._router
    assert all(isinstance(route, Route) for route in router.routes), "a Mount is not compared"
    return {
        (method, route.path)
        for route in router.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def described() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


class TestDocument:
    def test_is_openapi_3_1(self) -> None:
        """The document declares OpenAPI 3.1 and the JSON Schema 2020-12 dialect."""
        assert DOCUMENT["openapi"] == "3.1.0"
        assert DOCUMENT["jsonSchemaDialect"].endswith("/2020-12/schema")

    def test_operation_ids_are_unique(self) -> None:
        """Every operation has its own operationId."""
        ids = [op.operation_id for op in OPERATIONS]
        assert len(ids) == len(set(ids))

    def test_every_reference_resolves(self) -> None:
        """Every $ref names a schema in components."""
        text = orjson.dumps(DOCUMENT).decode()
        names = {part.split('"')[0] for part in text.split('"$ref":"#/components/schemas/')[1:]}
        assert names
        assert names <= set(DOCUMENT["components"]["schemas"])

    def test_search_parameters_are_the_parsers(self) -> None:
        """The search operation documents exactly the filters parse_filters takes, plus paging."""
        search = DOCUMENT["paths"]["/_gateway/audit"]["get"]
        names = {p["name"] for p in search["parameters"]}
        assert names == FILTER_PARAMS | {"size", "cursor", "order"}

    def test_every_authenticated_operation_lists_the_stage_errors(self) -> None:
        """401 and 403 are documented wherever a login is needed."""
        for op in OPERATIONS:
            if not op.public:
                assert {401, 403} <= set(op.answers), op.operation_id


class TestMountedRoutes:
    def test_document_covers_every_mounted_route(self, tmp_path: Path) -> None:
        """Every /_gateway route the built gateway mounts is described or deliberately left
        out (with a reason), and the document describes nothing that is not mounted."""
        issuer = "https://idp.example/.well-known/openid-configuration"
        signing_key = tmp_path / "audit-signing.pem"  # mounts /_gateway/audit-keys.json too
        signing_key.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cfg = settings_for(
            tmp_path,
            "http://127.0.0.1:9",
            GATEWAY_AUDIT__SIGNING_KEY_FILE=str(signing_key),
            GATEWAY_OIDC__ISSUERS__TESTIDP__DISCOVERY_URL=issuer,
            GATEWAY_OIDC__ISSUERS__TESTIDP__CLIENT_ID="gateway",
            GATEWAY_OIDC__ISSUERS__TESTIDP__CLIENT_SECRET="secret",
            GATEWAY_OIDC__ISSUERS__TESTIDP__CLAIMS="devidp",
            GATEWAY_SESSION__KEYS="a" * 43,
        )
        routes = mounted(build(cfg).app)
        assert ("GET", OPENAPI_PATH) in routes
        assert routes == described() | set(NOT_DESCRIBED)
        assert not described() & set(NOT_DESCRIBED)


async def get(app: Any, path: str, **params: Any) -> Result:
    return await call(app, http_scope(path, query=urlencode(params, doseq=True).encode()))


async def post(app: Any, path: str, body: Any) -> Result:
    scope = http_scope(path, method="POST", headers=[("content-type", "application/json")])
    return await call(app, scope, orjson.dumps(body))


class TestServed:
    async def test_officer_reads_the_document(self, tmp_path: Path) -> None:
        """The document served is the one built from the description."""
        result = await get(api_app(tmp_path, OFFICER), OPENAPI_PATH)
        assert result.status == 200
        assert orjson.loads(result.body) == DOCUMENT

    @pytest.mark.parametrize(
        ("who", "status"),
        [(None, 401), (person("teacher", "school-a"), 403), (person("student", "school-a"), 403)],
    )
    async def test_others_may_not(self, tmp_path: Path, who: Identity | None, status: int) -> None:
        """Anonymous callers and roles that call none of these APIs do not get it."""
        result = await get(api_app(tmp_path, who), OPENAPI_PATH)
        assert result.status == status


def _hold(incident: str = "INC-1") -> dict[str, Any]:
    return {"incident_id": incident, "reason": "phishing", "scope": {"categories": ["errors"]}}


class TestAnswersConform:
    """Real answers of every described operation validate against the document."""

    checker = Conformance(DOCUMENT)

    def check(self, method: str, template: str, result: Result) -> None:
        problems = self.checker.problems(
            method, template, result.status, result.header("content-type"), result.body
        )
        assert problems == []

    @pytest.mark.parametrize(
        ("who", "params", "status"),
        [
            (OFFICER, {}, 200),
            (OFFICER, {"q": "students", "size": "2", "order": "desc"}, 200),
            (ADMIN_A, {"source_ip": "192.0.2.0/24"}, 200),
            (OFFICER, {"status": "abc"}, 400),
            (ADMIN_A, {"tenant": "school-b"}, 403),
            (person("teacher", "school-a"), {}, 403),
            (None, {}, 401),
        ],
    )
    async def test_search(
        self, tmp_path: Path, who: Identity | None, params: dict[str, str], status: int
    ) -> None:
        """Search answers (pages, bad filters, refusals) conform."""
        result = await get(api_app(tmp_path, who), "/_gateway/audit", **params)
        assert result.status == status
        self.check("GET", "/_gateway/audit", result)

    async def test_search_next_page(self, tmp_path: Path) -> None:
        """The second page, reached with the cursor, conforms."""
        app = api_app(tmp_path, OFFICER)
        first = orjson.loads((await get(app, "/_gateway/audit", size="3")).body)
        result = await get(app, "/_gateway/audit", size="3", cursor=first["next_cursor"])
        assert result.status == 200
        self.check("GET", "/_gateway/audit", result)

    @pytest.mark.parametrize("kind", ["json", "csv"])
    async def test_export(self, tmp_path: Path, kind: str) -> None:
        """The export conforms, as JSON and as CSV."""
        app = api_app(tmp_path, ADMIN_A)
        result = await get(
            app, "/_gateway/audit/export", subject="iss|pupil-school-a-1", format=kind
        )
        assert result.status == 200
        self.check("GET", "/_gateway/audit/export", result)

    @pytest.mark.parametrize(
        ("who", "params", "status"),
        [(REVIEWER, {}, 200), (REVIEWER, {"row": "user.id"}, 400), (ADMIN_A, {}, 403)],
    )
    async def test_stats(
        self, tmp_path: Path, who: Identity, params: dict[str, str], status: int
    ) -> None:
        """Statistics answers conform."""
        result = await get(api_app(tmp_path, who), "/_gateway/stats", **params)
        assert result.status == status
        self.check("GET", "/_gateway/stats", result)

    async def test_holds_lifecycle(self, tmp_path: Path) -> None:
        """Placing, listing, releasing, releasing again and an unknown hold all conform."""
        app = api_app(tmp_path, RESPONDER)
        placed = await post(app, "/_gateway/holds", _hold())
        assert placed.status == 201
        self.check("POST", "/_gateway/holds", placed)
        listed = await get(app, "/_gateway/holds", state="active")
        assert listed.status == 200
        self.check("GET", "/_gateway/holds", listed)
        release = "/_gateway/holds/{hold_id}/release"
        hold_id = orjson.loads(placed.body)["hold"]["hold_id"]
        path = f"/_gateway/holds/{hold_id}/release"
        for status in (200, 409):
            result = await post(app, path, {"reason": "closed"})
            assert result.status == status
            self.check("POST", release, result)
        missing = await post(app, "/_gateway/holds/nope/release", {"reason": "closed"})
        assert missing.status == 404
        self.check("POST", release, missing)
        bad = await post(app, "/_gateway/holds", {"incident_id": "INC-2"})
        assert bad.status == 400
        self.check("POST", "/_gateway/holds", bad)

    async def test_officer_may_not_place_holds(self, tmp_path: Path) -> None:
        """The policy's refusal of a security officer placing a hold conforms."""
        result = await post(api_app(tmp_path, OFFICER), "/_gateway/holds", _hold())
        assert result.status == 403
        self.check("POST", "/_gateway/holds", result)

    async def test_revoke_refused_by_policy(self, tmp_path: Path) -> None:
        """A security officer's session revocation is refused by the policy, as documented."""
        result = await post(
            api_app(tmp_path, OFFICER), "/_gateway/sessions/revoke", {"user_id": "a|b"}
        )
        assert result.status == 403
        self.check("POST", "/_gateway/sessions/revoke", result)

    @pytest.mark.parametrize("path", ["/_gateway/health", "/_gateway/ready", OPENAPI_PATH])
    async def test_operations_endpoints(self, tmp_path: Path, path: str) -> None:
        """Health, readiness and the document itself conform."""
        result = await get(api_app(tmp_path, OFFICER), path)
        assert result.status == 200
        self.check("GET", path, result)
