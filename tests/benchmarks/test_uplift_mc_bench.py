"""Uplift Monte Carlo benchmark: a tiny run yields a complete payload in which the model and its independent
float64 numpy peer agree per scenario and on every sensitivity (autodiff vs central differences), and the peer's
pieces match brute-force computations of the model's definition (explicit loss paths integrated by QUADPACK, the
geometric series of query tries, a time grid over the jailbreak windows with scipy's quantile functions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from benchmarks import uplift_mc
from benchmarks import uplift_numpy as un
from benchmarks.harness import write_result
from jaxsafety.config import ConfigError
from jaxsafety.uplift.params import standard_gap_draws

# the example file with its jailbreak section given directly (no bootstrap survival fit to compile)
WEIBULL = {"family": "weibull", "shape": 0.7, "scale_months": {"dist": "lognormal", "median": 6, "p95": 30}}
TINY = uplift_mc.Budget(num_scenarios=512, peer_scenarios=512, fd_scenarios=512, repeats=2, fd_repeats=1,
                        jailbreak=WEIBULL)  # fmt: skip


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_tiny_run_payload_is_complete_and_both_sides_agree(tmp_path):
    payload = uplift_mc.run(budget=TINY)
    for mode in ("forward", "sensitivity"):
        assert payload["ours_all_cores"][mode]["timing"]["repeats"] == TINY.repeats
    assert payload["one_core"]["sensitivity"]["numpy_fd"]["timing"]["repeats"] == TINY.fd_repeats
    assert all(_positive(v) for v in payload["scenarios_per_s"].values())
    assert all(_positive(v) for v in payload["ratios"].values())
    cfg = payload["config"]
    assert cfg["sensitivity_inputs"] == 14 and cfg["fd_evaluations"] == 2 * 23 + 1  # 4 steps: 3 + 12 + 6 + 2
    ag = payload["agreement"]
    assert set(ag["outputs"]) == set(un.OUTPUTS)
    # float32 model vs float64 numpy on the same draws: rounding only (a wrong formula moves these by >> 1e-3)
    assert ag["harm_max_rel_diff"] < 1e-4, ag["outputs"]
    for k, v in ag[
        "outputs"
    ].items():  # w is a float32 sum of window lengths: absolute, not relative, precision
        assert v["max_abs_diff"] < 1e-5 if k == "jailbreak_open" else v["max_rel_diff"] < 1e-4, (k, v)
    # autodiff (float32) vs central differences (float64, h = 1e-6)
    assert ag["sensitivity_max_rel_diff"] < 1e-4, ag["sensitivity"]
    assert abs(ag["mean_target_ours"] / ag["mean_target_numpy"] - 1) < 1e-5
    # closed form: harm is proportional to actors_per_year and damage_per_success, so their elasticities are the
    # mean target itself
    for k in ("actors_per_year", "damage_per_success"):
        for side in ("ours", "numpy_fd"):
            (v,) = ag["sensitivity"][k][side]
            assert v == pytest.approx(ag["mean_target_numpy"], rel=1e-5)
    assert payload["targets"]["full_sensitivity_1e6_under_5s"] is None
    assert isinstance(payload["targets"]["ge_10x_numpy_sensitivity_one_core"], bool)
    assert cfg["xla_no_ynn_in_effect"] is True
    path = write_result(uplift_mc.NAME, {"quick": True, **payload}, tmp_path)
    assert json.loads(path.read_text())["agreement"]["scenarios_outputs"] == TINY.peer_scenarios


def test_agreement_measures_see_a_one_percent_change():
    # the payload's agreement numbers (asserted above) come from these: a 1% change must show as 1e-2
    rng = np.random.default_rng(0)
    peer = {k: rng.uniform(1.0, 2.0, 64) for k in un.OUTPUTS}
    ours = {k: v.copy() for k, v in peer.items()}
    ours["harm.safeguarded"][3] *= 1.01
    ours["risk_reduction"][5] += 0.01 * peer["harm.none"][5]
    out = uplift_mc.output_agreement(ours, peer)
    assert out["harm.safeguarded"]["max_rel_diff"] == pytest.approx(0.01)
    assert out["risk_reduction"]["max_rel_diff"] == pytest.approx(0.01)
    assert out["harm.none"]["max_rel_diff"] == 0.0
    sens = uplift_mc.sensitivity_agreement(
        {"a": np.array([1.01]), "b": 2.0}, {"a": np.array([1.0]), "b": 2.0}
    )
    assert sens["a"]["max_rel_diff"] == pytest.approx(0.01) and sens["b"]["max_rel_diff"] == 0.0


def _success_brute_force(p, u, sd, g) -> float:
    """P(all steps succeed) by enumerating which steps had the model (a Markov chain: kept for step k with
    probability g_k while kept, never regained), each path's success probability integrated over skill by QUADPACK."""
    k = len(p)
    total = 0.0
    for lost in range(k + 1):  # the model helps steps < lost
        path = np.prod(g[:lost]) * (1 - g[lost] if lost < k else 1.0)

        def f(z, lost=lost):
            logit = special.logit(p) + sd * z
            probs = special.expit(logit + np.where(np.arange(k) < lost, u, 0.0))
            return np.prod(probs) * stats.norm.pdf(z)

        total += path * integrate.quad(f, -12, 12, epsabs=1e-13, epsrel=1e-11)[0]
    return total


def test_peer_attack_success_matches_brute_force():
    rng = np.random.default_rng(0)
    n, k = 3, 3
    p, u = rng.uniform(0.05, 0.6, (n, k)), rng.normal(1.0, 0.5, (n, k))
    sd, access = rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 1.0, (2, n, k))
    access[0, 0] = [1.0, 0.0, 1.0]  # kept, lost, (never regained)
    access[1, 0], access[1, 1] = 0.0, 1.0  # no model; the model throughout
    got = un.attack_success(p, u, sd, access)
    assert got.shape == (2, n)
    want = [[_success_brute_force(p[i], u[i], sd[i], access[v, i]) for i in range(n)] for v in range(2)]
    # 16-node Gauss-Hermite for skill_sd <= 1 (the example's 1.0): ~2e-7 relative (it degrades with the spread:
    # ~1e-5 at skill_sd 1.5, ~1e-4 at 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_peer_access_probability_is_the_geometric_series_of_tries():
    b, g, d, r = np.array([0.05, 0.5, 1.0]), np.array([0.2, 0.0, 0.3]), np.array([0.03, 0.1, 0.01]), 0.5
    pi = un.access_probability(b, g, d, np.full(3, r))
    # one try: answered (1-d) b; stays for another try: banned and back (d r) or refused and keeps trying
    stay = d * r + (1 - d) * (1 - b) * (1 - g)
    want = sum((1 - d) * b * stay**t for t in range(5000))
    np.testing.assert_allclose(pi, want, rtol=1e-10)


@pytest.mark.parametrize("family", ["weibull", "lognormal"])
def test_peer_open_fraction_matches_scipy_quantiles_and_a_time_grid(family):
    rng = np.random.default_rng(1)
    n, c, horizon = 4, 3, 24.0  # few windows: most scenarios end in the long-run tail
    a = rng.uniform(0.6, 1.5, n) if family == "weibull" else rng.normal(1.5, 0.3, n)
    b = rng.uniform(2.0, 8.0, n) if family == "weibull" else rng.uniform(0.5, 1.0, n)
    uu, patch = rng.random((n, c)), rng.uniform(0.2, 3.0, n)
    w, truncated = un.open_fraction(family, a, b, standard_gap_draws(family, uu), patch, horizon)
    t = (np.arange(240_000) + 0.5) * horizon / 240_000  # midpoints of a 1e-4-month grid
    for i in range(n):
        if family == "weibull":
            gaps = stats.weibull_min.ppf(uu[i], a[i], scale=b[i])
        else:
            gaps = stats.lognorm.ppf(uu[i], b[i], scale=np.exp(a[i]))
        # window j opens J_1 + ... + J_j after the previous patch: found_j = sum gaps + (j - 1) patch
        found = np.array([gaps[: j + 1].sum() + j * patch[i] for j in range(c)])
        open_ = np.zeros_like(t)
        for f in found:
            open_[(t >= f) & (t < f + patch[i])] = 1.0
        # after the last drawn window: the long-run open share patch / (E[J] + patch) (renewal-reward)
        dist = (
            stats.weibull_min(a[i], scale=b[i])
            if family == "weibull"
            else stats.lognorm(b[i], scale=np.exp(a[i]))
        )
        open_[t >= found[-1] + patch[i]] = patch[i] / (dist.mean() + patch[i])
        assert w[i] == pytest.approx(open_.mean(), abs=2e-4)
        assert truncated[i] == (found[-1] + patch[i] < horizon)


def test_peer_shift_and_kinds():
    x = np.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(
        un.shift_input(x, 0.2, "probability"), [0.0, special.expit(special.logit(0.3) + 0.2), 1.0]
    )
    assert un.shift_input(np.array([2.0]), 0.1, "positive")[0] == pytest.approx(2 * math.exp(0.1))
    assert un.input_kinds("lognormal")["jb_a"] == "real" and un.input_kinds("weibull")["jb_a"] == "positive"
    assert "damage_gsd" not in un.input_kinds("weibull")


def test_bad_input_raises_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="peer_scenarios"):
        uplift_mc.Budget(num_scenarios=10, peer_scenarios=20, fd_scenarios=5, repeats=1, fd_repeats=1)
    with pytest.raises(ConfigError, match="repeats"):
        uplift_mc.Budget(num_scenarios=10, peer_scenarios=5, fd_scenarios=5, repeats=0, fd_repeats=1)
    draws = {k: np.ones(4) for k in un.input_kinds("weibull")}
    with pytest.raises(ConfigError, match="family"):
        un.simulate_numpy(draws, horizon_months=24.0, family="gamma")
    with pytest.raises(ConfigError, match="target"):
        un.simulate_numpy(draws, horizon_months=24.0, family="weibull", target="harm")
    with pytest.raises(ConfigError, match="step"):
        un.simulate_numpy(draws, horizon_months=24.0, family="weibull", step=0.0)
    with pytest.raises(ConfigError, match=r"draws.*jb_z"):
        un.simulate_numpy(draws, horizon_months=24.0, family="weibull")
