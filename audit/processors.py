"""The structlog processor chain that turns an emitted mapping into a stored audit document.

Separate from the application's logging: the chain is built here and run by the pipeline's
worker (or by a logger made with :func:`audit_logger`), never installed with
``structlog.configure``. The order (:func:`audit_processors`)::

    merge_contextvars            request id, subject, ... bound by the gateway (caller wins)
    Normalise                    aliases → ECS names, unknown keys → labels, long strings cut
    stamp                        @timestamp (UTC), event.id (UUIDv7), schema version, category
    RedactSecrets                tokens, cookies, passwords, codes, secret query params, JWTs,
                                 bearer/basic credentials: in any field, key or free text
    neutralise_control_chars     newlines and control/bidi characters escaped (log injection)
    Pseudonymise (optional)      keyed HMAC of fields configured as sensitive
    render_json                  orjson, one line of bytes

A processor with options is a small class, one without is a function; each takes and returns
a plain dict, so each is tested on its own. The pipeline passes the time of ``emit`` as
``_emitted_ns`` so the stamp is the moment the event happened, not when it was processed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from structlog.contextvars import merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from audit.events import (
    ECS_VERSION,
    FIELDS,
    SCHEMA_VERSION,
    Category,
    action_spec,
    field,
    new_event_id,
)

__all__ = [
    "EMITTED_NS",
    "REDACTED",
    "Normalise",
    "Pseudonymise",
    "Pseudonymiser",
    "RedactSecrets",
    "audit_processors",
    "neutralise_control_chars",
    "render_json",
    "stamp",
]

#: The key under which the pipeline hands the time of ``emit`` (ns since the epoch) to ``stamp``.
EMITTED_NS: Final = "_emitted_ns"
#: What a secret is replaced with.
REDACTED: Final = "[REDACTED]"
#: Strings longer than this are cut (keeps documents and the spool bounded).
DEFAULT_MAX_STRING: Final = 4096

#: Short names callers or context variables may use, and the ECS field they mean.
ALIASES: Final[dict[str, str]] = {
    "event": "event.action",  # structlog's positional event name
    "action": "event.action",
    "outcome": "event.outcome",
    "reason": "event.reason",
    "reason_id": "event.reason",
    "request_id": "trace.id",
    "trace_id": "trace.id",
    "user_id": "user.id",
    "subject": "user.id",
    "roles": "user.roles",
    "tenant": "organization.id",
    "client_ip": "source.ip",
    "user_agent": "user_agent.original",
    "method": "http.request.method",
    "path": "url.path",
    "status_code": "http.response.status_code",
    "rule": "rule.name",
}

_FIELD_NAMES: Final = frozenset(f.name for f in FIELDS)

# --- 1. normalise -----------------------------------------------------------------------------


class Normalise:
    """Map aliases to ECS names, move keys the schema does not know into ``labels``, cut strings.

    Nothing is dropped: an unknown key ``foo.bar`` becomes ``labels.foo_bar`` (as a string),
    which the strict index mapping accepts. The internal ``_emitted_ns`` key is kept for
    ``stamp``.
    """

    def __init__(self, *, max_string: int = DEFAULT_MAX_STRING) -> None:
        self._max = max_string

    def _cut(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) > self._max:
            return value[: self._max] + "…[truncated]"
        if isinstance(value, list | tuple | set | frozenset):
            return [self._cut(item) for item in value]
        return value

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        out: dict[str, Any] = {}
        labels: dict[str, Any] = {}
        limit = self._max
        for key, raw in event_dict.items():
            if raw is None:
                continue
            kind = type(raw)
            plain = (kind is str and len(raw) <= limit) or kind in _SCALARS
            value = raw if plain else self._cut(raw)
            if key in _FIELD_NAMES and key != "labels":
                out[key] = value  # the ECS name beats an alias, whatever the order
            else:
                self._place(key, value, event_dict, out, labels)
        if labels:
            out["labels"] = labels
        return out

    def _place(
        self,
        key: str,
        value: Any,
        event: Mapping[str, Any],
        out: dict[str, Any],
        labels: dict[str, Any],
    ) -> None:
        """Route a key that is not a plain schema field: labels, alias, or a new label."""
        if key == "labels":
            if isinstance(value, Mapping):
                for label, inner in value.items():
                    labels[_label_key(str(label))] = _label_value(self._cut(inner))
            else:
                labels["labels"] = _label_value(value)
        elif key == EMITTED_NS:
            out[key] = value
        elif key in ALIASES:
            if ALIASES[key] not in event:
                out[ALIASES[key]] = value
        elif key.startswith("labels."):
            labels[_label_key(key[len("labels.") :])] = _label_value(value)
        else:
            labels[_label_key(key)] = _label_value(value)


def _label_key(key: str) -> str:
    return key.replace(".", "_")


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return orjson.dumps(value, default=str).decode()


# --- 2. stamp ---------------------------------------------------------------------------------


_second: list[Any] = [None, ""]  # the last second formatted, and its text (events cluster)


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        cached[1] = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached[0] = seconds
    return f"{cached[1]}.{rest // 1000:06d}Z"


def stamp(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Set ``@timestamp`` (UTC), ``event.id``, schema and ECS versions, kind and categories.

    The time is the moment of ``emit`` when the pipeline passed it, else now. Defaults for
    ``event.category``/``event.type`` and the retention category ``audit.category`` come from
    the action taxonomy; an action outside it is kept, classed as the backbone's trail and
    flagged ``labels.unknown_action``.
    """
    ns = event_dict.pop(EMITTED_NS, None)
    if not isinstance(ns, int):
        ns = time.time_ns()
    event_dict.setdefault("@timestamp", _iso(ns))
    event_dict.setdefault("event.id", new_event_id(ns))
    event_dict["ecs.version"] = ECS_VERSION
    event_dict["audit.schema_version"] = SCHEMA_VERSION
    event_dict.setdefault("event.kind", "event")
    spec = action_spec(event_dict.get("event.action"))
    if spec is None:
        event_dict.setdefault("event.action", "unknown")
        event_dict.setdefault("labels", {})["unknown_action"] = "true"
        event_dict["audit.category"] = Category.BACKBONE.value
    else:
        event_dict.setdefault("event.category", list(spec.ecs_category))
        event_dict.setdefault("event.type", list(spec.ecs_type))
        event_dict["audit.category"] = spec.category.value
    for name in ("event.category", "event.type", "user.roles", "audit.data_categories"):
        value = event_dict.get(name)
        if isinstance(value, str):
            event_dict[name] = [value]
        elif isinstance(value, tuple | set | frozenset):
            event_dict[name] = sorted(value)
    return event_dict


# --- fast paths -----------------------------------------------------------------------------


_SCALARS: Final = frozenset({int, float, bool, type(None)})


def _texts(event: Mapping[str, Any], skip_keys: frozenset[str]) -> str | None:  # noqa: PLR0912
    """Every key (but ``skip_keys``) and string value, joined by spaces; None for shapes
    other than the usual (strings, lists of strings, one level of mapping): the slow path."""
    parts: list[str] = []
    append = parts.append
    for key, value in event.items():
        if key not in skip_keys:
            append(key)
        kind = type(value)
        if kind is str:
            append(value)
        elif kind in _SCALARS:
            continue
        elif kind is list:
            for item in value:
                if type(item) is str:
                    append(item)
                elif type(item) not in _SCALARS:
                    return None
        elif kind is dict:
            for inner_key, inner in value.items():
                if type(inner_key) is not str:
                    return None
                append(inner_key)
                if type(inner) is str:
                    append(inner)
                elif type(inner) not in _SCALARS:
                    return None
        else:
            return None
    return " ".join(parts)


# --- 3. redact secrets ------------------------------------------------------------------------

# Names of secrets (not secrets themselves).
_SECRET_WORDS = "|".join(
    (
        r"pass(?:word|wd|phrase)?|pwd|secret|client[_-]?secret|api[_-]?key|apikey",
        r"(?:access|refresh|id|session|auth|bearer|csrf|xsrf)?[_-]?token",
        r"authorization|auth|cookie|set[_-]cookie|session(?:[_-]?id)?|sid",
        r"code|code[_-]verifier|assertion|saml[_-]?response|private[_-]?key|otp|pin",
        r"key|signature|sig",  # API keys in ?key=, signed URLs (X-Amz-Signature, SAS sig=)
    )
)
#: A key whose value is always a secret (whole-key match, case-insensitive).
_SECRET_KEY = re.compile(rf"(?i)^(?:[\w.-]*[_.-])?(?:{_SECRET_WORDS})$")
#: Schema fields are never secrets by name (``http.response.status_code`` ends in "code",
#: ``audit.token_hash`` holds a hash by design); their text is still scanned.
_SAFE_KEYS: Final = frozenset(f.name for f in FIELDS)

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s,;\"']+")
_OTHER_SCHEME = re.compile(r"(?i)\b(basic|digest|negotiate)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_QUERY_SECRET = re.compile(rf"(?i)([?&;#](?:{_SECRET_WORDS})=)[^&#\s\"']*")
_KV_SECRET = re.compile(
    rf"(?i)((?<![a-z0-9])(?:{_SECRET_WORDS})[\"']?\s*[=:]\s*[\"']?)(?!\[REDACTED)"
    r"[^\s&,;\"'}]+"
)
_COOKIE_HEADER = re.compile(r"(?i)\b((?:set-)?cookie\s*:\s*)[^\r\n]*")


def _may_hold_secret(lower: str) -> bool:
    """Cheap substring checks: text without any of these holds no secret we could detect."""
    return (
        "pass" in lower or "pwd" in lower or "secret" in lower or "key" in lower
        or "token" in lower or "auth" in lower or "cookie" in lower or "session" in lower
        or "sid" in lower or "code" in lower or "assertion" in lower or "saml" in lower
        or "otp" in lower or "pin" in lower or "eyj" in lower or "bearer" in lower
        or "sig" in lower
        or "basic" in lower or "digest" in lower or "negotiate" in lower
    )  # fmt: skip


#: Short strings seen to be clean (never a string that needed redaction), bounded.
_CLEAN: dict[str, None] = {}
_CLEAN_MAX: Final = 50_000


def redact_text(text: str) -> str:
    """Replace every secret-looking part of free text with ``[REDACTED]``."""
    if text in _CLEAN:
        return text
    if not _may_hold_secret(text.lower()):
        if len(text) <= 128:
            if len(_CLEAN) >= _CLEAN_MAX:
                _CLEAN.clear()
            _CLEAN[text] = None
        return text
    text = _COOKIE_HEADER.sub(rf"\1{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    text = _OTHER_SCHEME.sub(rf"\1\2{REDACTED}", text)
    text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    return _KV_SECRET.sub(rf"\1{REDACTED}", text)


class RedactSecrets:
    """Replace secrets wherever they are: values of secret-named keys, and secrets in text.

    A key named like a secret (``password``, ``access_token``, ``labels.cookie``, ``code``)
    that is not a schema field loses its whole value; every string is scanned for JWTs,
    ``Bearer``/``Basic`` credentials, ``Cookie:`` headers, secret query parameters and
    ``password=...`` pairs.
    """

    def __init__(self, *, safe_keys: Iterable[str] = _SAFE_KEYS) -> None:
        self._safe = frozenset(safe_keys)
        self._secret_key: dict[str, bool] = {}  # memo: keys repeat across events

    def _is_secret_key(self, key: str) -> bool:
        known = self._secret_key.get(key)
        if known is None:
            known = key not in self._safe and _SECRET_KEY.match(key) is not None
            if len(self._secret_key) < 10_000:
                self._secret_key[key] = known
        return known

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value)
        if isinstance(value, list):
            return [self._value(item) for item in value]
        if isinstance(value, Mapping):
            return self._mapping(value)
        return value

    def _mapping(self, mapping: Mapping[Any, Any]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, value in mapping.items():
            if not isinstance(key, str):
                out[key] = self._value(value)
            elif self._is_secret_key(key):
                out[redact_text(key)] = REDACTED
            else:
                out[redact_text(key)] = self._value(value)
        return out

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        text = _texts(event_dict, self._safe)
        if text is not None and not _may_hold_secret(text.lower()):
            return event_dict  # nothing in any key or value looks like a secret
        return self._mapping(event_dict)


# --- 4. neutralise log injection --------------------------------------------------------------

# C0 and C1 controls, DEL, line/paragraph separators, bidi overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _neutralise(value: Any) -> Any:
    if isinstance(value, str):
        # isprintable() is False for every character _CONTROL matches (Cc, Zl, Zp, Cf).
        return value if value.isprintable() else _CONTROL.sub(_escape, value)
    if isinstance(value, list):
        return [_neutralise(item) for item in value]
    if isinstance(value, Mapping):
        return {_neutralise(k): _neutralise(v) for k, v in value.items()}
    return value


def neutralise_control_chars(
    _logger: WrappedLogger, _name: str, event_dict: EventDict
) -> EventDict:
    """Escape newlines, control and bidi characters in every key and string (``\\x0a``)."""
    text = _texts(event_dict, frozenset())
    if text is not None and text.isprintable():
        return event_dict
    return {_neutralise(k): _neutralise(v) for k, v in event_dict.items()}


# --- 5. pseudonymise --------------------------------------------------------------------------

PSEUDONYM_PREFIX: Final = "pn1"


class Pseudonymiser:
    """Keyed HMAC-SHA256 pseudonyms: the same value always maps to the same pseudonym.

    Irreversible without the key. Authorised staff look a person up the way Vault's
    ``sys/audit-hash`` works: they compute the pseudonym of a known value
    (:meth:`pseudonym`, or ``python -m audit.lookup``) and search for it. ``key_id`` is
    stored in the pseudonym so a key can be rotated.
    """

    def __init__(self, *, key: bytes, key_id: str = "k1") -> None:
        if len(key) < 32:
            raise ValueError("the pseudonymisation key must be at least 32 bytes")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", key_id):
            raise ValueError("key_id must be 1-16 characters of [A-Za-z0-9_-]")
        self._key = key
        self.key_id = key_id

    def pseudonym(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{PSEUDONYM_PREFIX}:{self.key_id}:{digest}"

    def is_pseudonym(self, value: str) -> bool:
        return value.startswith(f"{PSEUDONYM_PREFIX}:{self.key_id}:")


class Pseudonymise:
    """Replace the values of the configured fields with their keyed pseudonym.

    Fields of type ``ip`` cannot be pseudonymised (the index maps them as addresses); they are
    minimised by retention instead.
    """

    def __init__(self, *, pseudonymiser: Pseudonymiser, fields: Iterable[str]) -> None:
        self._p = pseudonymiser
        self._fields = frozenset(fields)
        for name in self._fields:
            spec = field(name)
            if spec is None and not name.startswith("labels."):
                raise ValueError(f"unknown field for pseudonymisation: {name!r}")
            if spec is not None and spec.type not in ("keyword", "text"):
                raise ValueError(f"field {name!r} of type {spec.type} cannot be pseudonymised")

    def _one(self, value: Any) -> Any:
        if isinstance(value, str):
            return value if self._p.is_pseudonym(value) else self._p.pseudonym(value)
        if isinstance(value, list):
            return [self._one(item) for item in value]
        return value

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        labels = event_dict.get("labels")
        for name in self._fields:
            if name.startswith("labels.") and isinstance(labels, MutableMapping):
                key = _label_key(name[len("labels.") :])
                if key in labels:
                    labels[key] = self._one(labels[key])
            elif name in event_dict:
                event_dict[name] = self._one(event_dict[name])
        return event_dict


# --- 6. render --------------------------------------------------------------------------------


def render_json(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> bytes:
    """One line of JSON (orjson; non-JSON values as strings)."""
    return orjson.dumps(event_dict, default=str)


# --- the chain --------------------------------------------------------------------------------


def audit_processors(
    *,
    pseudonymise: Pseudonymise | None = None,
    render: bool = True,
    max_string: int = DEFAULT_MAX_STRING,
) -> list[Processor]:
    """The audit chain in its fixed order; ``render=False`` leaves the final dict."""
    chain: list[Processor] = [
        merge_contextvars,
        Normalise(max_string=max_string),
        stamp,
        RedactSecrets(),
        neutralise_control_chars,
    ]
    if pseudonymise is not None:
        chain.append(pseudonymise)
    if render:
        chain.append(render_json)
    return chain


def run_chain(chain: Iterable[Processor], event: Mapping[str, Any]) -> Any:
    """Apply ``chain`` to a copy of ``event``, as structlog's engine does (one loop)."""
    result: Any = dict(event)
    for processor in chain:
        result = processor(None, "info", result)
    return result
