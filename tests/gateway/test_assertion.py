"""gateway/assertion.py: the signed identity assertion and its JWKS."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import OctKey

from gateway import assertion as assertion_module
from gateway.assertion import (
    DEFAULT_LIFETIME,
    AssertionSigner,
    InvalidAssertion,
    KeyKind,
    generate_key,
    load_key,
    verify_assertion,
)
from gateway.types import ANONYMOUS, Identity

ISS = "https://gateway.example"
AUD = "platform"
NOW = 1_800_000_000
TEACHER = Identity(
    issuer="https://idp.example",
    subject="t-1",
    roles=frozenset({"teacher", "lob_coordinator"}),
    tenant="school-a",
    method="session",
)


def _signer(kind: KeyKind = "ES256", *, now: float = NOW, reuse: int = 10) -> AssertionSigner:
    return AssertionSigner(
        keys=[generate_key(kind)], issuer=ISS, audience=AUD, reuse=reuse, clock=lambda: now
    )


class TestSignAndVerify:
    @pytest.mark.parametrize("kind", ["ES256", "Ed25519"])
    def test_round_trip(self, kind: KeyKind) -> None:
        """An assertion verifies against the signer's JWKS and carries the identity."""
        signer = _signer(kind)
        claims = verify_assertion(
            signer.sign(TEACHER), signer.jwks(), issuer=ISS, audience=AUD, now=NOW
        )
        assert claims["sub"] == "https://idp.example|t-1"
        assert claims["roles"] == ["lob_coordinator", "teacher"]
        assert claims["tenant"] == "school-a"
        assert claims["auth"] == "session"
        assert claims["exp"] - claims["iat"] == DEFAULT_LIFETIME

    def test_anonymous_has_no_subject(self) -> None:
        """An anonymous request is asserted as such, without sub or tenant."""
        signer = _signer()
        claims = verify_assertion(
            signer.sign(ANONYMOUS), signer.jwks(), issuer=ISS, audience=AUD, now=NOW
        )
        assert "sub" not in claims
        assert "tenant" not in claims
        assert claims["auth"] == "anonymous"
        assert claims["roles"] == ["anonymous"]

    def test_expired_rejected(self) -> None:
        """After its lifetime (and the leeway) an assertion no longer verifies."""
        signer = _signer()
        token = signer.sign(TEACHER)
        with pytest.raises(InvalidAssertion):
            verify_assertion(
                token, signer.jwks(), issuer=ISS, audience=AUD, now=NOW + DEFAULT_LIFETIME + 10
            )

    @pytest.mark.parametrize(("issuer", "audience"), [(ISS, "other"), ("https://evil", AUD)])
    def test_wrong_issuer_or_audience_rejected(self, issuer: str, audience: str) -> None:
        """An assertion meant for another audience or from another issuer is refused."""
        signer = _signer()
        with pytest.raises(InvalidAssertion):
            verify_assertion(
                signer.sign(TEACHER), signer.jwks(), issuer=issuer, audience=audience, now=NOW
            )

    def test_other_key_rejected(self) -> None:
        """A token signed by a key not in the JWKS fails."""
        token = _signer().sign(TEACHER)
        with pytest.raises(InvalidAssertion):
            verify_assertion(token, _signer().jwks(), issuer=ISS, audience=AUD, now=NOW)

    def test_tampered_payload_rejected(self) -> None:
        """Changing a claim breaks the signature."""
        signer = _signer()
        header, payload, signature = signer.sign(TEACHER).split(".")
        forged = jwt.encode({"alg": "ES256"}, {"sub": "x"}, generate_key("ES256")).split(".")[1]
        with pytest.raises(InvalidAssertion):
            verify_assertion(
                f"{header}.{forged}.{signature}", signer.jwks(), issuer=ISS, audience=AUD, now=NOW
            )
        assert payload != forged

    def test_symmetric_algorithm_rejected(self) -> None:
        """An HS256 token is refused even when its kid matches: algorithms are pinned."""
        signer = _signer()
        kid = signer.jwks()["keys"][0]["kid"]
        secret = OctKey.import_key(b"k" * 32)
        token = jwt.encode(
            {"alg": "HS256", "kid": kid},
            {"iss": ISS, "aud": AUD, "iat": NOW, "exp": NOW + 60, "sub": "x"},
            secret,
        )
        with pytest.raises(InvalidAssertion):
            verify_assertion(token, signer.jwks(), issuer=ISS, audience=AUD, now=NOW)


class TestRotation:
    def test_previous_key_still_published(self) -> None:
        """After rotation the new key signs and both public keys are in the JWKS."""
        old, new = generate_key(), generate_key("Ed25519")
        before = AssertionSigner(keys=[old], issuer=ISS, audience=AUD, clock=lambda: NOW)
        after = AssertionSigner(keys=[new, old], issuer=ISS, audience=AUD, clock=lambda: NOW)
        token_before = before.sign(TEACHER)
        token_after = after.sign(TEACHER)
        for token in (token_before, token_after):
            verify_assertion(token, after.jwks(), issuer=ISS, audience=AUD, now=NOW)
        assert [k["kid"] for k in after.jwks()["keys"]] == [new.kid, old.kid]

    def test_jwks_has_no_private_parts(self) -> None:
        """The published document holds public keys only, with use and alg."""
        signer = AssertionSigner(
            keys=[generate_key(), generate_key("Ed25519")], issuer=ISS, audience=AUD
        )
        document = json.loads(signer.jwks_json())
        for key in document["keys"]:
            assert "d" not in key
            assert key["use"] == "sig"
        assert [key["alg"] for key in document["keys"]] == ["ES256", "Ed25519"]


class TestReuse:
    def test_reused_within_window(self) -> None:
        """The same identity gets the same assertion within the reuse window."""
        clock = [float(NOW)]
        signer = AssertionSigner(
            keys=[generate_key()], issuer=ISS, audience=AUD, clock=lambda: clock[0]
        )
        first = signer.sign(TEACHER)
        clock[0] += 5
        assert signer.sign(TEACHER) == first
        clock[0] += 6
        assert signer.sign(TEACHER) != first

    def test_identities_never_share(self) -> None:
        """Two identities never get each other's assertion."""
        signer = _signer()
        other = Identity(
            issuer="https://idp.example",
            subject="t-2",
            roles=TEACHER.roles,
            tenant="school-a",
            method="session",
        )
        assert signer.sign(TEACHER) != signer.sign(other)


class TestReuseByObject:
    def test_equal_identity_gets_the_reused_assertion(self) -> None:
        """An identity equal to one signed a moment ago gets that assertion, not a new one."""
        signer = _signer()
        twin = Identity(
            issuer=TEACHER.issuer,
            subject=TEACHER.subject,
            roles=frozenset(TEACHER.roles),
            tenant=TEACHER.tenant,
            method=TEACHER.method,
        )
        assert signer.sign(twin) == signer.sign(TEACHER)

    def test_reused_token_keeps_its_times(self) -> None:
        """A reused assertion keeps the iat and exp it was issued with (within its lifetime)."""
        clock = [float(NOW)]
        signer = AssertionSigner(
            keys=[generate_key()], issuer=ISS, audience=AUD, clock=lambda: clock[0]
        )
        first = signer.sign(TEACHER)
        clock[0] += 9
        token = signer.sign(TEACHER)
        assert token == first
        claims = verify_assertion(token, signer.jwks(), issuer=ISS, audience=AUD, now=NOW + 9)
        assert (claims["iat"], claims["exp"]) == (NOW, NOW + 60)

    def test_remembered_objects_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Many identities never make the remembered objects exceed the cache limit."""
        monkeypatch.setattr(assertion_module, "_CACHE_LIMIT", 3)
        signer = _signer()
        for n in range(10):
            signer.sign(
                Identity(
                    issuer="https://idp.example",
                    subject=f"s-{n}",
                    roles=frozenset({"student"}),
                    tenant=None,
                    method="session",
                )
            )
        assert 0 < len(signer._by_object) <= 3
        assert 0 < len(signer._cache) <= 3


class TestKeys:
    @pytest.mark.parametrize("kind", ["ES256", "Ed25519"])
    def test_load_from_pem(self, kind: KeyKind) -> None:
        """A PEM private key loads with its thumbprint as kid, or the kid given."""
        key = generate_key(kind)
        pem = key.as_pem(private=True)
        assert load_key(pem).kid == key.thumbprint()
        assert load_key(pem, kid="2026-11").kid == "2026-11"

    def test_public_key_refused(self) -> None:
        """A public key cannot sign."""
        pem = generate_key().as_pem(private=False)
        with pytest.raises(ValueError, match="private"):
            load_key(pem)

    def test_rsa_refused(self) -> None:
        """Only P-256 and Ed25519 keys are accepted."""
        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(ValueError):
            load_key(pem)

    @pytest.mark.parametrize(
        "options",
        [
            {"keys": []},
            {"issuer": ""},
            {"lifetime": 1},
            {"reuse": 40},
        ],
    )
    def test_bad_options(self, options: dict[str, object]) -> None:
        """Bad signer settings fail when it is built."""
        settings: dict[str, object] = {"keys": [generate_key()], "issuer": ISS, "audience": AUD}
        settings.update(options)
        with pytest.raises(ValueError):
            AssertionSigner(**settings)  # type: ignore[arg-type]

    def test_duplicate_kids_refused(self) -> None:
        """Two keys with one kid would make verification ambiguous."""
        key = generate_key()
        with pytest.raises(ValueError, match="distinct kid"):
            AssertionSigner(keys=[key, key], issuer=ISS, audience=AUD)
