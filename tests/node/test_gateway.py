"""The IPFS gateway (``/ipfs/{cid}[/path]``) over a real node home, served without a socket.

Trustless answers are checked by decoding them with our own CAR reader and hashing every block;
``tests/interop/test_gateway_client.py`` does the same with the npm IPFS libraries.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from dre.node.config import NodeConfig
from dre.node.gateway import (
    CAR_CONTENT_TYPE,
    IMMUTABLE,
    INLINE_LIMIT,
    RAW_BLOCK_TYPE,
    ByteRange,
    GatewayError,
    parse_accept,
    parse_entity_bytes,
    parse_range,
)
from dre.node.http_api import NodeState, make_app
from dre.protocol import exporter
from dre.protocol.car import read_car
from dre.protocol.cid import (
    CID,
    RAW,
    Block,
    cid_for,
    verify_block,
)
from dre.protocol.importer import ImportProfile
from dre.protocol.keys import PublisherKey
from dre.protocol.links import iter_dag
from dre.protocol.packages import build_tree
from dre.storage.registry import LocalRegistry
from dre.storage.repo import Repo
from hypothesis import given
from hypothesis import strategies as st

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"
ALICE = PublisherKey.from_seed(bytes(range(32)))
NODE = PublisherKey.from_seed(bytes(range(2, 34)))
NOW = 1_790_000_000

#: Small chunks and a narrow tree: a 20 KB file is three levels deep.
DEEP = ImportProfile(chunk_size=1000, max_links=4)
#: A directory of a few entries already becomes a HAMT.
SHARDED = ImportProfile(shard_threshold_bytes=200, hamt_fanout=16)

BIG = random.Random(7).randbytes(3 * INLINE_LIMIT + 12345)
DEEP_BYTES = random.Random(8).randbytes(20_123)
UNSAFE_NAME = '<img src=x onerror=alert(1)>&"q".txt'


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    Repo.init(tmp_path / "home")
    with Repo.open(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
async def client(repo: Repo) -> AsyncIterator[httpx.AsyncClient]:
    state = NodeState(repo=repo, peer_id=NODE.peer_id, config=NodeConfig())
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c


def store_tree(repo: Repo, files: dict[str, bytes], profile: ImportProfile | None = None) -> CID:
    tree = build_tree(files) if profile is None else build_tree(files, profile)
    repo.store.put_many(tree.blocks)
    return tree.root


def package_root(repo: Repo) -> CID:
    registry = LocalRegistry(repo)
    registry.create_scope("@acme", ALICE, now=NOW)
    registry.publish((EXAMPLES / "acme-retry-1.0.0.md").read_bytes(), ALICE, now=NOW)
    _, manifest_cid = registry.resolve_version("@acme/retry", None)
    return registry.manifest(manifest_cid).package


def car_blocks(body: bytes, root: CID) -> list[Block]:
    header, blocks = read_car(body)  # verify=True: every block hashed against its CID
    assert header.roots == (root,)
    assert len({bytes(b.cid) for b in blocks}) == len(blocks), "dups=n: each block once"
    return blocks


def getter(blocks: list[Block]) -> exporter.BlockGetter:
    by_cid = {bytes(b.cid): b.data for b in blocks}

    def get(cid: CID) -> bytes:
        try:
            return by_cid[bytes(cid)]
        except KeyError:
            raise exporter.NotFoundError(f"{cid} not in the CAR") from None

    return get


# --------------------------------------------------------------------------------------------
# Trustless: raw blocks and CARs


@pytest.mark.trio
async def test_raw_block_by_accept_and_by_format(client: httpx.AsyncClient, repo: Repo) -> None:
    root = package_root(repo)
    stored = repo.store.get(root)
    for response in (
        await client.get(f"/ipfs/{root}", headers={"Accept": RAW_BLOCK_TYPE}),
        await client.get(f"/ipfs/{root}?format=raw"),
        # `format` wins over Accept, as the spec says.
        await client.get(f"/ipfs/{root}?format=raw", headers={"Accept": "text/html"}),
    ):
        assert response.status_code == 200
        assert response.content == stored
        verify_block(root, response.content)
        assert response.headers["content-type"] == RAW_BLOCK_TYPE
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.headers["etag"] == f'"{root}.raw"'
        assert response.headers["content-disposition"] == f'attachment; filename="{root}.bin"'
        assert response.headers["x-ipfs-roots"] == str(root)
        assert response.headers["x-content-type-options"] == "nosniff"
    negotiated = await client.get(f"/ipfs/{root}", headers={"Accept": RAW_BLOCK_TYPE})
    assert negotiated.headers["content-location"] == f"/ipfs/{root}?format=raw"
    head = await client.head(f"/ipfs/{root}?format=raw")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(stored))
    cached = await client.get(f"/ipfs/{root}?format=raw",
                              headers={"If-None-Match": f'"{root}.raw"'})
    assert cached.status_code == 304 and cached.content == b""


@pytest.mark.trio
async def test_car_of_a_package_is_its_whole_dag_depth_first(
    client: httpx.AsyncClient, repo: Repo
) -> None:
    root = package_root(repo)
    response = await client.get(f"/ipfs/{root}?format=car")
    assert response.status_code == 200
    assert response.headers["content-type"] == CAR_CONTENT_TYPE
    assert response.headers["content-disposition"] == f'attachment; filename="{root}.car"'
    assert response.headers["cache-control"] == IMMUTABLE
    blocks = car_blocks(response.content, root)
    expected = [cid for cid, _ in iter_dag(repo.store.get, root)]
    assert [b.cid for b in blocks] == expected  # order=dfs, the order of `ipfs dag export`
    # The CAR alone reproduces every file of the package.
    get = getter(blocks)
    for path, info in exporter.walk(get, root):
        if info.kind == "file":
            assert b"".join(exporter.read_file(get, info.cid)) == b"".join(
                exporter.read_file(repo.store.get, exporter.resolve_path(repo.store.get, root,
                                                                         path)))
    by_accept = await client.get(
        f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.car; version=1; order=dfs"})
    assert by_accept.content == response.content
    assert by_accept.headers["etag"] == response.headers["etag"]
    assert (await client.get(f"/ipfs/{root}?format=car",
                             headers={"If-None-Match": response.headers["etag"]})).status_code \
        == 304


@pytest.mark.trio
async def test_car_with_a_path_and_each_dag_scope(client: httpx.AsyncClient, repo: Repo) -> None:
    nested = {"a/b/deep.bin": DEEP_BYTES, "a/b/other.txt": b"other", "a/c.txt": b"c",
              "top.txt": b"top"}
    root = store_tree(repo, nested, DEEP)
    get = repo.store.get
    a = exporter.resolve_path(get, root, "a")
    b = exporter.resolve_path(get, root, "a/b")
    deep = exporter.resolve_path(get, root, "a/b/deep.bin")
    path_blocks = [root, a, b]

    etags = set()
    for scope, expected_after_path in (
        ("block", [deep]),
        ("entity", [c for c, _ in iter_dag(get, deep)]),
        ("all", [c for c, _ in iter_dag(get, deep)]),
    ):
        response = await client.get(f"/ipfs/{root}/a/b/deep.bin?format=car&dag-scope={scope}")
        assert response.status_code == 200, response.text
        blocks = car_blocks(response.content, root)
        assert [x.cid for x in blocks] == path_blocks + expected_after_path, scope
        assert response.headers["x-ipfs-roots"] == ",".join(map(str, [root, a, b, deep]))
        assert response.headers["x-ipfs-path"] == f"/ipfs/{root}/a/b/deep.bin"
        etags.add(response.headers["etag"])
    assert len(etags) == 3, "the ETag differs per dag-scope"

    # A directory's entity is its own node; `all` is everything below it.
    entity = await client.get(f"/ipfs/{root}/a?format=car&dag-scope=entity")
    assert [x.cid for x in car_blocks(entity.content, root)] == [root, a]
    everything = await client.get(f"/ipfs/{root}/a?format=car")
    assert [x.cid for x in car_blocks(everything.content, root)] == [root] + [
        c for c, _ in iter_dag(get, a)]


@pytest.mark.trio
async def test_car_entity_bytes_sends_only_the_blocks_of_the_range(
    client: httpx.AsyncClient, repo: Repo
) -> None:
    root = store_tree(repo, {"deep.bin": DEEP_BYTES}, DEEP)
    deep = exporter.resolve_path(repo.store.get, root, "deep.bin")
    all_blocks = len(list(iter_dag(repo.store.get, deep)))
    size = len(DEEP_BYTES)
    for spec, (start, end) in {
        "0:*": (0, size - 1), "5000:7999": (5000, 7999), "-1500:*": (size - 1500, size - 1),
        "100:-100": (100, size - 101), "19990:99999999": (19990, size - 1),
    }.items():
        response = await client.get(f"/ipfs/{root}/deep.bin?format=car&entity-bytes={spec}")
        assert response.status_code == 200, response.text
        blocks = car_blocks(response.content, root)
        get = getter(blocks)
        # The CAR holds exactly what proves those bytes: reading them needs nothing else.
        got = b"".join(exporter.read_file_range(get, deep, start, end))
        assert got == DEEP_BYTES[start:end + 1]
        if spec not in ("0:*", "100:-100"):
            assert len(blocks) - 1 < all_blocks, spec
    # Fully outside the file: only the file's root block (dag-scope=block), as the spec says.
    outside = await client.get(f"/ipfs/{root}/deep.bin?format=car&entity-bytes=50000:60000")
    assert [b.cid for b in car_blocks(outside.content, root)] == [root, deep]
    for bad in ("x:1", "5", "10:2", "1:2:3", "--1:*"):
        response = await client.get(f"/ipfs/{root}/deep.bin?format=car&entity-bytes={bad}")
        assert response.status_code == 400, bad
        assert "entity-bytes" in response.text


@pytest.mark.trio
async def test_sharded_directory_path_and_entity(client: httpx.AsyncClient, repo: Repo) -> None:
    files = {f"file-{i:03}.txt": f"entry {i}\n".encode() for i in range(40)}
    root = store_tree(repo, files, SHARDED)
    text = await client.get(f"/ipfs/{root}/file-017.txt")
    assert text.status_code == 200 and text.content == b"entry 17\n"
    car = await client.get(f"/ipfs/{root}/file-017.txt?format=car&dag-scope=block")
    blocks = car_blocks(car.content, root)
    target = exporter.resolve_path(repo.store.get, root, "file-017.txt")
    assert blocks[0].cid == root and blocks[-1].cid == target
    # The path proof is the shard nodes on the way, not the whole directory.
    assert exporter.resolve_path(getter(blocks), root, "file-017.txt") == target
    assert len(blocks) < len(list(iter_dag(repo.store.get, root)))
    entity = await client.get(f"/ipfs/{root}?format=car&dag-scope=entity")
    listed = dict(exporter.list_directory(getter(car_blocks(entity.content, root)), root))
    assert sorted(listed) == sorted(files)


@pytest.mark.trio
async def test_car_and_raw_variants_we_do_not_serve(client: httpx.AsyncClient,
                                                    repo: Repo) -> None:
    root = store_tree(repo, {"a.txt": b"a"})
    for accept in ("application/vnd.ipld.car; version=2",
                   "application/vnd.ipld.car; dups=y",
                   "application/vnd.ipld.car; order=foo"):
        response = await client.get(f"/ipfs/{root}", headers={"Accept": accept})
        assert response.status_code == 406, accept
        assert response.text.startswith("cannot serve the CAR asked for")
    # A preference list falls back to what we can do.
    ok = await client.get(f"/ipfs/{root}", headers={
        "Accept": "application/vnd.ipld.car; dups=y, application/vnd.ipld.car; dups=n; q=0.5"})
    assert ok.status_code == 200 and ok.headers["content-type"] == CAR_CONTENT_TYPE
    for query in ("format=car&car-version=2", "format=car&car-dups=y", "format=car&dag-scope=x",
                  "format=tar", "format=dag-json"):
        response = await client.get(f"/ipfs/{root}?{query}")
        assert response.status_code == 400, query
        assert response.headers["content-type"].startswith("text/plain")
    with_path = await client.get(f"/ipfs/{root}/a.txt?format=raw")
    assert with_path.status_code == 400 and "CID alone" in with_path.text


@pytest.mark.trio
async def test_probe_cid(client: httpx.AsyncClient) -> None:
    raw = await client.get("/ipfs/bafkqaaa?format=raw")
    assert raw.status_code == 200 and raw.content == b""
    car = await client.get("/ipfs/bafkqaaa", headers={"Accept": "application/vnd.ipld.car"})
    assert car.status_code == 200
    header, blocks = read_car(car.content)
    assert [str(r) for r in header.roots] == ["bafkqaaa"] and blocks == []


# --------------------------------------------------------------------------------------------
# Path gateway: files, ranges, directories


@pytest.mark.trio
async def test_files_with_content_types_and_a_sandbox(client: httpx.AsyncClient,
                                                      repo: Repo) -> None:
    root = store_tree(repo, {
        "README.md": b"# hi\n", "page.html": b"<script>alert(1)</script>",
        "LICENSE": b"MIT License\n", "blob": b"\x00\x01\x02", "logo.svg": b"<svg/>",
        "dist.tar.gz": b"\x1f\x8b", "café ☕.txt": b"latte",
    })
    expected = {
        "README.md": "text/markdown; charset=utf-8", "page.html": "text/html; charset=utf-8",
        "LICENSE": "text/plain; charset=utf-8", "blob": "application/octet-stream",
        "logo.svg": "image/svg+xml; charset=utf-8", "dist.tar.gz": "application/gzip",
        "café ☕.txt": "text/plain; charset=utf-8",
    }
    for name, media in expected.items():
        response = await client.get(f"/ipfs/{root}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media, name
        # Package content never runs as the node's origin.
        assert response.headers["content-security-policy"] == "sandbox"
        assert response.headers["x-content-type-options"] == "nosniff"
        cid = exporter.resolve_path(repo.store.get, root, name)
        assert response.headers["etag"] == f'"{cid}"'
        assert response.headers["x-ipfs-roots"] == f"{root},{cid}"
        assert response.headers["cache-control"] == IMMUTABLE
        again = await client.get(f"/ipfs/{root}/{name}",
                                 headers={"If-None-Match": f'W/"x", "{cid}"'})
        assert again.status_code == 304 and again.headers["etag"] == f'"{cid}"'
    head = await client.head(f"/ipfs/{root}/README.md")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "5"
    # A name outside Latin-1 in headers that repeat the path (X-Ipfs-Path, Content-Location).
    car = await client.get(f"/ipfs/{root}/café ☕.txt", headers={"Accept": CAR_CONTENT_TYPE})
    assert car.status_code == 200
    assert car.headers["x-ipfs-path"] == f"/ipfs/{root}/caf%C3%A9%20%E2%98%95.txt"
    assert car.headers["content-location"] == f"{car.headers['x-ipfs-path']}?format=car"


@pytest.mark.trio
async def test_range_requests(client: httpx.AsyncClient, repo: Repo) -> None:
    root = store_tree(repo, {"big.bin": BIG, "empty": b""})
    url = f"/ipfs/{root}/big.bin"
    size = len(BIG)
    whole = await client.get(url)  # larger than INLINE_LIMIT: streamed
    assert whole.status_code == 200 and whole.content == BIG
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["accept-ranges"] == "bytes"
    for header, (start, end) in {
        "bytes=0-0": (0, 0), "bytes=262140-262150": (262140, 262150),
        "bytes=1000000-": (1000000, size - 1), "bytes=-777": (size - 777, size - 1),
        f"bytes=10-{size * 2}": (10, size - 1),
    }.items():
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == BIG[start:end + 1], header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert response.headers["content-length"] == str(end - start + 1)
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert "range not satisfiable" in response.text
    # Several ranges, or a syntax we do not take: the whole file (RFC 9110 allows ignoring).
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=9-3"):
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 200 and len(response.content) == size, header
    stale = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200
    empty = await client.get(f"/ipfs/{root}/empty", headers={"Range": "bytes=0-"})
    assert empty.status_code == 416


@pytest.mark.trio
async def test_directory_listing_is_escaped_and_inert(client: httpx.AsyncClient,
                                                      repo: Repo) -> None:
    root = store_tree(repo, {UNSAFE_NAME: b"x", "sub/inner.txt": b"inner"})
    redirect = await client.get(f"/ipfs/{root}")
    assert redirect.status_code == 301 and redirect.headers["location"] == f"/ipfs/{root}/"
    listing = await client.get(f"/ipfs/{root}/")
    assert listing.status_code == 200
    assert listing.headers["content-type"] == "text/html; charset=utf-8"
    csp = listing.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp
    assert listing.headers["etag"].startswith('W/"DirIndex-')
    page = listing.text
    assert "<img" not in page and "onerror=alert(1)&gt;" in page
    assert 'href="%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%26%22q%22.txt"' in page
    assert 'href="sub/"' in page
    assert '<td class="size">1 B</td>' in page  # the raw leaf's size, without reading it
    sub = exporter.resolve_path(repo.store.get, root, "sub")
    assert f'href="/ipfs/{sub}"' in page
    inner = await client.get(f"/ipfs/{root}/sub/")
    assert 'href="../"' in inner.text and "inner.txt" in inner.text
    # The entry's link, followed, gives the file.
    followed = await client.get(f"/ipfs/{root}/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"
                                "%26%22q%22.txt")
    assert followed.status_code == 200 and followed.content == b"x"


@pytest.mark.trio
async def test_index_html_is_served_sandboxed(client: httpx.AsyncClient, repo: Repo) -> None:
    root = store_tree(repo, {"site/index.html": b"<h1>hi</h1><script>steal()</script>"})
    response = await client.get(f"/ipfs/{root}/site/")
    assert response.status_code == 200
    assert response.content.startswith(b"<h1>hi</h1>")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == "sandbox"


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.trio
async def test_errors_are_one_readable_line(client: httpx.AsyncClient, repo: Repo) -> None:
    root = store_tree(repo, {"a/b.txt": b"b"})
    missing = cid_for(b"never stored", RAW)
    cases = {
        "/ipfs/not-a-cid": (400, "invalid CID 'not-a-cid'"),
        "/ipfs/": (400, "give a CID"),
        f"/ipfs/{missing}": (404, f"{missing} is not on this node"),
        f"/ipfs/{missing}?format=car": (404, "serves only local blocks"),
        f"/ipfs/{root}/nope.txt": (404, f"no link named 'nope.txt' under {root}"),
        f"/ipfs/{root}/a/b.txt/deeper": (404, "not a directory"),
        f"/ipfs/{root}/a/%2E%2E/a": (400, "'..' is not allowed"),
        f"/ipfs/{root}/{'x' * 5000}": (400, "path longer than"),
    }
    for url, (status, text) in cases.items():
        response = await client.get(url)
        assert response.status_code == status, (url, response.text)
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert text in response.text, (url, response.text)
        assert response.text.count("\n") == 1 and "Traceback" not in response.text
        assert "immutable" not in response.headers.get("cache-control", "")
    for url in (f"/ipfs/{missing}", f"/ipfs/{root}/nope.txt", f"/ipfs/{root}?format=car",
                f"/ipfs/{root}/", f"/ipfs/{root}?format=raw"):
        got, head = await client.get(url), await client.head(url)
        assert head.status_code == got.status_code and head.content == b"", url
        assert head.headers.get("content-length") == got.headers.get("content-length"), url
    cached_only = await client.get(f"/ipfs/{missing}?format=raw",
                                   headers={"Cache-Control": "only-if-cached"})
    assert cached_only.status_code == 412 and "not on this node" in cached_only.text
    present = await client.head(f"/ipfs/{root}?format=raw",
                                headers={"Cache-Control": "only-if-cached"})
    assert present.status_code == 200


@pytest.mark.trio
async def test_a_corrupt_block_is_never_served(client: httpx.AsyncClient, repo: Repo) -> None:
    root = store_tree(repo, {"a.txt": b"good bytes", "b.txt": b"other"})
    bad = exporter.resolve_path(repo.store.get, root, "a.txt")
    repo.store.delete(bad)
    repo.store.put(Block(bad, b"evil bytes"), verify=False)  # a store that went bad
    raw = await client.get(f"/ipfs/{bad}?format=raw")
    assert raw.status_code == 500 and "store integrity error" in raw.text
    assert b"evil" not in raw.content
    file = await client.get(f"/ipfs/{root}/a.txt")
    assert file.status_code == 500 and b"evil" not in file.content
    car = await client.get(f"/ipfs/{root}?format=car")
    # Headers were sent before the bad block was reached: the stream ends short of it.
    _header, blocks = read_car(car.content)
    assert bad not in [b.cid for b in blocks] and b"evil" not in car.content


# --------------------------------------------------------------------------------------------
# Parsers


def _reference_range(header: str, size: int) -> ByteRange | str | None:
    """RFC 9110 §14 for one bytes range, written the long way."""
    if not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    first, dash, last = header.strip()[len("bytes="):].partition("-")
    if not dash:
        return None
    if first == "" and last.isascii() and last.isdigit():
        n = int(last)
        return "unsatisfiable" if n == 0 or size == 0 else ByteRange(max(0, size - n), size - 1)
    if not (first.isascii() and first.isdigit()) or not (last == "" or (
            last.isascii() and last.isdigit())):
        return None
    if last != "" and int(last) < int(first):
        return None
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    return "unsatisfiable" if start >= size else ByteRange(start, end)


_range_text = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 2000) | st.just(""),
              st.integers(0, 2000) | st.just("")),
    st.text(max_size=30),
    st.builds(lambda s: "bytes=" + s, st.text("0123456789-, ", max_size=12)),
)


@given(_range_text, st.integers(0, 1500))
def test_range_parser_matches_the_rfc(header: str, size: int) -> None:
    got = parse_range(header, size)
    assert got == _reference_range(header, size)
    if isinstance(got, ByteRange):
        assert 0 <= got.start <= got.end < size


@given(st.text(max_size=40), st.integers(0, 10**6))
def test_entity_bytes_parser_is_bounded(text: str, size: int) -> None:
    try:
        span = parse_entity_bytes(text, size)
    except GatewayError as exc:
        assert exc.status == 400
        return
    if span is not None:
        assert 0 <= span.start <= span.end < size


@given(st.text(max_size=200))
def test_accept_parser_never_crashes(header: str) -> None:
    try:
        assert parse_accept(header) in (None, "raw", "car")
    except GatewayError as exc:
        assert exc.status in (400, 406)


def test_accept_preferences() -> None:
    assert parse_accept("text/html,*/*") is None
    assert parse_accept(RAW_BLOCK_TYPE) == "raw"
    assert parse_accept(f"{RAW_BLOCK_TYPE};q=0.2, application/vnd.ipld.car") == "car"
    assert parse_accept(f"application/vnd.ipld.car;q=0, {RAW_BLOCK_TYPE}") == "raw"
    with pytest.raises(GatewayError) as refused:
        parse_accept("application/vnd.ipld.car;version=2")
    assert refused.value.status == 406


