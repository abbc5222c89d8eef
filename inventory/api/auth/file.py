"""Who may call the REST API, the small install's way: bearer tokens from a file (a mounted Secret), each
with a name, a role and, optionally, the only namespaces whose reservations it may see and change.

    - {token: "3f9c...", name: ci-pipeline, role: USER, namespaces: [team-a, team-b]}
    - {token: "b7e1...", name: finance-dashboard, role: FINANCE}

YAML or JSON (JSON is YAML). The file is re-read when it changes, so a rotated Secret applies
without a restart; a changed file that cannot be used is logged and the last good tokens stay (a
typo during a rotation must not lock every client out). Without a file nobody gets in: the API is
never open by default.

Tokens are kept only as SHA-256 digests and compared against every known one with
``hmac.compare_digest``, with no early exit, so neither the match nor its position shows in timing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from inventory.api.auth.roles import Area, Caller, Role, role_allows


class TokenFileError(ValueError):
    """A tokens file that cannot be used, with where and why (never the token itself)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    caller: Caller


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(document: object, *, where: str = "tokens") -> tuple[_Entry, ...]:
    """Entries from a parsed tokens document, or TokenFileError naming the entry at fault."""
    if not isinstance(document, Sequence) or isinstance(document, str | bytes):
        raise TokenFileError(f"{where}: expected a list of {{token, name, role}} entries")
    entries: list[_Entry] = []
    seen: set[bytes] = set()
    for position, item in enumerate(document):
        at = f"{where}[{position}]"
        if not isinstance(item, Mapping):
            raise TokenFileError(f"{at}: expected a mapping with token, name and role")
        token, name, role = item.get("token"), item.get("name"), item.get("role")
        if not isinstance(token, str) or not token.strip():
            raise TokenFileError(f"{at}: 'token' must be a non-empty string")
        if not isinstance(name, str) or not name.strip():
            raise TokenFileError(f"{at}: 'name' must be a non-empty string")
        if not isinstance(role, str) or role.strip().upper() not in Role.__members__:
            # Never quote what was there, nor the entry's name: a token pasted one field off would
            # land in the logs (and the start-up error). The position says which entry it is.
            raise TokenFileError(f"{at}: 'role' must be one of {', '.join(Role)}")
        namespaces = _namespaces(item.get("namespaces"), at)
        digest = _digest(token.strip())
        if digest in seen:
            raise TokenFileError(f"{at}: the same token is listed twice")
        seen.add(digest)
        roles = frozenset({Role[role.strip().upper()]})
        entries.append(
            _Entry(digest=digest, caller=Caller(name=name.strip(), roles=roles, namespaces=namespaces))
        )
    return tuple(entries)


def _namespaces(value: object, at: str) -> frozenset[str] | None:
    """An entry's ``namespaces``: absent means every namespace (as before the field existed)."""
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise TokenFileError(f"{at}: 'namespaces' must be a list of namespace names")
    if not all(isinstance(name, str) and name.strip() for name in value):
        raise TokenFileError(f"{at}: 'namespaces' must be a list of non-empty namespace names")
    return frozenset(name.strip() for name in value)


def _read(path: Path) -> tuple[_Entry, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TokenFileError(f"cannot read tokens file {path}: {error.strerror}") from error
    except UnicodeDecodeError:
        raise TokenFileError(f"tokens file {path} is not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except RecursionError:
        raise TokenFileError(f"tokens file {path} is nested too deeply") from None
    except yaml.YAMLError as error:
        # The parser's message may quote the file's text, tokens included: keep only where it broke.
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise TokenFileError(f"tokens file {path} is not valid YAML or JSON{line}") from None
    return parse_tokens(document, where=str(path))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does; a Secret update swaps a symlink, which stat() follows."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


class TokenStore:
    """Thread-safe. Authenticates bearer tokens; re-reads its file when the file changes."""

    def __init__(
        self,
        entries: Sequence[_Entry] = (),
        *,
        path: Path | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._entries = tuple(entries)
        self._path = path
        self._stamp = _stamp(path) if path is not None else None
        self._logger = logger or logging.getLogger("kgm.api")
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, *, logger: logging.Logger | None = None) -> TokenStore:
        """The tokens of ``path``, or TokenFileError (at startup a bad file is fatal)."""
        path = Path(path)
        stamp = _stamp(path)
        store = cls(_read(path), path=path, logger=logger)
        store._stamp = stamp  # the stamp of what was read, so a write during the read is seen later
        return store

    @property
    def configured(self) -> bool:
        return self._path is not None or bool(self._entries)

    def allows(self, caller: Caller, area: Area, verb: str, namespace: str | None) -> bool:
        """The role matrix and the entry's namespaces; every verb of an area goes with it."""
        return role_allows(caller, area, namespace)

    def authenticate(self, token: str) -> Caller | None:
        """The caller holding ``token``, or None."""
        entries = self._current()
        given = _digest(token)
        found: Caller | None = None
        for entry in entries:  # no break: every comparison runs whichever entry matches
            if hmac.compare_digest(entry.digest, given):
                found = entry.caller
        return found

    def _current(self) -> tuple[_Entry, ...]:
        if self._path is None:
            return self._entries
        stamp = _stamp(self._path)
        if stamp is None or stamp == self._stamp:
            return self._entries
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._entries = _read(self._path)
                except TokenFileError as error:
                    self._logger.error(
                        "API tokens file changed but cannot be used; keeping the previous tokens: %s",
                        error,
                        extra={"event": "api.tokens_invalid", "path": str(self._path)},
                    )
                else:
                    self._logger.info(
                        "API tokens reloaded",
                        # How many, not who: nothing from the file is logged.
                        extra={
                            "event": "api.tokens_reloaded",
                            "path": str(self._path),
                            "callers": len(self._entries),
                        },
                    )
            return self._entries
