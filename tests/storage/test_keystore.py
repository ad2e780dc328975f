"""The keystore: file format, permissions (like ssh), names, export/import round trips."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from dre.protocol.errors import NotFoundError, ValidationError
from dre.protocol.keys import PublisherKey, public_key_from_peer_id, verify_signature
from dre.storage.keystore import (
    DEFAULT_KEY_NAME,
    KeyInfo,
    Keystore,
    decode_key_file,
    encode_key_file,
    write_private_file,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def store(home: Path) -> Keystore:
    return Keystore(home)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_0600_file_in_0700_dir(store: Keystore, home: Path) -> None:
    info = store.generate("alice")
    assert isinstance(info, KeyInfo)
    assert info.name == "alice" and info.peer_id.startswith("12D3KooW")
    assert info.created is not None and info.created.endswith("Z")
    path = home / "keys" / "alice.key"
    if os.name == "posix":
        assert mode(home / "keys") == 0o700
        assert mode(path) == 0o600
    doc = json.loads(path.read_bytes())
    assert list(doc) == ["version", "type", "seed", "peer_id"]
    assert doc["version"] == 1 and doc["type"] == "ed25519" and doc["peer_id"] == info.peer_id
    assert len(base64.b64decode(doc["seed"])) == 32
    # No temporary files left behind.
    assert sorted(p.name for p in (home / "keys").iterdir()) == ["alice.key"]


@posix_only
def test_permissions_hold_under_a_permissive_umask(store: Keystore, home: Path) -> None:
    old = os.umask(0)
    try:
        store.generate("k")
    finally:
        os.umask(old)
    assert mode(home / "keys") == 0o700
    assert mode(home / "keys" / "k.key") == 0o600


def test_get_signs_as_the_listed_peer_id(store: Keystore) -> None:
    info = store.generate("signer")
    key = store.get("signer")
    signature = key.sign(b"manifest")
    assert key.peer_id == info.peer_id == store.export_public("signer")
    assert verify_signature(public_key_from_peer_id(info.peer_id), b"manifest", signature)
    assert store.info("signer") == info


def test_duplicate_name_is_refused_and_key_unchanged(store: Keystore, home: Path) -> None:
    first = store.generate("dup")
    before = (home / "keys" / "dup.key").read_bytes()
    with pytest.raises(ValidationError, match="key 'dup' already exists"):
        store.generate("dup")
    with pytest.raises(ValidationError, match="key 'dup' already exists"):
        store.import_key("dup", encode_key_file(PublisherKey.generate()))
    assert (home / "keys" / "dup.key").read_bytes() == before
    assert store.info("dup").peer_id == first.peer_id


@pytest.mark.parametrize(
    "name",
    ["", "Alice", "-x", ".x", "_x", "a/b", "../x", "a b", "a\n", "é", "a" * 65, "x:y", "a\x00"],
)
def test_bad_names_are_refused(store: Keystore, name: str, home: Path) -> None:
    with pytest.raises(ValidationError, match="invalid key name"):
        store.generate(name)
    with pytest.raises(ValidationError, match="invalid key name"):
        store.get(name)
    with pytest.raises(ValidationError, match="invalid key name"):
        store.import_key(name, encode_key_file(PublisherKey.generate()))
    assert not (home / "keys").exists() or not any((home / "keys").iterdir())


@pytest.mark.parametrize("name", ["a", "0", "self", "my-key_1.v2", "a" * 64])
def test_good_names(store: Keystore, name: str) -> None:
    assert store.generate(name).name == name
    assert store.names() == [name]


def test_missing_key_is_not_found(store: Keystore) -> None:
    with pytest.raises(NotFoundError, match="no key named 'nope'"):
        store.get("nope")  # no keys directory yet
    store.generate("other")
    with pytest.raises(NotFoundError, match="no key named 'nope'"):
        store.info("nope")
    with pytest.raises(NotFoundError):
        store.export_private("nope")


def test_list_sorted_and_ignores_foreign_files(store: Keystore, home: Path) -> None:
    assert store.list() == []
    for name in ("zeta", "alpha", "mid"):
        store.generate(name)
    (home / "keys" / ".alpha.key.tmp-1-abcd").write_bytes(b"junk")
    (home / "keys" / "README").write_bytes(b"junk")
    infos = store.list()
    assert [i.name for i in infos] == ["alpha", "mid", "zeta"]
    assert len({i.peer_id for i in infos}) == 3


@posix_only
@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_loose_key_file_is_refused(store: Keystore, home: Path, loose: int) -> None:
    store.generate("k")
    path = home / "keys" / "k.key"
    path.chmod(loose)
    for call in (store.get, store.info, store.export_private, store.export_public):
        with pytest.raises(ValidationError, match=r"too open.*chmod 600"):
            call("k")
    with pytest.raises(ValidationError, match="chmod 600"):
        store.list()  # noticed, not silently skipped
    path.chmod(0o600)
    assert store.get("k").peer_id == store.info("k").peer_id


@posix_only
def test_stricter_key_file_is_fine(store: Keystore, home: Path) -> None:
    store.generate("k")
    (home / "keys" / "k.key").chmod(0o400)
    assert store.get("k")


@posix_only
def test_key_dir_writable_by_others_is_refused(store: Keystore, home: Path) -> None:
    store.generate("k")
    (home / "keys").chmod(0o777)
    try:
        with pytest.raises(ValidationError, match="chmod 700"):
            store.get("k")
        with pytest.raises(ValidationError, match="chmod 700"):
            store.generate("j")
    finally:
        (home / "keys").chmod(0o700)


@posix_only
def test_symlinked_key_file_is_refused(store: Keystore, home: Path, tmp_path: Path) -> None:
    store.generate("real")
    os.symlink(home / "keys" / "real.key", home / "keys" / "link.key")
    with pytest.raises(ValidationError, match="symlink"):
        store.get("link")


def test_export_import_round_trip(home: Path, tmp_path: Path) -> None:
    source = Keystore(home)
    info = source.generate("mine")
    data = source.export_private("mine")
    assert data == (home / "keys" / "mine.key").read_bytes()
    other_home = tmp_path / "other"
    other_home.mkdir()
    target = Keystore(other_home)
    imported = target.import_key("theirs", data)
    assert imported.peer_id == info.peer_id
    assert target.get("theirs").seed == source.get("mine").seed
    assert target.export_public("theirs") == info.peer_id
    if os.name == "posix":
        assert mode(other_home / "keys" / "theirs.key") == 0o600


def _doc(key: PublisherKey, **changes: object) -> bytes:
    doc: dict[str, object] = json.loads(encode_key_file(key))
    doc.update(changes)
    return json.dumps(doc).encode()


def test_import_validates_strictly(store: Keystore, home: Path) -> None:
    key = PublisherKey.generate()
    other = PublisherKey.generate()
    seed = base64.b64encode(key.seed).decode()
    bad_inputs = {
        "not JSON": b"\x00\xffgarbage",
        "empty": b"",
        "list": b"[]",
        "unknown field": _doc(key, extra=1),
        "version 2": _doc(key, version=2),
        "type rsa": _doc(key, type="rsa"),
        "short seed": _doc(key, seed=base64.b64encode(key.seed[:31]).decode()),
        "urlsafe seed": _doc(key, seed=seed.replace("+", "-").replace("/", "_") + "-_"),
        "seed with spaces": _doc(key, seed=" " + seed),
        "wrong peer id": _doc(key, peer_id=other.peer_id),
        "seed not a string": _doc(key, seed=123),
        "huge": b" " * 10000 + encode_key_file(key),
    }
    missing = json.loads(encode_key_file(key))
    del missing["peer_id"]
    bad_inputs["missing peer_id"] = json.dumps(missing).encode()
    for label, data in bad_inputs.items():
        with pytest.raises(ValidationError):
            store.import_key("k", data)
            pytest.fail(label)
    assert store.names() == []
    assert store.import_key("k", encode_key_file(key)).peer_id == key.peer_id


def test_non_canonical_base64_seed_is_refused() -> None:
    key = PublisherKey.from_seed(bytes(range(32)))
    text = base64.b64encode(key.seed).decode()
    assert text.endswith("=")
    # Same 32 bytes, other padding bits: refused so one key has one file text.
    last = text[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    tweaked = text[:-2] + alphabet[alphabet.index(last) + 1] + "="
    assert base64.b64decode(tweaked) == key.seed
    with pytest.raises(ValidationError, match="seed"):
        decode_key_file(_doc(key, seed=tweaked), "x")


def test_corrupt_stored_key_names_the_file(store: Keystore, home: Path) -> None:
    store.generate("k")
    path = home / "keys" / "k.key"
    path.write_bytes(path.read_bytes().replace(b'"version": 1', b'"version": 9'))
    with pytest.raises(ValidationError, match=r"k\.key.*version 9"):
        store.get("k")


def test_ensure_default_creates_self_once(store: Keystore) -> None:
    assert store.default_name() == DEFAULT_KEY_NAME == "self"
    first = store.ensure_default()
    assert first.name == "self"
    assert store.ensure_default().peer_id == first.peer_id
    assert store.names() == ["self"]


def test_keystore_needs_an_existing_home(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no DRE home"):
        Keystore(tmp_path / "absent").generate("k")
    assert not (tmp_path / "absent").exists()


def test_write_private_file_never_clobbers(tmp_path: Path) -> None:
    target = tmp_path / "out.key"
    write_private_file(target, b"one")
    with pytest.raises(FileExistsError):
        write_private_file(target, b"two")
    assert target.read_bytes() == b"one"
    write_private_file(target, b"three", overwrite=True)
    assert target.read_bytes() == b"three"
    if os.name == "posix":
        assert mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.key"]


def test_repr_of_key_hides_seed(store: Keystore) -> None:
    store.generate("k")
    key = store.get("k")
    assert base64.b64encode(key.seed).decode() not in repr(key)
    assert key.seed.hex() not in repr(key)
