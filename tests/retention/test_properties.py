"""The retention invariant, property-based (hypothesis), on both stores.

For random events (categories, subjects, tenants, addresses, times), random rules, random holds
of which random ones are released, and a random clock, two runs in sequence (more holds released
in between, the clock moved on) each leave exactly what a plain model of the rules predicts:
no event an active hold covers is deleted or changed; every other event past its category's
retention is deleted; every other event past its full-detail period (and not yet deleted) is
minimised (address truncated, user agent absent, marked); nothing else changes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opensearchpy import OpenSearch

from audit import MemorySink, OpenSearchStore, Record, Scope
from audit._store import truncate_ip
from audit.events import Category, parse_timestamp
from retention import RetentionRule, parse_rules
from retention._holds import Hold, HoldScope, covers, new_hold
from retention._holdstore import OpenSearchHoldStore
from retention._run import RetentionJob
from retention._runstore import OpenSearchRunStore
from tests._opensearch import delete_prefixed, new_prefix
from tests.retention.conftest import NOW, Stores, close, make_stores, record
from tools.opensearch_node import Node

ACTION_OF = {
    Category.AUTHENTICATION: "login_failure",
    Category.ACCESS_DENIED: "access_denied",
    Category.PERSONAL_DATA: "personal_data_access",
    Category.ERRORS: "upstream_error",
    Category.BACKBONE: "audit_search",
}
USERS = ("iss|u0", "iss|u1", "iss|u2")
TENANTS = ("school-a", "school-b")
ADDRESSES = ("192.0.2.7", "192.0.2.200", "198.51.100.9", "2001:db8:1:2::9")
NETWORKS = ("192.0.2.0/24", "198.51.100.9", "2001:db8::/32", "203.0.113.0/24")
#: Few distinct days keep the number of daily indices (and the node's work) small.
DAYS = (3, 20, 45, 88, 95, 200, 370, 500, 740)


@dataclass(frozen=True)
class EventSpec:
    category: Category
    day: int
    minute: int
    user: str | None
    tenant: str | None
    address: str | None
    agent: bool

    def record(self) -> Record:
        fields: dict[str, Any] = {}
        if self.user is not None:
            fields["user.id"] = self.user
        if self.tenant is not None:
            fields["organization.id"] = self.tenant
        if self.address is not None:
            fields["source.ip"] = self.address
        if self.agent:
            fields["user_agent.original"] = "Mozilla/5.0"
        age = timedelta(days=self.day, minutes=self.minute)
        return record(age, ACTION_OF[self.category], **fields)


events_st = st.lists(
    st.builds(
        EventSpec,
        category=st.sampled_from(list(Category)),
        day=st.sampled_from(DAYS),
        minute=st.integers(0, 1439),
        user=st.none() | st.sampled_from(USERS),
        tenant=st.none() | st.sampled_from(TENANTS),
        address=st.none() | st.sampled_from(ADDRESSES),
        agent=st.booleans(),
    ),
    min_size=1,
    max_size=14,
)


@st.composite
def rules_st(draw: st.DrawFn) -> dict[Category, RetentionRule]:
    entries = []
    for category in draw(st.sets(st.sampled_from(list(Category)))):
        delete = draw(st.integers(1, 800))
        full = draw(st.none() | st.integers(1, delete))
        entries.append(f"{category.value}={'-' if full is None else full}/{delete}")
    return parse_rules(entries)


@st.composite
def hold_scope_st(draw: st.DrawFn) -> HoldScope:
    scope: dict[str, Any] = {}
    if draw(st.booleans()):
        scope["user_ids"] = tuple(draw(st.sets(st.sampled_from(USERS), min_size=1)))
    if draw(st.booleans()):
        scope["organization_ids"] = tuple(draw(st.sets(st.sampled_from(TENANTS), min_size=1)))
    if draw(st.booleans()):
        scope["source_ips"] = tuple(draw(st.sets(st.sampled_from(NETWORKS), min_size=1)))
    if draw(st.booleans()):
        scope["categories"] = tuple(
            c.value for c in draw(st.sets(st.sampled_from(list(Category)), min_size=1))
        )
    if draw(st.booleans()) or not scope:
        first, last = sorted(draw(st.lists(st.integers(0, 800), min_size=2, max_size=2)))
        scope["since"] = NOW - timedelta(days=last + 1)
        scope["until"] = NOW - timedelta(days=first)
    return HoldScope(**scope)


@dataclass(frozen=True)
class HoldSpec:
    scope: HoldScope
    released_before: bool  # released before the first run
    released_between: bool  # released between the two runs


holds_st = st.lists(
    st.builds(
        HoldSpec,
        scope=hold_scope_st(),
        released_before=st.booleans(),
        released_between=st.booleans(),
    ),
    max_size=4,
)


def expected(
    doc: dict[str, Any], holds: list[Hold], rules: dict[Category, RetentionRule], now: Any
) -> dict[str, Any] | None:
    """What one run at ``now`` leaves of ``doc``: None (deleted), minimised, or unchanged."""
    if any(covers(hold, doc) for hold in holds):
        return doc
    rule = rules[Category(doc["audit.category"])]
    moment = parse_timestamp(doc["@timestamp"])
    if moment < now - rule.delete_after:
        return None
    if rule.full_detail is not None and moment < now - rule.full_detail:
        minimised = {k: v for k, v in doc.items() if k != "user_agent.original"}
        if isinstance(doc.get("source.ip"), str):
            minimised["source.ip"] = truncate_ip(doc["source.ip"])
        minimised["audit.minimised"] = True
        return minimised
    return doc


def snapshot(stores: Stores) -> dict[str, dict[str, Any]]:
    stores.events.refresh()
    return {d["event.id"]: d for d in stores.events.search(Scope(), size=1000)}


def check_invariant(
    events: list[EventSpec],
    hold_specs: list[HoldSpec],
    rules: dict[Category, RetentionRule],
    clock_days: tuple[int, int],
    stores: Stores,
) -> None:
    results = stores.events.write([e.record() for e in events])
    assert all(r.status == "stored" for r in results), results
    placed = []
    for spec in hold_specs:
        hold = new_hold(
            incident_id="INC-P",
            reason="property",
            scope=spec.scope,
            placed_by="iss|responder",
            placed_at=NOW,
        )
        stores.holds.add(hold)
        placed.append((spec, hold))
    at = NOW
    for run, days in enumerate(clock_days):
        for spec, hold in placed:
            if (spec.released_before if run == 0 else spec.released_between) and (
                stores.holds.get(hold.hold_id).active
            ):
                stores.holds.release(hold.hold_id, by="iss|responder", at=NOW, reason="done")
        active = stores.holds.holds(active=True)
        before = snapshot(stores)
        at = at + timedelta(days=days)
        job = RetentionJob(
            events=stores.events,
            holds=stores.holds,
            rules=rules,
            sink=MemorySink(),
            runs=stores.runs,
        )
        report = job.run(now=at)
        after = snapshot(stores)
        want = {}
        for event_id, doc in before.items():
            kept = expected(doc, active, rules, at)
            if kept is not None:
                want[event_id] = kept
        new = set(after) - set(before)  # the retention_run events the sink did not write
        assert not new
        assert after == want
        assert report.deleted == len(before) - len(want)


@contextmanager
def sqlite_stores() -> Iterator[Stores]:
    with tempfile.TemporaryDirectory() as directory:
        made = make_stores("sqlite", Path(directory) / "audit.db")
        try:
            yield made
        finally:
            close(made)


@contextmanager
def opensearch_stores(node: Node, client: OpenSearch) -> Iterator[Stores]:
    prefix = new_prefix()
    made = Stores(
        OpenSearchStore(url=node.url, index_prefix=prefix, replicas=0),
        OpenSearchHoldStore(url=node.url, index_prefix=prefix, replicas=0),
        OpenSearchRunStore(url=node.url, index_prefix=prefix, replicas=0),
    )
    try:
        for store in (made.events, made.holds, made.runs):
            store.ensure_schema()
        yield made
    finally:
        close(made)
        delete_prefixed(client, prefix)


clock_st = st.tuples(st.integers(0, 400), st.integers(0, 400))
#: No example database: nothing written into the worktree; a failure prints its example.
COMMON = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


class TestInvariant:
    @settings(COMMON, max_examples=60)
    @given(events=events_st, holds=holds_st, rules=rules_st(), clock=clock_st)
    def test_sqlite(
        self,
        events: list[EventSpec],
        holds: list[HoldSpec],
        rules: dict[Category, RetentionRule],
        clock: tuple[int, int],
    ) -> None:
        """SQLite: after each run, held events are untouched, the rest follows the rules."""
        with sqlite_stores() as stores:
            check_invariant(events, holds, rules, clock, stores)

    @pytest.mark.opensearch
    def test_opensearch(self, opensearch_node: Node, opensearch: OpenSearch) -> None:
        """OpenSearch (the real node): the same invariant, fewer examples (each makes indices)."""

        @settings(COMMON, max_examples=10)
        @given(events=events_st, holds=holds_st, rules=rules_st(), clock=clock_st)
        def check(
            events: list[EventSpec],
            holds: list[HoldSpec],
            rules: dict[Category, RetentionRule],
            clock: tuple[int, int],
        ) -> None:
            with opensearch_stores(opensearch_node, opensearch) as stores:
                check_invariant(events, holds, rules, clock, stores)

        check()
