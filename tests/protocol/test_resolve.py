"""Dependency resolution: highest versions, diamonds, backtracking, every error message, limits,
determinism, and (hypothesis) that every answer satisfies every range and has no cycle."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from dre.protocol.errors import IntegrityError, ValidationError
from dre.protocol.resolve import Candidate, Catalog, Resolution, resolve
from dre.protocol.semver import parse_range, parse_version
from hypothesis import given, settings
from hypothesis import strategies as st

Spec = dict[str, dict[str, dict[str, str]]]  # name -> version -> dependencies


def catalog(spec: Spec, *, shuffle: int | None = None) -> Catalog:
    candidates = {
        name: [
            Candidate(name, parse_version(v), dict(deps), key=f"cid:{name}@{v}")
            for v, deps in versions.items()
        ]
        for name, versions in spec.items()
    }
    if shuffle is not None:
        rnd = random.Random(shuffle)
        for versions in candidates.values():
            rnd.shuffle(versions)

    def get(name: str) -> Sequence[Candidate]:
        return candidates.get(name, [])

    return get


def picked(resolution: Resolution) -> dict[str, str]:
    return {name: str(c.version) for name, c in resolution.packages.items()}


def test_single_package_highest_version() -> None:
    spec: Spec = {"a": {"1.0.0": {}, "1.4.2": {}, "2.0.0": {}, "1.5.0-beta": {}}}
    res = resolve("a", "^1.0.0", catalog(spec))
    assert str(res.root.version) == "1.4.2"
    assert res.root.key == "cid:a@1.4.2"
    assert res.order == ("a",)
    assert str(resolve("a", "*", catalog(spec)).root.version) == "2.0.0"
    assert str(resolve("a", ">=1.5.0-alpha", catalog(spec)).root.version) == "2.0.0"
    assert str(resolve("a", ">=1.5.0-alpha <2.0.0", catalog(spec)).root.version) == "1.5.0-beta"


def test_diamond_shares_one_version() -> None:
    spec: Spec = {
        "app": {"1.0.0": {"left": "^1.0.0", "right": "^1.0.0"}},
        "left": {"1.0.0": {"base": "^1.1.0"}},
        "right": {"1.0.0": {"base": "~1.2.0"}},
        "base": {"1.0.0": {}, "1.1.0": {}, "1.2.0": {}, "1.2.5": {}, "1.3.0": {}},
    }
    res = resolve("app", "*", catalog(spec))
    assert picked(res) == {"app": "1.0.0", "base": "1.2.5", "left": "1.0.0", "right": "1.0.0"}
    assert list(res.packages) == sorted(res.packages)
    assert res.order == ("base", "left", "right", "app")


def test_backtracks_when_a_choice_makes_a_later_name_unsatisfiable() -> None:
    # a@2.0.0 is newest but needs c ^2, which b cannot live with; a@1.0.0 agrees with b.
    spec: Spec = {
        "root": {"1.0.0": {"a": "*", "b": "*"}},
        "a": {"1.0.0": {"c": "^1.0.0"}, "2.0.0": {"c": "^2.0.0"}},
        "b": {"1.0.0": {"c": "^1.0.0"}},
        "c": {"1.0.0": {}, "1.1.0": {}, "2.0.0": {}},
    }
    res = resolve("root", "*", catalog(spec))
    assert picked(res) == {"a": "1.0.0", "b": "1.0.0", "c": "1.1.0", "root": "1.0.0"}


def test_backtracks_past_a_chosen_version_deeper_in_the_graph() -> None:
    # x is decided (2.0.0) before y is seen; y@1 then requires x <2, which is only satisfiable by
    # going back and choosing x@1.0.0.
    spec: Spec = {
        "root": {"1.0.0": {"x": "*", "z": "*"}},
        "x": {"1.0.0": {}, "2.0.0": {}},
        "z": {"1.0.0": {"y": "^1.0.0"}},
        "y": {"1.0.0": {"x": "<2.0.0"}},
    }
    res = resolve("root", "*", catalog(spec))
    assert picked(res) == {"root": "1.0.0", "x": "1.0.0", "y": "1.0.0", "z": "1.0.0"}
    assert res.order.index("x") < res.order.index("y") < res.order.index("z")


def test_avoids_a_version_that_closes_a_cycle() -> None:
    spec: Spec = {
        "a": {"1.0.0": {"b": "^1.0.0"}},
        "b": {"1.0.0": {}, "1.1.0": {"a": "^1.0.0"}},
    }
    assert picked(resolve("a", "*", catalog(spec))) == {"a": "1.0.0", "b": "1.0.0"}


def test_dependency_on_the_root_name_must_match_the_root() -> None:
    spec: Spec = {"a": {"1.0.0": {"b": "*"}, "2.0.0": {"b": "*"}}, "b": {"1.0.0": {"a": "^1.0.0"}}}
    with pytest.raises(ValidationError, match="cycle"):
        resolve("a", "*", catalog(spec))


# --- errors -------------------------------------------------------------------------------------


def error(spec: Spec, name: str = "a", rng: str = "*") -> str:
    with pytest.raises(ValidationError) as info:
        resolve(name, rng, catalog(spec))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_unknown_root() -> None:
    assert error({}, "nope") == "no package named 'nope'"


def test_error_unknown_dependency() -> None:
    spec: Spec = {"a": {"1.0.0": {"x": "^1.0.0"}}}
    assert error(spec) == "no package named 'x' (required by a@1.0.0)"


def test_error_no_version_satisfies() -> None:
    spec: Spec = {"a": {"1.0.0": {"x": "^2.0.0"}}, "x": {"1.4.2": {}, "1.0.0": {}}}
    assert error(spec) == (
        "no version of 'x' satisfies ^2.0.0 (required by a@1.0.0); available: 1.0.0, 1.4.2"
    )


def test_error_root_range_unsatisfied_lists_newest_versions() -> None:
    spec: Spec = {"a": {f"1.{i}.0": {} for i in range(15)}}
    assert error(spec, "a", "^2.0.0") == (
        "no version of 'a' satisfies ^2.0.0; available: "
        "1.5.0, 1.6.0, 1.7.0, 1.8.0, 1.9.0, 1.10.0, 1.11.0, 1.12.0, 1.13.0, 1.14.0 and 5 older"
    )


def test_error_conflict() -> None:
    spec: Spec = {
        "root": {"1.0.0": {"a": "^1.0.0", "b": "^2.0.0"}},
        "a": {"1.0.0": {"x": "^1.0.0"}},
        "b": {"2.0.0": {"x": "^2.0.0"}},
        "x": {"1.0.0": {}, "2.0.0": {}},
    }
    assert error(spec, "root") == "'x': a@1.0.0 requires ^1.0.0 but b@2.0.0 requires ^2.0.0"


def test_error_a_cycle_is_reported_before_the_ranges_on_it() -> None:
    # b's range on a also fails, but depending on the root at all is the real problem.
    spec: Spec = {"a": {"1.0.0": {"b": "*"}}, "b": {"1.0.0": {"a": "^2.0.0"}}}
    assert error(spec, "a", "^1.0.0") == "dependency cycle: a@1.0.0 -> b@1.0.0 -> a@1.0.0"


def test_error_three_way_conflict() -> None:
    # Each pair of ranges shares a version; all three share none.
    spec: Spec = {
        "root": {"1.0.0": {"a": "*", "b": "*", "c": "*"}},
        "a": {"1.0.0": {"x": "1.0.0 || 2.0.0"}},
        "b": {"1.0.0": {"x": "2.0.0 || 3.0.0"}},
        "c": {"1.0.0": {"x": "1.0.0 || 3.0.0"}},
        "x": {"1.0.0": {}, "2.0.0": {}, "3.0.0": {}},
    }
    assert error(spec, "root") == (
        "'x': no version satisfies all of: a@1.0.0 requires 1.0.0 || 2.0.0, "
        "b@1.0.0 requires 2.0.0 || 3.0.0, c@1.0.0 requires 1.0.0 || 3.0.0"
    )


def test_error_cycle() -> None:
    spec: Spec = {"a": {"1.0.0": {"b": "^1.0.0"}}, "b": {"1.0.0": {"a": "^1.0.0"}}}
    assert error(spec) == "dependency cycle: a@1.0.0 -> b@1.0.0 -> a@1.0.0"


def test_error_longer_cycle_starts_nearest_the_root() -> None:
    spec: Spec = {
        "r": {"1.0.0": {"a": "*"}},
        "a": {"1.0.0": {"b": "*"}},
        "b": {"1.0.0": {"c": "*"}},
        "c": {"1.0.0": {"a": "*"}},
    }
    assert error(spec, "r") == "dependency cycle: a@1.0.0 -> b@1.0.0 -> c@1.0.0 -> a@1.0.0"


def test_error_self_dependency() -> None:
    assert error({"a": {"1.0.0": {"a": "*"}}}) == "dependency cycle: a@1.0.0 -> a@1.0.0"


def test_error_invalid_range_in_a_manifest() -> None:
    spec: Spec = {"a": {"1.0.0": {"x": "latest"}}, "x": {"1.0.0": {}}}
    assert error(spec).startswith("a@1.0.0 has an invalid range for 'x': range 'latest'")


def test_error_invalid_request_range() -> None:
    with pytest.raises(ValidationError, match="not a semver range"):
        resolve("a", "newest", catalog({"a": {"1.0.0": {}}}))


def test_prefers_the_error_of_the_newest_attempt() -> None:
    # Every version of a fails; the message is about the newest (the one the user expects).
    spec: Spec = {
        "a": {"1.0.0": {"gone": "*"}, "1.1.0": {"x": "^3.0.0"}},
        "x": {"1.0.0": {}},
    }
    assert error(spec) == (
        "no version of 'x' satisfies ^3.0.0 (required by a@1.1.0); available: 1.0.0"
    )


def test_too_complex() -> None:
    # 12 packages with 10 versions each; the last one can never be satisfied, and forward checking
    # cannot see it, so the search would try 10**11 combinations.
    n, k = 12, 10
    spec: Spec = {"root": {"1.0.0": {f"p{i}": "*" for i in range(n)}}}
    for i in range(n - 1):
        spec[f"p{i}"] = {f"1.{v}.0": {} for v in range(k)}
    spec[f"p{n - 1}"] = {f"1.{v}.0": {"q": "*"} for v in range(k)}
    spec["q"] = {"1.0.0": {"p0": "<0.1.0"}}
    with pytest.raises(ValidationError, match=r"^resolution too complex"):
        resolve("root", "*", catalog(spec), max_steps=5000)


def test_max_packages() -> None:
    spec: Spec = {f"p{i}": {"1.0.0": {f"p{i + 1}": "*"}} for i in range(50)}
    spec["p50"] = {"1.0.0": {}}
    assert len(resolve("p0", "*", catalog(spec)).packages) == 51
    with pytest.raises(ValidationError, match="more than 20 packages"):
        resolve("p0", "*", catalog(spec), max_packages=20)


def test_long_chain_does_not_recurse() -> None:
    n = 3000
    spec: Spec = {f"p{i}": {"1.0.0": {f"p{i + 1}": "^1.0.0"}} for i in range(n)}
    spec[f"p{n}"] = {"1.0.0": {}}
    res = resolve("p0", "*", catalog(spec))
    assert res.order == tuple(f"p{i}" for i in range(n, -1, -1))


def test_bad_catalogs() -> None:
    def wrong_name(name: str) -> Sequence[Candidate]:
        return [Candidate("other", parse_version("1.0.0"), {})]

    def duplicate(name: str) -> Sequence[Candidate]:
        return [Candidate(name, parse_version("1.0.0"), {}) for _ in range(2)]

    with pytest.raises(IntegrityError, match="when asked for 'a'"):
        resolve("a", "*", wrong_name)
    with pytest.raises(IntegrityError, match="twice"):
        resolve("a", "*", duplicate)


def test_deterministic_whatever_the_catalog_order() -> None:
    spec: Spec = {
        "app": {"1.0.0": {"left": "^1.0.0", "right": "^1.0.0"}, "1.1.0": {"left": "^2.0.0"}},
        "left": {"1.0.0": {"base": "^1.0.0"}, "2.0.0": {"base": "^2.0.0"}},
        "right": {"1.0.0": {"base": "^1.1.0"}},
        "base": {"1.0.0": {}, "1.1.0": {}, "1.1.0+b": {}, "2.0.0": {}},
    }
    first = resolve("app", "^1.0.0 <1.1.0 || 1.0.0", catalog(spec))
    for seed in range(20):
        again = resolve("app", "^1.0.0 <1.1.0 || 1.0.0", catalog(spec, shuffle=seed))
        assert again == first
    assert str(first.packages["base"].version) == "1.1.0+b"


def test_calls_the_catalog_once_per_name() -> None:
    spec: Spec = {
        "a": {"1.0.0": {"b": "*", "c": "*"}},
        "b": {"1.0.0": {"c": "*"}},
        "c": {"1.0.0": {}},
    }
    inner = catalog(spec)
    calls: list[str] = []

    def counting(name: str) -> Sequence[Candidate]:
        calls.append(name)
        return inner(name)

    resolve("a", "*", counting)
    assert sorted(calls) == ["a", "b", "c"]


# --- property: any answer is consistent ----------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e"]
VERSIONS = ["0.1.0", "1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0"]
RANGES = ["*", "^1.0.0", "~1.1.0", "<1.1.0", ">=1.2.0-rc.0", "^0.1.0 || ^2.0.0", "1.1.0"]


@st.composite
def random_catalogs(draw: st.DrawFn) -> Spec:
    spec: Spec = {}
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True)):
        versions = draw(st.lists(st.sampled_from(VERSIONS), min_size=1, max_size=4, unique=True))
        spec[name] = {
            v: draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(RANGES), max_size=3))
            for v in versions
        }
    return spec


def _satisfiable_by_brute_force(spec: Spec, root: str, rng: str) -> bool:
    """Whether any assignment of one version (or none) per name is a valid, acyclic answer."""
    names = sorted(spec)
    choices = [[None, *spec[n]] for n in names]
    for combo in itertools.product(*choices):
        chosen = {n: v for n, v in zip(names, combo, strict=True) if v is not None}
        if root not in chosen or not parse_range(rng).satisfies(parse_version(chosen[root])):
            continue
        if _consistent(spec, chosen, root):
            return True
    return False


def _consistent(spec: Spec, chosen: dict[str, str], root: str) -> bool:
    # Only what the root reaches counts; everything reached must be chosen and in range.
    reached, todo = {root}, [root]
    while todo:
        name = todo.pop()
        for dep, text in spec[name][chosen[name]].items():
            if dep not in chosen or not parse_range(text).satisfies(parse_version(chosen[dep])):
                return False
            if dep not in reached:
                reached.add(dep)
                todo.append(dep)
    # No cycle among the reached packages (depth-first colouring).
    state: dict[str, int] = {}

    def acyclic(name: str) -> bool:
        state[name] = 1
        for dep in spec[name][chosen[name]]:
            if state.get(dep) == 1 or (dep not in state and not acyclic(dep)):
                return False
        state[name] = 2
        return True

    return acyclic(root)


@settings(max_examples=300, deadline=None)
@given(random_catalogs(), st.sampled_from(RANGES))
def test_random_catalogs(spec: Spec, rng: str) -> None:
    root = next(iter(spec))
    try:
        res = resolve(root, rng, catalog(spec))
    except ValidationError as exc:
        assert "\n" not in str(exc)
        # Complete search: it only fails when nothing would do.
        assert not _satisfiable_by_brute_force(spec, root, rng), str(exc)
        return
    chosen = picked(res)
    assert res.root is res.packages[root]
    assert parse_range(rng).satisfies(res.root.version)
    # Every range of every installed package holds, checked independently of the resolver.
    for name, candidate in res.packages.items():
        assert candidate.name == name
        assert candidate.dependencies == spec[name][chosen[name]]
        for dep, text in candidate.dependencies.items():
            assert parse_range(text).satisfies(res.packages[dep].version), (name, dep, text)
    # Nothing extra, and the install order puts dependencies first (so there is no cycle).
    assert set(res.order) == set(res.packages)
    assert len(res.order) == len(res.packages)
    assert res.order[-1] == root
    position = {name: i for i, name in enumerate(res.order)}
    for name, candidate in res.packages.items():
        for dep in candidate.dependencies:
            assert position[dep] < position[name]
    assert _consistent(spec, chosen, root)
