"""gateway/hosts.py: only configured hosts are served."""

from __future__ import annotations

import pytest

from gateway.hosts import REQUEST_TARGET_KEY, HostStage, split_host_port
from tests.gateway._asgi import Recorder, call, http_scope, with_state


def stage(inner: Recorder) -> HostStage:
    return HostStage(
        inner, public_hosts=["platform.example.nl", "bücher.example"], ports=[443, 8443]
    )


async def run(host: str | None, raw_path: bytes = b"/") -> tuple[int, Recorder]:
    inner = Recorder()
    scope = with_state(http_scope(raw_path=raw_path, host=host), host=host)
    result = await call(stage(inner), scope)
    return result.status, inner


class TestHostAllowList:
    @pytest.mark.parametrize(
        "host",
        [
            "platform.example.nl",
            "PLATFORM.Example.nl",
            "platform.example.nl.",
            "platform.example.nl:443",
            "platform.example.nl:8443",
            "xn--bcher-kva.example",
            "bücher.example",
        ],
    )
    async def test_configured_hosts_pass(self, host: str) -> None:
        """Case, trailing dot, a served port and IDN forms of a configured host are accepted."""
        status, inner = await run(host)
        assert status == 200
        assert inner.called

    @pytest.mark.parametrize(
        "host",
        [
            None,
            "",
            "evil.example",
            "platform.example.nl.evil.example",
            "platform.example.nl:8080",
            "platform.example.nl:0",
            "platform.example.nl:abc",
            "platform.example.nl@evil.example",
            "127.0.0.1",
            "[::1]",
        ],
    )
    async def test_other_hosts_get_400(self, host: str | None) -> None:
        """Unknown, missing or malformed hosts and unserved ports get 400 and go no further."""
        status, inner = await run(host)
        assert status == 400
        assert not inner.called

    async def test_absolute_form_must_agree_with_host(self) -> None:
        """An absolute-form target naming another host is refused."""
        status, inner = await run("platform.example.nl", b"http://evil.example/api/admin/schools")
        assert status == 400
        assert not inner.called

    async def test_absolute_form_with_same_host_passes(self) -> None:
        """An absolute-form target naming our host is fine."""
        status, _ = await run("platform.example.nl", b"https://Platform.example.nl/activities")
        assert status == 200

    async def test_error_body_is_generic(self) -> None:
        """The 400 does not echo the host."""
        inner = Recorder()
        scope = with_state(http_scope(host="evil.example"), host="evil.example")
        result = await call(stage(inner), scope)
        assert b"evil" not in result.body

    def test_remembered_answers_stay_the_same(self) -> None:
        """Asking again (answered from the stage's memory) gives the same answer, both ways."""
        host_stage = stage(Recorder())
        for _ in range(3):
            assert host_stage.allowed("Platform.example.nl:8443")
            assert not host_stage.allowed("platform.example.nl:8080")
            assert not host_stage.allowed("evil.example")

    def test_needs_a_host(self) -> None:
        """An empty allow-list is a configuration error at start-up."""
        with pytest.raises(ValueError, match="at least one"):
            HostStage(Recorder(), public_hosts=[], ports=[443])


class TestSplitHostPort:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("a.example", ("a.example", None)),
            ("a.example:8443", ("a.example", 8443)),
            ("[::1]:443", ("[::1]", 443)),
            ("[::1]", ("[::1]", None)),
        ],
    )
    def test_split(self, value: str, expected: tuple[str, int | None]) -> None:
        """Host and port are separated, IPv6 literals included."""
        assert split_host_port(value) == expected

    @pytest.mark.parametrize("value", [":443", "[::1", "[::1]x", "a:99999", "a:-1"])
    def test_malformed(self, value: str) -> None:
        """Malformed values raise."""
        with pytest.raises(ValueError):
            split_host_port(value)


class TestDuplicateAndTarget:
    async def test_two_host_lines_are_a_400(self) -> None:
        """RFC 9112 §3.2: more than one Host line is refused, even when both are ours."""
        inner = Recorder()
        scope = with_state(
            http_scope(headers=[("host", "platform.example.nl")]), host="platform.example.nl"
        )
        scope["headers"].append((b"host", b"evil.example"))
        result = await call(stage(inner), scope)
        assert result.status == 400
        assert not inner.called

    async def test_kept_request_target_is_checked(self) -> None:
        """The request target the server kept (absolute form) must name our host."""
        inner = Recorder()
        scope = with_state(http_scope(raw_path=b"/activities"), host="platform.example.nl")
        scope[REQUEST_TARGET_KEY] = b"https://evil.example/activities"
        assert (await call(stage(inner), scope)).status == 400
        scope[REQUEST_TARGET_KEY] = b"https://platform.example.nl/activities"
        assert (await call(stage(inner), scope)).status == 200
