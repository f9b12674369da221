"""The policy language's small grammar: path patterns, scopes, effects, tenant ids, requests.

Path patterns use Casbin's ``keyMatch2`` syntax, restricted so that every pattern is anchored
and segment-bounded: literal segments of ``[A-Za-z0-9_~-]`` and ``\\.`` (a literal dot; a bare
``.`` is a regex wildcard in keyMatch2 and is refused), ``:name`` for exactly one segment, and
``*`` only as the last segment (``/x/*`` matches ``/x/`` and everything below it, not ``/x``).
:func:`keymatch2_regex` and :func:`keyget2_regex` turn a pattern into the very regular
expressions pycasbin builds for ``keyMatch2`` and ``keyGet2``, so both engines agree.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "EFFECTS",
    "METHOD_WILDCARD",
    "SCOPES",
    "TENANT_VAR",
    "Effect",
    "Scope",
    "keyget2_regex",
    "keymatch2_regex",
    "literal_prefix",
    "pattern_problem",
    "valid_method",
    "valid_path",
    "valid_tenant",
]

Scope = Literal["all", "tenant", "own"]
Effect = Literal["allow", "deny"]
SCOPES: Final = frozenset({"all", "tenant", "own"})
EFFECTS: Final = frozenset({"allow", "deny"})
METHOD_WILDCARD: Final = "*"
TENANT_VAR: Final = "tenant"

#: pycasbin's own pattern for ``:name`` in keyMatch2/keyGet2 (casbin/util/builtin_operators.py).
_KEY_MATCH2_PATTERN: Final = re.compile(r"(.*?):[^\/]+(.*?)")

_LITERAL_SEGMENT: Final = re.compile(r"(?:[A-Za-z0-9_~-]|\\\.)+")
_PARAM_SEGMENT: Final = re.compile(r":[a-z][a-z0-9_]*")
_METHOD: Final = re.compile(r"[A-Z]{1,20}")
#: Tenant ids: letters, digits, dot, dash, underscore; no pattern characters (`*`, `:`, `/`...).
_TENANT: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")
#: Control characters: `$` in a regex also matches before a trailing newline.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH_LENGTH: Final = 8192


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid path pattern, or ``None`` when it is."""
    if not pattern.startswith("/"):
        return "a path pattern starts with /"
    if pattern == "/":
        return None
    segments = pattern[1:].split("/")
    params = [segment for segment in segments if segment.startswith(":")]
    if len(params) != len(set(params)):
        return "a parameter appears twice"
    for position, segment in enumerate(segments):
        problem = _segment_problem(segment, last=position == len(segments) - 1)
        if problem is not None:
            return problem
    return None


def _segment_problem(segment: str, *, last: bool) -> str | None:
    if segment == "*":
        return None if last else "* is allowed only as the last segment"
    if segment == "":
        return "empty segment (// or a trailing /)"
    if segment.startswith(":"):
        return None if _PARAM_SEGMENT.fullmatch(segment) else f"bad parameter name {segment!r}"
    if not _LITERAL_SEGMENT.fullmatch(segment):
        return (
            f"segment {segment!r} has characters outside [A-Za-z0-9_~-] "
            "(write a literal dot as \\.)"
        )
    return None


def keymatch2_regex(pattern: str) -> str:
    """The regular expression pycasbin's ``keyMatch2`` matches a path against."""
    key2 = pattern.replace("/*", "/.*")
    key2 = _KEY_MATCH2_PATTERN.sub(r"\g<1>[^\/]+\g<2>", key2, 0)
    if key2 == "*":
        key2 = "(.*)"
    return "^" + key2 + "$"


def keyget2_regex(pattern: str, path_var: str) -> tuple[str, int | None]:
    """pycasbin's ``keyGet2`` expression and the group holding ``path_var`` (``None``: absent)."""
    key2 = pattern.replace("/*", "/.*")
    keys = re.findall(":[^/]+", key2)
    key2 = _KEY_MATCH2_PATTERN.sub(r"\g<1>([^\/]+)\g<2>", key2, 0)
    if key2 == "*":
        key2 = "(.*)"
    group = next((i + 1 for i, key in enumerate(keys) if key[1:] == path_var), None)
    return "^" + key2 + "$", group


def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The pattern's leading literal segments, unescaped: ``/api/x/:id`` -> ``("api", "x")``.

    Every path the pattern matches starts with exactly these segments (for indexing).
    """
    prefix: list[str] = []
    if pattern == "/":
        return ()
    for segment in pattern[1:].split("/"):
        if not _LITERAL_SEGMENT.fullmatch(segment):
            break
        prefix.append(segment.replace("\\.", "."))
    return tuple(prefix)


def valid_tenant(tenant: str) -> bool:
    return _TENANT.fullmatch(tenant) is not None


def valid_method(method: str) -> bool:
    return _METHOD.fullmatch(method) is not None


def valid_path(path: str) -> bool:
    return path.startswith("/") and len(path) <= MAX_PATH_LENGTH and _CONTROL.search(path) is None
