"""The IPFS HTTP gateway of the node: ``GET`` / ``HEAD /ipfs/{cid}[/path]``.

Two gateways in one route, chosen per request as the specs say
(https://specs.ipfs.tech/http-gateways/trustless-gateway/ and .../path-gateway/):

- **Trustless** (``?format=raw|car`` or ``Accept: application/vnd.ipld.raw|car``): the single
  block, or a CARv1 stream of the blocks needed to verify the path and the DAG at its end
  (``dag-scope=all|entity|block``, ``entity-bytes=from:to``), depth-first, each block once
  (``Content-Type: application/vnd.ipld.car; version=1; order=dfs; dups=n``). Only CARv1 and
  ``dups=n`` are produced; asking for anything else is a 400 or a 406, as the spec allows.
- **Path gateway** (anything else, e.g. a browser): files with a content type guessed from the
  name (``Range`` requests read only the chunks they need), directories as a small HTML listing
  or their ``index.html``. Everything deserialized is sent with ``Content-Security-Policy:
  sandbox`` and ``nosniff``: package files are untrusted, and HTML or SVG from a package must not
  run scripts with the node's origin (its API and web pages live on the same host and port).

Every answer under a CID is immutable: ``Cache-Control: public, max-age=29030400, immutable``,
an ``ETag`` derived from the CID (and the CAR options), ``If-None-Match`` answered with 304.
Errors are one line of ``text/plain``: 400 for a bad CID, path or option, 404 for content this
node does not hold (412 with ``Cache-Control: only-if-cached``), 406 for an unsupported CAR
variant, 416 for an unsatisfiable range, 500 if the store returns bytes that fail their hash.

**Local blocks only.** The gateway never asks the network for a missing block: it is an open,
unauthenticated read endpoint, and fetching on its behalf would let any HTTP client make the node
download (and store) arbitrary DAGs from arbitrary peers. Content reaches the store by publishing,
sync, or an explicit ``POST /api/v1/fetch/{cid}``; a block not here is a 404.

**Every block is verified** against its CID before a byte of it is sent: raw and CAR responses
hash each block, and file and directory reads go through :mod:`dre.protocol.exporter` (or the
ranged reader :func:`dre.protocol.exporter.read_file_range`), which hash every block they read.

Store reads are memory-mapped lookups; responses larger than :data:`INLINE_LIMIT` are produced by
a synchronous generator that Starlette runs in its thread pool, so a big CAR or file never holds
the event loop, and only one chunk of it is in memory at a time.
"""

from __future__ import annotations

import hashlib
import html
import logging
import mimetypes
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import trio
from dre.protocol import exporter
from dre.protocol.car import encode_block, encode_header
from dre.protocol.cid import (
    CID,
    DAG_CBOR,
    DAG_PB,
    RAW,
    cid_text,
    cid_to_bytes,
    multihash_of,
    parse_cid,
    verify_block,
)
from dre.protocol.errors import DreError, IntegrityError, NotFoundError, ValidationError
from dre.protocol.links import links_of
from dre.storage.blockstore import BlockStore
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from dre.node.http_api import NodeState

__all__ = [
    "CAR_CONTENT_TYPE",
    "IMMUTABLE",
    "RAW_BLOCK_TYPE",
    "ByteRange",
    "CarRequest",
    "gateway_routes",
    "parse_accept",
    "parse_entity_bytes",
    "parse_range",
]

_log = logging.getLogger(__name__)

RAW_BLOCK_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
#: What every CAR answer is: CARv1, depth-first, each block once.
CAR_CONTENT_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
#: Content under a CID never changes (about 11 months, the figure other gateways use).
IMMUTABLE = "public, max-age=29030400, immutable"
#: Package files are untrusted: no scripts, no plugins, an opaque origin, no sniffing.
SANDBOX = "sandbox"
#: The listing page needs its inline style and nothing else.
LISTING_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; sandbox"

#: Longest ``/ipfs/…`` path (after the prefix) we look at.
MAX_PATH_CHARS = 4096
#: Longest ``Accept`` / ``Range`` / ``If-None-Match`` header we parse.
MAX_HEADER_CHARS = 2048
#: Most entries a directory listing shows (a HAMT directory may hold millions).
MAX_LISTING = 5000
#: Most blocks one CAR answer carries; a DAG beyond this ends the stream (the client sees an
#: incomplete CAR, which it must detect anyway).
MAX_CAR_BLOCKS = 2_000_000
#: Answers up to this size are built in the handler; larger ones stream from the thread pool.
INLINE_LIMIT = 1 << 20
#: Bytes per chunk of a streamed answer.
CHUNK = 256 * 1024
#: Bytes read to guess whether a file without a known extension is text.
SNIFF_BYTES = 512
#: Bumped when the listing page changes, so cached listings are not reused (ETag).
LISTING_VERSION = 1
#: The empty identity CID, the spec's probe (``GET /ipfs/bafkqaaa``).
PROBE_CID = "bafkqaaa"

#: Characters left as they are when a path goes into a header (RFC 3986 pchar and "/").
_PATH_SAFE = "/@:+,;=-._~!$&'()*"
_IDENTITY = 0x00

#: Extensions the system's mime table may not know, or knows differently on other machines.
_TYPES = {
    ".md": "text/markdown", ".markdown": "text/markdown", ".py": "text/x-python",
    ".ts": "text/plain", ".tsx": "text/plain", ".rs": "text/plain", ".go": "text/plain",
    ".toml": "text/plain", ".yaml": "text/plain", ".yml": "text/plain", ".cfg": "text/plain",
    ".ini": "text/plain", ".sh": "text/plain", ".json": "application/json",
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
    ".html": "text/html", ".htm": "text/html", ".svg": "image/svg+xml", ".txt": "text/plain",
    ".wasm": "application/wasm", ".car": CAR_TYPE,
}


class GatewayError(DreError):
    """A request the gateway answers with ``status`` and one line of text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Request parsing (pure: tested with hypothesis)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of an entity (``end >= start``)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes the range covers."""
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | Literal["unsatisfiable"] | None:
    """The single byte range of an HTTP ``Range`` header over an entity of ``size`` bytes.

    ``None`` means "send the whole entity": no header, a syntax we ignore (RFC 9110 lets a
    server ignore Range), or several ranges (we serve one). ``"unsatisfiable"`` means 416.
    """
    if header is None or len(header) > MAX_HEADER_CHARS:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.partition("-")
    if not dash or not _digits(first, empty=True) or not _digits(last, empty=True):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # an invalid range-spec is ignored (RFC 9110 §14.2)
    if start >= size:
        return "unsatisfiable"
    return ByteRange(start, size - 1 if last == "" else min(int(last), size - 1))


def _digits(text: str, *, empty: bool = False) -> bool:
    """ASCII digits only (``"٣".isdigit()`` is True), at most 20 of them."""
    if text == "":
        return empty
    return len(text) <= 20 and text.isascii() and text.isdigit()


def parse_entity_bytes(text: str, size: int) -> ByteRange | None:
    """The trustless gateway's ``entity-bytes=from:to`` over an entity of ``size`` bytes.

    ``to`` may be ``*`` (end of file); either bound may be negative (counted from the end).
    Returns None when the range is empty once clipped to the entity (the spec then sends
    only the entity's root block). Raises :class:`GatewayError` (400) for bad syntax.
    """
    if len(text) > 64:
        raise GatewayError(400, "entity-bytes is too long")
    first, colon, last = text.partition(":")
    if not colon:
        raise GatewayError(400, f"entity-bytes must be from:to, got {text!r}")

    def bound(value: str, what: str) -> int:
        digits = value[1:] if value.startswith("-") else value
        if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
            raise GatewayError(400, f"entity-bytes {what} must be an integer, got {value!r}")
        number = int(value)
        return size + number if number < 0 else number

    start = max(bound(first, "from"), 0)
    end = size - 1 if last == "*" else bound(last, "to")
    if not first.startswith("-") and last != "*" and not last.startswith("-") and start > end:
        raise GatewayError(400, f"entity-bytes from is after to: {text!r}")
    end = min(end, size - 1)
    if start > end:
        return None
    return ByteRange(start, end)


@dataclass(frozen=True, slots=True)
class CarRequest:
    """The CAR options of a trustless request."""

    scope: str = "all"
    entity_bytes: str | None = None


def _params(part: str) -> tuple[str, dict[str, str]]:
    media, *rest = part.split(";")
    params: dict[str, str] = {}
    for item in rest:
        key, _, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"').lower()
    return media.strip().lower(), params


def parse_accept(header: str | None) -> Literal["raw", "car"] | None:
    """Which trustless format an ``Accept`` header asks for, by preference (``q``).

    None when it names neither (a browser: the path gateway answers). Raises
    :class:`GatewayError` 406 when it names only CAR variants we cannot produce (CARv2,
    ``dups=y``, an order other than ``dfs``/``unk``).
    """
    if not header:
        return None
    if len(header) > MAX_HEADER_CHARS:
        raise GatewayError(400, f"Accept header longer than {MAX_HEADER_CHARS} characters")
    offers: list[tuple[float, int, Literal["raw", "car"]]] = []
    refused: list[str] = []
    for position, part in enumerate(header.split(",")):
        media, params = _params(part)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality <= 0:
            continue
        if media == RAW_BLOCK_TYPE:
            offers.append((-quality, position, "raw"))
        elif media == CAR_TYPE:
            problem = _car_variant_problem(params)
            if problem is None:
                offers.append((-quality, position, "car"))
            else:
                refused.append(problem)
    if offers:
        return min(offers)[2]
    if refused:
        raise GatewayError(406, f"cannot serve the CAR asked for: {refused[0]}")
    return None


def _car_variant_problem(params: dict[str, str]) -> str | None:
    version = params.get("version", "1")
    if version != "1":
        return f"only CAR version=1 is served, not version={version}"
    order = params.get("order", "dfs")
    if order not in ("dfs", "unk", ""):
        return f"only order=dfs is served, not order={order}"
    dups = params.get("dups", "n")
    if dups not in ("n", ""):
        return f"only dups=n is served, not dups={dups}"
    return None


def _car_options(request: Request) -> CarRequest:
    query = request.query_params
    problem = _car_variant_problem({
        "version": query.get("car-version", "1"),
        "order": query.get("car-order", "dfs"),
        "dups": query.get("car-dups", "n"),
    })
    if problem is not None:
        raise GatewayError(400, f"cannot serve the CAR asked for: {problem}")
    scope = query.get("dag-scope", "all")
    if scope not in ("all", "entity", "block"):
        raise GatewayError(400, f"dag-scope must be all, entity or block, not {scope[:40]!r}")
    entity_bytes = query.get("entity-bytes")
    if entity_bytes is not None:
        scope = "entity"  # the spec: entity-bytes implies dag-scope=entity
    return CarRequest(scope, entity_bytes)


def _format(request: Request) -> Literal["raw", "car"] | None:
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt in ("raw", "car"):
            return fmt  # type: ignore[return-value]
        raise GatewayError(400, f"format must be raw or car on this gateway, not {fmt[:40]!r}")
    return parse_accept(request.headers.get("accept"))


def _etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` (weak comparison, RFC 9110 §13.1.2)."""
    if header is None or len(header) > MAX_HEADER_CHARS:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


# --------------------------------------------------------------------------------------------
# Resolution


@dataclass(frozen=True, slots=True)
class _Resolved:
    root: CID
    #: Path components below the root, as requested.
    parts: tuple[str, ...]
    #: The root, then the CID each component resolved to (``X-Ipfs-Roots``).
    roots: tuple[CID, ...]
    #: Every block read to walk the path, in order (a CAR's first sections).
    path_blocks: tuple[CID, ...]

    @property
    def target(self) -> CID:
        return self.roots[-1]

    @property
    def ipfs_path(self) -> str:
        return "/ipfs/" + "/".join([cid_text(self.root), *self.parts])


def _recording(store: BlockStore, into: list[CID]) -> exporter.BlockGetter:
    def get(cid: CID) -> bytes:
        data = store.get(cid)
        into.append(cid)
        return data

    return get


def _split(rest: str) -> tuple[CID, tuple[str, ...]]:
    if len(rest) > MAX_PATH_CHARS:
        raise GatewayError(400, f"path longer than {MAX_PATH_CHARS} characters")
    cid_part, _, path = rest.partition("/")
    if not cid_part:
        raise GatewayError(400, "give a CID: /ipfs/<cid>[/path]")
    try:
        root = parse_cid(cid_part)
    except ValidationError as exc:
        raise GatewayError(400, str(exc)) from None
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise GatewayError(400, "'..' is not allowed in an /ipfs/ path")
    return root, parts


def _resolve(store: BlockStore, root: CID, parts: tuple[str, ...], *,
             only_if_cached: bool = False) -> _Resolved:
    if not store.has(root):
        # The spec's 412 for `Cache-Control: only-if-cached`: "not immediately available".
        raise GatewayError(
            412 if only_if_cached else 404,
            f"{root} is not on this node (this gateway serves only local blocks)")
    read: list[CID] = []
    get = _recording(store, read)
    roots = [root]
    current = root
    for depth, part in enumerate(parts):
        if current.codec.code not in (RAW, DAG_PB):
            raise GatewayError(404, f"no link named {part!r} under "
                                    f"{'/'.join([str(root), *parts[:depth]])}: not UnixFS")
        try:
            current = exporter.resolve_path(get, current, part)
        except NotFoundError as exc:
            raise GatewayError(404, str(exc).replace(str(current), "/".join(
                [str(root), *parts[:depth]]), 1)) from None
        roots.append(current)
    return _Resolved(root, parts, tuple(roots), tuple(dict.fromkeys(read)))


# --------------------------------------------------------------------------------------------
# CAR streams


class _CarWriter:
    """Produces a CAR's sections in chunks of about :data:`CHUNK` bytes, each block once."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.seen: set[bytes] = set()
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def add(self, cid: CID) -> list[CID] | None:
        """Queue ``cid``'s verified section; its links, or None if it was already sent."""
        key = cid_to_bytes(cid)
        if key in self.seen or multihash_of(cid)[0] == _IDENTITY:
            return None  # the spec: identity CIDs are never sent, they carry their own bytes
        if len(self.seen) >= MAX_CAR_BLOCKS:
            raise IntegrityError(f"DAG larger than {MAX_CAR_BLOCKS} blocks")
        self.seen.add(key)

        def section(data: bytes | memoryview) -> list[CID]:
            verify_block(cid, data)  # type: ignore[arg-type]  # hashlib takes any buffer
            self.pending.append(encode_block(cid, data))  # type: ignore[arg-type]
            self.pending_bytes += len(data)
            if cid.codec.code == DAG_CBOR:
                return links_of(cid, bytes(data))
            return links_of(cid, data)  # type: ignore[arg-type]  # dag-pb decodes a view

        return self.store.with_block(cid, section)

    def full(self) -> bool:
        return self.pending_bytes >= CHUNK

    def take(self) -> bytes:
        chunk = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return chunk


def _entity_blocks(store: BlockStore, cid: CID, entity_bytes: str) -> Iterator[CID]:
    """The blocks of the entity at ``cid`` (dag-scope=entity) needed for ``entity-bytes``, in
    DFS order. (A whole file is its whole DAG: the caller walks it like dag-scope=all.)"""
    if cid.codec.code != DAG_PB:
        yield cid  # a raw leaf, or non-UnixFS data: the entity is the block
        return
    info = exporter.stat(store.get, cid)
    if info.kind == "file":
        span = None if entity_bytes is None else parse_entity_bytes(entity_bytes, info.size)
        if span is None:
            yield cid
            return
        yield from exporter.file_range_blocks(store.get, cid, span.start, span.end)
    elif info.kind == "directory":
        # Listing a (HAMT) directory reads exactly its own node and shard nodes.
        read: list[CID] = [cid]
        for _entry in exporter.list_directory(_recording(store, read), cid):
            pass
        yield from dict.fromkeys(read)
    else:
        yield cid


def _is_file(store: BlockStore, cid: CID) -> bool:
    return cid.codec.code == RAW or (
        cid.codec.code == DAG_PB and exporter.stat(store.get, cid).kind == "file")


def _car_chunks(store: BlockStore, resolved: _Resolved, options: CarRequest) -> Iterator[bytes]:
    writer = _CarWriter(store)
    yield encode_header([resolved.root])
    try:
        for cid in resolved.path_blocks:
            writer.add(cid)
            if writer.full():
                yield writer.take()
        target = resolved.target
        scope = options.scope
        if scope == "entity" and options.entity_bytes is None and _is_file(store, target):
            scope = "all"  # a file's DAG is all file nodes: the entity is the whole DAG
        if scope == "block":
            writer.add(target)
        elif scope == "entity" and options.entity_bytes is not None:
            for cid in _entity_blocks(store, target, options.entity_bytes):
                writer.add(cid)
                if writer.full():
                    yield writer.take()
        elif scope == "entity":  # a directory (its shard nodes) or anything else: one entity
            for cid in _entity_blocks(store, target, "0:*"):
                writer.add(cid)
                if writer.full():
                    yield writer.take()
        else:
            stack = [target]
            while stack:
                links = writer.add(stack.pop())
                if links:
                    stack.extend(reversed(links))
                if writer.full():
                    yield writer.take()
    except DreError as exc:
        # Headers are sent: ending the stream is the spec's signal (the CAR is incomplete and
        # the client, which verifies, sees it).
        _log.warning("gateway CAR for %s ended early: %s", resolved.ipfs_path, exc)
    if writer.pending:
        yield writer.take()


# --------------------------------------------------------------------------------------------
# Answers


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(f"{message}\n", status_code=status,
                             headers={"X-Content-Type-Options": "nosniff", **(headers or {})})


def _common(resolved: _Resolved, etag: str) -> dict[str, str]:
    return {
        "Cache-Control": IMMUTABLE,
        "ETag": etag,
        "X-Ipfs-Path": quote(resolved.ipfs_path, safe=_PATH_SAFE),
        "X-Ipfs-Roots": ",".join(cid_text(c) for c in resolved.roots),
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept",
    }


def _not_modified(request: Request, headers: dict[str, str]) -> Response | None:
    if _etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return None


def _location(request: Request, fmt: str) -> dict[str, str]:
    if "format" in request.query_params:
        return {}
    query = request.url.query
    path = quote(request.url.path, safe=_PATH_SAFE)  # a header is Latin-1: names may not be
    return {"Content-Location": f"{path}?{query + '&' if query else ''}format={fmt}"}


def _raw_answer(request: Request, store: BlockStore, resolved: _Resolved) -> Response:
    cid = resolved.root
    name = cid_text(cid)
    headers = {**_common(resolved, f'"{name}.raw"'), **_location(request, "raw"),
               "Content-Disposition": f'attachment; filename="{name}.bin"'}
    if (cached := _not_modified(request, headers)) is not None:
        return cached
    data = store.get(cid)
    verify_block(cid, data)
    return Response(data, media_type=RAW_BLOCK_TYPE, headers=headers)


def _car_answer(request: Request, store: BlockStore, resolved: _Resolved) -> Response:
    options = _car_options(request)
    variant = "\x00".join(
        ["/".join(resolved.parts), options.scope, options.entity_bytes or ""]).encode()
    tag = hashlib.sha256(variant).hexdigest()[:16]
    name = cid_text(resolved.root)
    headers = {**_common(resolved, f'"{name}.car.{tag}"'), **_location(request, "car"),
               "Content-Disposition": f'attachment; filename="{name}.car"'}
    if (cached := _not_modified(request, headers)) is not None:
        return cached
    if options.entity_bytes is not None:
        # Syntax errors are a 400 before the stream starts, not a truncated CAR.
        parse_entity_bytes(options.entity_bytes, 1 << 62)
    return StreamingResponse(_car_chunks(store, resolved, options), media_type=CAR_CONTENT_TYPE,
                             headers=headers)


def _content_type(name: str, head: Callable[[], bytes]) -> str:
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot > 0 else ""
    guessed = _TYPES.get(extension)
    if guessed is None and extension:
        guessed, encoding = mimetypes.guess_type(name)
        if encoding is not None:  # "x.tar.gz" is gzip bytes, not a tar a browser may unpack
            guessed = "application/gzip" if encoding == "gzip" else "application/octet-stream"
    if guessed is None:
        sample = head()
        try:
            sample.decode("utf-8")
            is_text = b"\x00" not in sample
        except UnicodeDecodeError as exc:
            # A multi-byte character cut by the sample's end is still text.
            is_text = exc.start >= len(sample) - 3 and b"\x00" not in sample
        guessed = "text/plain" if is_text else "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/json", "image/svg+xml"):
        guessed += "; charset=utf-8"
    return guessed


def _file_answer(request: Request, store: BlockStore, resolved: _Resolved) -> Response:
    cid = resolved.target
    headers = {**_common(resolved, f'"{cid_text(cid)}"'), "Content-Security-Policy": SANDBOX,
               "Accept-Ranges": "bytes"}
    if (cached := _not_modified(request, headers)) is not None:
        return cached
    size = exporter.stat(store.get, cid).size
    name = resolved.parts[-1] if resolved.parts else ""

    def head() -> bytes:
        return b"".join(exporter.read_file_range(store.get, cid, 0, SNIFF_BYTES - 1))

    media_type = _content_type(name, head)
    wanted = parse_range(request.headers.get("range"), size)
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != headers["ETag"]:
        wanted = None  # the client's copy is of something else: send it all
    if wanted == "unsatisfiable":
        return _text(416, f"range not satisfiable: the file is {size} bytes",
                     {"Content-Range": f"bytes */{size}", **headers})
    status = 200
    span = ByteRange(0, size - 1)
    if wanted is not None:
        status, span = 206, wanted
        headers["Content-Range"] = f"bytes {span.start}-{span.end}/{size}"
    length = span.length if size else 0
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":  # the headers say it all; read nothing
        return Response(b"", status_code=status, media_type=media_type, headers=headers)
    if length <= INLINE_LIMIT:
        body = b"".join(exporter.read_file_range(store.get, cid, span.start, span.end)) \
            if length else b""
        return Response(body, status_code=status, media_type=media_type, headers=headers)
    return StreamingResponse(_file_chunks(store, cid, span, resolved.ipfs_path),
                             status_code=status, media_type=media_type, headers=headers)


def _file_chunks(store: BlockStore, cid: CID, span: ByteRange, where: str) -> Iterator[bytes]:
    try:
        yield from exporter.read_file_range(store.get, cid, span.start, span.end)
    except DreError as exc:
        # The status line is sent; a short body (Content-Length unmet) makes the client fail.
        _log.warning("gateway read of %s ended early: %s", where, exc)


def _directory_answer(request: Request, store: BlockStore, resolved: _Resolved) -> Response:
    if not request.url.path.endswith("/"):
        # Relative links in the listing (and in an index.html) need the trailing slash.
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{quote(request.url.path, safe=_PATH_SAFE)}/{query}",
                                status_code=301,
                                headers={"Cache-Control": IMMUTABLE})
    target = resolved.target
    try:
        index = exporter.resolve_path(store.get, target, "index.html")
    except NotFoundError:
        index = None
    if index is not None and exporter.stat(store.get, index).kind == "file":
        inner = _Resolved(resolved.root, (*resolved.parts, "index.html"),
                          (*resolved.roots, index), resolved.path_blocks)
        return _file_answer(request, store, inner)
    headers = {**_common(resolved, f'W/"DirIndex-{LISTING_VERSION}_CID-{cid_text(target)}"'),
               "Content-Security-Policy": LISTING_CSP}
    if (cached := _not_modified(request, headers)) is not None:
        return cached
    page = _listing_page(store, resolved).encode()
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


def _entry(store: BlockStore, cid: CID) -> tuple[str, str]:
    """Kind and printed size of a directory entry, reading as little as possible: a raw block
    is a whole file whose size the store knows without reading it; a dag-pb node is read (and
    verified) once. A listing thus never hashes the files it lists."""
    try:
        if cid.codec.code == RAW:
            size = store.size_of(cid)
            return ("file", f"{size:,} B") if size is not None else ("missing", "")
        info = exporter.stat(store.get, cid)
    except NotFoundError:
        return "missing", ""
    except ValidationError:
        return cid.codec.name, ""  # not UnixFS (dag-cbor, say): listed, not described
    return info.kind, (f"{info.size:,} B" if info.kind == "file" else "")


def _listing_page(store: BlockStore, resolved: _Resolved) -> str:
    esc = html.escape
    title = esc(resolved.ipfs_path)
    rows: list[str] = []
    if resolved.parts:
        rows.append('<tr><td><a href="../">..</a></td><td></td><td></td></tr>')
    count = 0
    more = False
    for name, child in exporter.list_directory(store.get, resolved.target):
        if count >= MAX_LISTING:
            more = True
            break
        count += 1
        kind, size = _entry(store, child)
        slash = "/" if kind == "directory" else ""
        rows.append(
            f'<tr><td><a href="{esc(quote(name, safe=""))}{slash}">{esc(name)}{slash}</a></td>'
            f'<td class="size">{esc(size)}</td>'
            f'<td><a class="cid" href="/ipfs/{cid_text(child)}">{cid_text(child)}</a></td></tr>')
    note = f"<p>Only the first {MAX_LISTING} entries are shown.</p>" if more else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "td{padding:.2em 1em .2em 0}.size{text-align:right}.cid{font-family:monospace;"
        "color:#666;font-size:.85em}</style></head><body>"
        f"<h1>Index of {title}</h1>"
        f"<p>{count} entries &middot; {esc(cid_text(resolved.target))}</p>"
        f"<table>{''.join(rows)}</table>{note}</body></html>\n"
    )


def _deserialized_answer(request: Request, store: BlockStore, resolved: _Resolved) -> Response:
    target = resolved.target
    if target.codec.code not in (RAW, DAG_PB):
        # Not UnixFS (a signed manifest, say): hand the verified block over as a download.
        name = cid_text(target)
        headers = {**_common(resolved, f'"{name}"'),
                   "Content-Disposition": f'attachment; filename="{name}.bin"'}
        if (cached := _not_modified(request, headers)) is not None:
            return cached
        data = store.get(target)
        verify_block(target, data)
        return Response(data, media_type=f"application/vnd.ipld.{target.codec.name}",
                        headers=headers)
    kind = exporter.stat(store.get, target).kind
    if kind == "directory":
        return _directory_answer(request, store, resolved)
    if kind == "symlink":
        # Not followed (a link may point anywhere); its target is the answer, as plain text.
        headers = {**_common(resolved, f'"{cid_text(target)}"'),
                   "Content-Security-Policy": SANDBOX}
        if (cached := _not_modified(request, headers)) is not None:
            return cached
        link = exporter.read_symlink(store.get, target).encode()
        return Response(link, media_type="text/plain; charset=utf-8", headers=headers)
    return _file_answer(request, store, resolved)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an (empty) async generator


def _without_body(response: Response) -> None:
    """Make ``response`` a HEAD answer: same status and headers (``Content-Length`` stays the
    GET body's length, as HTTP says), no body. A stream that was never started is dropped."""
    if isinstance(response, StreamingResponse):
        response.body_iterator = _nothing()
    else:
        response.body = b""


def _probe(fmt: str | None) -> Response:
    """``/ipfs/bafkqaaa``: the empty identity CID, which says "this is a trustless gateway"."""
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if fmt == "car":
        probe = CID.decode(PROBE_CID)
        return Response(encode_header([probe]), media_type=CAR_CONTENT_TYPE, headers=headers)
    media = RAW_BLOCK_TYPE if fmt == "raw" else "text/plain"
    return Response(b"", media_type=media, headers=headers)


def gateway_routes(state: NodeState) -> list[BaseRoute]:
    """``GET`` and ``HEAD /ipfs/{cid}[/path]`` (see the module docstring)."""

    async def answer(request: Request) -> Response:
        rest = request.path_params["rest"]
        store = state.repo.store
        try:
            fmt = _format(request)
            if rest.rstrip("/") == PROBE_CID:
                return _probe(fmt)
            root, parts = _split(rest)
            if fmt == "raw" and parts:
                raise GatewayError(
                    400, "a raw block is asked for by CID alone: /ipfs/<cid>?format=raw")
            cache_control = request.headers.get("cache-control", "")[:MAX_HEADER_CHARS]
            resolved = _resolve(store, root, parts,
                                only_if_cached="only-if-cached" in cache_control.lower())
            if fmt == "raw":
                return _raw_answer(request, store, resolved)
            if fmt == "car":
                return _car_answer(request, store, resolved)
            # Files and listings may read many blocks: off the event loop (a raw block or a
            # CAR's first bytes are answered here; a CAR streams from the thread pool).
            return await trio.to_thread.run_sync(
                _deserialized_answer, request, store, resolved)
        except GatewayError as exc:
            return _text(exc.status, str(exc))
        except NotFoundError as exc:
            return _text(404, f"{exc} (this gateway serves only local blocks)")
        except ValidationError as exc:
            return _text(400, str(exc))
        except IntegrityError as exc:
            _log.error("gateway: store integrity error under %s: %s", rest[:200], exc)
            return _text(500, f"store integrity error: {exc}")

    async def ipfs(request: Request) -> Response:
        response = await answer(request)
        if request.method == "HEAD":
            _without_body(response)
        return response

    return [Route("/ipfs/{rest:path}", ipfs, methods=["GET", "HEAD"])]
