"""Who may call what: the whole role matrix over HTTP, and the tokens file (formats, errors, reload)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from inventory.api import Role, TokenFileError, TokenStore
from inventory.api.auth import bearer_token
from inventory.ledger.store import Ledger
from tests.inventory.api import CALLERS, IDS, TOKENS, harness, write_tokens

RESERVATION = {"namespace": "team-a", "podName": "notebook-1", "workloadType": "Development"}
ALL = {"ADMIN", "OPERATOR", "USER", "VIEWER", "FINANCE"}
ALLOCATIONS = {"ADMIN", "USER", "OPERATOR"}
OPEN = None  # no token needed

#: (method, path, body, who may call it, success status): every endpoint of the API.
ENDPOINTS = [
    ("GET", "/api/v1/health", None, OPEN, 200),
    ("GET", "/api/v1/openapi.json", None, OPEN, 200),
    ("GET", "/api/v1/gpu/devices", None, {"ADMIN", "OPERATOR"}, 200),
    ("GET", "/api/v1/gpu/allocations", None, ALLOCATIONS, 200),
    ("POST", "/api/v1/gpu/allocations", RESERVATION, ALLOCATIONS, 201),
    ("GET", f"/api/v1/gpu/allocations/{IDS['a1']}", None, ALLOCATIONS, 200),
    ("DELETE", f"/api/v1/gpu/allocations/{IDS['a4']}", None, ALLOCATIONS, 200),
    ("GET", "/api/v1/gpu/overview", None, ALL, 200),
    ("GET", "/api/v1/gpu/cost/analysis", None, {"ADMIN", "VIEWER", "FINANCE"}, 200),
]
CALLER_KINDS = [*(r.value for r in Role), "no token", "bad token"]


@pytest.mark.parametrize("caller", CALLER_KINDS)
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "success"), ENDPOINTS, ids=[f"{e[0]} {e[1]}" for e in ENDPOINTS]
)
def test_each_endpoint_answers_each_caller_by_role(
    ledger: Ledger,
    tokens: TokenStore,
    method: str,
    path: str,
    body: object,
    allowed: set[str] | None,
    success: int,
    caller: str,
) -> None:
    h = harness(ledger, tokens)
    token = TOKENS[Role(caller)] if caller in Role.__members__ else None
    if caller == "bad token":
        token = "not-a-known-token"
    reply = h.request(method, path, role=None, token=token, json=body)
    if allowed is OPEN or caller in allowed:
        expected = success
    else:
        expected = 401 if caller in ("no token", "bad token") else 403
    assert reply.status_code == expected, reply.text
    if expected in (401, 403):
        assert reply.json()["error"]["code"] == expected
        assert (reply.headers.get("www-authenticate") == 'Bearer realm="kgm"') is (expected == 401)
        assert (h.reservations.requests, h.reservations.released) == ([], [])  # refused before the core


def test_a_forbidden_answer_names_the_role_and_the_roles_allowed(ledger: Ledger, tokens: TokenStore) -> None:
    reply = harness(ledger, tokens).get("/api/v1/gpu/cost/analysis", role=Role.USER)
    assert reply.json()["error"]["message"] == (
        "role USER may not use /api/v1/gpu/cost/analysis; allowed: ADMIN, VIEWER, FINANCE"
    )


@pytest.mark.parametrize(
    "token",
    [
        TOKENS[Role.ADMIN][:-1],  # a prefix
        TOKENS[Role.ADMIN] + "x",  # an extension
        TOKENS[Role.ADMIN].upper(),
        "kgm-test-token-0123456789-",  # the prefix every token shares
        "",
    ],
    ids=["prefix", "extension", "upper-cased", "shared prefix", "empty"],
)
def test_only_the_exact_token_authenticates(tokens: TokenStore, token: str) -> None:
    assert tokens.authenticate(token) is None
    assert tokens.authenticate(TOKENS[Role.ADMIN]) is not None


def test_each_token_maps_to_its_own_caller(tokens: TokenStore) -> None:
    for role, token in TOKENS.items():
        caller = tokens.authenticate(token)
        assert caller is not None
        assert (caller.name, caller.role) == (CALLERS[role], role)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer abc", "abc"),
        (b"bearer  abc ", "abc"),
        (b"Basic abc", None),
        (b"Bearer", None),
        (b"Bearer   ", None),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(header: bytes, token: str | None) -> None:
    assert bearer_token([(b"authorization", header)]) == token
    assert bearer_token([(b"accept", b"*/*")]) is None


def test_without_a_tokens_file_every_protected_path_is_refused_and_says_why(ledger: Ledger) -> None:
    h = harness(ledger, TokenStore())
    reply = h.get("/api/v1/gpu/overview")
    assert reply.status_code == 401
    assert "no API tokens are configured" in reply.json()["error"]["message"]
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert h.get("/api/v1/health", role=None).status_code == 200


def test_json_tokens_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"token": "t-1", "name": "ci", "role": "finance"}]))
    caller = TokenStore.load(path).authenticate("t-1")
    assert caller is not None
    assert (caller.name, caller.role) == ("ci", Role.FINANCE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{token: a}", "expected a list of {token, name, role} entries"),
        ("[a]", "[0]: expected a mapping with token, name and role"),
        ("[{name: x, role: ADMIN}]", "[0]: 'token' must be a non-empty string"),
        ("[{token: ' ', name: x, role: ADMIN}]", "[0]: 'token' must be a non-empty string"),
        ("[{token: a, role: ADMIN}]", "[0]: 'name' must be a non-empty string"),
        ("[{token: a, name: x, role: ROOT}]", "[0]: 'role' must be one of ADMIN, OPERATOR, USER"),
        ("[{token: a, name: x, role: ADMIN}, {token: a, name: y, role: USER}]", "[1]: the same token"),
        ("[{token: sekrit, name: x, role: ADMIN}\n  - : [", "is not valid YAML or JSON (line"),
    ],
)
def test_a_bad_tokens_file_is_refused_with_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(TokenFileError, match=r".*") as caught:
        TokenStore.load(path)
    assert message in str(caught.value)
    assert "sekrit" not in str(caught.value)


def test_a_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read tokens file"):
        TokenStore.load(tmp_path / "absent.yaml")


def _rewrite(path: Path, tokens: dict[Role, str]) -> None:
    before = path.stat().st_mtime_ns
    write_tokens(path, tokens)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # coarse file system clocks: make the change visible


def test_a_rotated_tokens_file_applies_without_a_restart(ledger: Ledger, tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {Role.ADMIN: "old-admin-token"})
    h = harness(ledger, TokenStore.load(path))
    assert h.get("/api/v1/gpu/overview", token="old-admin-token").status_code == 200
    _rewrite(path, {Role.ADMIN: "new-admin-token"})
    assert h.get("/api/v1/gpu/overview", token="old-admin-token").status_code == 401
    assert h.get("/api/v1/gpu/overview", token="new-admin-token").status_code == 200


def test_a_broken_rotation_keeps_the_last_good_tokens_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {Role.ADMIN: "good-token"})
    store = TokenStore.load(path, logger=logging.getLogger("tests.api.tokens"))
    before = path.stat().st_mtime_ns
    path.write_text("[{token: leaked-token, name: x, role: NOBODY}]")
    os.utime(path, ns=(before + 10**9, before + 10**9))
    with caplog.at_level(logging.ERROR, logger="tests.api.tokens"):
        assert store.authenticate("good-token") is not None
        assert store.authenticate("leaked-token") is None
    assert [r.event for r in caplog.records] == ["api.tokens_invalid"]  # type: ignore[attr-defined]
    assert "leaked-token" not in caplog.text
    _rewrite(path, {Role.VIEWER: "fixed-token"})
    assert store.authenticate("fixed-token") is not None
    assert store.authenticate("good-token") is None


def test_a_vanished_tokens_file_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {Role.ADMIN: "good-token"})
    store = TokenStore.load(path)
    path.unlink()
    assert store.authenticate("good-token") is not None


def test_requests_are_logged_with_the_callers_name_never_the_token(
    ledger: Ledger, tokens: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(ledger, tokens, logger=logging.getLogger("tests.api.log"))
    with caplog.at_level(logging.DEBUG, logger="tests.api.log"):
        h.request("POST", "/api/v1/gpu/allocations", role=Role.USER, json=RESERVATION)
        h.get("/api/v1/gpu/overview", role=Role.VIEWER)
        h.get("/api/v1/gpu/overview", token="wrong-token")
    logged = [(r.levelname, r.caller, r.path, r.status) for r in caplog.records]  # type: ignore[attr-defined]
    assert logged == [
        ("INFO", "user-client", "/api/v1/gpu/allocations", 201),
        ("DEBUG", "viewer-client", "/api/v1/gpu/overview", 200),
        ("INFO", None, "/api/v1/gpu/overview", 401),  # refusals are kept at INFO
    ]
    everything = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert not any(token in everything for token in [*TOKENS.values(), "wrong-token"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[{token: \xff\xfe, name: x, role: ADMIN}]", "is not UTF-8 text"),
        (b"[" * 50_000, "is nested too deeply"),
    ],
)
def test_an_unreadable_rotation_keeps_the_last_good_tokens(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {Role.ADMIN: "good-token"})
    store = TokenStore.load(path)
    before = path.stat().st_mtime_ns
    path.write_bytes(content)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    assert store.authenticate("good-token") is not None  # was: the decoder's error, a 500 per request
    with pytest.raises(TokenFileError, match=message):
        TokenStore.load(path)
