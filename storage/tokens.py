"""Access control of the HTTP API: bearer tokens and the audit trail of what they were used for.

Tokens live in ``<home>/tokens.json`` (mode 0600, written atomically, at most
:data:`MAX_TOKENS` entries). A token's secret is shown once, when it is created, and only its
SHA-256 is stored: the secret is 32 random bytes, so a plain hash cannot be brute-forced and a
copy of the file lets nobody call the API. A secret names its token
(``dre_<id>_<base64url>``) so checking one is a lookup by id and one constant-time comparison.

Rights (``--can``):

- ``publish``: publish packages whose scope is in the token's scopes (``*``: every scope, and
  unscoped names);
- ``scopes``: create scopes and grant or revoke their owners, for the token's scopes;
- ``admin``: everything, and reading the audit trail.

The audit trail (``<home>/audit-http.jsonl``) records every write the API was asked to do:
who (token id, client address), what (method, path, action), when and the result (status and a
message), with the registry record it produced. It is separate from the registry's hash-linked
log (``dre log``): that log is made of signed, replicated records about packages and scopes and
has no notion of tokens, addresses or refused requests, which is exactly what an operator needs
here. A trail entry names the record CID its write produced, which is also in the registry log.
The trail is bounded: at :data:`MAX_AUDIT_FILE_BYTES` the file is rotated to ``.1`` (one
generation kept).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from dre.protocol.errors import DreError, NotFoundError, ValidationError

from .fsutil import read_json_file
from .keystore import write_private_file

__all__ = [
    "AUDIT_FILE",
    "MAX_AUDIT_FILE_BYTES",
    "MAX_TOKENS",
    "RIGHTS",
    "TOKENS_FILE",
    "AuditEntry",
    "AuditTrail",
    "AuthenticationError",
    "Right",
    "TokenInfo",
    "TokenStore",
    "token_covers",
]

TOKENS_FILE = "tokens.json"
AUDIT_FILE = "audit-http.jsonl"
#: Live and revoked tokens kept; creating one more drops the oldest revoked or expired ones.
MAX_TOKENS = 1000
#: The audit trail's file is rotated past this size (one older generation is kept).
MAX_AUDIT_FILE_BYTES = 8 << 20
#: A secret is short; anything longer in an Authorization header is not one of ours.
MAX_SECRET_CHARS = 128

Right = Literal["publish", "scopes", "admin"]
RIGHTS: tuple[str, ...] = ("publish", "scopes", "admin")
ALL_SCOPES = "*"

_FILE_VERSION = 1
_MAX_FILE_BYTES = 1 << 20
_ID_RE = re.compile(r"[0-9a-f]{12}")
_SECRET_RE = re.compile(r"dre_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_SCOPE_RE = re.compile(r"@[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")

_Scope = Annotated[str, msgspec.Meta(min_length=1, max_length=215)]


class AuthenticationError(DreError):
    """No credentials, or credentials that are not a live token (HTTP 401)."""


class TokenInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One token as stored (never its secret, only the secret's SHA-256)."""

    id: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{12}$")]
    name: Annotated[str, msgspec.Meta(max_length=64)]
    rights: Annotated[list[Right], msgspec.Meta(max_length=3)]
    scopes: Annotated[list[_Scope], msgspec.Meta(max_length=64)]
    created: int
    expires: int | None = None
    revoked: int | None = None
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")] = "0" * 64

    def public(self) -> TokenInfo:
        """The token without its hash, for listings."""
        return msgspec.structs.replace(self, sha256="0" * 64)

    def live(self, now: int) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked is None and (self.expires is None or now < self.expires)


class _TokenFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    tokens: Annotated[list[TokenInfo], msgspec.Meta(max_length=MAX_TOKENS)]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def token_covers(token: TokenInfo, right: str, scope: str | None) -> bool:
    """Whether ``token`` holds ``right`` for ``scope`` (``@acme``; None for an unscoped name or
    a node-wide action). ``admin`` holds every right everywhere."""
    if "admin" in token.rights:
        return True
    if right not in token.rights:
        return False
    return ALL_SCOPES in token.scopes or (scope is not None and scope in token.scopes)


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    if not scopes:
        raise ValidationError("give at least one --scope (@team, or * for every scope)")
    if len(scopes) > 64:
        raise ValidationError("a token covers at most 64 scopes")
    for scope in scopes:
        if scope != ALL_SCOPES and not _SCOPE_RE.fullmatch(scope):
            raise ValidationError(f"invalid scope {scope[:80]!r}: use @team (lower case) or *")
    return sorted(set(scopes))


def _check_rights(rights: Sequence[str]) -> list[Right]:
    if not rights:
        raise ValidationError(f"give at least one --can ({', '.join(RIGHTS)})")
    for right in rights:
        if right not in RIGHTS:
            raise ValidationError(f"unknown right {right[:40]!r}: use {', '.join(RIGHTS)}")
    return [r for r in ("publish", "scopes", "admin") if r in rights]


class TokenStore:
    """The tokens of one node home. Every method reads the file afresh (a CLI in another process
    may have changed it), except :meth:`authenticate`, which re-reads only when the file changed.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / TOKENS_FILE
        self._cache: tuple[tuple[int, int, int], dict[str, TokenInfo]] | None = None
        self._cache_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> builtins.list[TokenInfo]:
        doc = read_json_file(self.path, _TokenFile, max_bytes=_MAX_FILE_BYTES,
                             default=_TokenFile(version=_FILE_VERSION, tokens=[]))
        if doc.version != _FILE_VERSION:
            raise DreError(f"{self.path} has version {doc.version}; this dre reads "
                           f"{_FILE_VERSION}")
        return list(doc.tokens)

    def list(self) -> list[TokenInfo]:
        """Every token (live, expired and revoked), oldest first, without hashes."""
        return [t.public() for t in self._load()]

    def _by_id(self) -> dict[str, TokenInfo]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
        tokens = {t.id: t for t in self._load()}
        with self._cache_lock:
            self._cache = (stamp, tokens)
        return tokens

    def authenticate(self, secret: str, *, now: int) -> TokenInfo:
        """The live token whose secret is ``secret``; AuthenticationError otherwise."""
        match = _SECRET_RE.fullmatch(secret) if len(secret) <= MAX_SECRET_CHARS else None
        if match is None:
            raise AuthenticationError("malformed token: expected dre_<id>_<secret>")
        token = self._by_id().get(match.group(1))
        # Hash compared in constant time; an unknown id costs the same comparison.
        expected = token.sha256 if token is not None else "0" * 64
        if not hmac.compare_digest(_hash(secret), expected) or token is None:
            raise AuthenticationError("unknown token")
        if token.revoked is not None:
            raise AuthenticationError(f"token {token.id} was revoked")
        if token.expires is not None and now >= token.expires:
            raise AuthenticationError(f"token {token.id} has expired")
        return token

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[builtins.list[TokenInfo]]:
        if not self.home.is_dir():
            raise NotFoundError(f"no DRE home at {self.home}: run `dre init` first")
        # One writer at a time across processes; readers never wait (the file is replaced
        # atomically).
        fd = os.open(self.home / ".tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._load()
        finally:
            os.close(fd)

    def _save(self, tokens: builtins.list[TokenInfo]) -> None:
        data = msgspec.json.format(
            msgspec.json.encode(_TokenFile(version=_FILE_VERSION, tokens=tokens)), indent=1)
        write_private_file(self.path, data + b"\n", overwrite=True)

    def create(self, *, name: str, rights: Sequence[str], scopes: Sequence[str], now: int,
               expires: int | None = None) -> tuple[TokenInfo, str]:
        """Create a token; returns it and its secret (the only time the secret exists)."""
        if not _NAME_RE.fullmatch(name):
            raise ValidationError(f"invalid token name {name[:80]!r}: 1 to 64 letters, digits, "
                                  "spaces and . _ @ -")
        checked_rights = _check_rights(rights)
        checked_scopes = _check_scopes(scopes)
        if expires is not None and expires <= now:
            raise ValidationError("the expiry is in the past")
        with self._locked() as stored:
            tokens = stored
            if len(tokens) >= MAX_TOKENS:
                # Dead tokens go first, oldest first; live ones are never dropped.
                dead = [t for t in tokens if not t.live(now)]
                drop = {t.id for t in dead[: len(tokens) - MAX_TOKENS + 1]}
                tokens = [t for t in tokens if t.id not in drop]
                if len(tokens) >= MAX_TOKENS:
                    raise ValidationError(f"this home already has {MAX_TOKENS} live tokens; "
                                          "revoke some first")
            taken = {t.id for t in tokens}
            token_id = secrets.token_hex(6)
            while token_id in taken:
                token_id = secrets.token_hex(6)
            secret = (f"dre_{token_id}_"
                      + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
            token = TokenInfo(id=token_id, name=name, rights=checked_rights,
                              scopes=checked_scopes, created=now, expires=expires,
                              sha256=_hash(secret))
            self._save([*tokens, token])
        return token.public(), secret

    def revoke(self, token_id: str, *, now: int) -> TokenInfo:
        """Revoke a token: it is refused from now on (also by a node that is running)."""
        if not _ID_RE.fullmatch(token_id):
            raise ValidationError(f"invalid token id {token_id[:40]!r}: 12 hex digits")
        with self._locked() as tokens:
            for i, token in enumerate(tokens):
                if token.id == token_id:
                    if token.revoked is not None:
                        raise ValidationError(f"token {token_id} is already revoked")
                    revoked: TokenInfo = msgspec.structs.replace(token, revoked=now)
                    tokens[i] = revoked
                    self._save(tokens)
                    return revoked.public()
        raise NotFoundError(f"no token with id {token_id}")


# -- the audit trail -------------------------------------------------------------------------------


class AuditEntry(msgspec.Struct, frozen=True):
    """One write asked of the HTTP API, allowed or not."""

    seq: int
    time: int
    #: The token's id; None when the request had no valid token.
    token: str | None
    #: The client's address as the server saw it.
    address: str
    method: str
    path: str
    #: What was asked (``publish @acme/retry@1.0.0``, ``scope create @acme``, …).
    action: str
    status: int
    #: ``ok`` or the error message the client got.
    result: str
    #: The signed record the write produced (manifest, scope record), also in `dre log`.
    record: str | None = None


class AuditTrail:
    """The append-only JSON-lines audit trail of one node home (one writer: the node)."""

    def __init__(self, home: Path, *, max_bytes: int = MAX_AUDIT_FILE_BYTES) -> None:
        self.path = home / AUDIT_FILE
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._next_seq: int | None = None

    def _files(self) -> list[Path]:
        return [self.path.with_name(self.path.name + ".1"), self.path]

    def _read_all(self) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        for path in self._files():
            try:
                with path.open("rb") as fh:
                    raw = fh.read(self.max_bytes * 2)
            except FileNotFoundError:
                continue
            for line in raw.splitlines():
                # A line cut short by a crash is skipped, not fatal.
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    entries.append(msgspec.json.decode(line, type=AuditEntry))
        return entries

    def record(self, entry: AuditEntry) -> AuditEntry:
        """Append ``entry`` (its ``seq`` is assigned here) and return it as written."""
        with self._lock:
            if self._next_seq is None:
                existing = self._read_all()
                self._next_seq = existing[-1].seq + 1 if existing else 0
            written = msgspec.structs.replace(entry, seq=self._next_seq)
            line = msgspec.json.encode(written) + b"\n"
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_size + len(line) > self.max_bytes:
                    os.replace(self.path, self._files()[0])
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self._next_seq += 1
            return written

    def entries(self, *, after: int = -1, limit: int = 100) -> list[AuditEntry]:
        """Entries with ``seq > after``, oldest first, at most ``limit``."""
        with self._lock:
            found = [e for e in self._read_all() if e.seq > after]
        return found[:limit]
