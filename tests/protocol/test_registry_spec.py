"""The trust weights of specs/registry.md are the ones the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from dre.protocol import packages

SPEC = Path(__file__).resolve().parents[2] / "specs" / "registry.md"


def spec_weights() -> dict[str, float]:
    section = SPEC.read_text(encoding="utf-8").split("## 6. Trust score", 1)[1].split("\n## ")[0]
    return {k: float(v) for k, v in re.findall(r"^\| ([a-z_]+) \| ([0-9.]+) \|", section, re.M)}


def test_weights_match_and_sum_to_one() -> None:
    weights = spec_weights()
    full = weights.pop("attestations_for_full_trust")
    assert weights == packages.TRUST_WEIGHTS
    assert full == packages.ATTESTATIONS_FOR_FULL_TRUST
    assert abs(sum(weights.values()) - 1.0) < 1e-9


def test_score_rules() -> None:
    everything = dict(signature=True, authorized=True, intact=True, reproduced=True,
                      license_valid=True)
    assert packages.trust_score(**everything, independent_attesters=3)[0] == 1.0
    assert packages.trust_score(**everything, independent_attesters=0)[0] == 0.8
    assert packages.trust_score(**everything, independent_attesters=9)[0] == 1.0
    broken = {**everything, "intact": False}
    assert packages.trust_score(**broken, independent_attesters=3)[0] == 0.0
    unsigned = {**everything, "signature": False}
    assert packages.trust_score(**unsigned, independent_attesters=3)[0] == 0.0
    score, breakdown = packages.trust_score(**{**everything, "reproduced": False},
                                            independent_attesters=1)
    assert breakdown.reproducible == 0.0 and abs(breakdown.attestations - 1 / 3) < 1e-9
    assert abs(score - (1 - 0.25 - 0.20 * 2 / 3)) < 1e-3
