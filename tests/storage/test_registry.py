"""The local registry: publish, immutability, authorization, scopes, verify, tampering, log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgspec
import pytest
from dre.protocol.cid import CID, multihash_of
from dre.protocol.errors import AuthorizationError, IntegrityError, ValidationError
from dre.protocol.keys import PublisherKey
from dre.protocol.links import links_of
from dre.protocol.packages import build_tree
from dre.protocol.records import MANIFEST, ScopeRecord, sign_record
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(bytes(range(32)))
BOB = PublisherKey.from_seed(bytes(range(1, 33)))
NOW = 1_790_000_000


def doc(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def registry(repo: Repo) -> LocalRegistry:
    return LocalRegistry(repo)


def snapshot(repo: Repo) -> tuple[object, ...]:
    return (
        sorted(repo.store.iter_multihashes()),
        repo.store.stats(),
        sorted((bytes(c), k) for c, k in repo.store.pins()),
        repo.index.names(),
        repo.index.scopes(),
        repo.index.log_head(),
    )


def test_publish_then_verify_reproduces(registry: LocalRegistry) -> None:
    result = registry.publish(doc("left-pad.md"), ALICE, now=NOW)
    assert result.reproducible and result.previous is None and not result.already_published
    report = registry.verify("left-pad", None, BOB, now=NOW + 1)
    assert report.signature_valid and report.authorized and report.intact
    assert report.reproduced and report.regenerated == result.package
    assert report.license_valid
    assert report.attestation is not None
    # Bob's attestation is independent of Alice, the publisher: it counts on the next verify.
    again = registry.verify("left-pad", "1.3.0", ALICE, now=NOW + 2)
    assert again.independent_attesters == [BOB.peer_id]
    assert again.trust > report.trust
    # Every attestation recorded (a replacement too) moves the change counter; a read-only
    # verify records nothing and moves nothing.
    assert registry.index.attestation_changes() == 2
    registry.verify("left-pad", None, BOB, now=NOW + 3)
    assert registry.index.attestation_changes() == 3
    assert registry.verify("left-pad", None, None, now=NOW + 4).attestation is None
    assert registry.index.attestation_changes() == 3


def test_republish_same_content_is_idempotent_other_content_refused(
    registry: LocalRegistry, repo: Repo
) -> None:
    first = registry.publish(doc("left-pad.md"), ALICE, now=NOW)
    same = registry.publish(doc("left-pad.md"), ALICE, now=NOW + 5)
    assert same.already_published and same.manifest == first.manifest
    before = snapshot(repo)
    changed = doc("left-pad.md").replace(b"Pad the left side", b"Pads the left side")
    with pytest.raises(ValidationError, match="immutable"):
        registry.publish(changed, ALICE, now=NOW + 6)
    assert snapshot(repo) == before


def test_versions_chain_through_previous(registry: LocalRegistry) -> None:
    registry.create_scope("@acme", ALICE, now=NOW)
    v1 = registry.publish(doc("acme-retry-1.0.0.md"), ALICE, now=NOW)
    v2 = registry.publish(doc("acme-retry-1.1.0.md"), ALICE, now=NOW + 10)
    assert v2.previous == v1.manifest
    assert registry.manifest(v2.manifest).previous == v1.manifest
    assert [v for v, _ in registry.versions("@acme/retry")] == ["1.0.0", "1.1.0"]


def test_unscoped_name_belongs_to_first_publisher(registry: LocalRegistry, repo: Repo) -> None:
    registry.publish(doc("left-pad.md"), ALICE, now=NOW)
    before = snapshot(repo)
    newer = doc("left-pad.md").replace(b"version: 1.3.0", b"version: 1.4.0")
    with pytest.raises(AuthorizationError, match="belongs to"):
        registry.publish(newer, BOB, now=NOW + 1)
    assert snapshot(repo) == before


def test_scoped_publish_needs_an_owner(registry: LocalRegistry, repo: Repo) -> None:
    before = snapshot(repo)
    with pytest.raises(AuthorizationError, match="does not exist"):
        registry.publish(doc("acme-retry-1.0.0.md"), ALICE, now=NOW)
    assert snapshot(repo) == before
    registry.create_scope("@acme", ALICE, now=NOW)
    before = snapshot(repo)
    with pytest.raises(AuthorizationError, match="not an owner"):
        registry.publish(doc("acme-retry-1.0.0.md"), BOB, now=NOW)
    assert snapshot(repo) == before
    with pytest.raises(AuthorizationError):
        registry.grant("@acme", BOB, BOB.peer_id, now=NOW)  # Bob cannot grant himself
    registry.grant("@acme", ALICE, BOB.peer_id, now=NOW + 1)
    registry.publish(doc("acme-retry-1.0.0.md"), BOB, now=NOW + 2)
    registry.revoke("@acme", ALICE, BOB.peer_id, now=NOW + 3)
    with pytest.raises(AuthorizationError, match="not an owner"):
        registry.publish(doc("acme-retry-1.1.0.md"), BOB, now=NOW + 4)
    with pytest.raises(ValidationError, match="last owner"):
        registry.revoke("@acme", ALICE, ALICE.peer_id, now=NOW + 5)
    scope = registry.scope("@acme")
    assert scope is not None and scope.version == 3 and scope.owners == [ALICE.peer_id]


def test_old_scope_record_never_replaces_newer(registry: LocalRegistry, repo: Repo) -> None:
    registry.create_scope("@acme", ALICE, now=NOW)
    registry.grant("@acme", ALICE, BOB.peer_id, now=NOW + 1)
    before = snapshot(repo)
    replay = ScopeRecord(scope="@acme", owners=[ALICE.peer_id], version=1, expires=None)
    with pytest.raises(AuthorizationError, match="not newer"):
        registry.update_scope(replay, ALICE, now=NOW + 2, action="replay")
    assert snapshot(repo) == before


def test_divergent_directory_refused_unless_allowed(registry: LocalRegistry, repo: Repo) -> None:
    text = doc("left-pad.md")
    _, package, _ = registry.prepare(text)
    generated = registry.prepare(text)[0]
    files = dict(generated.files)
    files["EXTRA.txt"] = b"not from the doc\n"
    files["README.md"] += b"# edited by hand\n"
    directory = build_tree(files)
    before = snapshot(repo)
    with pytest.raises(ValidationError, match=r"added: EXTRA\.txt; changed: README\.md"):
        registry.publish(text, ALICE, now=NOW, directory=directory)
    assert snapshot(repo) == before
    result = registry.publish(text, ALICE, now=NOW, directory=directory, allow_divergent=True)
    assert not result.reproducible and result.package == directory.root != package.root
    report = registry.verify("left-pad", None, ALICE, now=NOW)
    assert not report.reproduced and report.divergence is not None
    assert report.divergence.added == ("EXTRA.txt",)
    assert report.divergence.changed == ("README.md",)


def _overwrite_block(home: Path, cid: CID, data: bytes) -> None:
    """Change a stored block's bytes behind the store's back (what bit rot or an attacker does).

    The home must not be open in this process (LMDB allows one environment per file per process).
    """
    env = lmdb.open(str(home / "blocks"), max_dbs=16)
    db = env.open_db(b"blocks", create=False)
    with env.begin(write=True, db=db) as txn:
        assert txn.replace(multihash_of(cid), data) is not None
    env.close()


def test_tampered_package_block_is_caught(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Repo.init(home)
    with Repo.open(home) as repo:
        result = LocalRegistry(repo).publish(doc("slugify-lite.md"), ALICE, now=NOW)
        leaf = links_of(result.package, repo.store.get(result.package))[0]
        original = repo.store.get(leaf)
    _overwrite_block(home, leaf, original + b"tampered")
    with Repo.open(home) as repo:
        report = LocalRegistry(repo).verify("slugify-lite", None, BOB, now=NOW)
    assert report.signature_valid and not report.intact
    assert any(str(leaf) in bad for bad in report.bad_blocks)
    assert report.trust == 0.0


def test_tampered_manifest_or_signature_is_caught(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Repo.init(home)
    with Repo.open(home) as repo:
        result = LocalRegistry(repo).publish(doc("slugify-lite.md"), ALICE, now=NOW)
        envelope = repo.store.get(result.manifest)
    for position in (len(envelope) // 2, len(envelope) - 3):  # a payload byte, a signature byte
        tampered = bytearray(envelope)
        tampered[position] ^= 0x01
        _overwrite_block(home, result.manifest, bytes(tampered))
        with Repo.open(home) as repo:
            report = LocalRegistry(repo).verify("slugify-lite", None, BOB, now=NOW)
            assert not report.signature_valid and report.trust == 0.0
            assert report.attestation is None
            with pytest.raises(IntegrityError):
                LocalRegistry(repo).manifest(result.manifest)
        _overwrite_block(home, result.manifest, envelope)


def test_forged_manifest_from_another_key_is_unauthorized(registry: LocalRegistry) -> None:
    """A manifest Bob signed for Alice's package verifies as a signature but not as authorized."""
    registry.publish(doc("left-pad.md"), ALICE, now=NOW)
    real = registry.manifest(registry.resolve_version("left-pad", None)[1])
    forged = msgspec.structs.replace(real, version="9.9.9", publisher=BOB.peer_id, previous=None)
    block = sign_record(MANIFEST, forged, BOB)
    registry.store.put(block)
    registry.index.add_version("left-pad", "9.9.9", block.cid, owner=None)
    report = registry.verify("left-pad", "9.9.9", ALICE, now=NOW)
    assert report.signature_valid and not report.authorized
    assert "belongs to" in report.authorization_error


def test_audit_log_is_a_hash_chain(registry: LocalRegistry) -> None:
    registry.create_scope("@acme", ALICE, now=NOW)
    registry.publish(doc("acme-retry-1.0.0.md"), ALICE, now=NOW + 1)
    registry.grant("@acme", ALICE, BOB.peer_id, now=NOW + 2)
    registry.revoke("@acme", ALICE, BOB.peer_id, now=NOW + 3)
    entries = list(registry.log())
    assert [(e.seq, e.kind, e.action.split()[0]) for e in entries] == [
        (0, "scope", "create"), (1, "publish", "publish"), (2, "scope", "grant"),
        (3, "scope", "revoke"),
    ]
    assert entries[0].previous is None
    assert all(e.previous is not None for e in entries[1:])


def test_gc_keeps_every_published_version(registry: LocalRegistry, repo: Repo) -> None:
    registry.create_scope("@acme", ALICE, now=NOW)
    registry.publish(doc("acme-retry-1.0.0.md"), ALICE, now=NOW)
    registry.publish(doc("acme-retry-1.1.0.md"), ALICE, now=NOW + 1)
    repo.store.put(build_tree({"loose.txt": b"unpinned\n"}).blocks[0])  # garbage to collect
    result = repo.store.gc(links_of)
    assert result.removed_blocks == 1
    for version in ("1.0.0", "1.1.0"):
        report = registry.verify("@acme/retry", version, BOB, now=NOW + 2)
        assert report.intact and report.reproduced
    assert len(list(registry.log())) == 3
