"""The OIDC issuer's signing keys (a JWKS), fetched and kept current for :mod:`inventory.api.auth.oidc`.

Where from: a configured JWKS URL, else the ``jwks_uri`` of the issuer's discovery document
(``{issuer}/.well-known/openid-configuration``, whose ``issuer`` must be the one configured). Kept for
``keys_ttl_s``, then fetched again on use; a failed refresh keeps the keys held (an identity provider
restarting must not lock everyone out). A token signed with a key not held (``kid`` unknown: the
provider rotated its keys) fetches the set again at once, but at most once per
``min_refetch_interval_s``: unknown ``kid`` values that an attacker chooses cannot turn each request
into a request to the identity provider. Every fetch is bounded in time and size.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import orjson

from inventory.api.auth.roles import AuthUnavailableError

DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class FetchLimits:
    timeout_s: float = 5.0
    """Seconds one fetch (discovery document or JWKS) may take, in all."""

    max_bytes: int = 256 * 1024
    """The largest document read; a JWKS of a few keys is 2-5 KiB."""

    max_keys: int = 64
    """Keys read from one JWKS at most; more are ignored."""

    ca_file: Path | None = None
    """PEM bundle to trust for the identity provider's HTTPS (an internal CA); none: the system's."""


class JwksError(Exception):
    """The keys could not be fetched or read: what failed, with the URL (it carries no secret)."""


def fetch_json(url: str, limits: FetchLimits, *, clock: Callable[[], float] = time.monotonic) -> object:
    """The JSON document at ``url`` (http or https), read within ``limits``; :class:`JwksError` else."""
    if not url.startswith(("https://", "http://")):
        raise JwksError(f"{url!r} is not an http(s) URL")
    deadline = clock() + limits.timeout_s
    verify: ssl.SSLContext | bool = True
    if limits.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(limits.ca_file))
        except (OSError, ssl.SSLError) as error:
            raise JwksError(f"cannot read the CA file {limits.ca_file}: {error}") from error
    data = bytearray()
    try:
        # No proxies or netrc from the environment (the settings are the one reader of it); no redirects.
        with (
            httpx.Client(timeout=limits.timeout_s, verify=verify, trust_env=False) as http,
            http.stream("GET", url, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"{url} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > limits.max_bytes:
                    raise JwksError(f"{url} sent more than {limits.max_bytes} bytes")
                if clock() > deadline:
                    raise JwksError(f"{url} did not finish within {limits.timeout_s} s")
    except httpx.HTTPError as error:
        raise JwksError(f"{url}: {type(error).__name__}: {error}") from error
    try:
        return orjson.loads(bytes(data))
    except orjson.JSONDecodeError as error:
        raise JwksError(f"{url} did not answer JSON") from error


def parse_jwks(document: object, max_keys: int) -> dict[str | None, jwt.PyJWK]:
    """The signing keys of a JWKS by ``kid`` (None for a key without one); keys that are not for
    signatures, or that PyJWT cannot use, are skipped."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise JwksError("the JWKS has no 'keys' list")
    found: dict[str | None, jwt.PyJWK] = {}
    for item in keys[:max_keys]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(item)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue  # an unsupported kty or curve, or a malformed key: not one we can verify with
        kid = item.get("kid")
        found[kid if isinstance(kid, str) else None] = key
    if not found:
        raise JwksError("the JWKS has no usable signing key")
    return found


class JwksSource:
    """The issuer's keys; thread-safe (one fetch at a time, the others wait for its result)."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None = None,
        limits: FetchLimits | None = None,
        keys_ttl_s: float = 600.0,
        min_refetch_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._limits = limits or FetchLimits()
        self._keys_ttl_s = keys_ttl_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._clock = clock
        self._logger = logger or logging.getLogger("kgm.api")
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._tried_at: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0  # JWKS documents fetched, for the logs' and tests' sake

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key called ``kid`` (without a kid: the only key), fetching the set when it is stale or
        lacks ``kid`` (rate-limited); None when there is no such key. :class:`AuthUnavailableError`
        when no keys could ever be fetched."""
        keys = self._current()
        found = _pick(keys, kid)
        if found is None and self._may_refetch():
            found = _pick(self._refresh(force=True), kid)
        return found

    def _current(self) -> dict[str | None, jwt.PyJWK]:
        keys = self._keys
        if keys is not None and self._clock() - self._fetched_at < self._keys_ttl_s:
            return keys
        return self._refresh(force=False)

    def _may_refetch(self) -> bool:
        tried = self._tried_at
        return tried is None or self._clock() - tried >= self._min_refetch_interval_s

    def _refresh(self, *, force: bool) -> dict[str | None, jwt.PyJWK]:
        with self._lock:
            now = self._clock()
            fresh = self._keys is not None and now - self._fetched_at < self._keys_ttl_s
            if self._keys is not None and ((fresh and not force) or not self._may_refetch()):
                return self._keys  # another thread fetched meanwhile, or one did so just now
            self._tried_at = now
            try:
                document = fetch_json(self._url(), self._limits, clock=self._clock)
                keys = parse_jwks(document, self._limits.max_keys)
            except JwksError as error:
                self._logger.warning(
                    "cannot fetch the OIDC issuer's keys: %s",
                    error,
                    extra={"event": "api.oidc_keys_unavailable", "issuer": self._issuer},
                )
                if self._keys is None:
                    raise AuthUnavailableError(
                        "cannot check the bearer token now: the identity provider's signing keys "
                        "could not be fetched; try again later"
                    ) from error
                return self._keys  # keep the keys held: the provider may be restarting
            self.fetches += 1
            self._keys, self._fetched_at = keys, now
            self._logger.info(
                "OIDC keys fetched",
                extra={"event": "api.oidc_keys_fetched", "issuer": self._issuer, "keys": len(keys)},
            )
            return keys

    def _url(self) -> str:
        """The JWKS URL: configured, or the discovery document's (found once, then kept)."""
        if self._jwks_url is not None:
            return self._jwks_url
        discovery = fetch_json(self._issuer.rstrip("/") + DISCOVERY_PATH, self._limits, clock=self._clock)
        if not isinstance(discovery, Mapping):
            raise JwksError("the discovery document is not a JSON object")
        if discovery.get("issuer") != self._issuer:
            # OpenID Connect Discovery 1.0, 4.3: the issuer it names must be exactly the one asked.
            raise JwksError(f"the discovery document names another issuer than {self._issuer}")
        url = discovery.get("jwks_uri")
        if not isinstance(url, str):
            raise JwksError("the discovery document has no jwks_uri")
        self._jwks_url = url
        return url


def _pick(keys: Mapping[str | None, jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None
