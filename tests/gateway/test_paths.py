"""gateway/paths.py: one canonical path, or 400 for anything ambiguous."""

from __future__ import annotations

import pytest

from gateway.paths import PathRejected, PathStage, canonicalise, encode_path
from gateway.types import canonical_path
from tests.gateway._asgi import Recorder, call, http_scope, with_state


class TestCanonical:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"/", "/"),
            (b"/activities", "/activities"),
            (b"/activities/", "/activities/"),
            (b"/api/me/./registrations", "/api/me/registrations"),
            (b"/api/me/x/../registrations", "/api/me/registrations"),
            (b"/activities/..", "/"),
            (b"//api//me", "/api/me"),
            (b"/caf%C3%A9", "/caf\u00e9"),
            (b"/caf\xc3\xa9", "/caf\u00e9"),
            (b"/a%20b", "/a b"),
            (b"/A/B", "/A/B"),
            (b"http://platform.example.nl/api/me", "/api/me"),
        ],
    )
    def test_canonical_form(self, raw: bytes, expected: str) -> None:
        """Decoded once, dot segments resolved, repeated slashes collapsed, case kept."""
        assert canonicalise(raw) == expected


class TestRejected:
    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"/api%2fadmin", "encoded_slash"),
            (b"/api%2Fadmin", "encoded_slash"),
            (b"/api%5cadmin", "encoded_backslash"),
            (b"/api\\admin", "backslash"),
            (b"/activities/%2e%2e/api/admin", "encoded_dot"),
            (b"/activities/.%2E/api/admin", "encoded_dot"),
            (b"/%2e/api", "encoded_dot"),
            (b"/activities/%252e%252e/api", "double_encoding"),
            (b"/api%252fadmin", "double_encoding"),
            (b"/api%00", "control_character"),
            (b"/api\x00", "control_character"),
            (b"/api%0d%0aX-Injected:1", "control_character"),
            (b"/api%7f", "control_character"),
            (b"/api%C2%85", "control_character"),
            (b"/%c0%ae%c0%ae/api", "invalid_utf8"),
            (b"/%ff", "invalid_utf8"),
            (b"/api%zz", "malformed_escape"),
            (b"/api%2", "malformed_escape"),
            (b"/activities;/../api/admin", "path_parameter"),
            (b"/activities/..;/api/admin", "path_parameter"),
            (b"/api%3bx", "encoded_semicolon"),
            (b"/api#frag", "fragment"),
            (b"/api%23frag", "encoded_fragment"),
            (b"/api%3fq=1", "encoded_question_mark"),
            (b"/..", "above_root"),
            (b"/a/../../api", "above_root"),
            (b"api/me", "not_origin_form"),
            (b"*", "not_origin_form"),
            (b"/" + b"a" * 5000, "path_too_long"),
        ],
    )
    def test_ambiguous_paths_are_rejected(self, raw: bytes, reason: str) -> None:
        """Every ambiguous form raises with its stable reason."""
        with pytest.raises(PathRejected) as info:
            canonicalise(raw)
        assert info.value.reason == reason


class TestEncodePath:
    @pytest.mark.parametrize(
        ("path", "encoded"),
        [
            ("/api/me", "/api/me"),
            ("/a b", "/a%20b"),
            ("/caf\u00e9", "/caf%C3%A9"),
            ("/x:y@z", "/x:y@z"),
            ("/100%", "/100%25"),
        ],
    )
    def test_encoding(self, path: str, encoded: str) -> None:
        """The forwarded form is deterministic percent-encoded UTF-8."""
        assert encode_path(path) == encoded

    @pytest.mark.parametrize("raw", [b"/api/me", b"/caf%C3%A9/x", b"/a%20b/", b"/x:y@z"])
    def test_round_trip(self, raw: bytes) -> None:
        """Encoding a canonical path and canonicalising again gives the same path."""
        path = canonicalise(raw)
        assert canonicalise(encode_path(path).encode("ascii")) == path


class TestPathStage:
    async def test_sets_canonical_path(self) -> None:
        """The stage writes the canonical path for later stages."""
        inner = Recorder()
        scope = with_state(http_scope(raw_path=b"/api/me/x/../registrations"))
        result = await call(PathStage(inner), scope)
        assert result.status == 200
        assert canonical_path(inner.scopes[0]) == "/api/me/registrations"

    async def test_rejects_with_400_and_generic_body(self) -> None:
        """A rejected path is a 400 that names neither the path nor the reason."""
        inner = Recorder()
        scope = with_state(http_scope(raw_path=b"/api%2fadmin", headers=[("accept", "*/*")]))
        result = await call(PathStage(inner), scope)
        assert result.status == 400
        assert not inner.called
        assert b"encoded_slash" not in result.body
        assert b"admin" not in result.body

    async def test_query_string_is_not_part_of_the_path(self) -> None:
        """A query that looks like a path changes nothing in the decision path."""
        inner = Recorder()
        scope = with_state(http_scope(raw_path=b"/activities", query=b"x=/../api/admin"))
        await call(PathStage(inner), scope)
        assert canonical_path(inner.scopes[0]) == "/activities"

    async def test_remembered_path_is_canonical_again(self) -> None:
        """A raw path seen before gets the same canonical path from the stage's memory."""
        stage = PathStage(Recorder())
        raw = b"/api/me/x/../registrations"
        assert stage.canonical(raw) == stage.canonical(raw) == "/api/me/registrations"
        assert stage._cache == {raw: "/api/me/registrations"}

    async def test_rejected_path_is_rejected_every_time(self) -> None:
        """A rejected raw path is never remembered: each request is checked and refused."""
        inner = Recorder()
        stage = PathStage(inner)
        for _ in range(2):
            result = await call(stage, with_state(http_scope(raw_path=b"/a/%2e%2e/admin")))
            assert result.status == 400
        assert not inner.called
        assert stage._cache == {}

    def test_memory_is_bounded(self) -> None:
        """A full memory is emptied, and long paths are canonicalised but not remembered."""
        stage = PathStage(Recorder(), cache_size=2)
        for raw in (b"/a", b"/b", b"/c"):
            stage.canonical(raw)
        assert list(stage._cache) == [b"/c"]
        long_path = b"/" + b"x" * 300
        assert stage.canonical(long_path) == long_path.decode()
        assert long_path not in stage._cache

    def test_negative_cache_size_is_refused(self) -> None:
        """A negative cache size is a configuration error at start-up."""
        with pytest.raises(ValueError, match="cache_size"):
            PathStage(Recorder(), cache_size=-1)
