"""The tamper-evidence primitives: canonical events, keys, signed records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit._chain import (
    _FIXES,
    Keyring,
    canonical_event,
    event_hash,
    events_hash,
    load_private_keys,
    record_hash,
    sign_record,
    verify_record,
)

EVENT = {
    "@timestamp": "2026-11-28T10:00:00.5Z",
    "event.id": "0190a0b0-0000-7000-8000-000000000001",
    "event.action": "access_denied",
    "event.category": "web",
    "source.ip": "2001:DB8:0:0::1",
    "labels": {"seq": 3},
    "user_agent.original": None,
}


def plain_canonical(doc: Mapping[str, Any]) -> bytes:
    """The reference: every field visited, nulls dropped, the fix of its type applied."""
    normal: dict[str, Any] = {}
    for name, value in doc.items():
        if value is not None:
            fix = _FIXES.get(name)
            normal[name] = value if fix is None else fix(value)
    return orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)


_VALUES = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(-5, 5),
    st.lists(st.text(max_size=4), max_size=2),
    st.sampled_from(["192.0.2.1", "2001:DB8:0:0::1", "::ffff:192.0.2.1", "not-an-ip"]),
    st.sampled_from(
        ["2026-11-28T10:00:00.5Z", "2026-11-28T11:00:00+01:00", "2026-11-28T10:00:00.000000Z"]
    ),
    st.dictionaries(  # JSON integers of events are 64-bit (orjson refuses more)
        st.text(max_size=3),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text()),
        max_size=2,
    ),
)
EVENTS = st.dictionaries(
    st.sampled_from(
        [
            "@timestamp",
            "event.id",
            "event.action",
            "event.category",
            "event.type",
            "user.roles",
            "source.ip",
            "labels",
            "url.path",
            "audit.data_categories",
            "http.response.status_code",
        ]
    ),
    _VALUES,
    max_size=11,
)


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TestCanonicalEvent:
    def test_same_bytes_whatever_the_key_order(self) -> None:
        """Key order does not change the serialisation."""
        reordered = dict(reversed(list(EVENT.items())))
        assert canonical_event(reordered) == canonical_event(EVENT)

    def test_stored_forms_hash_alike(self) -> None:
        """The forms a store gives back (list fields, label strings, no nulls) hash alike."""
        stored = {
            "@timestamp": "2026-11-28T10:00:00.500000Z",
            "event.id": EVENT["event.id"],
            "event.action": "access_denied",
            "event.category": ["web"],
            "source.ip": "2001:db8::1",
            "labels": {"seq": "3"},
        }
        assert event_hash(stored) == event_hash(orjson.dumps(EVENT))

    def test_any_field_change_changes_the_hash(self) -> None:
        """Editing one field gives another hash."""
        assert event_hash({**EVENT, "event.action": "login_success"}) != event_hash(EVENT)

    def test_format_unchanged_since_the_first_digests(self) -> None:
        """A fixed event hashes as it did when digests were first signed (old digests must
        keep verifying): nulls dropped, date, address, list and labels normalised."""
        doc = {
            "@timestamp": "2026-03-10T08:00:00+01:00",
            "event.id": "01900000-0000-7000-8000-000000000001",
            "event.action": "access_denied",
            "user.roles": "teacher",
            "source.ip": "2001:DB8:0:0::1",
            "labels": {"seq": 7, "none": None},
            "url.path": "/x",
            "http.response.status_code": 403,
            "error.message": None,
        }
        expected = "8169c7c7ecfc501bb125d983f678eee4f8843e9deb25d712e8cd6c608e19e5d9"
        assert event_hash(doc) == expected
        assert event_hash(orjson.dumps(doc)) == expected

    @settings(max_examples=300, deadline=None)
    @given(doc=EVENTS)
    def test_same_bytes_as_the_plain_loop(self, doc: dict[str, Any]) -> None:
        """The fast serialisation equals the plain one (every field visited), nulls,
        unnormalised dates, addresses, scalars in list fields and odd labels included."""
        assert canonical_event(doc) == plain_canonical(doc)
        assert canonical_event(orjson.dumps(doc)) == plain_canonical(doc)

    def test_events_hash_ignores_arrival_order(self) -> None:
        """The interval hash orders by event id."""
        assert events_hash({"b": "00" * 32, "a": "11" * 32}) == events_hash(
            {"a": "11" * 32, "b": "00" * 32}
        )


class TestKeyring:
    def test_first_key_signs_and_all_verify(self) -> None:
        """After rotation the new key signs; a record of the old key still verifies."""
        old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        before = sign_record({"a": 1}, Keyring(private=[old]))
        rotated = Keyring.from_pem(pem(new) + pem(old))
        after = sign_record({"a": 2}, rotated)
        assert before["key.id"] != after["key.id"] == rotated.signing_key_id
        assert verify_record(before, rotated) and verify_record(after, rotated)

    def test_published_keys_verify(self) -> None:
        """A verifier's keyring built from the JWK set verifies, and cannot sign."""
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        verifier = Keyring.from_jwks(keys.jwks_json())
        assert verify_record(sign_record({"a": 1}, keys), verifier)
        assert not verifier.can_sign

    def test_foreign_key_fails(self) -> None:
        """A record signed by a key the verifier does not know fails, even with a known kid."""
        ours, theirs = (
            Keyring(private=[Ed25519PrivateKey.generate()]),
            Keyring(private=[Ed25519PrivateKey.generate()]),
        )
        forged = {**sign_record({"a": 1}, theirs), "key.id": ours.signing_key_id}
        assert not verify_record(forged, ours)
        assert not verify_record(sign_record({"a": 1}, theirs), ours)

    def test_edited_record_fails(self) -> None:
        """Changing a signed field breaks the signature."""
        keys = Keyring(private=[Ed25519PrivateKey.generate()])
        signed = sign_record({"events.count": 3}, keys)
        assert not verify_record({**signed, "events.count": 2}, keys)

    def test_rejects_other_key_types(self) -> None:
        """Only Ed25519 keys are accepted."""
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

        key = ec.generate_private_key(ec.SECP256R1())
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(ValueError, match="Ed25519"):
            load_private_keys(data)

    def test_jwk_with_wrong_kid_refused(self) -> None:
        """A JWK whose kid does not belong to its key is refused."""
        document = Keyring(private=[Ed25519PrivateKey.generate()]).jwks()
        document["keys"][0]["kid"] = "0" * 16
        with pytest.raises(ValueError, match="kid"):
            Keyring.from_jwks(orjson.dumps(document))


class TestRecordHash:
    def test_covers_the_signature(self) -> None:
        """Two records differing only in signature hash differently."""
        assert record_hash({"a": 1, "signature": "x"}) != record_hash({"a": 1, "signature": "y"})
