"""`python -m jaxsafety.scaling`: CSV validation (errors name file, row and column, before anything is written) and
the fit-passk command end to end, against direct library calls and an independent scipy fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from jaxsafety.config import ConfigError
from jaxsafety.scaling.cli import main
from jaxsafety.scaling.io import read_passk_csv, read_runs_csv


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, field, accepted",
    [
        ("problem_id,attempts,successes\na,10,3\nb,-1,0\nc,5,1\n", "row 3:attempts", "integers >= 1"),
        ("problem_id,attempts,successes\na,10,3\nb,10,12\nc,5,1\n", "row 3:successes", "[0, attempts=10]"),
        ("problem_id,attempts,successes\na,10,-2\nb,10,1\nc,5,1\n", "row 2:successes", "[0, attempts=10]"),
        ("problem_id,attempts,successes\na,10,2.5\nb,10,1\nc,5,1\n", "row 2:successes", "integers"),
        ("problem_id,attempts,successes\na,ten,2\nb,10,1\nc,5,1\n", "row 2:attempts", "integers"),
        ("problem_id,attempts,successes\na,nan,2\nb,10,1\nc,5,1\n", "row 2:attempts", "integers"),
        ("problem_id,attempts,successes\na,10,2\n,10,1\nc,5,1\n", "row 3:problem_id", "non-empty"),
        ("problem_id,attempts,successes\na,10,2\nb,10\nc,5,1\n", "row 3", "3 comma-separated values"),
        ("problem_id,success\na,1\na,maybe\nb,0\nc,1\n", "row 3:success", "0/1, true/false"),
        ("id,n,k\na,10,2\n", "columns", "problem_id, attempts, successes"),
        ("problem_id,attempts,successes\na,10,2\nb,10,1\n", "problem_id", ">= 3 distinct problems"),
        ("problem_id,attempts,successes\n", "input", "at least one data row"),
        ("", "input", "header row"),
    ],
)
def test_malformed_passk_csv_raises_naming_row_and_column(tmp_path, text, field, accepted):
    path = _write(tmp_path / "samples.csv", text)
    with pytest.raises(ConfigError) as err:
        read_passk_csv(path)
    assert field in err.value.field and accepted in err.value.accepted, str(err.value)


@pytest.mark.parametrize(
    "text, field",
    [
        ("params,tokens,loss\n" + "1e6,1e8,3.0\n" * 5 + "1e7,1e9,-1\n", "row 7:loss"),
        ("params,tokens,loss\n" + "1e6,1e8,3.0\n" * 5 + "1e7,nan,2\n", "row 7:tokens"),
        ("params,tokens,loss\n" + "1e6,1e8,3.0\n" * 5 + "0,1e9,2\n", "row 7:params"),
        ("params,tokens,loss\n" + "1e6,1e8,3.0\n" * 3, "rows"),
        ("N,D,L\n1,2,3\n", "columns"),
    ],
)
def test_malformed_runs_csv_raises(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        read_runs_csv(_write(tmp_path / "runs.csv", text))
    assert field in err.value.field, str(err.value)


def test_per_attempt_and_count_layouts_agree_and_repeats_are_summed(tmp_path):
    rng = np.random.default_rng(0)
    rows, counts = [], {}
    for pid in ("p0", "p1", "p2", "p3"):
        outcomes = rng.random(7) < 0.4
        rows += [f"{pid},{'true' if o else 'false'}" for o in outcomes]
        counts[pid] = (7, int(outcomes.sum()))
    per_attempt = read_passk_csv(_write(tmp_path / "a.csv", "problem_id,success\n" + "\n".join(rows) + "\n"))
    # the same counts split over two rows per problem (two sampling runs)
    split = "".join(f"{p},3,{min(c, 3)}\n{p},4,{c - min(c, 3)}\n" for p, (_, c) in counts.items())
    summed = read_passk_csv(_write(tmp_path / "b.csv", "problem_id,attempts,successes\n" + split))
    for data in (per_attempt, summed):
        assert data.problem_ids == list(counts)
        np.testing.assert_array_equal(data.attempts, [7] * 4)
        np.testing.assert_array_equal(data.successes, [c for _, c in counts.values()])


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = _write(tmp_path / "s.csv", "problem_id,attempts,successes\na,10,3\nb,10,11\nc,10,0\n")
    out = tmp_path / "fit.json"
    assert main(["fit-passk", "--input", str(bad), "--output", str(out)]) == 2
    assert "s.csv:row 3:successes='11' is invalid" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".png").exists()
    good = _write(tmp_path / "g.csv", "problem_id,attempts,successes\na,10,3\nb,10,1\nc,10,0\n")
    for extra, msg in (
        (["--estimators", "beta,least_squares"], "estimators='beta'"),
        (["--bootstrap", "1"], "bootstrap=1"),
        (["--bootstrap", "-3"], "bootstrap=-3"),
    ):
        assert main(["fit-passk", "--input", str(good), "--output", str(out), *extra]) == 2
        assert msg in capsys.readouterr().err
    assert main(["fit-passk", "--input", str(good), "--output", str(tmp_path / "fit.txt")]) == 2
    assert main(["fit-passk", "--input", str(good), "--output", str(out), "--plot", "fit.jpg"]) == 2
    assert main(["fit-passk", "--input", str(tmp_path / "missing.csv"), "--output", str(out)]) == 2
    assert main(["fit-passk", "--output", str(out)]) == 2
    curve = _write(tmp_path / "c.csv", "compute,loss\n1e18,3\n1e19,2.5\n1e20,2.2\n1e21,2.1\n")
    assert main(["fit-power-law", "--input", str(curve), "--output", str(out)]) == 2  # the fit needs 5 points
    err = capsys.readouterr().err.splitlines()
    assert err[-5].startswith("error: output='") and "a path ending in .json" in err[-5]
    assert err[-4].startswith("error: plot='fit.jpg' is invalid: accepted values are a path ending in .png")
    missing = tmp_path / "missing.csv"
    assert (
        err[-3]
        == f"error: input='{missing}' is invalid: accepted values are the path of an existing CSV file"
    )
    assert err[-2] == "error: the following arguments are required: --input"
    assert (
        err[-1]
        == "error: c.csv:rows=4 is invalid: accepted values are >= 5 points (the fit has 3 parameters)"
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "g.csv", "s.csv"]
    # --print-config: the full config, nothing computed or written
    assert main(["fit-passk", "--input", str(good), "--output", str(out), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "input": str(good), "output": str(out), "plot": "auto", "bootstrap": 200, "seed": 0,
        "estimators": "least_squares,beta_binomial,scaled_beta_binomial",
    }  # fmt: skip
    assert not out.exists()


def test_fit_passk_end_to_end_matches_scipy_and_the_library(tmp_path, capsys):
    rng = np.random.default_rng(3)
    num, n = 300, 50
    p = rng.beta(0.4, 3.0, num)
    c = rng.binomial(n, p)
    path = _write(
        tmp_path / "samples.csv",
        "problem_id,attempts,successes\n" + "".join(f"q{i},{n},{ci}\n" for i, ci in enumerate(c)),
    )
    out = tmp_path / "fit.json"
    argv = [
        "fit-passk",
        "--input",
        str(path),
        "--output",
        str(out),
        "--estimators",
        "least_squares,beta_binomial",
    ]
    assert main([*argv, "--bootstrap", "64"]) == 0
    printed = capsys.readouterr().out
    assert "beta_binomial" in printed and "least_squares" in printed and "95% CI" in printed
    res = json.loads(out.read_text())
    assert res["num_problems"] == num and res["attempts"] == {"min": n, "max": n, "total": n * num}
    assert Path(res["plot"]).stat().st_size > 10_000

    # beta-binomial MLE by scipy (float64, Nelder-Mead on log parameters): an independent fit
    def nll(theta: np.ndarray) -> float:
        return -stats.betabinom.logpmf(c, n, *np.exp(theta)).sum()

    ref = np.exp(optimize.minimize(nll, np.log([0.5, 2.0]), method="Nelder-Mead", options={"xatol": 1e-8}).x)
    est = res["estimators"]["beta_binomial"]
    assert est["alpha"] == pytest.approx(ref[0], rel=2e-3) and est["beta"] == pytest.approx(ref[1], rel=2e-3)
    assert est["exponent"] == est["alpha"] and est["converged"]
    assert est["log_likelihood"] == pytest.approx(-nll(np.log(ref)), abs=1e-2)
    lo, hi = est["exponent_ci95"]
    assert lo < est["alpha"] < hi and lo > 0 and est["bootstrap_converged_fraction"] == 1.0
    assert set(est["ci95"]) == {"alpha", "beta"}

    # least squares: the log-log regression of the aggregate -log pass@k, by numpy from the exact estimator
    lsq = res["estimators"]["least_squares"]
    ks = np.asarray(lsq["ks"], dtype=np.float64)
    from scipy.special import comb

    y = -np.log(np.mean(1.0 - comb(n - c[None, :], ks[:, None]) / comb(n, ks[:, None]), axis=1))
    slope, intercept = np.polyfit(np.log(ks), np.log(y), 1)
    assert lsq["b"] == pytest.approx(-slope, rel=1e-4) and lsq["a"] == pytest.approx(
        np.exp(intercept), rel=1e-3
    )
    assert lsq["ci95"]["b"][0] < lsq["b"] < lsq["ci95"]["b"][1]


def test_fit_chinchilla_and_power_law_commands_recover_planted_laws(tmp_path, capsys):
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 80))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 80))
    truth = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    loss = truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]
    runs = _write(
        tmp_path / "runs.csv",
        "params,tokens,loss\n" + "".join(f"{a:.17g},{b:.17g},{c:.17g}\n" for a, b, c in zip(N, D, loss)),
    )
    out = tmp_path / "chin.json"
    assert main(["fit-chinchilla", "--input", str(runs), "--output", str(out), "--bootstrap", "8"]) == 0
    assert "compute-optimal" in capsys.readouterr().out
    res = json.loads(out.read_text())
    for name, value in truth.items():
        assert res[name] == pytest.approx(value, rel=2e-3), name
        lo, hi = res["ci95"][name]
        assert lo <= res[name] * (1 + 1e-6) and hi >= res[name] * (1 - 1e-6), name
    a = truth["beta"] / (truth["alpha"] + truth["beta"])
    assert res["compute_optimal"]["a"] == pytest.approx(a, rel=1e-2)
    # every frontier point satisfies C = 6 N D
    for row in res["compute_optimal"]["frontier"]:
        assert 6 * row["N_opt"] * row["D_opt"] == pytest.approx(row["C"], rel=1e-6)
    assert Path(res["plot"]).stat().st_size > 10_000

    C = np.geomspace(1e18, 1e23, 12)
    curve = _write(
        tmp_path / "curve.csv",
        "compute,loss\n" + "".join(f"{c:.17g},{2.0 + 3e3 * c**-0.2:.17g}\n" for c in C),
    )
    out = tmp_path / "pl.json"
    argv = [
        "fit-power-law",
        "--input",
        str(curve),
        "--output",
        str(out),
        "--bootstrap",
        "16",
        "--plot",
        "none",
    ]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["a"] == pytest.approx(3e3, rel=1e-2) and res["b"] == pytest.approx(0.2, rel=1e-3)
    assert res["c"] == pytest.approx(2.0, rel=1e-4)
    for name in "abc":  # an exact law: every resample refits it, so the interval is tight around the estimate
        lo, hi = res["ci95"][name]
        assert lo == pytest.approx(res[name], rel=1e-2) and hi == pytest.approx(res[name], rel=1e-2), name
    assert res["bootstrap_used_fraction"] == 1.0 and "plot" not in res
    assert not out.with_suffix(".png").exists()
    plot = tmp_path / "figs" / "pl.png"
    assert main([*argv[:-1], str(plot), "--bootstrap", "0"]) == 0
    assert json.loads(out.read_text())["plot"] == str(plot) and plot.stat().st_size > 10_000
