"""The generalised uplift model against independent computations: an attacker-by-attacker numpy simulation of
the query / ban / re-entry process, closed-form expectations, finite differences of the sensitivities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import special, stats

from jaxsafety.config import ConfigError
from jaxsafety.uplift import model as M
from jaxsafety.uplift.params import Scenarios, parse_params, shift, standard_gap_draws

STEPS = [(0.45, 1.2, 2.0), (0.3, 1.8, 3.0), (0.6, 0.7, 1.0)]  # p_success, uplift, queries
SAFE = {
    "refusal_bypass": 0.4,
    "give_up": 0.1,
    "detect": 0.05,
    "reenter": 0.5,
    "jailbreak_detect": 0.02,
    "patch_months": 2.0,
}


def point_draws(n: int, *, skill_sd: float, shape: float, scale: float, seed: int, cycles: int = 64, **over):
    """``n`` scenarios of point inputs (only the jailbreak uniforms vary)."""
    rng = np.random.default_rng(seed)
    d = Scenarios()
    d["actors_per_year"] = np.full(n, 40.0)
    d["damage_per_success"] = np.full(n, 3.0)
    d["skill_sd"] = np.full(n, skill_sd)
    for j, k in enumerate(("p_success", "uplift", "queries")):
        d[k] = np.tile(np.asarray([s[j] for s in STEPS]), (n, 1))
    for k, v in {**SAFE, **over}.items():
        d[k] = np.full(n, v)
    d["jb_a"], d["jb_b"] = np.full(n, shape), np.full(n, scale)
    d["uniforms"] = rng.random((n, cycles))  # the test's own copy (the model ignores the key)
    d["jb_z"] = standard_gap_draws("weibull", d["uniforms"])
    return d


def windows_numpy(shape: float, scale: float, u: np.ndarray, patch: float):
    gaps = stats.weibull_min.ppf(u, shape, scale=scale)
    found = np.cumsum(gaps) + np.arange(len(u)) * patch
    return found, found + patch


def simulate_attackers(rng, n, *, skill_sd, horizon, found, patched, steps=STEPS, safe=SAFE):
    """Attacker by attacker: start time, skill, and every try of every hazardous query (ban, re-entry, refusal,
    giving up) drawn explicitly; returns the share of successful attacks."""
    start = rng.uniform(0, horizon, n)
    open_ = np.any((found[None] <= start[:, None]) & (start[:, None] < patched[None]), axis=1)
    skill = skill_sd * rng.standard_normal(n)
    bypass = np.where(open_, 1.0, safe["refusal_bypass"])
    detect = np.where(open_, safe["jailbreak_detect"], safe["detect"])
    has_model = np.ones(n, bool)
    alive = np.ones(n, bool)  # every step so far succeeded
    for p, u, q in steps:
        for _ in range(int(q)):
            pending = has_model.copy()
            while pending.any():
                r = rng.random((3, n))
                flagged = pending & (r[0] < detect)
                leave = flagged & (r[1] >= safe["reenter"])
                answered = pending & ~flagged & (r[1] < bypass)
                refused = pending & ~flagged & ~answered
                quit_ = refused & (r[2] < safe["give_up"])
                has_model &= ~(leave | quit_)
                pending &= ~(answered | leave | quit_)
        logit = special.logit(p) + skill + np.where(has_model, u, 0.0)
        alive &= rng.random(n) < special.expit(logit)
    return alive.mean()


def test_expectation_matches_attacker_level_simulation():
    """Skill spread, a jailbreak window pattern, bans with re-entry: the model's exact per-scenario success
    probability equals the share of successes of 200k explicitly simulated attackers."""
    d = point_draws(1, skill_sd=0.8, shape=1.5, scale=5.0, seed=3)
    out = M.simulate(d, horizon_months=24.0, family="weibull", sensitivity=False).outputs
    found, patched = windows_numpy(1.5, 5.0, d["uniforms"][0], SAFE["patch_months"])
    w = np.clip(np.minimum(patched, 24.0) - np.maximum(found, 0.0), 0, None).sum() / 24.0
    assert out["jailbreak_open"][0] == pytest.approx(w, rel=1e-5)
    assert 0.05 < w < 0.95  # both regimes matter
    rng = np.random.default_rng(11)
    n = 200_000
    sim = simulate_attackers(rng, n, skill_sd=0.8, horizon=24.0, found=found, patched=patched)
    p = out["success.safeguarded"][0]
    assert abs(sim - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    none = simulate_attackers(
        rng, n, skill_sd=0.8, horizon=24.0, found=found, patched=patched,
        safe={**SAFE, "refusal_bypass": 1.0, "detect": 0.0, "jailbreak_detect": 0.0, "give_up": 0.0},
    )  # fmt: skip
    p = out["success.none"][0]
    assert abs(none - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    assert out["success.no_ai"][0] < out["success.safeguarded"][0] < out["success.none"][0]


def chain_success(access, steps=STEPS):
    """Closed form without skill spread: sum over the step at which the model is lost (or never)."""
    a = [special.expit(special.logit(p) + u) for p, u, _ in steps]
    b = [p for p, _, _ in steps]
    total = math.prod(g * x for g, x in zip(access, a, strict=True))
    for j in range(len(steps)):
        total += math.prod(access[i] * a[i] for i in range(j)) * (1 - access[j]) * math.prod(b[j:])
    return total


def test_monte_carlo_mean_matches_closed_form():
    """Point inputs, no skill spread, exponential jailbreak discovery never patched: the mean over scenarios of
    the harm equals ``a D [(1 - E w) S_pre + E w S_jb]`` with ``E w = 1 - (1 - exp(-lam T)) / (lam T)``."""
    lam, horizon, n = 1 / 20.0, 24.0, 200_000
    d = point_draws(n, skill_sd=0.0, shape=1.0, scale=1 / lam, seed=5, patch_months=1e9)
    res = M.simulate(d, horizon_months=horizon, family="weibull", sensitivity=False, chunk=1024)
    x = SAFE
    pi = (1 - x["detect"]) * x["refusal_bypass"]
    pi /= pi + x["detect"] * (1 - x["reenter"]) + (1 - x["detect"]) * (1 - x["refusal_bypass"]) * x["give_up"]
    pj = (1 - x["jailbreak_detect"]) / (
        1 - x["jailbreak_detect"] + x["jailbreak_detect"] * (1 - x["reenter"])
    )
    s_pre = chain_success([pi**q for _, _, q in STEPS])
    s_jb = chain_success([pj**q for _, _, q in STEPS])
    ew = 1 - (1 - math.exp(-lam * horizon)) / (lam * horizon)
    expected = 40.0 * 3.0 * ((1 - ew) * s_pre + ew * s_jb)
    harm = res.outputs["harm.safeguarded"].astype(np.float64)
    assert abs(harm.mean() - expected) < 4.5 * harm.std() / math.sqrt(n)
    assert res.mean["harm.none"] == pytest.approx(120.0 * chain_success([1.0] * 3), rel=1e-5)
    assert res.mean["harm.no_ai"] == pytest.approx(120.0 * math.prod(p for p, _, _ in STEPS), rel=1e-5)
    assert res.truncated == 0.0


def test_skill_quadrature_against_scipy_quad():
    from scipy import integrate

    d = point_draws(1, skill_sd=1.3, shape=1.0, scale=1e9, seed=0)
    out = M.simulate(d, horizon_months=24.0, family="weibull", sensitivity=False).outputs

    def f(z):
        return np.prod([special.expit(special.logit(p) + 1.3 * z) for p, _, _ in STEPS]) * np.exp(-z * z / 2)

    ref = integrate.quad(f, -12, 12)[0] / math.sqrt(2 * math.pi)
    assert out["success.no_ai"][0] == pytest.approx(ref, rel=2e-5)


def test_sensitivity_matches_finite_differences():
    rng = np.random.default_rng(0)
    n = 512
    d = point_draws(n, skill_sd=0.7, shape=1.3, scale=6.0, seed=1)
    for k, lo, hi in [("actors_per_year", 10, 50), ("refusal_bypass", 0.2, 0.6), ("patch_months", 0.5, 4.0)]:
        d[k] = rng.uniform(lo, hi, n)
    d["uplift"] = d["uplift"] + rng.normal(0, 0.3, d["uplift"].shape)
    res = M.simulate(d, horizon_months=24.0, family="weibull", sensitivity=True)
    kinds = M.sensitivity_kinds("weibull")
    assert set(res.sensitivity) == set(kinds)
    h = 2e-4  # small: the open fraction has kinks (a window reaching the horizon) that a wider step straddles
    for k, kind in kinds.items():
        cols = range(d[k].shape[1]) if d[k].ndim == 2 else [None]
        for c in cols:

            def mean_at(delta, k=k, c=c, kind=kind):
                e = dict(d)
                x = np.asarray(d[k], np.float64)
                if c is None:
                    e[k] = np.asarray(shift(x, delta, kind))
                else:
                    e[k] = x.copy()
                    e[k][:, c] = np.asarray(shift(x[:, c], delta, kind))
                return M.simulate(e, horizon_months=24.0, family="weibull", sensitivity=False).mean[
                    res.target
                ]

            fd = (mean_at(h) - mean_at(-h)) / (2 * h)
            ad = res.sensitivity[k] if c is None else res.sensitivity[k][c]
            assert ad == pytest.approx(fd, rel=5e-3, abs=5e-4 * res.mean[res.target]), (k, c)
    # the actors and the damage enter as a product: their elasticities both equal the mean harm
    assert res.sensitivity["actors_per_year"] == pytest.approx(res.mean["harm.safeguarded"], rel=1e-4)
    assert res.sensitivity["damage_per_success"] == pytest.approx(res.mean["harm.safeguarded"], rel=1e-4)


def test_chunking_does_not_change_results():
    d = point_draws(3000, skill_sd=0.5, shape=0.8, scale=3.0, seed=2)
    a = M.simulate(d, horizon_months=12.0, family="weibull", chunk=1024)  # 3 chunks, the last one padded
    b = M.simulate(d, horizon_months=12.0, family="weibull", chunk=2048)
    for k in a.outputs:
        np.testing.assert_allclose(a.outputs[k], b.outputs[k], rtol=1e-6)
    for k in a.sensitivity:
        np.testing.assert_allclose(a.sensitivity[k], b.sensitivity[k], rtol=1e-4)


def test_harm_over_time_averages_to_annual_harm():
    d = point_draws(64, skill_sd=0.5, shape=1.2, scale=4.0, seed=4)
    res = M.simulate(d, horizon_months=24.0, family="weibull", sensitivity=False)
    ot = M.harm_over_time(d, horizon_months=24.0, family="weibull")
    assert ot["harm"].shape == (64, 24)
    np.testing.assert_allclose(ot["harm"].sum(1) / 2.0, res.outputs["harm.safeguarded"], rtol=1e-5)
    np.testing.assert_allclose(
        ot["jailbreak_open"].mean(1), res.outputs["jailbreak_open"], rtol=1e-5, atol=1e-7
    )


def test_lognormal_jailbreak_family_matches_numpy_windows():
    d = point_draws(3, skill_sd=0.5, shape=0.0, scale=0.0, seed=6)
    d["jb_a"], d["jb_b"] = np.full(3, math.log(4.0)), np.full(3, 0.9)  # mu, sigma (months)
    d["jb_z"] = standard_gap_draws("lognormal", d["uniforms"])
    out = M.simulate(d, horizon_months=24.0, family="lognormal", sensitivity=False).outputs
    for i in range(3):
        gaps = stats.lognorm.ppf(d["uniforms"][i], 0.9, scale=4.0)
        found = np.cumsum(gaps) + np.arange(gaps.size) * SAFE["patch_months"]
        w = np.clip(np.minimum(found + SAFE["patch_months"], 24) - np.maximum(found, 0), 0, None).sum() / 24
        assert out["jailbreak_open"][i] == pytest.approx(w, rel=1e-5)


def test_realised_harm_matches_expected_harm_in_mean():
    d = point_draws(100_000, skill_sd=0.5, shape=1.0, scale=10.0, seed=7)
    d["actors_per_year"] = np.random.default_rng(1).lognormal(3.0, 0.5, 100_000)
    res = M.simulate(d, horizon_months=24.0, family="weibull", sensitivity=False, chunk=1024)
    realised = M.realised_annual_harm(res.outputs["success.safeguarded"], d, seed=0, damage_gsd=3.0)
    expected = res.outputs["harm.safeguarded"]
    assert abs(realised.mean() - expected.mean()) < 4.5 * realised.std() / math.sqrt(realised.size)
    assert (realised == 0).mean() > 0.01  # years without a success exist: the spread is real


def test_bad_arguments_are_named():
    d = point_draws(4, skill_sd=0.5, shape=1.0, scale=10.0, seed=0)
    with pytest.raises(ConfigError, match="target"):
        M.simulate(d, horizon_months=24.0, family="weibull", target="harm")
    with pytest.raises(ConfigError, match="family"):
        M.simulate(d, horizon_months=24.0, family="gamma")
    del d["detect"]
    with pytest.raises(ConfigError, match="draws='detect'"):
        M.simulate(d, horizon_months=24.0, family="weibull")


def test_draws_from_a_parameter_file_share_non_safeguard_inputs():
    base = {
        "horizon_months": 12,
        "actors_per_year": {"dist": "lognormal", "median": 10, "p95": 100},
        "damage_per_success": 1.0,
        "damage_gsd": 1.0,
        "skill_sd": 1.0,
        "steps": [{"name": "a", "p_success": {"dist": "beta", "mean": 0.3, "concentration": 10}, "uplift": 1.0,
                   "queries": 3}],
        "safeguards": {**SAFE, "detect": {"dist": "beta", "alpha": 2, "beta": 50}},
        "jailbreak": {"family": "weibull", "shape": 1.0, "scale_months": {"dist": "lognormal", "median": 6, "gsd": 2}},
        "scenarios": {"lax": {"detect": 0.0}},
    }  # fmt: skip
    from jaxsafety.uplift.params import draw_scenarios

    p = parse_params(base)
    a = draw_scenarios(p, 20_000, seed=3)
    b = draw_scenarios(p, 20_000, seed=3, scenario="lax")
    for k in ("actors_per_year", "p_success", "jb_b", "jb_z"):
        np.testing.assert_array_equal(a[k], b[k])
    assert (b["detect"] == 0).all() and a["detect"].mean() == pytest.approx(2 / 52, rel=0.03)
    # lognormal given by median and p95: the draws' quantiles match
    assert np.median(a["actors_per_year"]) == pytest.approx(10, rel=0.05)
    assert np.quantile(a["actors_per_year"], 0.95) == pytest.approx(100, rel=0.08)
    assert np.median(a["jb_b"]) == pytest.approx(6, rel=0.05)
    res = M.simulate(a, horizon_months=12.0, sensitivity=False, chunk=1024)
    res_lax = M.simulate(b, horizon_months=12.0, sensitivity=False, chunk=1024)
    assert res_lax.mean["harm.safeguarded"] > res.mean["harm.safeguarded"]  # less monitoring, more harm
    np.testing.assert_allclose(res.outputs["harm.none"], res_lax.outputs["harm.none"])


@pytest.mark.parametrize("steps", list(itertools.product([0.0, 1.0], repeat=3))[:3])
def test_access_extremes_reduce_to_products(steps):
    """Access 0 everywhere is the unaided product, 1 everywhere the aided one (closed forms)."""
    acc = np.asarray(steps, np.float32)[None, None]
    p = np.asarray([[s[0] for s in STEPS]], np.float32)
    u = np.asarray([[s[1] for s in STEPS]], np.float32)
    out = np.asarray(M.success_probability(p, u, np.zeros(1, np.float32), acc))
    assert out[2, 0] == pytest.approx(chain_success(list(steps)), rel=1e-5)


def test_renewal_tail_uses_the_long_run_open_share():
    """Jailbreaks found and patched every ~0.1 month: 64 simulated cycles cover ~6 of 24 months, the rest uses
    ``P / (E[J] + P)``; against 4000 simulated cycles in numpy."""
    d = point_draws(8, skill_sd=0.5, shape=1.0, scale=0.05, seed=9, patch_months=0.05)
    res = M.simulate(d, horizon_months=24.0, family="weibull", sensitivity=False)
    assert res.truncated == 1.0
    rng = np.random.default_rng(0)
    for i in range(8):
        found, patched = windows_numpy(1.0, 0.05, rng.random(4000), 0.05)
        assert patched[-1] > 24.0
        w = np.clip(np.minimum(patched, 24.0) - np.maximum(found, 0.0), 0, None).sum() / 24.0
        assert res.outputs["jailbreak_open"][i] == pytest.approx(w, abs=0.03)
