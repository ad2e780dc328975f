"""Packages through the real `dre` executable: generate, publish, verify, info, diff, install."""

from __future__ import annotations

import json
from pathlib import Path

import lmdb
import pytest
from dre.protocol.cid import multihash_of, parse_cid
from dre.protocol.links import links_of
from dre.storage.repo import Repo

from .conftest import Runner
from .test_bad_input import assert_one_line_error, snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"


def example(name: str) -> str:
    return str(EXAMPLES / name)


def publish_examples(dre: Runner) -> None:
    dre("scope", "create", "@acme")
    for name in ("acme-retry-1.0.0.md", "acme-retry-1.1.0.md", "acme-cli.md", "left-pad.md"):
        dre("publish", example(name))


def test_generate_preview_validate_and_output(dre: Runner, tmp_path: Path) -> None:
    preview = dre("generate", example("left-pad.md"), "--preview", "--json").json()
    assert preview["name"] == "left-pad" and preview["root"].startswith("bafybei")
    assert {f["path"] for f in preview["files"]} >= {"package.json", "README.md"}
    assert not list(tmp_path.iterdir())[1:]  # only the home: preview wrote nothing
    valid = dre("generate", example("left-pad.md"), "--validate", "--json").json()
    assert valid["valid"] is True
    out = dre("generate", example("left-pad.md"), "-o", "pkg", "--json").json()
    assert out["root"] == preview["root"]
    assert (tmp_path / "pkg" / ".dre" / "source.md").read_bytes() == Path(
        example("left-pad.md")).read_bytes()
    # dre add of the generated tree (without the .dre source folder) gives the same root CID.
    (tmp_path / "pkg-copy").mkdir()
    for f in preview["files"]:
        target = tmp_path / "pkg-copy" / f["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((tmp_path / "pkg" / f["path"]).read_bytes())
    assert dre("add", "-H", "-q", "--only-hash", "pkg-copy").text.strip() == preview["root"]


def test_publish_verify_info_diff_install(dre: Runner, tmp_path: Path) -> None:
    publish_examples(dre)
    report = dre("verify", "@acme/retry@1.0.0", "--json").json()
    assert report["verified"] is True
    assert report["signature"]["valid"] and report["regeneration"]["reproduced"]
    assert report["integrity"]["blocks_checked"] > 0 and report["integrity"]["bad"] == []
    assert 0 < report["trust"]["score"] <= 1
    assert set(report["trust"]["breakdown"]) == {
        "signature", "authorization", "integrity", "reproducible", "license", "attestations"}
    assert report["attestation"].startswith("bafyrei")

    info = dre("info", "@acme/retry", "--versions", "--changelog", "--json").json()
    assert info["version"] == "1.1.0"
    assert [v["version"] for v in info["versions"]] == ["1.0.0", "1.1.0"]
    assert info["previous"] == info["versions"][0]["manifest"]
    assert "## 1.1.0" in info["changelog"] and "## 1.0.0" in info["changelog"]

    diff = dre("diff", "@acme/retry@1.0.0", "@acme/retry@1.1.0", "--json").json()
    assert diff["files"]["changed"] and diff["doc_diff"].startswith("--- @acme/retry@1.0.0")

    installed = dre("install", "@acme/cli@0.9.0-rc.2", "-o", "deps", "--json").json()
    names = [i["name"] for i in installed["installed"]]
    assert names == ["@acme/retry", "@acme/cli"]  # dependencies first
    assert installed["installed"][0]["version"] == "1.1.0"  # highest matching ^1.0.0
    assert (tmp_path / "deps" / "@acme" / "retry" / "pyproject.toml").is_file()
    log = dre("log", "--json").json()
    assert [e["kind"] for e in log] == ["scope", "publish", "publish", "publish", "publish"]


def test_publish_directory_checks_regeneration(dre: Runner, home: Path, tmp_path: Path) -> None:
    dre("generate", example("slugify-lite.md"), "-o", "pkg")
    published = dre("publish", "pkg", "--json").json()
    assert published["reproducible"] is True

    dre("generate", example("dotfiles-kit.md"), "-o", "kit")
    edited = tmp_path / "kit" / ".editorconfig"  # hidden files are part of a package
    edited.write_bytes(edited.read_bytes() + b"\n# edited by hand\n")
    (tmp_path / "kit" / "notes.txt").write_bytes(b"extra\n")
    before = snapshot(home)
    refused = dre("publish", "kit", check=False)
    assert_one_line_error(refused, "not what the document regenerates", "added: notes.txt",
                          "changed: .editorconfig")
    assert snapshot(home) == before
    allowed = dre("publish", "kit", "--allow-divergent", "--json").json()
    assert allowed["reproducible"] is False
    assert allowed["divergence"] == {"added": ["notes.txt"], "removed": [],
                                     "changed": [".editorconfig"]}
    failed = dre("verify", "dotfiles-kit", "--json", check=False)
    assert failed.code == 0  # it never claimed to be reproducible
    assert failed.json()["regeneration"]["reproduced"] is False


def test_unauthorized_and_immutable_publishes_are_refused(dre: Runner, home: Path,
                                                          tmp_path: Path) -> None:
    dre("key", "gen", "mallory")
    dre("scope", "create", "@acme")
    dre("publish", example("acme-retry-1.0.0.md"))
    before = snapshot(home)
    refused = dre("publish", example("acme-retry-1.1.0.md"), "--key", "mallory", check=False)
    assert_one_line_error(refused, "not an owner of @acme")
    changed = tmp_path / "changed.md"
    changed.write_bytes(Path(example("acme-retry-1.0.0.md")).read_bytes() + b"\nmore prose\n")
    assert_one_line_error(dre("publish", str(changed), check=False), "immutable")
    assert_one_line_error(dre("scope", "grant", "@acme", "mallory", "--key", "mallory",
                              check=False), "not an owner")
    assert snapshot(home) == before
    mallory = dre("key", "list", "--json").json()
    assert any(k["name"] == "mallory" for k in mallory)
    dre("scope", "grant", "@acme", "mallory")
    assert dre("publish", example("acme-retry-1.1.0.md"), "--key", "mallory", "--json").json()[
        "version"] == "1.1.0"


@pytest.mark.parametrize(("text", "needles"), [
    ("no front matter\n", ("line 1",)),
    ("---\nname: x\nversion: 1.0\nlicense: MIT\n---\n", ("line 3", "quote")),
    ("---\nname: x\nversion: 1.0.0\nlicense: NOT-A-LICENSE\n---\n", ("line 4",)),
    ("---\nname: x\nversion: 01.0.0\nlicense: MIT\n---\n", ("line 3",)),
    ("---\nname: x\nversion: 1.0.0\nlicense: MIT\n---\n\n```text file=../evil\nx\n```\n",
     ("line 7", "..")),
    ("---\nname: x\nversion: 1.0.0\nlicense: MIT\n---\n\n```text file=/etc/passwd\nx\n```\n",
     ("line 7",)),
    ("---\nname: x\nversion: 1.0.0\nlicense: MIT\n---\n\n```text file=A.txt\nx\n```\n\n"
     "```text file=a.txt\ny\n```\n", ("line 11",)),
])
def test_bad_documents_one_line_with_line_number(dre: Runner, home: Path, tmp_path: Path,
                                                 text: str, needles: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text(text)
    before = snapshot(home)
    for args in (("generate", str(bad), "--preview"), ("publish", str(bad))):
        assert_one_line_error(dre(*args, check=False), *needles)
    validated = dre("generate", str(bad), "--validate", "--json", check=False)
    assert validated.code != 0 and json.loads(validated.out)["valid"] is False
    assert snapshot(home) == before


def test_huge_document_refused(dre: Runner, home: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge.md"
    huge.write_bytes(b"---\nname: x\nversion: 1.0.0\nlicense: MIT\n---\n" + b"a" * (5 << 20))
    before = snapshot(home)
    assert_one_line_error(dre("publish", str(huge), check=False), "larger than")
    assert snapshot(home) == before


def test_verify_unknown_package(dre: Runner) -> None:
    assert_one_line_error(dre("verify", "nope", check=False), "no package named")
    assert_one_line_error(dre("install", "nope", "-o", "x", check=False), "no package named")


def _doc(name: str, version: str, deps: dict[str, str]) -> str:
    lines = ["---", f"name: {name}", f"version: {version}", "license: MIT",
             "description: test package", "template: files"]
    if deps:
        lines.append("dependencies:")
        lines += [f'  "{dep}": "{rng}"' for dep, rng in deps.items()]
    lines += ["---", "", f"# {name}", "", "```text file=VERSION", version, "```", ""]
    return "\n".join(lines)


def test_install_reports_cycles_and_conflicts(dre: Runner, tmp_path: Path) -> None:
    docs = {
        "a.md": _doc("cyc-a", "1.0.0", {"cyc-b": "^1.0.0"}),
        "b.md": _doc("cyc-b", "1.0.0", {"cyc-a": "^1.0.0"}),
        "c.md": _doc("lib", "1.0.0", {}),
        "d.md": _doc("lib", "2.0.0", {}),
        "e.md": _doc("old-user", "1.0.0", {"lib": "^1.0.0"}),
        "f.md": _doc("app", "1.0.0", {"old-user": "^1.0.0", "lib": "^2.0.0"}),
    }
    for file, text in docs.items():
        (tmp_path / file).write_text(text)
        dre("publish", file)
    assert_one_line_error(dre("install", "cyc-a", "-o", "out1", check=False), "cycle",
                          "cyc-a@1.0.0", "cyc-b@1.0.0")
    assert_one_line_error(dre("install", "app", "-o", "out2", check=False), "lib", "^1.0.0",
                          "^2.0.0")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()
    ok = dre("install", "old-user", "-o", "out3", "--json").json()
    assert [(i["name"], i["version"]) for i in ok["installed"]] == [
        ("lib", "1.0.0"), ("old-user", "1.0.0")]


def test_verify_catches_a_tampered_block(dre: Runner, home: Path) -> None:
    published = dre("publish", example("slugify-lite.md"), "--json").json()
    assert dre("verify", "slugify-lite", "--json").json()["verified"] is True
    with Repo.open(home) as repo:
        package = parse_cid(published["package"])
        leaf = links_of(package, repo.store.get(package))[0]
        original = repo.store.get(leaf)
    env = lmdb.open(str(home / "blocks"), max_dbs=16)
    with env.begin(write=True, db=env.open_db(b"blocks", create=False)) as txn:
        txn.replace(multihash_of(leaf), original[::-1] + b"!")
    env.close()
    failed = dre("verify", "slugify-lite", check=False)
    assert_one_line_error(failed, "verification of slugify-lite@0.4.2 failed",
                          "1 corrupt", str(leaf))
    report = dre("verify", "slugify-lite", "--json", check=False).json()
    assert report["verified"] is False and report["trust"]["score"] == 0.0
    assert report["integrity"]["bad"][0].startswith(str(leaf))
