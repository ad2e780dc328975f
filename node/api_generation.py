"""The Generation API: generate, preview and validate a posted document. Nothing is stored.

The document is the whole source of a package (``specs/doc-format.md``): the seed's
``options`` (``packageName``, ``version``, ``template``) cannot change what it generates, since a
package must regenerate from its document alone. When given, they are checked against the
document's front matter (400 if they differ), which catches posting the wrong document.
"""

from __future__ import annotations

import base64
from typing import Annotated

import msgspec
from dre.protocol.docformat import MAX_DOCUMENT_BYTES
from dre.protocol.errors import ValidationError
from dre.protocol.generator import GeneratedTree, generate, validate
from dre.protocol.packages import build_file, build_tree
from starlette.requests import Request
from starlette.responses import Response

from .api_common import API_PREFIX, ApiRoute, JSONResponse, decode_body, read_body, run_heavy

__all__ = ["MAX_GENERATION_BODY", "generation_routes"]

#: A document is at most 1 MiB of UTF-8; JSON escaping can make it up to 6 times longer in the
#: worst case (control characters), but a real document needs less than twice.
MAX_GENERATION_BODY = 3 * MAX_DOCUMENT_BYTES

_Doc = Annotated[str, msgspec.Meta(max_length=MAX_GENERATION_BODY)]
_Option = Annotated[str, msgspec.Meta(max_length=256)]


class GenerateOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Expectations about the document (checked, never applied: see the module docstring)."""

    packageName: _Option | None = None  # the seed's field name (camelCase)
    version: _Option | None = None
    template: _Option | None = None


class GenerateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/v1/generate`` (and ``/preview``, ``/validate``)."""

    #: The Markdown document itself.
    documentation: _Doc
    options: GenerateOptions | None = None


class DiagnosticView(msgspec.Struct, frozen=True):
    """A problem in a document, with its line."""

    line: int
    severity: str
    message: str


class PreviewFile(msgspec.Struct, frozen=True):
    """A file the document generates."""

    path: str
    size: int
    cid: str


class GeneratedFile(msgspec.Struct, frozen=True):
    """A generated file and its content (base64)."""

    path: str
    size: int
    cid: str
    content: str


class Preview(msgspec.Struct, frozen=True):
    """``POST /api/v1/generate/preview``: what would be generated; nothing is written."""

    name: str
    version: str
    template: str
    root: str
    doc: str
    generator: str
    files: list[PreviewFile]
    total_bytes: int
    warnings: list[DiagnosticView]


class Generated(msgspec.Struct, frozen=True):
    """``POST /api/v1/generate``: the package tree with every file's content."""

    name: str
    version: str
    template: str
    root: str
    doc: str
    generator: str
    files: list[GeneratedFile]
    total_bytes: int
    warnings: list[DiagnosticView]


class Validation(msgspec.Struct, frozen=True):
    """``POST /api/v1/generate/validate``: every error and warning (200 even when invalid)."""

    valid: bool
    diagnostics: list[DiagnosticView]


def _document(body: GenerateRequest) -> bytes:
    doc = body.documentation.encode("utf-8", "surrogatepass")
    if len(doc) > MAX_DOCUMENT_BYTES:
        raise ValidationError(f"documentation is larger than {MAX_DOCUMENT_BYTES} bytes")
    return doc


def _check_options(body: GenerateRequest, tree: GeneratedTree) -> None:
    options = body.options
    if options is None:
        return
    meta = tree.metadata
    for given, actual, what in ((options.packageName, meta.name, "packageName"),
                                (options.version, meta.version, "version"),
                                (options.template, meta.template, "template")):
        if given is not None and given != actual:
            raise ValidationError(
                f"options.{what} is {given!r} but the document says {actual!r}; the document "
                "is the package's only source: change its front matter")


async def _request(request: Request) -> GenerateRequest:
    return decode_body(await read_body(request, MAX_GENERATION_BODY), GenerateRequest)


def _files(tree: GeneratedTree, *, content: bool) -> tuple[str, list[PreviewFile],
                                                           list[GeneratedFile]]:
    built = build_tree(tree.files)
    previews, full = [], []
    for path, data in tree.files.items():
        cid = str(built.paths[path])
        if content:
            full.append(GeneratedFile(path, len(data), cid, base64.b64encode(data).decode()))
        else:
            previews.append(PreviewFile(path, len(data), cid))
    return str(built.root), previews, full


def _warnings(tree: GeneratedTree) -> list[DiagnosticView]:
    return [DiagnosticView(w.line, w.severity, w.message) for w in tree.warnings]


async def generate_package(request: Request) -> Response:
    """``POST /api/v1/generate``."""
    body = await _request(request)
    doc = _document(body)

    def work() -> Generated:
        tree = generate(doc)
        _check_options(body, tree)
        root, _, files = _files(tree, content=True)
        meta = tree.metadata
        return Generated(name=meta.name, version=meta.version, template=meta.template,
                         root=root, doc=str(build_file(doc).root),
                         generator=tree.generator_version, files=files,
                         total_bytes=tree.total_bytes, warnings=_warnings(tree))

    return JSONResponse(await run_heavy(work))


async def preview(request: Request) -> Response:
    """``POST /api/v1/generate/preview``."""
    body = await _request(request)
    doc = _document(body)

    def work() -> Preview:
        tree = generate(doc)
        _check_options(body, tree)
        root, files, _ = _files(tree, content=False)
        meta = tree.metadata
        return Preview(name=meta.name, version=meta.version, template=meta.template, root=root,
                       doc=str(build_file(doc).root), generator=tree.generator_version,
                       files=files, total_bytes=tree.total_bytes, warnings=_warnings(tree))

    return JSONResponse(await run_heavy(work))


async def validate_document(request: Request) -> Response:
    """``POST /api/v1/generate/validate``."""
    body = await _request(request)
    doc = _document(body)
    diagnostics = await run_heavy(lambda: validate(doc))
    views = [DiagnosticView(d.line, d.severity, d.message) for d in diagnostics]
    return JSONResponse(Validation(valid=not any(d.severity == "error" for d in diagnostics),
                                   diagnostics=views))


def generation_routes() -> list[ApiRoute]:
    """The Generation API's operations."""
    errors = {400: None, 413: None, 429: None}
    g = f"{API_PREFIX}/generate"
    return [
        ApiRoute("POST", g, generate_package, "Generate a package from a document", "generation",
                 {200: Generated, **errors}, body=GenerateRequest,
                 body_limit=MAX_GENERATION_BODY, heavy=True),
        ApiRoute("POST", f"{g}/preview", preview, "Preview: files, sizes and CIDs", "generation",
                 {200: Preview, **errors}, body=GenerateRequest,
                 body_limit=MAX_GENERATION_BODY, heavy=True),
        ApiRoute("POST", f"{g}/validate", validate_document,
                 "Every error and warning, with its line", "generation",
                 {200: Validation, **errors}, body=GenerateRequest,
                 body_limit=MAX_GENERATION_BODY, heavy=True),
    ]
