"""Pure rules of the package registry: building trees, who may publish what, the trust score.

Nothing here reads a clock, a file or the network: times, records and check results are passed in,
so that every node applies exactly the same rules to the same signed records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Final

import msgspec

from .cid import CID, Block
from .errors import AuthorizationError
from .importer import PROFILE_V1, DirectoryBuilder, ImportedEntry, ImportProfile, import_bytes
from .records import Manifest, ScopeRecord

__all__ = [
    "ATTESTATIONS_FOR_FULL_TRUST",
    "TRUST_WEIGHTS",
    "BuiltTree",
    "TrustBreakdown",
    "build_file",
    "build_tree",
    "check_publisher",
    "check_scope_update",
    "manifest_summary",
    "scope_of",
    "trust_score",
]


class BuiltTree(msgspec.Struct, frozen=True):
    """A file tree imported in memory: its root, every block, and each file's CID by path."""

    root: CID
    blocks: list[Block]
    paths: dict[str, CID]


def build_tree(
    files: Mapping[str, bytes],
    profile: ImportProfile = PROFILE_V1,
    *,
    empty_directories: Sequence[str] = (),
) -> BuiltTree:
    """Import ``files`` (relative POSIX path -> bytes) as one UnixFS directory, in memory."""
    blocks: list[Block] = []
    builder = DirectoryBuilder(profile, blocks.append)
    for directory in empty_directories:
        builder.add_directory(directory)
    paths: dict[str, CID] = {}
    for path in sorted(files):
        entry, file_blocks = import_bytes(files[path], profile)
        blocks.extend(file_blocks)
        builder.add_file(path, entry)
        paths[path] = entry.cid
    root: ImportedEntry = builder.finish()
    return BuiltTree(root.cid, blocks, paths)


def build_file(data: bytes, profile: ImportProfile = PROFILE_V1) -> BuiltTree:
    """Import one file's bytes (a package's source document), in memory."""
    entry, blocks = import_bytes(data, profile)
    return BuiltTree(entry.cid, blocks, {})


def scope_of(name: str) -> str | None:
    """``@acme`` for ``@acme/retry``; None for an unscoped name."""
    if name.startswith("@") and "/" in name:
        return name.split("/", 1)[0]
    return None


def check_publisher(
    name: str, signer: str, *, scope: ScopeRecord | None, first_publisher: str | None, now: int
) -> None:
    """Raise :class:`AuthorizationError` unless ``signer`` may publish ``name`` at ``now``.

    A scoped name needs a current, unexpired scope record listing the signer as an owner. An
    unscoped name belongs to the key that first published it (``first_publisher``; None means
    nobody has, and the signer may claim it).
    """
    scope_name = scope_of(name)
    if scope_name is not None:
        if scope is None:
            raise AuthorizationError(
                f"scope {scope_name} does not exist here: create it with `dre scope create "
                f"{scope_name}` (or import its record) before publishing {name}"
            )
        if scope.expires is not None and now > scope.expires:
            raise AuthorizationError(f"scope {scope_name} expired at {scope.expires}")
        if signer not in scope.owners:
            raise AuthorizationError(
                f"key {signer} is not an owner of {scope_name}; an owner can run "
                f"`dre scope grant {scope_name} {signer}`"
            )
        return
    if first_publisher is not None and first_publisher != signer:
        raise AuthorizationError(
            f"{name} belongs to {first_publisher}, which published it first; "
            f"key {signer} may not publish it"
        )


def check_scope_update(current: ScopeRecord | None, new: ScopeRecord, signer: str) -> None:
    """Raise :class:`AuthorizationError` unless ``new`` may replace ``current``.

    Versions only go up (an old record never replaces a newer one, so a revocation cannot be
    rolled back by replaying the record before it); the signer must own the current record, or,
    for a new scope, be among the owners it names.
    """
    if current is None:
        if new.version != 1:
            raise AuthorizationError(f"a new scope {new.scope} must start at version 1")
        if signer not in new.owners:
            raise AuthorizationError(f"the creator of {new.scope} must be one of its owners")
        return
    if new.scope != current.scope:
        raise AuthorizationError(f"record for {new.scope} cannot replace {current.scope}")
    if new.version <= current.version:
        raise AuthorizationError(
            f"scope record {new.scope} version {new.version} is not newer than the current "
            f"version {current.version}"
        )
    if signer not in current.owners:
        raise AuthorizationError(f"key {signer} is not an owner of {new.scope}")


Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

#: How much each check contributes to the trust score (they sum to 1). Reproduction and
#: independent attestations weigh most: they are what a publisher alone cannot fake.
TRUST_WEIGHTS: Final = {
    "signature": 0.20,
    "authorization": 0.15,
    "integrity": 0.15,
    "reproducible": 0.25,
    "license": 0.05,
    "attestations": 0.20,
}
#: Independent reproducing attesters needed for the full attestation share (K of N).
ATTESTATIONS_FOR_FULL_TRUST: Final = 3


class TrustBreakdown(msgspec.Struct, frozen=True):
    """Each check's result in [0, 1] (before weighting)."""

    signature: Fraction
    authorization: Fraction
    integrity: Fraction
    reproducible: Fraction
    license: Fraction
    attestations: Fraction


def trust_score(
    *,
    signature: bool,
    authorized: bool,
    intact: bool,
    reproduced: bool,
    license_valid: bool,
    independent_attesters: int,
) -> tuple[float, TrustBreakdown]:
    """The trust score in [0, 1] and its breakdown.

    A bad signature or corrupt blocks make the score 0 whatever else holds: nothing else about
    such a package can be believed. ``independent_attesters`` counts distinct keys, other than
    the publisher's, whose signed attestations say they reproduced this exact manifest.
    """
    breakdown = TrustBreakdown(
        signature=float(signature),
        authorization=float(authorized),
        integrity=float(intact),
        reproducible=float(reproduced),
        license=float(license_valid),
        attestations=min(1.0, independent_attesters / ATTESTATIONS_FOR_FULL_TRUST),
    )
    if not (signature and intact):
        return 0.0, breakdown
    score = sum(TRUST_WEIGHTS[field] * getattr(breakdown, field) for field in TRUST_WEIGHTS)
    return round(min(1.0, score), 4), breakdown


def manifest_summary(manifest: Manifest) -> dict[str, object]:
    """The manifest's fields as JSON-friendly values (CIDs as strings)."""
    return {
        field: (str(value) if isinstance(value, CID) else value)
        for field in manifest.__struct_fields__
        for value in [getattr(manifest, field)]
    }
