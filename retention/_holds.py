"""Incident holds: the model, validation of what a caller asks for, and whether one covers an
event.

A hold names an incident, a reason and a scope (any of: subjects, source IPs or CIDRs, tenants,
retention categories, a time window). Every condition given must hold for an event to be
covered; within one condition any value may match (the same semantics as :class:`audit.Scope`,
which :meth:`Hold.audit_scope` translates a hold into so the stores can exclude it). A hold with
no condition at all is refused: holding everything is a decision to make explicitly, by naming
the categories. A hold is released, never deleted; an active hold is one not yet released.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from audit import Scope
from audit.events import Category, parse_timestamp
from retention.errors import HoldAlreadyReleased, InvalidHold

__all__ = ["Hold", "HoldScope", "covers", "hold_from_request", "new_hold"]

#: Incident ids as ticket systems write them: letters, digits and ``. _ : / -``.
INCIDENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}")
MAX_REASON: Final = 1000
MAX_VALUES: Final = 1000
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SCOPE_KEYS: Final = frozenset(
    {"user_ids", "source_ips", "organization_ids", "categories", "since", "until"}
)
_REQUEST_KEYS: Final = frozenset({"incident_id", "reason", "scope", "review_at"})


@dataclass(frozen=True, slots=True)
class HoldScope:
    """What a hold protects; empty fields do not restrict, but one field at least is given."""

    user_ids: tuple[str, ...] = ()
    source_ips: tuple[str, ...] = ()  # networks in canonical form (an address is a /32 or /128)
    organization_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def __post_init__(self) -> None:
        if not (
            self.user_ids
            or self.source_ips
            or self.organization_ids
            or self.categories
            or self.since
            or self.until
        ):
            raise InvalidHold("scope: give at least one of " + ", ".join(sorted(_SCOPE_KEYS)))
        for name in ("user_ids", "source_ips", "organization_ids", "categories"):
            values = getattr(self, name)
            if len(values) > MAX_VALUES:
                raise InvalidHold(f"scope.{name}: at most {MAX_VALUES} values")
            if any(not isinstance(v, str) or not v.strip() for v in values):
                raise InvalidHold(f"scope.{name}: values must be non-empty strings")
        networks = []
        for value in self.source_ips:
            try:
                networks.append(str(ipaddress.ip_network(value.strip(), strict=False)))
            except ValueError:
                raise InvalidHold(f"scope.source_ips: not an address or CIDR: {value!r}") from None
        object.__setattr__(self, "source_ips", tuple(networks))
        known = {c.value for c in Category}
        for category in self.categories:
            if category not in known:
                raise InvalidHold(
                    f"scope.categories: unknown category {category!r} "
                    f"(categories: {', '.join(sorted(known))})"
                )
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise InvalidHold(f"scope.{name}: needs a time zone")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidHold("scope: since must be before until")

    def to_json(self) -> dict[str, Any]:
        return {
            "user_ids": list(self.user_ids),
            "source_ips": list(self.source_ips),
            "organization_ids": list(self.organization_ids),
            "categories": list(self.categories),
            "since": _iso(self.since),
            "until": _iso(self.until),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HoldScope:
        """Parse a scope object; raises :class:`InvalidHold` naming the bad key."""
        if not isinstance(data, Mapping):
            raise InvalidHold("scope: expected an object")
        unknown = set(data) - _SCOPE_KEYS
        if unknown:
            raise InvalidHold(f"scope: unknown keys {sorted(unknown)}")
        return cls(
            user_ids=_strings(data, "user_ids"),
            source_ips=_strings(data, "source_ips"),
            organization_ids=_strings(data, "organization_ids"),
            categories=_strings(data, "categories"),
            since=_moment(data.get("since"), "scope.since"),
            until=_moment(data.get("until"), "scope.until"),
        )


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold, placed for an incident; released once, never deleted."""

    hold_id: str
    incident_id: str
    reason: str
    scope: HoldScope
    placed_by: str
    placed_at: datetime
    review_at: datetime | None = None  # a reminder, never an automatic release
    released_by: str | None = None
    released_at: datetime | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def audit_scope(self) -> Scope:
        """The events this hold protects, as the stores select them (for ``exclude``)."""
        s = self.scope
        return Scope(
            user_ids=s.user_ids,
            source_ips=s.source_ips,
            organization_ids=s.organization_ids,
            categories=s.categories,
            since=s.since,
            until=s.until,
        )

    def released(self, *, by: str, at: datetime, reason: str) -> Hold:
        """This hold, released by ``by`` at ``at`` for ``reason``."""
        if not self.active:
            raise HoldAlreadyReleased(f"hold {self.hold_id} was released at {self.released_at}")
        return replace(
            self,
            released_by=_text(by, "released_by", 200),
            released_at=_aware(at, "released_at"),
            release_reason=_text(reason, "reason", MAX_REASON),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "incident_id": self.incident_id,
            "reason": self.reason,
            "scope": self.scope.to_json(),
            "placed_by": self.placed_by,
            "placed_at": _iso(self.placed_at),
            "review_at": _iso(self.review_at),
            "released_by": self.released_by,
            "released_at": _iso(self.released_at),
            "release_reason": self.release_reason,
            "active": self.active,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Hold:
        """A hold as stored (``to_json``); the stores' own documents, so trusted in shape."""
        placed_at = _moment(data["placed_at"], "placed_at")
        if placed_at is None:
            raise InvalidHold("placed_at: required")
        return cls(
            hold_id=str(data["hold_id"]),
            incident_id=str(data["incident_id"]),
            reason=str(data["reason"]),
            scope=HoldScope.from_json(data["scope"]),
            placed_by=str(data["placed_by"]),
            placed_at=placed_at,
            review_at=_moment(data.get("review_at"), "review_at"),
            released_by=data.get("released_by"),
            released_at=_moment(data.get("released_at"), "released_at"),
            release_reason=data.get("release_reason"),
        )


def new_hold(
    *,
    incident_id: str,
    reason: str,
    scope: HoldScope,
    placed_by: str,
    placed_at: datetime,
    review_at: datetime | None = None,
) -> Hold:
    """A new active hold with a fresh id, validated."""
    if not isinstance(incident_id, str) or not INCIDENT_ID.fullmatch(incident_id):
        raise InvalidHold(
            "incident_id: 1-100 letters, digits or . _ : / - (starting with a letter or digit)"
        )
    placed_at = _aware(placed_at, "placed_at")
    if review_at is not None and _aware(review_at, "review_at") <= placed_at:
        raise InvalidHold("review_at: must be after the hold is placed")
    return Hold(
        hold_id=uuid.uuid4().hex,
        incident_id=incident_id,
        reason=_text(reason, "reason", MAX_REASON),
        scope=scope,
        placed_by=_text(placed_by, "placed_by", 200),
        placed_at=placed_at,
        review_at=review_at,
    )


def hold_from_request(body: Any, *, placed_by: str, placed_at: datetime) -> Hold:
    """A new hold from a JSON request body (API or CLI); raises :class:`InvalidHold`."""
    if not isinstance(body, Mapping):
        raise InvalidHold("body: expected a JSON object")
    unknown = set(body) - _REQUEST_KEYS
    if unknown:
        raise InvalidHold(f"body: unknown keys {sorted(unknown)}")
    if "scope" not in body:
        raise InvalidHold("scope: required")
    return new_hold(
        incident_id=body.get("incident_id", ""),  # type-checked by new_hold
        reason=body.get("reason", ""),  # type-checked by new_hold
        scope=HoldScope.from_json(body["scope"]),
        placed_by=placed_by,
        placed_at=placed_at,
        review_at=_moment(body.get("review_at"), "review_at"),
    )


def covers(hold: Hold, event: Mapping[str, Any]) -> bool:
    """Whether the active ``hold`` protects ``event`` (a flat ECS mapping as the stores return).

    Every condition of the scope must hold; an event lacking a field a condition needs is not
    covered by it (as the stores' queries treat a missing field).
    """
    if not hold.active:
        return False
    s = hold.scope
    checks = [
        not s.user_ids or event.get("user.id") in s.user_ids,
        not s.organization_ids or event.get("organization.id") in s.organization_ids,
        not s.categories or event.get("audit.category") in s.categories,
        not s.source_ips or _ip_within(event.get("source.ip"), s.source_ips),
    ]
    if s.since is not None or s.until is not None:
        checks.append(_within(event.get("@timestamp"), s.since, s.until))
    return all(checks)


def _within(stamp: Any, since: datetime | None, until: datetime | None) -> bool:
    if not isinstance(stamp, str):
        return False
    try:
        moment = parse_timestamp(stamp)
    except ValueError:
        return False
    return (since is None or moment >= since) and (until is None or moment < until)


def _ip_within(value: Any, networks: Sequence[str]) -> bool:
    if not isinstance(value, str):
        return False
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n) for n in networks)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise InvalidHold(f"{name}: needs a time zone")
    return moment


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidHold(f"{name}: required, a non-empty string")
    if len(value) > limit:
        raise InvalidHold(f"{name}: at most {limit} characters")
    if _CONTROL.search(value):
        raise InvalidHold(f"{name}: control characters are not allowed")
    return value.strip()


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, ())
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidHold(f"scope.{key}: expected a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise InvalidHold(f"scope.{key}: expected a list of strings")
    return tuple(value)


def _moment(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _aware(value, name)
    if not isinstance(value, str):
        raise InvalidHold(f"{name}: expected an ISO-8601 time with a time zone")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise InvalidHold(f"{name}: expected an ISO-8601 time with a time zone") from None
