"""The keystore: a node's Ed25519 publisher keys, kept in the node home like ``~/.ssh``.

Layout::

    <home>/keys/            0700
    <home>/keys/<name>.key  0600, one small JSON document per key:
        {"version": 1, "type": "ed25519", "seed": "<base64>", "peer_id": "12D3KooW…"}

The seed is the whole secret; the peer ID is stored beside it so a truncated or hand-edited file
is caught (it must be the peer ID of the seed) and so a person can tell which key a file holds.
Like ssh, a key file readable or writable by anyone but its owner is refused rather than used:
a leaked publisher key can sign packages in our name, so failing loudly is the safe default.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from dre.protocol.errors import NotFoundError, ValidationError
from dre.protocol.keys import PEER_ID_LENGTH, SEED_SIZE, PublisherKey

__all__ = [
    "DEFAULT_KEY_NAME",
    "KEY_FILE_VERSION",
    "MAX_KEY_FILE_BYTES",
    "KeyInfo",
    "Keystore",
    "decode_key_file",
    "encode_key_file",
    "validate_key_name",
    "write_private_file",
]

KEY_FILE_VERSION = 1
DEFAULT_KEY_NAME = "self"
#: A real key file is ~150 bytes; anything much larger is not one (and is not read whole).
MAX_KEY_FILE_BYTES = 4096

_KEYS_DIR = "keys"
_SUFFIX = ".key"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Base64 of 32 bytes is 44 characters; the bound only keeps a hostile file cheap to reject.
_MAX_SEED_TEXT = 64
_IS_POSIX = os.name == "posix"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class KeyInfo(msgspec.Struct, frozen=True):
    """What may be shown about a key: never its seed."""

    name: str
    peer_id: str
    #: When the key file was written (its mtime, UTC, ISO 8601), or None if unknown.
    created: str | None = None


class _KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Field order is the on-disk order; every field is required so an old or foreign
    # document is refused instead of half-understood.
    version: int
    type: str
    seed: str
    peer_id: str


def validate_key_name(name: str) -> str:
    """``name`` if it is a valid key name (``[a-z0-9][a-z0-9._-]{0,63}``), else ValidationError."""
    # fullmatch, not match + "$": "$" would accept a trailing newline.
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid key name {name!r}: use 1 to 64 of a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return name


def encode_key_file(key: PublisherKey) -> bytes:
    """The canonical key file bytes for ``key`` (one JSON object and a newline)."""
    doc = _KeyFile(
        version=KEY_FILE_VERSION,
        type="ed25519",
        seed=base64.b64encode(key.seed).decode("ascii"),
        peer_id=key.peer_id,
    )
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def decode_key_file(data: bytes, source: str) -> PublisherKey:
    """The key in key file bytes ``data``, checked strictly; ``source`` names it in errors."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValidationError(f"{source}: not a DRE key file (larger than {MAX_KEY_FILE_BYTES} B)")
    try:
        doc = msgspec.json.decode(data, type=_KeyFile)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"{source}: not a DRE key file: {exc}") from None
    except msgspec.DecodeError:
        raise ValidationError(f"{source}: not a DRE key file (not JSON)") from None
    if doc.version != KEY_FILE_VERSION:
        raise ValidationError(
            f"{source}: key file version {doc.version} is not supported (this dre reads "
            f"{KEY_FILE_VERSION})"
        )
    if doc.type != "ed25519":
        raise ValidationError(f"{source}: unsupported key type {doc.type[:32]!r} (only ed25519)")
    seed = _decode_seed(doc.seed, source)
    key = PublisherKey.from_seed(seed)
    if doc.peer_id != key.peer_id:
        # The seed decides the key; a peer ID that disagrees means the file was damaged or
        # edited, and using it would sign as someone other than the file claims.
        shown = doc.peer_id[: PEER_ID_LENGTH + 8]
        raise ValidationError(
            f"{source}: peer_id {shown!r} does not match the seed (key {key.peer_id})"
        )
    return key


def _decode_seed(text: str, source: str) -> bytes:
    if len(text) > _MAX_SEED_TEXT:
        raise ValidationError(f"{source}: seed is not a base64 {SEED_SIZE}-byte Ed25519 seed")
    try:
        seed = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        seed = b""
    # Re-encoding refuses non-canonical base64 (stray padding bits): one file text per key.
    if len(seed) != SEED_SIZE or base64.b64encode(seed).decode("ascii") != text:
        raise ValidationError(f"{source}: seed is not a base64 {SEED_SIZE}-byte Ed25519 seed")
    return seed


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write secret ``data`` to ``path`` atomically, mode 0600 from the first byte.

    The temporary file is created 0600 (``O_EXCL``) so the secret is never readable by others,
    not even for a moment. Without ``overwrite`` an existing ``path`` is never replaced, also
    not by a concurrent writer (the final step is a hard link, which fails if the name exists);
    losing a private key to a clobber is not recoverable.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        # Some filesystems (FAT, some FUSE mounts) have no hard links: fall back to a check
        # then a rename, which is only racy against a concurrent writer of the same name.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if path.exists() or path.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    # Make the new directory entry durable too; not possible (nor needed) everywhere.
    if not _IS_POSIX:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mtime_iso(st: os.stat_result) -> str:
    return datetime.fromtimestamp(int(st.st_mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Keystore:
    """The publisher keys of one node home, in ``<home>/keys/``.

    Nothing is created until a key is written, so opening a keystore (e.g. to list it) leaves
    the home untouched.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / _KEYS_DIR

    # -- reading ---------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        return self.path / f"{validate_key_name(name)}{_SUFFIX}"

    def _check_dir(self) -> None:
        st = self.path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise ValidationError(f"{self.path} is not a directory")
        # A directory others can write to lets them swap our key files: refuse, like ssh.
        if _IS_POSIX and st.st_mode & 0o022:
            raise ValidationError(
                f"key directory {self.path} has permissions {stat.S_IMODE(st.st_mode):04o}, "
                f"writable by others: run `chmod 700 {self.path}`"
            )

    def _read(self, name: str) -> tuple[PublisherKey, bytes, os.stat_result]:
        path = self._file(name)
        try:
            self._check_dir()
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFoundError(f"no key named {name!r}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValidationError(f"key file {path} is a symlink; refusing it") from None
            raise
        try:
            st = os.fstat(fd)
            # Checked on the open descriptor, so the file cannot change between check and read.
            if not stat.S_ISREG(st.st_mode):
                raise ValidationError(f"key file {path} is not a regular file")
            if _IS_POSIX:
                mode = stat.S_IMODE(st.st_mode)
                if mode & 0o077:
                    raise ValidationError(
                        f"key file {path} has permissions {mode:04o}, too open for a private "
                        f"key: run `chmod 600 {path}`"
                    )
                if st.st_uid != os.getuid():
                    raise ValidationError(
                        f"key file {path} is owned by uid {st.st_uid}, not by you "
                        f"(uid {os.getuid()}); refusing it"
                    )
            data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        return decode_key_file(data, f"key file {path}"), data, st

    def get(self, name: str) -> PublisherKey:
        """The signing key named ``name``; NotFoundError if there is none."""
        return self._read(name)[0]

    def info(self, name: str) -> KeyInfo:
        """Name, peer ID and creation time of the key ``name``."""
        key, _, st = self._read(name)
        return KeyInfo(name=name, peer_id=key.peer_id, created=_mtime_iso(st))

    def exists(self, name: str) -> bool:
        """Whether a key file named ``name`` is present (it is not opened nor checked)."""
        return self._file(name).is_file()

    def names(self) -> list[str]:
        """Names of the stored keys, sorted; temporary and foreign files are ignored."""
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        names = []
        for entry in entries:
            stem = entry.removesuffix(_SUFFIX)
            if stem != entry and _NAME_RE.fullmatch(stem):
                names.append(stem)
        return sorted(names)

    def list(self) -> list[KeyInfo]:
        """Every key, sorted by name. A key file that fails its checks fails the listing:
        a key with loose permissions should be noticed, not silently skipped."""
        return [self.info(name) for name in self.names()]

    def export_public(self, name: str) -> str:
        """The public half of key ``name``, as its peer ID."""
        # Annotated: mypy sees dre.protocol through the editable install only as Any.
        peer_id: str = self.get(name).peer_id
        return peer_id

    def export_private(self, name: str) -> bytes:
        """The key file of ``name`` (the secret): canonical bytes, ready for :meth:`import_key`."""
        # Re-encoded rather than copied so an export is canonical whatever is on disk.
        return encode_key_file(self.get(name))

    # -- writing ---------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        if not self.home.is_dir():
            raise NotFoundError(f"no DRE home at {self.home}: run `dre init` first")
        with contextlib.suppress(FileExistsError):
            self.path.mkdir(mode=0o700)
        self._check_dir()

    def _store(self, name: str, key: PublisherKey) -> KeyInfo:
        path = self._file(name)
        self._ensure_dir()
        try:
            write_private_file(path, encode_key_file(key))
        except FileExistsError:
            raise ValidationError(f"key {name!r} already exists") from None
        return self.info(name)

    def generate(self, name: str) -> KeyInfo:
        """Create a fresh random key ``name``; ValidationError if that name is taken."""
        path = self._file(name)
        # Checked first only for a cheap, clear error; the write itself never clobbers.
        if path.exists() or path.is_symlink():
            raise ValidationError(f"key {name!r} already exists")
        return self._store(name, PublisherKey.generate())

    def import_key(self, name: str, data: bytes, *, source: str = "imported key") -> KeyInfo:
        """Store the key in key file bytes ``data`` as ``name`` (validated strictly first).

        ``source`` names the data in errors (e.g. the file it was read from).
        """
        validate_key_name(name)
        key = decode_key_file(data, source)
        return self._store(name, key)

    @staticmethod
    def default_name() -> str:
        """The name of the node's own key, used when a command is given none."""
        return DEFAULT_KEY_NAME

    def ensure_default(self) -> KeyInfo:
        """The default key, generated on first use."""
        name = self.default_name()
        try:
            return self.info(name)
        except NotFoundError:
            pass
        try:
            return self.generate(name)
        except ValidationError:
            # Another process created it between our two steps: theirs is the key now.
            if self.exists(name):
                return self.info(name)
            raise
