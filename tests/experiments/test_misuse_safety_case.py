"""experiments/misuse_safety_case.py end to end at a tiny size, as a user runs it (a subprocess)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.experiments.script_runner import run_experiment


def test_tiny_run_writes_results_report_plots_and_logs(tmp_path):
    args = [
        "--smoke",
        "--num-scenarios",
        "1000",
        "--swing-scenarios",
        "500",
        "--published-simulations",
        "200",
    ]
    out = run_experiment(
        "misuse_safety_case.py", *args, "--out-dir", str(tmp_path), "--run-name", "r1", timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert "of the uplift removed; case" in out.stdout
    run = tmp_path / "misuse_safety_case" / "r1"
    res = json.loads((run / "results.json").read_text())
    for name in ("scenario_harm.png", "published_projection.png", "report/tornado.png",
                 "report/harm_distributions.png", "report/harm_over_time.png"):  # fmt: skip
        assert (run / name).stat().st_size > 10_000, name
    sc = res["scenarios"]
    assert list(sc) == ["no_safeguards", "refusal_only", "monitoring", "rapid_response"]
    harm = {k: v["mean"]["harm.safeguarded"] for k, v in sc.items()}
    # common random numbers: every scenario shares the attackers, pathway and consequences draws
    assert (
        harm["no_safeguards"]
        > harm["monitoring"]
        > harm["rapid_response"]
        > sc["rapid_response"]["mean"]["harm.no_ai"]
    )
    assert all(abs(v["mean"]["harm.none"] - sc["no_safeguards"]["mean"]["harm.none"]) < 1e-6 * harm["no_safeguards"]
               for v in sc.values())  # fmt: skip
    h = res["headline"]
    assert h["scenario"] == "rapid_response" and 0 < h["uplift_removed"] < 1
    assert h["case_passed"] == all(c["passed"] for c in res["claims"])
    pub = res["published"]["uplift"]
    assert pub["harm_none"] < pub["harm_post"] < pub["harm_pre"]

    class Images(HTMLParser):
        count = 0

        def handle_starttag(self, tag, attrs):
            self.count += tag == "img"

    parser = Images()
    parser.feed((run / "report" / "report.html").read_text())
    assert parser.count == 3
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.value for e in ea.Scalars("harm/safeguarded")] == pytest.approx(list(harm.values()), rel=1e-6)
