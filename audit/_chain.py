"""Tamper evidence, the primitives: canonical events, signed records, keys.

An event's **canonical serialisation** is its JSON with sorted keys (orjson), after the values
are put in the one form both stores give back: ``None`` dropped, dates as UTC with
microseconds and ``Z``, addresses in their compressed form, list fields always lists, label
values strings. So an event hashes the same as shipped, as read back from OpenSearch and as
read back from SQLite, and any change to a stored field changes its hash.

A **record** (a digest of one interval, or a retention record) is a flat JSON object signed
with Ed25519 over its canonical serialisation without the ``signature`` field. Its **hash**
(what the next digest names as ``chain.previous``) covers the signature too.

A :class:`Keyring` holds Ed25519 keys by key id (the first 16 hex digits of the SHA-256 of the
raw public key). The first private key signs; every public key verifies, so a rotated-out key
keeps older intervals verifiable. Public keys are published as a JWK set (``OKP``/``Ed25519``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.events import FIELDS, parse_timestamp

__all__ = [
    "SIGNATURE",
    "Keyring",
    "canonical_event",
    "event_hash",
    "events_hash",
    "key_id",
    "load_private_keys",
    "record_hash",
    "sign_record",
    "verify_record",
]

#: The field of a record that holds its signature (base64url, no padding).
SIGNATURE: Final = "signature"
KEY_ID: Final = "key.id"


_CANONICAL_DATE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _date(value: str) -> str:
    if _CANONICAL_DATE.fullmatch(value):  # already the form (the writer's stamps are)
        return value
    try:
        return parse_timestamp(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return value


@functools.lru_cache(maxsize=65536)  # addresses repeat; parsing one costs microseconds
def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _as_date(value: Any) -> Any:
    return _date(value) if isinstance(value, str) else value


def _as_ip(value: Any) -> Any:
    return _ip(value) if isinstance(value, str) else value


def _as_labels(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _fixer(f: Any) -> Callable[[Any], Any] | None:
    if f.multi:
        return _as_list
    return {"date": _as_date, "ip": _as_ip, "object": _as_labels}.get(f.type)


#: Only the fields whose stored form can differ get a function (the hot path of the shipper).
_FIXES: Final = {f.name: fix for f in FIELDS if (fix := _fixer(f)) is not None}
_FIXED: Final = frozenset(_FIXES)


def canonical_event(doc: Mapping[str, Any] | bytes) -> bytes:
    """The canonical serialisation of an event (a stored document or its JSON bytes).

    The shipper hashes every event it stores (bench/audit_chain.py), so this is written for
    speed: nulls are looked for before anything is copied (a rendered event has none), and
    only the fields present that can need a fix are visited (a set intersection), not every
    field. The bytes are the same as a plain loop's over every field (tests/audit/test_chain.py
    compares them), so digests signed before verify alike."""
    normal: dict[str, Any] = orjson.loads(doc) if isinstance(doc, bytes) else dict(doc)
    for value in normal.values():
        if value is None:
            normal = {k: v for k, v in normal.items() if v is not None}
            break
    fixes = _FIXES
    for name in _FIXED.intersection(normal):
        normal[name] = fixes[name](normal[name])
    return orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)


def event_hash(doc: Mapping[str, Any] | bytes) -> str:
    """SHA-256 (hex) of the event's canonical serialisation."""
    return hashlib.sha256(canonical_event(doc)).hexdigest()


def events_hash(hashes: Mapping[str, str]) -> str:
    """SHA-256 (hex) over the events' hashes ordered by event id (empty: hash of nothing)."""
    digest = hashlib.sha256()
    for event_id in sorted(hashes):
        digest.update(bytes.fromhex(hashes[event_id]))
    return digest.hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """The key id: the first 16 hex digits of SHA-256 over the raw public key."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def load_private_keys(pem: bytes) -> list[Ed25519PrivateKey]:
    """Every Ed25519 private key in ``pem`` (one or more PEM blocks), in order."""
    marker = b"-----END"
    keys: list[Ed25519PrivateKey] = []
    rest = pem
    while marker in rest:
        end = rest.index(b"-----", rest.index(marker) + len(marker)) + 5
        block, rest = rest[:end], rest[end:]
        key = serialization.load_pem_private_key(block.strip() + b"\n", password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("audit signing keys must be Ed25519")
        keys.append(key)
    if not keys:
        raise ValueError("no PEM private key found")
    return keys


class Keyring:
    """Ed25519 keys by id: ``signing`` (the first private key) signs, all public keys verify."""

    def __init__(
        self,
        *,
        private: Sequence[Ed25519PrivateKey] = (),
        public: Iterable[Ed25519PublicKey] = (),
    ) -> None:
        self._private = list(private)
        keys = [k.public_key() for k in self._private] + list(public)
        self._public: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            self._public.setdefault(key_id(key), key)

    @classmethod
    def from_pem(cls, pem: bytes, *, public_jwks: bytes | None = None) -> Keyring:
        """Private keys from PEM (the first signs) and more public keys from a JWK set."""
        extra = cls.from_jwks(public_jwks).public_keys() if public_jwks else []
        return cls(private=load_private_keys(pem), public=extra)

    @classmethod
    def from_jwks(cls, data: bytes) -> Keyring:
        """Public keys only (a verifier's keyring) from ``{"keys": [{"kty": "OKP", ...}]}``."""
        try:
            document = orjson.loads(data)
            entries = document["keys"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError("not a JWK set: want {'keys': [...]}") from exc
        keys: list[Ed25519PublicKey] = []
        for entry in entries:
            if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
                raise ValueError("audit keys are OKP/Ed25519 JWKs")
            key = Ed25519PublicKey.from_public_bytes(_unb64(str(entry["x"])))
            if "kid" in entry and entry["kid"] != key_id(key):
                raise ValueError(f"JWK kid {entry['kid']!r} does not match its key")
            keys.append(key)
        return cls(public=keys)

    def public_keys(self) -> list[Ed25519PublicKey]:
        return list(self._public.values())

    def key_ids(self) -> list[str]:
        return list(self._public)

    @property
    def can_sign(self) -> bool:
        return bool(self._private)

    @property
    def signing_key_id(self) -> str:
        if not self._private:
            raise ValueError("this keyring holds no private key")
        return key_id(self._private[0].public_key())

    def sign(self, message: bytes) -> tuple[str, str]:
        """(key id, base64url signature) with the signing key."""
        if not self._private:
            raise ValueError("this keyring holds no private key")
        return self.signing_key_id, _b64(self._private[0].sign(message))

    def verify(self, kid: str, message: bytes, signature: str) -> bool:
        key = self._public.get(kid)
        if key is None:
            return False
        try:
            key.verify(_unb64(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": _b64(_raw(key)), "use": "sig"}
                for kid, key in self._public.items()
            ]
        }

    def jwks_json(self) -> bytes:
        return orjson.dumps(self.jwks())


def _signed_part(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != SIGNATURE}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign_record(record: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
    """A copy of ``record`` with ``key.id`` and ``signature`` set."""
    body = {k: v for k, v in record.items() if k != SIGNATURE}
    body[KEY_ID] = keyring.signing_key_id
    _kid, signature = keyring.sign(_signed_part(body))
    return {**body, SIGNATURE: signature}


def verify_record(record: Mapping[str, Any], keyring: Keyring) -> bool:
    """True when the record's signature is valid under the key it names."""
    kid, signature = record.get(KEY_ID), record.get(SIGNATURE)
    if not isinstance(kid, str) or not isinstance(signature, str):
        return False
    return keyring.verify(kid, _signed_part(record), signature)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the whole record, signature included (what the next one chains to)."""
    return hashlib.sha256(orjson.dumps(dict(record), option=orjson.OPT_SORT_KEYS)).hexdigest()
