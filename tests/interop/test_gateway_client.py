"""Real IPFS clients against a running node's gateway (``dre node start``, a real process).

``js/gateway-fetch.mjs`` fetches each published package root through the node's ``/ipfs/``
gateway three ways, verifying every block itself:

- as a CAR (``?format=car``), parsed by @ipld/car, every block hashed against its CID, every
  file read back by ipfs-unixfs-exporter from those blocks alone;
- block by block (``?format=raw``), each body hashed and compared with the CAR's copy;
- with @helia/verified-fetch over a Helia node whose only block source is our gateway (Helia's
  trustless-gateway block broker, which verifies each block it receives).

The expected bytes come from ``dre generate`` (the document regenerated, not read back from the
store), and for a multi-block file from the file on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
EXAMPLES = HERE.parents[1] / "specs" / "examples"
DRE = str(Path(sys.executable).parent / "dre")
CAR_CONTENT_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
PACKAGES = {"@acme/retry": "acme-retry-1.1.0.md", "left-pad": "left-pad.md",
            "@acme/cli": "acme-cli.md"}
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def dre(home: Path, *args: str) -> str:
    proc = subprocess.run([DRE, *args], env={**os.environ, "DRE_HOME": str(home)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"dre {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A node with the example packages published, serving HTTP on a free port."""
    home = tmp_path_factory.mktemp("gateway") / "home"
    dre(home, "init")
    dre(home, "scope", "create", "@acme")
    for doc in ("acme-retry-1.0.0.md", *PACKAGES.values()):
        dre(home, "publish", str(EXAMPLES / doc))
    log = (home.parent / "node.log").open("wb")
    proc = subprocess.Popen(
        [DRE, "node", "start", "--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"],
        env={**os.environ, "DRE_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (home / "api").exists():
            assert proc.poll() is None, (home.parent / "node.log").read_text()
            assert time.monotonic() < deadline, "the node did not start within 60 s"
            time.sleep(0.1)
        yield home, (home / "api").read_text().strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def gateway_fetch() -> Any:
    node_bin = "node"
    missing = [p for p in ("@helia/verified-fetch", "ipfs-unixfs-exporter", "@ipld/car")
               if not (JS_DIR / "node_modules" / p).is_dir()]
    if missing:
        reason = f"npm packages missing ({', '.join(missing)}): run `cd tests/interop/js && npm ci`"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)

    def run(api: str, root: str, paths: list[str], workdir: Path) -> dict[str, Any]:
        paths_file = workdir / f"paths-{root}.json"
        paths_file.write_text(json.dumps(paths))
        cmd = [node_bin, "--import", "./polyfill.mjs", "gateway-fetch.mjs", api, root,
               str(paths_file)]
        proc = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=180,
                              check=False)
        try:
            report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise AssertionError(f"gateway-fetch.mjs exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        return report

    return run


def digests(directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not rel.startswith(".dre/"):
            data = path.read_bytes()
            out[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return out


def check(report: dict[str, Any], root: str, expected: dict[str, dict[str, Any]]) -> None:
    assert report["errors"] == [], report["errors"]
    car = report["car"]
    assert car["status"] == 200 and car["contentType"] == CAR_CONTENT_TYPE
    assert car["roots"] == [root]
    assert car["bad"] == [] and car["verified"] == car["blocks"] > 0
    assert car["files"] == expected
    raw = report["raw"]
    assert raw["bad"] == [] and raw["differs"] == []
    assert raw["fetched"] == raw["verified"] == car["blocks"]
    assert raw["contentTypes"] == ["application/vnd.ipld.raw"]
    fetched = report["verifiedFetch"]
    assert set(fetched) == set(expected)
    for path, want in expected.items():
        got = fetched[path]
        assert got["status"] == 200, path
        assert (got["size"], got["sha256"]) == (want["size"], want["sha256"]), path


def test_published_packages_through_the_gateway(node: tuple[Path, str], gateway_fetch: Any,
                                                tmp_path: Path) -> None:
    home, api = node
    for name, doc in PACKAGES.items():
        root = json.loads(dre(home, "info", name, "--json"))["package"]
        generated = tmp_path / name.replace("/", "_")
        dre(home, "generate", str(EXAMPLES / doc), "-o", str(generated))
        expected = digests(generated)
        assert expected, name
        check(gateway_fetch(api, root, sorted(expected), tmp_path), root, expected)


def test_a_multi_block_file_through_the_gateway(node: tuple[Path, str], gateway_fetch: Any,
                                                tmp_path: Path) -> None:
    home, api = node
    tree = tmp_path / "tree"
    (tree / "nested").mkdir(parents=True)
    (tree / "nested" / "big.bin").write_bytes(random.Random(11).randbytes(1_300_000))
    (tree / "notes with spaces.txt").write_text("a name a URL must escape\n")
    root = dre(home, "add", "-q", str(tree)).strip()
    expected = digests(tree)
    check(gateway_fetch(api, root, sorted(expected), tmp_path), root, expected)


def test_http_semantics_over_the_real_server(node: tuple[Path, str]) -> None:
    """What the in-process tests check, once more through hypercorn on a socket."""
    home, api = node
    root = json.loads(dre(home, "info", "@acme/retry", "--json"))["package"]
    with httpx.Client(base_url=api, timeout=30) as client:
        head = client.head(f"/ipfs/{root}/README.md")
        assert head.status_code == 200 and head.content == b""
        size = int(head.headers["content-length"])
        assert head.headers["content-type"] == "text/markdown; charset=utf-8"
        ranged = client.get(f"/ipfs/{root}/README.md", headers={"Range": "bytes=2-9"})
        assert ranged.status_code == 206 and len(ranged.content) == 8
        assert ranged.headers["content-range"] == f"bytes 2-9/{size}"
        etag = head.headers["etag"]
        assert client.get(f"/ipfs/{root}/README.md",
                          headers={"If-None-Match": etag}).status_code == 304
        listing = client.get(f"/ipfs/{root}/")
        assert listing.status_code == 200 and 'href="README.md"' in listing.text
        car_head = client.head(f"/ipfs/{root}?format=car")
        assert car_head.status_code == 200 and car_head.content == b""
        assert car_head.headers["content-type"] == CAR_CONTENT_TYPE
        absent = "/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        assert client.head(absent).status_code == 404  # no body sent, connection still fine
        missing = client.get(absent)
        assert missing.status_code == 404 and "not on this node" in missing.text
