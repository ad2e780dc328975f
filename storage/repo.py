"""The node home: where a node keeps its configuration and its block store.

Layout of a home directory (``$DRE_HOME``, default a per-user data directory)::

    config.json     versioned configuration (unknown fields are refused)
    blocks/         the LMDB block store
    index/          the registry's metadata index (names, versions, scopes, audit log)
    keys/           the keystore (files 0600)
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import msgspec
import platformdirs
from dre.protocol.errors import DreError, ValidationError

from .fsutil import read_json_file
from .index import RegistryIndex
from .lmdb_store import LmdbBlockStore

__all__ = ["CONFIG_VERSION", "Repo", "RepoConfig", "default_home"]

CONFIG_VERSION = 1
_CONFIG_FILE = "config.json"
_BLOCKS_DIR = "blocks"
_INDEX_DIR = "index"
_MAX_CONFIG_BYTES = 64 * 1024


class RepoConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a node home is configured with."""

    version: int = CONFIG_VERSION
    #: Re-hash every block read from disk (catches bit rot, costs one sha256 per read).
    verify_on_read: bool = False
    #: Initial LMDB map size; the store grows it automatically when full.
    initial_map_size: int = 1 << 30


def default_home() -> Path:
    """``$DRE_HOME`` if set, else the platform's per-user data directory."""
    env = os.environ.get("DRE_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("dre", appauthor=False))


class Repo:
    """An opened node home. Use :meth:`init` to create one and :meth:`open` to open it."""

    def __init__(
        self, home: Path, config: RepoConfig, store: LmdbBlockStore, index: RegistryIndex
    ) -> None:
        self.home = home
        self.config = config
        self.store = store
        self.index = index

    @staticmethod
    def exists(home: Path) -> bool:
        """Whether ``home`` holds an initialized node home."""
        return (home / _CONFIG_FILE).is_file()

    @classmethod
    def init(cls, home: Path) -> bool:
        """Create a node home at ``home``; returns False if one was already there (left as is)."""
        if cls.exists(home):
            return False
        if home.exists() and not home.is_dir():
            raise ValidationError(f"cannot create a DRE home at {home}: it is not a directory")
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            (home / _BLOCKS_DIR).mkdir(exist_ok=True, mode=0o700)
            LmdbBlockStore(home / _BLOCKS_DIR).close()
            RegistryIndex(home / _INDEX_DIR).close()
            tmp = home / (_CONFIG_FILE + ".tmp")
            tmp.write_bytes(msgspec.json.format(msgspec.json.encode(RepoConfig())) + b"\n")
            # The config appears last: a home is either whole or absent.
            os.replace(tmp, home / _CONFIG_FILE)
        except PermissionError as exc:
            raise ValidationError(f"cannot create a DRE home at {home}: {exc.strerror}") from None
        return True

    @classmethod
    def open(cls, home: Path) -> Repo:
        """Open an existing node home; a clear error if there is none or its config is bad."""
        config_path = home / _CONFIG_FILE
        if not config_path.is_file():
            raise DreError(f"no DRE home at {home}: run `dre init` first (or set DRE_HOME)")
        config = read_json_file(config_path, RepoConfig, max_bytes=_MAX_CONFIG_BYTES)
        if config.version != CONFIG_VERSION:
            raise DreError(
                f"{config_path} has version {config.version}; this dre reads {CONFIG_VERSION}"
            )
        store = LmdbBlockStore(
            home / _BLOCKS_DIR,
            map_size=config.initial_map_size,
            verify_on_read=config.verify_on_read,
        )
        return cls(home, config, store, RegistryIndex(home / _INDEX_DIR))

    def close(self) -> None:
        """Close the block store and the index."""
        self.index.close()
        self.store.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
