"""gateway/audit_api.py through the whole gateway: real policy, real store, scoped answers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import orjson
import pytest

from audit import (
    AuditStore,
    MemorySink,
    OpenSearchStore,
    PersonMap,
    PersonMapFile,
    SQLiteStore,
)
from audit._clisink import ChainedStoreSink
from gateway.app import GatewayApp, create_app
from gateway.audit_api import audit_routes
from gateway.types import Identity, Scope
from policies import PolicyStore
from tests.audit.test_store_contract import record, write
from tests.gateway._asgi import Recorder, Result, call, http_scope
from tests.gateway.test_app import settings


def person(role: str, tenant: str | None = None, sub: str = "u1") -> Identity:
    return Identity(
        issuer="iss", subject=sub, roles=frozenset({role}), tenant=tenant, method="bearer"
    )


class AsWho:
    name: ClassVar[str] = "as_who"

    def __init__(self, who: Identity) -> None:
        self.who = who

    async def authenticate(self, scope: Scope) -> Identity | None:
        return self.who


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    made = SQLiteStore(path=tmp_path / "audit.db")
    made.ensure_schema()
    write(
        made,
        record(0, **{"organization.id": "school-a", "user.id": "iss|pupil"}),
        record(1, **{"organization.id": "school-b", "user.id": "iss|pupil"}),
        record(2, **{"organization.id": "school-a", "http.response.status_code": 403}),
    )
    return made


def gateway(
    store: SQLiteStore, who: Identity, sink: MemorySink | None = None, **options: Any
) -> GatewayApp:
    sink = sink if sink is not None else MemorySink()
    return create_app(
        settings(),
        authorizer=PolicyStore(sink=sink),
        sink=sink,
        forward=Recorder(),
        authenticators=[AsWho(who)],
        routes=audit_routes(store=store, sink=sink, **options),
    )


async def get(app: GatewayApp, path: str, **params: Any) -> Result:
    query = urlencode(params, doseq=True).encode()
    return await call(app, http_scope(path, query=query))


def body(result: Result) -> Any:
    return orjson.loads(result.body)


class TestSearch:
    async def test_officer_searches_everything(self, store: SQLiteStore) -> None:
        """A security officer's search covers every tenant."""
        result = await get(gateway(store, person("security_officer")), "/_gateway/audit")
        assert result.status == 200
        assert body(result)["total"] == {"value": 3, "relation": "eq"}

    async def test_school_admin_sees_own_tenant(self, store: SQLiteStore) -> None:
        """The policy lets a school admin in; the query confines them to their tenant."""
        app = gateway(store, person("school_admin", "school-a"))
        result = await get(app, "/_gateway/audit")
        assert result.status == 200
        assert {e["organization.id"] for e in body(result)["events"]} == {"school-a"}

    async def test_school_admin_asking_other_tenant_is_refused(self, store: SQLiteStore) -> None:
        """A crafted tenant filter is a 403, not a wider search."""
        app = gateway(store, person("school_admin", "school-a"))
        result = await get(app, "/_gateway/audit", tenant=["school-a", "school-b"])
        assert result.status == 403
        assert body(result)["error"] == "search_refused"

    async def test_teacher_is_refused_by_policy(self, store: SQLiteStore) -> None:
        """A teacher never reaches the handler: the policy denies the route."""
        result = await get(gateway(store, person("teacher", "school-a")), "/_gateway/audit")
        assert result.status == 403

    async def test_filter_and_paging(self, store: SQLiteStore) -> None:
        """Filters narrow, and the cursor of one page fetches the next."""
        app = gateway(store, person("security_officer"))
        first = body(await get(app, "/_gateway/audit", subject="iss|pupil", size="1"))
        assert len(first["events"]) == 1
        second = body(
            await get(
                app, "/_gateway/audit", subject="iss|pupil", size="1", cursor=first["next_cursor"]
            )
        )
        assert second["events"][0]["event.id"] != first["events"][0]["event.id"]
        status = body(await get(app, "/_gateway/audit", status="403"))
        assert status["total"]["value"] == 1

    @pytest.mark.parametrize(
        "params",
        [
            {"status": "abc"},
            {"since": "yesterday"},
            {"size": "0"},
            {"size": "x"},
            {"cursor": "garbage"},
            {"order": "sideways"},
            {"source_ip": "999.1.1.1"},
            {"colour": "red"},
        ],
    )
    async def test_bad_filter_is_400(self, store: SQLiteStore, params: dict[str, str]) -> None:
        """A malformed parameter gets a 400 naming the problem."""
        result = await get(gateway(store, person("security_officer")), "/_gateway/audit", **params)
        assert result.status == 400
        assert body(result)["error"] == "bad_filter"

    async def test_search_is_audited(self, store: SQLiteStore) -> None:
        """The search through the API is recorded as audit_search."""
        sink = MemorySink()
        await get(gateway(store, person("security_officer"), sink), "/_gateway/audit", q="x")
        assert "audit_search" in sink.actions()


class TestExport:
    async def test_json_export(self, store: SQLiteStore) -> None:
        """The JSON export holds the subject's events and a cover."""
        app = gateway(store, person("security_officer"))
        result = await get(app, "/_gateway/audit/export", subject="iss|pupil")
        assert result.status == 200
        assert body(result)["cover"]["events"] == 2

    async def test_csv_export_for_school_admin(self, store: SQLiteStore) -> None:
        """A school admin's CSV export holds only their own tenant's events."""
        app = gateway(store, person("school_admin", "school-a"))
        result = await get(app, "/_gateway/audit/export", subject="iss|pupil", format="csv")
        assert result.status == 200
        rows = list(csv.reader(io.StringIO(result.body.decode())))
        assert len(rows[rows.index([]) + 2 :]) == 1

    async def test_staff_named_when_pseudonymisation_is_off(self, store: SQLiteStore) -> None:
        """With pseudonymise_staff off, another staff member's id stays in the export."""
        write(
            store,
            record(
                5,
                **{
                    "user.id": "iss|teacher",
                    "user.roles": ["teacher"],
                    "user.target.id": "iss|pupil",
                },
            ),
        )
        for pseudonymise, shown in ((True, "role:teacher"), (False, "iss|teacher")):
            app = gateway(store, person("security_officer"), pseudonymise_staff=pseudonymise)
            events = body(await get(app, "/_gateway/audit/export", subject="iss|pupil"))["events"]
            assert shown in [e["user.id"] for e in events]

    async def test_unreadable_person_map_is_503(self, store: SQLiteStore, tmp_path: Path) -> None:
        """An export whose person map turned unreadable is refused (503), not incomplete."""
        path = tmp_path / "persons.csv"
        path.write_text("user_id,tenant,platform_id\niss|pupil,school-a,stu-1\n")
        persons = PersonMapFile(path=path)
        path.unlink()
        app = gateway(store, person("security_officer"), persons=persons)
        result = await get(app, "/_gateway/audit/export", subject="iss|pupil")
        assert (result.status, body(result)["error"]) == (503, "person_map_invalid")

    @pytest.mark.parametrize("params", [{}, {"subject": "x", "format": "xml"}])
    async def test_bad_export_request_is_400(
        self, store: SQLiteStore, params: dict[str, str]
    ) -> None:
        """A missing subject or unknown format is a 400."""
        result = await get(
            gateway(store, person("security_officer")), "/_gateway/audit/export", **params
        )
        assert result.status == 400


class TestStats:
    async def test_reviewer_gets_suppressed_table(self, store: SQLiteStore) -> None:
        """A compliance reviewer gets counts; small cells read '<10'."""
        result = await get(gateway(store, person("compliance_reviewer")), "/_gateway/stats")
        assert result.status == 200
        table = body(result)
        assert table["threshold"] == 10
        assert all(row["cells"]["access_denied"] == "<10" for row in table["rows"])

    async def test_minimum_group_size_is_the_setting(self, store: SQLiteStore) -> None:
        """With a minimum group size of 2, counts of 2 and more are published."""
        app = gateway(store, person("compliance_reviewer"), stats_threshold=2)
        table = body(await get(app, "/_gateway/stats", row="organization.id"))
        assert table["threshold"] == 2
        assert table["total"] == 3

    async def test_school_admin_is_refused_by_policy(self, store: SQLiteStore) -> None:
        """The policy keeps school admins out of statistics."""
        result = await get(gateway(store, person("school_admin", "school-a")), "/_gateway/stats")
        assert result.status == 403

    @pytest.mark.parametrize(
        "params", [{"row": "user.id"}, {"column": "source.ip"}, {"since": "soon"}, {"x": "1"}]
    )
    async def test_bad_stats_request_is_400(
        self, store: SQLiteStore, params: dict[str, str]
    ) -> None:
        """Grouping by a person or address, or a bad period, is a 400."""
        app = gateway(store, person("compliance_reviewer"))
        result = await get(app, "/_gateway/stats", **params)
        assert result.status == 400


class TestExportOfReadsByPlatformId:
    """A teacher's read of a pupil's record, recorded by the real gateway (the policy's route
    map gives the bare platform id ``stu-1`` as target), reaches that pupil's export through the
    platform's person map, and no other pupil's; on both stores."""

    PUPIL: ClassVar[str] = "iss|pupil-sanne"
    CLASSMATE: ClassVar[str] = "iss|pupil-daan"

    @pytest.fixture(params=["sqlite", "opensearch"])
    def any_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
        made: AuditStore
        if request.param == "sqlite":
            made = SQLiteStore(path=tmp_path / "audit.db")
        else:
            node = request.getfixturevalue("opensearch_node")
            prefix = request.getfixturevalue("index_prefix")
            made = OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0)
        made.ensure_schema()
        yield made
        made.close()

    def app(self, store: AuditStore, who: Identity) -> GatewayApp:
        sink = ChainedStoreSink(store=store)  # every event the gateway emits, written to the store
        policy = PolicyStore(sink=sink)
        persons = PersonMap(
            [(self.PUPIL, "school-a", "stu-1"), (self.CLASSMATE, "school-a", "stu-2")]
        )
        return create_app(
            settings(),
            authorizer=policy,
            sink=sink,
            forward=Recorder(),
            authenticators=[AsWho(who)],
            routes=audit_routes(store=store, sink=sink, persons=persons),
            personal_data=policy.personal_data,
        )

    async def test_teachers_read_is_in_that_pupils_export_only(self, any_store: AuditStore) -> None:
        """The read is a consultation in stu-1's owner's export and absent from stu-2's."""
        teacher = self.app(any_store, person("teacher", "school-a", sub="teacher-1"))
        read = await get(teacher, "/api/schools/school-a/students/stu-1")
        assert read.status == 200
        any_store.refresh()
        officer = self.app(any_store, person("security_officer", sub="sec"))
        mine = body(await get(officer, "/_gateway/audit/export", subject=self.PUPIL))
        [event] = [e for e in mine["events"] if e["event.action"] == "personal_data_access"]
        assert event["url.path"] == "/api/schools/school-a/students/stu-1"
        assert event["user.id"] == "role:teacher"
        [consultation] = mine["cover"]["consultations"]
        assert consultation["purposes"] == "school_students"
        theirs = body(await get(officer, "/_gateway/audit/export", subject=self.CLASSMATE))
        assert [e["event.action"] for e in theirs["events"]] == []
        assert theirs["cover"]["consultations"] == []
