"""``python -m jaxsafety.judges`` (fit, tournament), checked against independent computations: the library fit
on our own index arrays, Elo from its closed form, win rates and PNT by brute-force loops, the latent skills of
the simulated judge."""

import csv
import itertools
import json
import math
from collections import defaultdict

import numpy as np
import pytest

from jaxsafety.judges.bradley_terry import fit_bradley_terry
from jaxsafety.judges.cli import main

NAMES = ["delta", "alpha", "echo", "bravo", "charlie"]  # first-seen order differs from sorted order


def _write_csv(path, rows, header=("model_a", "model_b", "winner", "instruction", "position")):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _random_rows(seed=0, num_rows=400, num_instructions=6):
    """Hard verdicts from a Bradley-Terry model with ties; every pair in both display orders."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(size=len(NAMES))
    rows = []
    for k in range(num_rows):
        a, b = rng.choice(len(NAMES), size=2, replace=False)
        p = 1.0 / (1.0 + math.exp(skill[b] - skill[a]))
        u = rng.uniform()
        winner = "tie" if u < 0.1 else ("a" if u < 0.1 + 0.9 * p else "b")
        rows.append([NAMES[a], NAMES[b], winner, f"q{k % num_instructions}", k % 2])
    return rows


def _brute_force_pnt(rows):
    """PNT (Xu et al. 2025): per instruction, debiased preference per pair = mean over display orders of the mean
    verdict; a fully observed triplet is non-transitive when its verdicts around the cycle are all >= 0 with one
    > 0, or all <= 0 with one < 0; mean over triplets per instruction, then over instructions."""
    value = {"a": 1.0, "b": 0.0, "tie": 0.5}
    sums = defaultdict(list)  # (instruction, x, y, x shown first) -> p(x beats y)
    for a, b, w, ins, pos in rows:
        p = value[w]
        sums[(ins, a, b, pos == 0)].append(p)
        sums[(ins, b, a, pos == 1)].append(1.0 - p)
    per_instruction = []
    for ins in sorted({r[3] for r in rows}):

        def pref(x, y, ins=ins):
            orders = [np.mean(sums[(ins, x, y, f)]) for f in (True, False) if (ins, x, y, f) in sums]
            return np.mean(orders) if orders else None

        flags = []
        for x, y, z in itertools.combinations(NAMES, 3):
            cycle = [pref(x, y), pref(y, z), pref(z, x)]
            if None in cycle:
                continue
            s = [np.sign(v - 0.5) for v in cycle]
            flags.append((min(s) >= 0 and max(s) > 0) or (max(s) <= 0 and min(s) < 0))
        if flags:
            per_instruction.append(np.mean(flags))
    return float(np.mean(per_instruction))


def test_fit_matches_direct_bradley_terry_elo_and_counts(tmp_path, capsys):
    rows = _random_rows()
    data = tmp_path / "comparisons.csv"
    _write_csv(data, rows)
    out = tmp_path / "ratings.json"
    assert main(["fit", "--input", str(data), "--output", str(out), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    got = {m["name"]: m for m in result["models"]}

    # the library fit on our own indices (sorted names, not the CLI's first-seen order)
    names = sorted(NAMES)
    idx = {n: i for i, n in enumerate(names)}
    a = np.asarray([idx[r[0]] for r in rows])
    b = np.asarray([idx[r[1]] for r in rows])
    y = np.asarray([{"a": 1.0, "b": 0.0, "tie": 0.5}[r[2]] for r in rows])
    theta = np.asarray(fit_bradley_terry(a, b, y, num_models=len(names)).scores)
    elo = 400.0 / math.log(10.0) * (theta - theta.mean()) + 1000.0
    for i, n in enumerate(names):
        assert got[n]["score"] == pytest.approx(theta[i], abs=1e-9)
        assert got[n]["elo"] == pytest.approx(elo[i], abs=1e-6)
        involved = [r for r in rows if n in r[:2]]
        wins = sum(
            {"a": 1.0, "b": 0.0, "tie": 0.5}[r[2]] if r[0] == n else 1.0 - y[k]
            for k, r in enumerate(rows)
            if n in r[:2]
        )
        assert got[n]["num_comparisons"] == len(involved)
        assert got[n]["win_rate"] == pytest.approx(wins / len(involved), abs=1e-12)
        assert got[n]["ci95"] is None
    assert [m["rank"] for m in result["models"]] == [1, 2, 3, 4, 5]
    assert [m["name"] for m in result["models"]] == [names[i] for i in np.argsort(-theta)]
    assert result["fit"]["converged"] and result["num_comparisons"] == len(rows)
    # the printed table lists the models best first
    lines = [ln for ln in printed.splitlines() if ln[:1].isdigit() and ln.split()[1] in NAMES]
    assert [ln.split()[1] for ln in lines] == [m["name"] for m in result["models"]]
    # both display orders present -> position consistency; instruction column and 5 models -> PNT
    assert result["position_consistency"]["num_pairs"] > 0
    assert result["non_transitivity"]["pnt"] == pytest.approx(_brute_force_pnt(rows), abs=1e-12)

    # --anchor: that model at 1000, differences unchanged; bootstrap intervals around the estimate
    out2 = tmp_path / "anchored.json"
    argv = ["fit", "--input", str(data), "--output", str(out2), "--anchor", "echo", "--bootstrap", "32"]
    assert main([*argv, "--seed", "3"]) == 0
    anchored = {m["name"]: m for m in json.loads(out2.read_text())["models"]}
    for i, n in enumerate(names):
        assert anchored[n]["elo"] == pytest.approx(elo[i] - elo[idx["echo"]] + 1000.0, abs=1e-6)
        lo, hi = anchored[n]["ci95"]
        assert lo <= anchored[n]["elo"] + 1e-6 and anchored[n]["elo"] <= hi + 1e-6
        assert (hi - lo > 1.0) or n == "echo"  # the anchor's Elo is fixed in every resample


def test_fit_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    _write_csv(bad, [["x", "y", "a", "q", 0], ["y", "x", "b", "q", 1], ["x", "y", "c", "q", 0]])
    out = tmp_path / "ratings.json"
    assert main(["fit", "--input", str(bad), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad.csv:row 4:winner='c' is invalid: accepted values are a, b or tie")
    assert not out.exists()

    good = tmp_path / "good.csv"
    _write_csv(good, [["x", "y", "a", "q", 0], ["y", "x", "b", "q", 1]])
    for extra, message in [
        (["--ties", "draw"], "error: ties='draw' is invalid"),
        (["--method", "lbfgs"], "error: method='lbfgs' is invalid"),
        (["--anchor", "z"], "error: anchor='z' is invalid"),
        (["--bootstrap", "1"], "error: bootstrap=1 is invalid"),
    ]:
        assert main(["fit", "--input", str(good), "--output", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
    soft = tmp_path / "soft.csv"
    _write_csv(soft, [["x", "y", "1"], ["y", "x", "0.25"]], header=("model_a", "model_b", "prob_a"))
    assert main(["fit", "--input", str(soft), "--output", str(out), "--ties", "davidson"]) == 2
    assert "error: soft.csv:comparison 2:prob_a=0.25 is invalid" in capsys.readouterr().err
    assert main(["fit", "--input", str(tmp_path / "missing.csv"), "--output", str(out)]) == 2
    assert main(["fit", "--input", str(good), "--output", str(tmp_path / "r.txt")]) == 2
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.csv",
        "good.csv",
        "soft.csv",
    ]


@pytest.mark.parametrize("fmt", ["round_robin", "swim", "insertion"])
def test_tournament_with_transitive_judge_is_exact_and_its_csv_refits(tmp_path, capsys, fmt):
    n, num_i = 7, 6
    out, comps = tmp_path / "result.json", tmp_path / "comparisons.csv"
    argv = ["tournament", "--judge", "simulated", "--format", fmt, "--num-models", str(n)]
    argv += [
        "--num-instructions",
        str(num_i),
        "--seed",
        "1",
        "--output",
        str(out),
        "--comparisons-csv",
        str(comps),
    ]
    assert main(argv) == 0
    assert "Spearman 1.0000, Kendall 1.0000" in capsys.readouterr().out
    result = json.loads(out.read_text())
    skill = {m["name"]: m["skill"] for m in result["ranking"]}
    by_skill = sorted(skill, key=lambda k: -skill[k])
    assert result["spearman"] == 1.0 and result["kendall"] == 1.0
    assert [m["name"] for m in result["ranking"]] == by_skill == result["true_ranking"]
    with comps.open() as f:
        assert sum(1 for _ in f) - 1 == result["num_judge_calls"]
    if fmt == "round_robin":
        assert (
            result["num_judge_calls"] == 2 * num_i * n * (n - 1) // 2
        )  # both orders, every pair, instruction

    fitted = tmp_path / "ratings.json"
    assert main(["fit", "--input", str(comps), "--output", str(fitted), "--bootstrap", "0"]) == 0
    models = json.loads(fitted.read_text())["models"]
    assert [m["name"] for m in models] == by_skill
    # soft labels sigmoid(skill_a - skill_b) on a connected comparison graph: the BT MLE is the centred skill
    mean_skill = np.mean(list(skill.values()))
    for m in models:
        assert m["score"] == pytest.approx(skill[m["name"]] - mean_skill, abs=1e-4)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--num-models", "8"], "error: num_models=8 is invalid"),
        (["--lm-steps", "0"], "error: lm_steps=0 is invalid"),
        (["--response-steps", "300"], "error: response_steps='300' is invalid"),
        (["--response-steps", "10,5"], "error: response_steps='10,5' is invalid"),  # below the LMs' warm-up
        (
            ["--position-bias", "inf"],
            "error: position_bias=inf is invalid: accepted values are finite numbers",
        ),
        (["--format", "knockout"], "error: format='knockout' is invalid"),
        (["--rounds", "3"], "error: rounds=3 is invalid: accepted values are unset unless --format swim"),
        (["--format", "swim", "--rounds", "0"], "error: rounds=0 is invalid"),
    ],
)
def test_tournament_lm_judge_bad_flags_exit_2_before_training(tmp_path, capsys, extra, match):
    out = tmp_path / "t.json"
    argv = [
        "tournament",
        "--judge",
        "lm",
        "--format",
        "round_robin",
        "--num-models",
        "6",
        "--output",
        str(out),
    ]
    assert main([*argv, *extra]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_tournament_lm_judge_end_to_end(tmp_path, capsys, monkeypatch):
    """The LM-judge path at tiny training sizes (the judge is near chance; the real judge is in
    tests/judges/test_lm_judge.py): six generated-response models ranked, accuracies measured, JSON written."""
    monkeypatch.setenv("JAXSAFETY_CACHE", str(tmp_path / "cache"))  # the trained models' cache
    out = tmp_path / "t.json"
    argv = ["tournament", "--judge", "lm", "--format", "swim", "--num-models", "6", "--num-instructions", "4",
            "--lm-steps", "40", "--response-steps", "60,50", "--repeats", "2", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert len(res["ranking"]) == 6 and res["judge"]["lm"]["response_steps"] == [60, 50]
    acc = {m["name"]: m["accuracy"] for m in res["ranking"]}
    assert all(0 <= a <= 1 and a * 4 == round(a * 4) for a in acc.values())  # exact-match share of 4 answers
    ordered = [acc[name] for name in res["true_ranking"]]
    assert sorted(acc) == sorted(res["true_ranking"]) and ordered == sorted(ordered, reverse=True)
    assert "LM judge (held-out accuracy" in capsys.readouterr().out
