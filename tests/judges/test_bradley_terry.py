"""Bradley-Terry fits: choix (Newton-CG MAP and I-LSR MLE), an independent scipy L-BFGS-B fit of the weighted,
soft-label, regularised log-likelihood (and of Davidson's tie model) written in numpy here, the three solvers
against each other, the win matrix against a loop, Elo by hand, the bootstrap's coverage in a simulation, and
input checks."""

from __future__ import annotations

import choix
import jax
import numpy as np
import pytest
from scipy import optimize, special

from jaxsafety.config import ConfigError
from jaxsafety.judges.bradley_terry import (
    DEFAULT_L2,
    bootstrap_bradley_terry,
    fit_bradley_terry,
    to_elo,
    win_matrix,
    win_probability,
)

N_MODELS = 12
N_COMPARISONS = 1500  # one comparison count (and so one compilation per solver) for most tests below


def _comparisons(seed: int, n: int = N_MODELS, m: int = N_COMPARISONS, spread: float = 1.0):
    """Random pairs, true log-strengths ``~ N(0, spread^2)``, Bernoulli outcomes."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=n) * spread
    a = rng.integers(0, n, m)
    b = rng.integers(0, n - 1, m)
    b = b + (b >= a)
    y = (rng.random(m) < special.expit(theta[a] - theta[b])).astype(np.float64)
    return theta, a, b, y


def _np_neg_objective(theta, a, b, y, w, l2):
    """``-(sum_k w_k [y_k log s(d_k) + (1 - y_k) log s(-d_k)] - l2/2 |theta|^2)`` and its gradient (numpy)."""
    d = theta[a] - theta[b]
    ll = np.sum(w * (y * special.log_expit(d) + (1 - y) * special.log_expit(-d)))
    r = w * (y - special.expit(d))  # d ll / d d_k
    grad = np.bincount(a, r, theta.size) - np.bincount(b, r, theta.size) - l2 * theta
    return -(ll - 0.5 * l2 * theta @ theta), -grad


def _scipy_fit(a, b, y, w, l2, n):
    res = optimize.minimize(
        _np_neg_objective,
        np.zeros(n),
        args=(a, b, y, w, l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-16, "maxcor": 30},
    )
    return res.x - res.x.mean()


def _scores(result) -> np.ndarray:
    return np.asarray(result.scores)


# ---------------------------------------------------------------------------------------------------------------
# against choix and scipy


def test_matches_choix_map_newton_cg():
    # choix.opt_pairwise maximises ll - alpha |theta|^2, i.e. ours with l2 = 2 alpha
    _, a, b, y = _comparisons(0)
    l2 = 0.2
    data = [(int(i), int(j)) if won else (int(j), int(i)) for i, j, won in zip(a, b, y)]
    ref = choix.opt_pairwise(N_MODELS, data, alpha=l2 / 2, tol=1e-12)
    for method in ("newton", "newman"):
        ours = fit_bradley_terry(a, b, y, num_models=N_MODELS, l2=l2, method=method)
        assert bool(ours.converged)
        np.testing.assert_allclose(_scores(ours), ref - ref.mean(), atol=1e-6)
        np.testing.assert_allclose(_scores(ours).mean(), 0.0, atol=1e-12)  # the MAP is centred by itself


def test_matches_choix_ilsr_mle():
    _, a, b, y = _comparisons(1)
    data = [(int(i), int(j)) if won else (int(j), int(i)) for i, j, won in zip(a, b, y)]
    ref = choix.ilsr_pairwise(N_MODELS, data, alpha=0.0, tol=1e-12, max_iter=1000)
    for l2 in (0.0, DEFAULT_L2):  # the default prior moves a well-posed fit far less than 1e-4
        ours = fit_bradley_terry(a, b, y, num_models=N_MODELS, l2=l2, method="newton")
        np.testing.assert_allclose(_scores(ours), ref - ref.mean(), atol=1e-6)


def test_weighted_soft_regularised_fit_matches_scipy():
    theta, a, b, _ = _comparisons(2)
    rng = np.random.default_rng(3)
    y = np.clip(special.expit(theta[a] - theta[b]) + rng.normal(0, 0.1, a.size), 0, 1)  # soft judge labels
    y[:100] = 0.5  # ties as half wins
    w = rng.exponential(1.0, a.size)
    w[:50] = 0.0
    for l2 in (0.0, 0.5):
        ref = _scipy_fit(a, b, y, w, l2, N_MODELS)
        ll_ref = -_np_neg_objective(ref, a, b, y, w, 0.0)[0]
        for method in ("newton", "newman", "mm"):
            ours = fit_bradley_terry(a, b, y, num_models=N_MODELS, weights=w, l2=l2, method=method, tol=1e-11)
            assert bool(ours.converged), method
            np.testing.assert_allclose(_scores(ours), ref, atol=2e-6, err_msg=method)
            np.testing.assert_allclose(float(ours.log_likelihood), ll_ref, rtol=1e-9, err_msg=method)
            assert np.isnan(float(ours.tie_parameter))


def test_solvers_agree_on_spread_out_strengths():
    # spread-out strengths: the plain fixed-point maps converge slowly here (Anderson acceleration's case)
    _, a, b, y = _comparisons(4, n=40, m=4000, spread=2.5)
    results = {
        m: fit_bradley_terry(a, b, y, num_models=40, method=m, tol=1e-11) for m in ("newton", "newman", "mm")
    }
    for method, r in results.items():
        assert bool(r.converged), method
        np.testing.assert_allclose(_scores(r), _scores(results["newton"]), atol=1e-8, err_msg=method)
    assert int(results["newton"].num_iterations) < 20
    assert int(results["newman"].num_iterations) < 60
    auto = fit_bradley_terry(a, b, y, num_models=40, tol=1e-11)  # 40 <= AUTO_NEWTON_MAX_MODELS: Newton
    assert int(auto.num_iterations) == int(results["newton"].num_iterations)
    np.testing.assert_allclose(_scores(auto), _scores(results["newton"]), atol=1e-8)


def test_recovers_true_strengths():
    theta, a, b, y = _comparisons(5, n=8, m=20_000)
    ours = fit_bradley_terry(a, b, y, num_models=8)
    np.testing.assert_allclose(_scores(ours), theta - theta.mean(), atol=0.1)


def test_win_matrix_matches_loop():
    _, a, b, y = _comparisons(6, n=5, m=300)
    y[::7] = 0.3
    w = np.random.default_rng(6).uniform(0, 2, a.size)
    ref = np.zeros((5, 5))
    for i, j, yk, wk in zip(a, b, y, w):
        ref[i, j] += wk * yk
        ref[j, i] += wk * (1 - yk)
    np.testing.assert_allclose(np.asarray(win_matrix(a, b, y, num_models=5, weights=w)), ref, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# degenerate data and the prior


def test_never_winning_never_losing_and_unseen_models_stay_finite():
    _, a, b, y = _comparisons(7)
    y = np.where(a == 0, 0.0, np.where(b == 0, 1.0, y))  # model 0 loses every comparison
    y = np.where(a == 1, 1.0, np.where(b == 1, 0.0, y))  # model 1 wins every comparison (but against model 0)
    keep = (a != 11) & (b != 11)  # model 11 never plays
    a, b, y = a[keep], b[keep], y[keep]
    with pytest.raises(ConfigError, match=r"l2=0\.0 is invalid.*model 0 never wins"):
        fit_bradley_terry(a, b, y, num_models=N_MODELS, l2=0.0)
    # Hunter's MM crawls here (it cannot reach tol = 1e-9): the reason auto never picks it. Whether its
    # Anderson-accelerated iteration reaches even tol = 1e-6 depends on rounding: on this AMD EPYC it took 1358 steps
    # (default ISA), 3176 (--xla_cpu_max_isa=AVX), and with SSE4_2 it wandered for all 20000 without getting there,
    # while the best iterate it returns was within 4e-6 of Newton's optimum. So MM is held to the optimum (below),
    # not to its converged flag.
    results = {
        m: fit_bradley_terry(a, b, y, num_models=N_MODELS, method=m, tol=1e-9) for m in ("newton", "newman")
    }
    results["mm"] = fit_bradley_terry(a, b, y, num_models=N_MODELS, method="mm", max_iter=20_000, tol=1e-6)
    assert int(results["mm"].num_iterations) > 500
    for method, r in results.items():
        s = _scores(r)
        assert (bool(r.converged) or method == "mm") and np.all(np.isfinite(s)), method
        assert s[0] < s[2:11].min() - 10 and s[1] > s[2:11].max() + 10, method  # far out, but finite
        np.testing.assert_allclose(s[11], 0.0, atol=1e-5, err_msg=method)  # no comparisons: the prior mean
        np.testing.assert_allclose(s, _scores(results["newton"]), atol=1e-5, err_msg=method)
    assert int(results["newman"].num_iterations) < 20
    # stationarity of the MAP for model 0 (no wins): sum_j N_0j sigmoid(s_0 - s_j) = -l2 s_0
    s = _scores(results["newton"])
    n_0 = np.bincount(np.where(a == 0, b, a)[(a == 0) | (b == 0)], minlength=N_MODELS)
    np.testing.assert_allclose(n_0 @ special.expit(s[0] - s), -DEFAULT_L2 * s[0], rtol=1e-6)


def test_disconnected_groups_are_pulled_together_by_the_prior():
    _, a, b, y = _comparisons(8)
    group = np.arange(N_MODELS) < 6
    keep = group[a] == group[b]
    r = fit_bradley_terry(a[keep], b[keep], y[keep], num_models=N_MODELS, method="newton")
    s = _scores(r)
    assert bool(r.converged) and np.all(np.isfinite(s))
    np.testing.assert_allclose([s[group].mean(), s[~group].mean()], 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# ties


def test_half_ties_equal_two_half_weighted_wins():
    _, a, b, y = _comparisons(9)
    y[::5] = 0.5
    tie = y == 0.5
    split_a = np.concatenate([a[~tie], a[tie], a[tie]])
    split_b = np.concatenate([b[~tie], b[tie], b[tie]])
    split_y = np.concatenate([y[~tie], np.ones(tie.sum()), np.zeros(tie.sum())])
    split_w = np.concatenate([np.ones((~tie).sum()), np.full(2 * tie.sum(), 0.5)])
    ours = fit_bradley_terry(a, b, y, num_models=N_MODELS, method="newton")
    split = fit_bradley_terry(
        split_a, split_b, split_y, num_models=N_MODELS, weights=split_w, method="newton"
    )
    np.testing.assert_allclose(_scores(ours), _scores(split), atol=1e-9)


def _np_davidson_neg_ll(x, a, b, y, w, l2):
    theta, eta = x[:-1], x[-1]
    ta, tb = theta[a], theta[b]
    log_d = special.logsumexp(np.stack([ta, tb, eta + 0.5 * (ta + tb)]), axis=0)
    log_p = np.where(y == 1, ta, np.where(y == 0, tb, eta + 0.5 * (ta + tb))) - log_d
    return -(np.sum(w * log_p) - 0.5 * l2 * theta @ theta)


def test_davidson_matches_scipy_and_recovers_tie_parameter():
    rng = np.random.default_rng(10)
    n, m, nu = 8, 6000, 0.8
    theta = rng.normal(size=n)
    a = rng.integers(0, n, m)
    b = rng.integers(0, n - 1, m)
    b = b + (b >= a)
    pa, pb = np.exp(theta[a]), np.exp(theta[b])
    d = pa + pb + nu * np.sqrt(pa * pb)
    u = rng.random(m) * d
    y = np.where(u < pa, 1.0, np.where(u < pa + pb, 0.0, 0.5))
    w = rng.uniform(0.5, 1.5, m)
    ours = fit_bradley_terry(a, b, y, num_models=n, weights=w, ties="davidson", l2=0.1, tol=1e-11)
    assert bool(ours.converged) and int(ours.num_iterations) < 15  # Newton: a wrong Hessian would crawl
    ref = optimize.minimize(
        _np_davidson_neg_ll,
        np.zeros(n + 1),
        args=(a, b, y, w, 0.1),
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 1e-16, "maxcor": 30},
    ).x
    np.testing.assert_allclose(_scores(ours), ref[:-1] - ref[:-1].mean(), atol=1e-5)
    np.testing.assert_allclose(np.log(float(ours.tie_parameter)), ref[-1], atol=1e-5)
    np.testing.assert_allclose(
        float(ours.log_likelihood), -_np_davidson_neg_ll(ref, a, b, y, w, 0.0), rtol=1e-8
    )
    np.testing.assert_allclose(float(ours.tie_parameter), nu, rtol=0.15)
    np.testing.assert_allclose(_scores(ours), theta - theta.mean(), atol=0.15)


def test_davidson_without_ties_is_plain_bradley_terry():
    _, a, b, y = _comparisons(11)
    dav = fit_bradley_terry(a, b, y, num_models=N_MODELS, ties="davidson")
    plain = fit_bradley_terry(a, b, y, num_models=N_MODELS, method="newton")
    assert bool(dav.converged) and float(dav.tie_parameter) == 0.0
    np.testing.assert_allclose(_scores(dav), _scores(plain), atol=1e-9)
    np.testing.assert_allclose(float(dav.log_likelihood), float(plain.log_likelihood), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Elo


def test_elo_transform_by_hand():
    scores = np.array([0.0, np.log(3.0), -np.log(2.0)])
    # R = 400 / ln 10 * theta, mean at 1000
    raw = 400.0 / np.log(10.0) * scores
    np.testing.assert_allclose(np.asarray(to_elo(scores)), raw - raw.mean() + 1000.0, rtol=1e-6)
    anchored = np.asarray(to_elo(scores, anchor=0, anchor_rating=1200.0))
    np.testing.assert_allclose(anchored[0], 1200.0, rtol=1e-6)
    # model 1 is 3x as strong as model 0: 400 log10(3) Elo above it, and wins 3/4 of the time
    np.testing.assert_allclose(anchored[1] - anchored[0], 400.0 * np.log10(3.0), rtol=1e-6)
    p = float(win_probability(scores, 1, 0))
    np.testing.assert_allclose(p, 0.75, rtol=1e-6)
    np.testing.assert_allclose(p, 1.0 / (1.0 + 10.0 ** ((anchored[0] - anchored[1]) / 400.0)), rtol=1e-6)
    # base e, scale 1: ratings are the scores themselves; batched over a leading axis
    batch = np.stack([scores, 2 * scores])
    np.testing.assert_allclose(
        np.asarray(to_elo(batch, scale=1.0, base=np.e, anchor_rating=0.0)),
        batch - batch.mean(-1, keepdims=True),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(win_probability(scores, np.array([1, 2]), 0)), [0.75, 1 / 3], rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------------------------
# bootstrap


def _fisher_sd(scores, wins):
    """Asymptotic standard deviations of the centred scores: the diagonal of the pseudo-inverse of the Fisher
    information (a weighted graph Laplacian; its null space is the shift)."""
    comps = wins + wins.T
    p = special.expit(scores[:, None] - scores[None, :])
    c = comps * p * p.T
    return np.sqrt(np.diag(np.linalg.pinv(np.diag(c.sum(1)) - c)))


def test_bootstrap_covers_truth_and_matches_fisher_information():
    n, m, datasets = 6, 600, 12
    hits, sd_ratio = [], []
    key = jax.random.key(0)
    for seed in range(datasets):
        theta, a, b, y = _comparisons(100 + seed, n=n, m=m)
        key, sub = jax.random.split(key)
        # unit weights given explicitly: the same compiled program as the weighted test below
        boot = bootstrap_bradley_terry(sub, a, b, y, num_models=n, num_resamples=200, weights=np.ones(m))
        assert boot.scores.shape == (200, n) and bool(np.all(boot.converged))
        estimate = _scores(boot.estimate)
        np.testing.assert_allclose(estimate, _scores(fit_bradley_terry(a, b, y, num_models=n)), atol=1e-9)
        truth = theta - theta.mean()
        hits.append((np.asarray(boot.lower) <= truth) & (truth <= np.asarray(boot.upper)))
        sd = np.asarray(boot.scores).std(0)
        sd_ratio.append(sd / _fisher_sd(estimate, np.asarray(win_matrix(a, b, y, num_models=n))))
    # 72 nominal-95% intervals (about 68 expected to cover; 94% in a 240-interval run of this simulation)
    assert np.sum(hits) >= 60
    # the bootstrap's spread is the asymptotic one (ratio 1.03 on average in that run)
    assert 0.85 < np.mean(sd_ratio) < 1.2
    again = bootstrap_bradley_terry(sub, a, b, y, num_models=n, num_resamples=200, weights=np.ones(m))
    np.testing.assert_array_equal(np.asarray(again.scores), np.asarray(boot.scores))


def test_bootstrap_weights_multiply_multiplicities():
    # a resample is a weighted fit with weights * multiplicities: reproduce resample 3's index draws and fit it
    # directly (zero weights included: those comparisons count in no resample)
    n, m, resamples = 6, 600, 200  # the shapes of the coverage test: one compilation for both
    _, a, b, y = _comparisons(12, n=n, m=m)
    w = np.where(np.arange(m) % 3 == 0, 0.0, np.random.default_rng(0).uniform(0.5, 2.0, m))
    boot = bootstrap_bradley_terry(
        jax.random.key(1), a, b, y, num_models=n, num_resamples=resamples, weights=w
    )
    with jax.enable_x64():  # the bootstrap draws its indices in float64 mode (int64 indices)
        idx = jax.random.randint(jax.random.split(jax.random.key(1), resamples)[3], (m,), 0, m)
    mult = np.bincount(np.asarray(idx), minlength=m).astype(float)
    direct = fit_bradley_terry(a, b, y, num_models=n, weights=w * mult)
    np.testing.assert_allclose(np.asarray(boot.scores)[3], _scores(direct), atol=1e-9)
    unweighted = fit_bradley_terry(a, b, y, num_models=n)
    assert np.max(np.abs(np.asarray(boot.scores)[3] - _scores(unweighted))) > 1e-3  # the check has teeth


# ---------------------------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model_a": [0, 5, 1]},
            r"model_a\[1\]=5 is invalid: accepted values are integers in \[0, num_models=4\)",
        ),
        ({"model_b": [1, -1, 2]}, r"model_b\[1\]=-1 is invalid"),
        ({"model_b": [1, 2, 2]}, r"model_b\[2\]=2 is invalid: .*no self-comparisons"),
        ({"y": [1.0, np.nan, 0.0]}, r"y\[1\]=nan is invalid: accepted values are probabilities in \[0, 1\]"),
        ({"y": [1.0, 1.5, 0.0]}, r"y\[1\]=1.5 is invalid"),
        (
            {"weights": [1.0, -2.0, 1.0]},
            r"weights\[1\]=-2 is invalid: accepted values are finite numbers >= 0",
        ),
        ({"weights": [1.0, np.inf, 1.0]}, r"weights\[1\]=inf is invalid"),
        ({"y": [1.0, 0.0]}, r"y.shape=\(2,\) is invalid: accepted values are a 1-D array of length 3"),
        ({"model_a": [0.0, 1.0, 2.0]}, r"model_a.dtype='float64' is invalid"),
        ({"method": "lbfgs"}, r"method='lbfgs' is invalid: accepted values are one of 'auto', 'newton'"),
        ({"ties": "rao"}, r"ties='rao' is invalid: accepted values are one of 'half', 'davidson'"),
        ({"ties": "davidson", "method": "mm"}, r"method='mm' is invalid: .*'newton' with ties='davidson'"),
        ({"ties": "davidson", "y": [1.0, 0.3, 0.0]}, r"y\[1\]=0.3 is invalid: accepted values are 0, 0.5"),
        ({"l2": -1.0}, r"l2=-1.0 is invalid"),
        ({"num_models": 0}, r"num_models=0 is invalid"),
        ({"tol": 0.0}, r"tol=0.0 is invalid"),
        ({"max_iter": 0}, r"max_iter=0 is invalid"),
    ],
)
def test_bad_input_names_the_field(change, message):
    kwargs = {
        "model_a": [0, 1, 2],
        "model_b": [1, 2, 3],
        "y": [1.0, 0.5, 0.0],
        "num_models": 4,
        "weights": None,
    } | change
    args = [np.asarray(kwargs.pop(k)) for k in ("model_a", "model_b", "y")]
    with pytest.raises(ConfigError, match=message):
        fit_bradley_terry(*args, **kwargs)


def test_bad_options_of_bootstrap_and_elo():
    a, b, y = np.array([0, 1]), np.array([1, 2]), np.array([1.0, 0.0])
    with pytest.raises(ConfigError, match="num_resamples=1 is invalid"):
        bootstrap_bradley_terry(jax.random.key(0), a, b, y, num_models=3, num_resamples=1)
    with pytest.raises(ConfigError, match=r"confidence=1\.0 is invalid"):
        bootstrap_bradley_terry(jax.random.key(0), a, b, y, num_models=3, confidence=1.0)
    with pytest.raises(ConfigError, match="anchor=3 is invalid"):
        to_elo(np.zeros(3), anchor=3)
    with pytest.raises(ConfigError, match=r"base=1\.0 is invalid"):
        to_elo(np.zeros(3), base=1.0)
