"""An identity provider for the OIDC tests: signing keys made in the test, JWTs signed with them, and
a real HTTP server on 127.0.0.1 serving the discovery document and the JWKS (which the test swaps, to
rotate keys, and whose fetches it counts)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "kgm"
NOW = int(time.time())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        maker = RSAAlgorithm if self.algorithm.startswith(("RS", "PS")) else ECAlgorithm
        found: dict[str, Any] = maker.to_jwk(public, as_dict=True)
        return {**found, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


def claims(issuer: str, **more: Any) -> dict[str, Any]:
    return {"iss": issuer, "aud": AUDIENCE, "sub": "u-1", "iat": NOW, "exp": NOW + 600, **more}


def sign(key: SigningKey, payload: Mapping[str, Any], *, kid: str | None = "") -> str:
    """A JWT of ``payload`` signed with ``key``; its header names ``kid`` (default the key's; None: none)."""
    headers = {} if kid is None else {"kid": kid or key.kid}
    return jwt.encode(dict(payload), key.private, algorithm=key.algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: Mapping[str, Any], *, kid: str = "k1") -> str:
    """``alg: none``: a token with no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(dict(payload)).encode())}."


def hmac_with_public_key(key: SigningKey, payload: Mapping[str, Any]) -> str:
    """HS256 with the issuer's public key (PEM) as the secret: the algorithm-confusion attack."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(dict(payload)).encode())}"
    mac = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@dataclass
class IdentityProvider:
    """What the loopback server serves (path to JSON document) and how often each path was fetched."""

    url: str = ""
    documents: dict[str, Any] = field(default_factory=dict)
    fetches: Counter[str] = field(default_factory=Counter)
    delay_s: float = 0.0
    raw: dict[str, bytes] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def publish(self, *keys: SigningKey) -> None:
        """Serve these keys (a rotation replaces the set) and the discovery document pointing at them."""
        self.documents["/jwks"] = jwks(*keys)
        self.documents["/.well-known/openid-configuration"] = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
        }


@contextmanager
def identity_provider(tls: tuple[Path, Path] | None = None) -> Iterator[IdentityProvider]:
    """An :class:`IdentityProvider` served on 127.0.0.1 from a thread, stopped on the way out; over
    HTTPS with ``tls`` (certificate and key files)."""
    provider = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.fetches[self.path] += 1
            if provider.delay_s:
                time.sleep(provider.delay_s)
            body = provider.raw.get(self.path)
            if body is None and self.path in provider.documents:
                body = json.dumps(provider.documents[self.path]).encode()
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            # The client may give up (a size or time limit): that is the test.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    # A short poll: shutdown() waits for it, once per test.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="oidc-provider", daemon=True)
    thread.start()
    provider.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
