"""Package Management API over a real node home: publish, read back, download, verify, history."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from pathlib import Path

import httpx
import pytest
import trio
from dre.node.api_packages import read_tarball, write_tarball
from dre.protocol.car import CarDecoder, CarHeader, EndOfCar, NeedData
from dre.protocol.cid import parse_cid, verify_block
from dre.protocol.errors import ValidationError
from dre.protocol.generator import generate
from dre.protocol.links import links_of
from dre.protocol.packages import build_tree
from dre.storage.car_io import import_car
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo

from .test_api_fixtures import (
    EXAMPLES,
    NODE,
    bearer,
    client,
    doc_b64,
    make_token,
    node_owns_acme,
    repo,
    state,
)

#: pytest fixtures used by name below (imported, so this marks them used).
_FIXTURES = (client, repo, state)


async def publish(client: httpx.AsyncClient, secret: str, doc: str, **extra: object
                  ) -> httpx.Response:
    return await client.post("/api/v1/packages", json={"documentation": doc_b64(doc), **extra},
                             headers=bearer(secret))


@pytest.mark.trio
async def test_publish_then_visible(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    response = await publish(client, secret, "acme-retry-1.0.0.md")
    assert response.status_code == 201, response.text
    published = response.json()
    assert published["name"] == "@acme/retry" and published["version"] == "1.0.0"
    assert published["publisher"] == NODE.peer_id and published["reproducible"] is True
    assert published["already_published"] is False
    assert response.headers["location"] == "/api/v1/packages/@acme/retry/1.0.0"
    # The same document again: nothing new, 200.
    again = await publish(client, secret, "acme-retry-1.0.0.md")
    assert again.status_code == 200 and again.json()["already_published"] is True
    assert again.json()["manifest"] == published["manifest"]

    info = (await client.get("/api/v1/packages/@acme/retry")).json()
    assert info["versions"] == [{"version": "1.0.0", "manifest": published["manifest"]}]
    assert info["latest"]["publisher"] == NODE.peer_id
    version = (await client.get("/api/v1/packages/@acme/retry/1.0.0")).json()
    assert version["manifest"]["package"] == published["package"]
    generated = generate((EXAMPLES / "acme-retry-1.0.0.md").read_bytes())
    assert [f["path"] for f in version["files"]] == sorted(generated.files)
    # The registry itself holds it: signed by the node, in the hash-linked log.
    registry = LocalRegistry(repo)
    assert str(registry.resolve_version("@acme/retry", "1.0.0")[1]) == published["manifest"]
    assert [e.subject for e in registry.log()][-1] == "@acme/retry@1.0.0"


@pytest.mark.trio
async def test_documentation_history_diff_regenerate(client: httpx.AsyncClient,
                                                     repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    for doc in ("acme-retry-1.0.0.md", "acme-retry-1.1.0.md"):
        assert (await publish(client, secret, doc)).status_code == 201
    text = await client.get("/api/v1/packages/@acme/retry/1.1.0/documentation")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/markdown")
    assert text.content == (EXAMPLES / "acme-retry-1.1.0.md").read_bytes()

    history = (await client.get("/api/v1/packages/@acme/retry/history")).json()
    assert [v["version"] for v in history["versions"]] == ["1.0.0", "1.1.0"]
    assert "1.1.0" in history["changelog"] and "1.0.0" in history["changelog"]

    diff = await client.get("/api/v1/packages/@acme/retry/diff",
                            params={"from": "1.0.0", "to": "1.1.0"})
    assert diff.status_code == 200
    body = diff.json()
    assert body["old"] == "@acme/retry@1.0.0" and body["new"] == "@acme/retry@1.1.0"
    assert body["doc_diff"].startswith("--- @acme/retry@1.0.0")
    assert body["files"]["changed"]
    missing = await client.get("/api/v1/packages/@acme/retry/diff", params={"from": "1.0.0"})
    assert missing.status_code == 400 and "from=" in missing.json()["error"]

    regenerated = (await client.post("/api/v1/packages/@acme/retry/1.0.0/regenerate")).json()
    assert regenerated["reproduced"] is True
    assert regenerated["regenerated"] == regenerated["published"]


@pytest.mark.trio
async def test_verify_reports_trust_and_attests(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    manifest = (await publish(client, secret, "acme-retry-1.0.0.md")).json()["manifest"]
    report = (await client.get("/api/v1/packages/@acme/retry/1.0.0/verify")).json()
    assert report["verified"] is True and report["manifest"] == manifest
    assert report["signature"] == {"ok": True, "error": ""}
    assert report["integrity"]["intact"] is True and report["integrity"]["blocks_checked"] > 3
    assert report["regeneration"]["reproduced"] is True
    assert 0 < report["trust"]["score"] <= 1
    assert report["trust"]["breakdown"]["signature"] == 1.0
    # A GET signs nothing; POST is the write that attests, and it needs a token.
    index = LocalRegistry(repo).index
    assert report["attestation"] is None and index.attestations(parse_cid(manifest)) == {}
    refused = await client.post("/api/v1/packages/@acme/retry/1.0.0/verify")
    assert refused.status_code == 401 and index.attestations(parse_cid(manifest)) == {}
    attested = (await client.post("/api/v1/packages/@acme/retry/1.0.0/verify",
                                  headers=bearer(secret))).json()
    assert attested["verified"] is True
    # The node signed an attestation of what it checked.
    attesters = index.attestations(parse_cid(manifest))
    assert str(attesters[NODE.peer_id]) == attested["attestation"]


@pytest.mark.trio
async def test_download_tarball_round_trip(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    published = (await publish(client, secret, "acme-retry-1.0.0.md")).json()
    response = await client.get("/api/v1/packages/@acme/retry/1.0.0/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    assert 'filename="acme-retry-1.0.0.tgz"' in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = tar.getnames()
    assert all(n == "package" or n.startswith("package/") for n in names)
    assert "package/.dre/source.md" in names
    files, empty = read_tarball(response.content)
    assert build_tree(files, empty_directories=empty).root == parse_cid(published["package"])
    # Deterministic: the same bytes every time.
    assert (await client.get("/api/v1/packages/@acme/retry/1.0.0/download")).content == (
        response.content)


@pytest.mark.trio
async def test_download_car_verified_block_by_block(client: httpx.AsyncClient, repo: Repo,
                                                    tmp_path: Path) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    published = (await publish(client, secret, "acme-retry-1.0.0.md")).json()
    response = await client.get("/api/v1/packages/@acme/retry/1.0.0/download",
                                params={"format": "car"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.ipld.car"
    decoder = CarDecoder(verify=True)
    decoder.receive_data(response.content)
    decoder.receive_data(b"")
    roots, blocks = [], {}
    while True:
        event = decoder.next_event()
        if isinstance(event, EndOfCar):
            break
        assert not isinstance(event, NeedData)
        if isinstance(event, CarHeader):
            roots = list(event.roots)
        else:
            verify_block(event.cid, event.data)
            blocks[bytes(event.cid)] = event
    assert [str(r) for r in roots] == [published["package"]]
    # Every link of every block is in the CAR: the DAG is complete.
    for block in blocks.values():
        for link in links_of(block.cid, block.data):
            assert bytes(link) in blocks
    # And a fresh home imports it (each block verified again) to the same root.
    car = tmp_path / "pkg.car"
    car.write_bytes(response.content)
    Repo.init(tmp_path / "other")
    with Repo.open(tmp_path / "other") as other:
        result = import_car(other.store, car)
    assert [str(r) for r in result.pinned] == [published["package"]]


@pytest.mark.trio
async def test_publish_with_package_tree(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    doc = (EXAMPLES / "acme-retry-1.0.0.md").read_bytes()
    files = generate(doc).files
    good = _tarball(files)
    response = await publish(client, secret, "acme-retry-1.0.0.md",
                             package=base64.b64encode(good).decode())
    assert response.status_code == 201, response.text
    assert response.json()["reproducible"] is True

    # A tree that is not what the 1.1.0 document generates: 409 with the divergence.
    bad = _tarball({**generate((EXAMPLES / "acme-retry-1.1.0.md").read_bytes()).files,
                    "extra.txt": b"not in the doc\n"})
    refused = await publish(client, secret, "acme-retry-1.1.0.md",
                            package=base64.b64encode(bad).decode())
    assert refused.status_code == 409
    assert "extra.txt" in refused.json()["error"]
    assert LocalRegistry(repo).index.manifest_cid("@acme/retry", "1.1.0") is None
    # Accepted as not reproducible only when asked.
    divergent = await publish(client, secret, "acme-retry-1.1.0.md",
                              package=base64.b64encode(bad).decode(), allow_divergent=True)
    assert divergent.status_code == 201 and divergent.json()["reproducible"] is False
    assert divergent.json()["divergence"]["added"] == ["extra.txt"]


def _tarball(files: dict[str, bytes], prefix: str = "package") -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{prefix}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_tarball_reader_refuses_what_a_package_cannot_hold() -> None:
    with pytest.raises(ValidationError, match="not under package/"):
        read_tarball(_tarball({"a.txt": b"x"}, prefix="other"))
    with pytest.raises(ValidationError, match="escapes the package root"):
        read_tarball(_tarball({"../evil": b"x"}))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        link = tarfile.TarInfo("package/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValidationError, match="not a regular file"):
        read_tarball(buffer.getvalue())
    with pytest.raises(ValidationError, match=r"not a readable tar\.gz"):
        read_tarball(b"plainly not gzip")


@pytest.mark.trio
async def test_read_errors(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    await publish(client, secret, "acme-retry-1.0.0.md")
    cases = [
        ("/api/v1/packages/@acme/nothing", 404, "no package named '@acme/nothing'"),
        ("/api/v1/packages/@acme/retry/9.9.9", 404, "@acme/retry@9.9.9 is not published"),
        ("/api/v1/packages/@acme/retry/1.0/download", 400, "1.0"),
        ("/api/v1/packages/Bad!Name/1.0.0", 400, "is not a package name"),
        ("/api/v1/packages/@acme/retry/1.0.0/download?format=zip", 400, "tar.gz or car"),
        ("/api/v1/blocks/not-a-cid", 400, "invalid CID"),
        ("/api/v1/packages/@acme/nothing/history", 404, "no package named"),
        ("/api/v1/scopes/@nobody", 404, "scope @nobody does not exist"),
    ]
    for path, status, message in cases:
        response = await client.get(path)
        assert response.status_code == status, (path, response.text)
        assert message in response.json()["error"], (path, response.json())
    scope = (await client.get("/api/v1/scopes/@acme")).json()
    assert scope["owners"] == [NODE.peer_id] and scope["version"] == 1


@pytest.mark.trio
async def test_concurrent_publishes_all_land(client: httpx.AsyncClient, repo: Repo) -> None:
    node_owns_acme(repo)
    secret = make_token(repo.home, "publish")
    template = (EXAMPLES / "acme-retry-1.0.0.md").read_text()
    statuses: list[int] = []

    async def one(i: int) -> None:
        doc = template.replace('name: "@acme/retry"', f'name: "@acme/retry-{i}"')
        response = await client.post(
            "/api/v1/packages", headers=bearer(secret),
            json={"documentation": base64.b64encode(doc.encode()).decode()})
        statuses.append(response.status_code)

    async with trio.open_nursery() as nursery:
        for i in range(24):
            nursery.start_soon(one, i)
    assert statuses == [201] * 24
    names = repo.index.names()
    assert sum(n.startswith("@acme/retry-") for n in names) == 24
    # Every publish is in the hash-linked log exactly once, and the chain holds.
    subjects = [e.subject for e in LocalRegistry(repo).log() if e.kind == "publish"]
    assert sorted(subjects) == sorted(f"@acme/retry-{i}@1.0.0" for i in range(24))


def test_tarball_writer_is_what_the_manifest_names(repo: Repo) -> None:
    registry = node_owns_acme(repo)
    result = registry.publish((EXAMPLES / "left-pad.md").read_bytes(), NODE, now=1_790_000_000)
    data = write_tarball(repo.store.get, registry.manifest(result.manifest))
    files, empty = read_tarball(data)
    assert build_tree(files, empty_directories=empty).root == result.package
