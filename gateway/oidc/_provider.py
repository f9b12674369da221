"""One identity provider's metadata and signing keys: fetched, checked, cached, refreshed.

Discovery and JWKS are cached for ``metadata_ttl``. A token whose ``kid`` is not in the cached
JWKS triggers one refetch (the provider rotated its keys), but at most one per
``jwks_refetch_cooldown`` per provider, so a stream of tokens with made-up ``kid`` values cannot
turn the gateway into a request amplifier against the provider. Concurrent fetches are
coalesced by a lock. All calls go through one shared ``httpx.AsyncClient`` (connection reuse;
tests give it a transport or intercept it with respx).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from gateway.oidc.errors import InvalidToken, ProviderUnavailable
from gateway.settings import IssuerSettings

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Metadata:
    """The parts of the discovery document the gateway uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    userinfo_endpoint: str | None
    introspection_endpoint: str | None
    raw: Mapping[str, Any]


def _is_secure_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class Provider:
    """A configured issuer: ``name`` (the settings key) and its fetched metadata and keys."""

    def __init__(
        self,
        *,
        name: str,
        settings: IssuerSettings,
        client: httpx.AsyncClient,
        metadata_ttl: float,
        refetch_cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._client = client
        self._ttl = metadata_ttl
        self._cooldown = refetch_cooldown
        self._clock = clock
        self._metadata: Metadata | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._last_refetch: float | None = None
        self._lock = asyncio.Lock()
        #: How many times the JWKS was fetched (for tests and metrics).
        self.jwks_fetches = 0

    @property
    def cached_metadata(self) -> Metadata | None:
        """The metadata fetched so far, without fetching (None before the first fetch)."""
        return self._metadata

    async def metadata(self) -> Metadata:
        if self._metadata is not None and self._clock() - self._metadata_at < self._ttl:
            return self._metadata
        async with self._lock:
            if self._metadata is None or self._clock() - self._metadata_at >= self._ttl:
                self._metadata = self._parse_metadata(
                    await self._get_json(self.settings.discovery_url)
                )
                self._metadata_at = self._clock()
        return self._metadata

    def _parse_metadata(self, doc: Mapping[str, Any]) -> Metadata:
        expected = self.settings.discovery_url.removesuffix(DISCOVERY_SUFFIX)
        issuer = doc.get("issuer")
        if issuer != expected and issuer != expected.rstrip("/"):
            raise ProviderUnavailable("discovery issuer does not match the discovery URL")
        urls: dict[str, str | None] = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not _is_secure_url(value):
                raise ProviderUnavailable(f"discovery {name} missing or not https")
            urls[name] = value
        for name in ("end_session_endpoint", "userinfo_endpoint", "introspection_endpoint"):
            value = doc.get(name)
            urls[name] = value if isinstance(value, str) and _is_secure_url(value) else None
        return Metadata(
            issuer=str(issuer),
            authorization_endpoint=str(urls["authorization_endpoint"]),
            token_endpoint=str(urls["token_endpoint"]),
            jwks_uri=str(urls["jwks_uri"]),
            end_session_endpoint=urls["end_session_endpoint"],
            userinfo_endpoint=urls["userinfo_endpoint"],
            introspection_endpoint=urls["introspection_endpoint"],
            raw=dict(doc),
        )

    async def key_for(self, kid: str | None) -> Key:
        """The signing key for ``kid``; one rate-limited refetch when it is unknown."""
        now = self._clock()
        if self._keys is None or now - self._keys_at >= self._ttl:
            await self._fetch_keys()
        found = self._find(kid)
        if found is not None:
            return found
        if self._last_refetch is not None and now - self._last_refetch < self._cooldown:
            raise InvalidToken("unknown_kid (refetch cooling down)")
        self._last_refetch = now
        await self._fetch_keys()
        found = self._find(kid)
        if found is None:
            raise InvalidToken("unknown_kid")
        return found

    def _find(self, kid: str | None) -> Key | None:
        if self._keys is None:
            return None
        if kid is None:
            keys = list(self._keys)
            return keys[0] if len(keys) == 1 else None
        for key in self._keys:
            if key.kid == kid:
                return key
        return None

    async def _fetch_keys(self) -> None:
        metadata = await self.metadata()
        async with self._lock:
            doc = await self._get_json(metadata.jwks_uri)
            self.jwks_fetches += 1
            try:
                keys = doc.get("keys")
                if not isinstance(keys, list):
                    raise ProviderUnavailable("JWKS without keys")
                # Only signing keys; a key marked for encryption never verifies a token.
                usable = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
                self._keys = KeySet.import_key_set({"keys": usable})
            except (JoseError, ValueError, TypeError) as exc:
                raise ProviderUnavailable("JWKS could not be parsed") from exc
            self._keys_at = self._clock()

    async def introspect(self, token: str) -> Mapping[str, Any]:
        """RFC 7662: what the provider says about an opaque token (client authenticated)."""
        metadata = await self.metadata()
        secret = self.settings.client_secret
        if metadata.introspection_endpoint is None or secret is None:
            raise ProviderUnavailable("no introspection endpoint")
        try:
            response = await self._client.post(
                metadata.introspection_endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=httpx.BasicAuth(
                    quote_plus(self.settings.client_id), quote_plus(secret.reveal())
                ),
                headers={"accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"{type(exc).__name__} calling introspection") from exc
        return self._parse_json(response)

    async def _get_json(self, url: str) -> Mapping[str, Any]:
        try:
            response = await self._client.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"{type(exc).__name__} fetching provider metadata") from exc
        return self._parse_json(response)

    @staticmethod
    def _parse_json(response: httpx.Response) -> Mapping[str, Any]:
        if response.status_code != 200:
            raise ProviderUnavailable(f"provider answered {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderUnavailable("provider document too large")
        try:
            doc = response.json()
        except ValueError as exc:
            raise ProviderUnavailable("provider document is not JSON") from exc
        if not isinstance(doc, dict):
            raise ProviderUnavailable("provider document is not a JSON object")
        return doc
