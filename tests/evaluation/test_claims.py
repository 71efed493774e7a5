"""bench/claims.py decides each method's claim from frontier records by its stated statistic: synthetic records
built so that each verdict is known, and the interpolation and swing statistics by hand."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def claims():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("claims")
    finally:
        sys.path.remove(str(BENCH))


def run(method, seed, chosen, rewards, kls, beta=0.1, deltas=()):
    return {"method": method, "beta": beta, "seed": seed, "val": [{"step": 24, "logps/chosen": chosen}],
            "evals": [{"step": 8 * (i + 1), "reward": r, "kl": k}
                      for i, (r, k) in enumerate(zip(rewards, kls, strict=True))],
            "train": [{"step": i + 1, "self_refine/delta": d} for i, d in enumerate(deltas)]}


def initial(seed):
    return {"method": "initial", "beta": 0.0, "seed": seed, "val": [{"step": 0, "logps/chosen": -50.0}],
            "evals": [{"step": 0, "reward": 0.4}], "train": []}


def test_statistics_by_hand(claims):
    start = initial(0)
    swinging = run("sgdpo", 0, -50.0, [0.6, 0.2, 0.6], [1.0, 2.0, 3.0])
    assert claims.reward_swing(swinging, start) == pytest.approx((0.2 + 0.4 + 0.4) / 3)
    assert claims.reward_at_kl(swinging, start, 0.5) == pytest.approx(0.5)  # halfway from (0, 0.4) to (1, 0.6)
    assert claims.reward_at_kl(swinging, start, 2.5) == pytest.approx(0.4)
    assert claims.reward_at_kl(swinging, start, 9.0) == pytest.approx(0.6)  # beyond the last point: its reward
    assert claims.chosen_change(run("dpo", 0, -58.5, [0.5], [1.0]), start) == pytest.approx(-8.5)
    assert claims.sign([1.0, 1.1, 0.9]) == 1 and claims.sign([1.0, -1.0, 0.5]) == 0 and claims.sign([-2, -2.2]) == -1


def test_verdicts_follow_the_stated_rule(claims):
    records = [initial(seed) for seed in range(3)]
    for seed, noise in enumerate([0.0, 0.3, -0.3]):
        records += [
            run("dpo", seed, -60.0 + noise, [0.7, 0.3, 0.7], [1.0, 2.0, 3.0]),  # chosen falls by ~10, reward swings
            run("minor_dpo", seed, -49.0 + noise, [0.6, 0.6, 0.6], [1.0, 2.0, 3.0]),  # chosen holds
            run("sgdpo", seed, -55.0, [0.5 + noise / 10, 0.55, 0.6], [1.0, 2.0, 3.0]),  # steadier
            run("ipo", seed, -55.0, [0.5, 0.5, 0.5], [1.0, 2.0, 3.0]),
            run("sr_dpo", seed, -55.0, [0.8 + noise / 10, 0.8, 0.8], [1.0, 2.0, 3.0], deltas=[0.0, 0.01, 0.02]),
            run("sr_ipo", seed, -55.0, [0.5, 0.5, 0.5], [1.0, 2.0, 3.0], deltas=[0.0, 0.0]),  # Δ never moves
        ]
    rows = claims.report(records).splitlines()[2:]
    verdicts = {row.split("|")[1].split(":")[0].strip(): row.rsplit("|", 2)[1].strip() for row in rows}
    assert verdicts == {"MinorDPO": "held", "SGDPO": "held", "sr_dpo": "held", "sr_ipo": "not resolved (Δ = 0)"}
    flipped = [dict(r, method={"dpo": "minor_dpo", "minor_dpo": "dpo"}.get(r["method"], r["method"])) for r in records]
    assert "| not held |" in next(row for row in claims.report(flipped).splitlines() if row.startswith("| MinorDPO"))
