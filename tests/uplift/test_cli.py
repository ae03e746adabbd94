"""``python -m jaxsafety.uplift``: case check end to end (report, exit status), run, fit-redteam against scipy,
published; bad input exits with status 2 before anything is written."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from scipy import stats

from jaxsafety.uplift import survival
from jaxsafety.uplift.cli import main
from jaxsafety.uplift.params import DATA_DIR

CASE = """
title: "test case"
model: params.yaml
scenario: rapid_response
claim:
  id: C0
  text: "top"
  argument: all
  children:
    - id: C1
      text: "mean harm below a huge number"
      evidence: {metric: harm.safeguarded, statistic: mean, op: "<", threshold: 1.0e12}
    - id: C2
      text: "safeguards remove some uplift"
      evidence: {metric: uplift_removed, statistic: mean, op: ">", threshold: 0.0}
    - id: C3
      text: "monthly harm below a huge number"
      evidence: {metric: harm_per_month.safeguarded, statistic: max_over_time, op: "<", threshold: 1.0e12}
"""


@pytest.fixture
def case_dir(tmp_path):
    shutil.copy(DATA_DIR / "example_params.yaml", tmp_path / "params.yaml")
    shutil.copy(DATA_DIR / "redteam_example.csv", tmp_path / "redteam_example.csv")
    (tmp_path / "case.yaml").write_text(CASE)
    return tmp_path


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_check_writes_a_report_and_gates_on_the_top_claim(case_dir, capsys):
    out = case_dir / "report"
    args = ["check", "--case", str(case_dir / "case.yaml"), "--out", str(out), "--scenarios", "1000",
            "--swing-scenarios", "500", "--compare", "no_safeguards"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[PASS] C0" in printed and "[PASS] C3" in printed
    summary = json.loads((out / "check.json").read_text())
    assert summary["passed"] is True
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["C1"]["value"] == pytest.approx(summary["mean"]["harm.safeguarded"], rel=1e-6)
    removed = summary["mean"]["risk_reduction"] / summary["mean"]["uplift.none"]
    assert claims["C2"]["value"] == pytest.approx(removed, rel=1e-6)
    # harm is a * D * (...): the elasticities of the actors and of the damage both equal the mean harm
    assert summary["sensitivity"]["actors_per_year"] == pytest.approx(
        summary["mean"]["harm.safeguarded"], rel=1e-4
    )
    assert summary["swing"] and all(s["low"] >= 0 for s in summary["swing"])
    parser = _Tags()
    parser.feed((out / "report.html").read_text())
    assert len(parser.imgs) == 3 and all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    text = " ".join(parser.text)
    assert all(c in text for c in ("C0", "C1", "C2", "C3", "Scenarios", "Autodiff sensitivities"))
    md = (out / "report.md").read_text()
    assert "tornado.png" in md and (out / "tornado.png").stat().st_size > 1000

    failing = (
        (case_dir / "case.yaml").read_text().replace('op: ">", threshold: 0.0', 'op: ">", threshold: 1.5')
    )
    (case_dir / "fail.yaml").write_text(failing)
    args[2] = str(case_dir / "fail.yaml")
    assert main(args) == 1  # the safeguards cannot remove more than all of the uplift
    assert "[FAIL] C2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("scenario: rapid_response", "scenario: strict"), "scenario='strict'"),
        (("metric: uplift_removed", "metric: uplift_gone"), "uplift_gone"),
        (("model: params.yaml", "model: nope.yaml"), "params="),
    ],
)
def test_check_rejects_bad_cases_before_writing(case_dir, capsys, edit, match):
    (case_dir / "case.yaml").write_text(CASE.replace(*edit))
    out = case_dir / "never"
    assert main(["check", "--case", str(case_dir / "case.yaml"), "--out", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_fit_redteam_matches_scipy_censored_fit(tmp_path, capsys):
    out = tmp_path / "fit.json"
    path = DATA_DIR / "redteam_example.csv"
    assert main(["fit-redteam", "--input", str(path), "--output", str(out), "--bootstrap", "50"]) == 0
    fit = json.loads(out.read_text())
    data = survival.read_redteam_csv(path)
    censored = stats.CensoredData(uncensored=data.time[data.found], right=data.time[~data.found])
    c, _, scale = stats.weibull_min.fit(censored, floc=0)
    assert fit["params"]["shape"]["estimate"] == pytest.approx(c, rel=1e-3)
    assert fit["params"]["scale"]["estimate"] == pytest.approx(scale, rel=1e-3)
    lo, hi = fit["params"]["shape"]["interval_95"]
    assert lo < c < hi
    assert "weibull fit to 60 attempts" in capsys.readouterr().out


def test_run_and_published(tmp_path, capsys):
    out = tmp_path / "run.json"
    params = DATA_DIR / "example_params.yaml"
    assert main(["run", "--params", str(params), "--output", str(out), "--scenarios", "1000"]) == 0
    res = json.loads(out.read_text())["scenarios"]
    assert set(res) == {"no_safeguards", "refusal_only", "monitoring", "rapid_response"}
    harm = [res[k]["mean"]["harm.safeguarded"] for k in ("no_safeguards", "monitoring", "rapid_response")]
    assert harm[0] > harm[1] > harm[2]  # each added safeguard lowers harm (common random numbers)
    np.testing.assert_allclose(
        res["no_safeguards"]["mean"]["harm.safeguarded"], res["no_safeguards"]["mean"]["harm.none"], rtol=1e-6
    )
    assert main(["published", "--output", str(tmp_path / "pub.json"), "--simulations", "200"]) == 0
    pub = json.loads((tmp_path / "pub.json").read_text())
    assert pub["uplift"]["harm_none"] < pub["uplift"]["harm_post"] < pub["uplift"]["harm_pre"]
    assert main(["run", "--params", str(params), "--output", str(tmp_path / "x.txt")]) == 2
    assert "output=" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--params", "{dir}/nope.yaml", "--output", "{dir}/r.json"], "error: params='{dir}/nope.yaml' is invalid"),
        (["run", "--params", "{dir}/params.yaml", "--output", "{dir}/r.json", "--scenario", "strict"],
         "error: scenario='strict' is invalid"),
        (["run", "--params", "{dir}/params.yaml", "--output", "{dir}/r.json", "--scenarios", "1"],
         "error: scenarios=1 is invalid: accepted values are integers >= 2"),
        (["fit-redteam", "--input", "{dir}/bad.csv", "--output", "{dir}/f.json"],
         "error: bad.csv:row 3:found='maybe' is invalid"),
        (["fit-redteam", "--input", "{dir}/redteam_example.csv", "--output", "{dir}/f.json", "--family", "gamma"],
         "error: family='gamma' is invalid"),
        (["published", "--output", "{dir}/p.json", "--simulations", "0"], "error: simulations=0 is invalid"),
        (["check", "--case", "{dir}/case.yaml", "--out", "{dir}/params.yaml"], "error: out='{dir}/params.yaml' is"),
        (["check", "--case", "{dir}/case.yaml", "--swing-scenarios", "1"], "error: swing_scenarios=1 is invalid"),
        (["check"], "error: the following arguments are required: --case"),
        (["fit", "--input", "x.csv"], "error: argument COMMAND: invalid choice: 'fit'"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_before_writing(case_dir, capsys, argv, message):
    (case_dir / "bad.csv").write_text("time,found\n1.5,1\n2.0,maybe\n")
    before = sorted(p.name for p in case_dir.iterdir())
    assert main([a.format(dir=case_dir) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(dir=case_dir)) and err.count("\n") == 1, err
    assert sorted(p.name for p in case_dir.iterdir()) == before
