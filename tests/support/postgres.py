"""A PostgreSQL server for tests and benchmarks: the one ``KGM_TEST_POSTGRES_URL`` names, a fresh schema each.

``bash scripts/ci-postgres.sh`` starts one and prints its URL (CI does exactly that). Locally, without
the variable, PostgreSQL tests are skipped; in CI (``CI`` set) they fail instead, so that CI can never
pass with PostgreSQL silently untested.

Each user gets its own PostgreSQL schema (``kgm_test_<random>``), created on entry and dropped with
everything in it on exit, through ``options=-c search_path=...`` in the URL it is handed: tests run
against one database without seeing each other's tables. Test code only may import psycopg here; the
product's one importer is ``inventory/ledger/dialects.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
import pytest
from psycopg import sql

ENV = "KGM_TEST_POSTGRES_URL"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def server_url() -> str | None:
    return os.environ.get(ENV) or None


def server_url_or_skip() -> str:
    """The server's URL; skip the test when there is none, or fail it in CI."""
    url = server_url()
    if url:
        return url
    reason = f"{ENV} is not set (start a server with `bash scripts/ci-postgres.sh` and export its URL)"
    if in_ci():
        pytest.fail(f"{reason}; CI is set, so PostgreSQL must be tested, not skipped", pytrace=False)
    pytest.skip(reason)


def with_options(url: str, options: str) -> str:
    """``url`` with ``options`` (libpq's ``-c name=value ...``) added to any it already has."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    old = " ".join(v for k, v in pairs if k == "options")
    pairs = [(k, v) for k, v in pairs if k != "options"] + [("options", f"{old} {options}".strip())]
    # Not urlunsplit: it drops the "//" of an empty host ("postgresql:///db?host=/run/postgresql").
    query = urlencode(pairs, safe="/:", quote_via=quote)  # libpq reads "+" as itself, not as a space
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}"


@contextmanager
def fresh_schema(url: str, *, prefix: str = "kgm_test", fast_commits: bool = True) -> Iterator[str]:
    """A new empty schema on the server at ``url``; yields a URL whose connections use only it, and
    name themselves after it (``application_name``, so a test can find its own in pg_stat_activity).

    With ``fast_commits``, commits in that URL skip the wait for the disk (``synchronous_commit=off``):
    a test database need not survive a crash, and the tests run faster (constraints are still checked
    at each statement). Benchmarks pass False to measure what production pays.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    options = f"-c search_path={schema}" + (" -c synchronous_commit=off" if fast_commits else "")
    own_url = with_options(url, options) + f"&application_name={schema}"
    execute(url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield own_url
    finally:
        execute(url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def execute(url: str, statement: str | sql.Composed, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (autocommit); the rows it returns, if any."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(statement, params or None)
        return cursor.fetchall() if cursor.description is not None else []
