"""Safety-case tree (jaxsafety.uplift.case) and its report (jaxsafety.uplift.report).

Expected statistics are recomputed here from the raw samples with numpy (percentile, mean, ...) or plain Python
loops, never taken from the code under test; thresholds are set relative to those values so each verdict is known.
"""

from __future__ import annotations

import base64
import dataclasses
import operator
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from jaxsafety.config import ConfigError
from jaxsafety.uplift import report
from jaxsafety.uplift.case import (
    SafetyCase,
    case_from_dict,
    check_bindings,
    evaluate_case,
    format_tree,
    load_case,
)

S, M = 4000, 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PY_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    harm_none = rng.lognormal(mean=14.0, sigma=1.5, size=S)
    safeguarded = harm_none * rng.uniform(0.05, 0.3, size=S)
    safeguarded[:400] = 0.0  # scenarios with no successful misuse
    return {
        "harm.none": harm_none,
        "harm.safeguarded": safeguarded,
        "risk_reduction": np.asarray(0.8),
        "jailbreak.median_months": rng.gamma(2.0, 3.0, size=S),
        "harm_per_month.safeguarded": rng.lognormal(10.0, 1.0, size=(S, M)) * np.linspace(0.5, 1.5, M),
    }


def leaf(cid: str, metric: str, statistic: str, op: str, threshold: float, **extra: object) -> dict:
    ev = {"metric": metric, "statistic": statistic, "op": op, "threshold": float(threshold), **extra}
    return {"id": cid, "text": f"claim {cid}", "evidence": ev}


def simple_case(*claims: dict, argument: str = "all") -> SafetyCase:
    return case_from_dict(
        {"title": "t", "claim": {"id": "R", "text": "root", "argument": argument, "children": list(claims)}}
    )


def fraction_satisfying(x: np.ndarray, op: str, threshold: float) -> float:
    return sum(1 for v in x.tolist() if PY_OPS[op](v, threshold)) / len(x)


# ----------------------------------------------------------------------------------------------------------------
# evaluation


@pytest.mark.parametrize(
    ("statistic", "reference"),
    [
        ("mean", lambda x: np.mean(x)),
        ("median", lambda x: np.percentile(x, 50)),
        ("p95", lambda x: np.percentile(x, 95)),
        ("p99.9", lambda x: np.percentile(x, 99.9)),
        ("p0", lambda x: np.min(x)),
        ("max", lambda x: max(x.tolist())),
        ("min", lambda x: min(x.tolist())),
    ],
)
@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_leaf_statistics_match_numpy(outputs, statistic, reference, op, factor):
    x = outputs["harm.none"]
    expected = float(reference(x))
    threshold = expected * factor
    res = evaluate_case(simple_case(leaf("L", "harm.none", statistic, op, threshold)), outputs)
    (r,) = res.leaves()
    np.testing.assert_allclose(r.value, expected, rtol=1e-12)
    assert r.passed == PY_OPS[op](expected, threshold)
    assert res.passed == r.passed
    signed = threshold - expected if op in ("<", "<=") else expected - threshold
    np.testing.assert_allclose(r.margin, signed, rtol=1e-9)
    assert (r.margin > 0) == r.passed
    assert r.prob_satisfied == pytest.approx(fraction_satisfying(x, op, threshold))
    assert r.n_samples == S


def test_prob_above_month_max_over_time_and_scalar(outputs):
    h = outputs["harm.safeguarded"]
    series = outputs["harm_per_month.safeguarded"]
    x_cut = float(np.percentile(h, 70))
    frac = sum(v > x_cut for v in h.tolist()) / S  # about 0.3
    peak = max(sum(series[s, m] for s in range(S)) / S for m in range(M))
    case = simple_case(
        leaf("A", "harm.safeguarded", f"prob_above:{x_cut}", "<=", 0.35),
        leaf("B", "harm_per_month.safeguarded", "p90", "<", 1.0, month=3),
        leaf("C", "harm_per_month.safeguarded", "max_over_time", "<=", peak * 1.01),
        leaf("D", "risk_reduction", "mean", ">=", 0.8),
        leaf("E", "risk_reduction", "p95", ">", 0.8),
    )
    res = evaluate_case(case, outputs)
    a, b, c, d, e = res.leaves()
    assert a.value == pytest.approx(frac) and a.passed and a.prob_satisfied is None
    assert a.margin == pytest.approx(0.35 - frac)
    np.testing.assert_allclose(b.value, np.percentile(series[:, 3], 90), rtol=1e-12)
    assert not b.passed and b.prob_satisfied == pytest.approx(fraction_satisfying(series[:, 3], "<", 1.0))
    np.testing.assert_allclose(c.value, peak, rtol=1e-9)
    assert c.passed
    per_scenario_peak = np.array([max(row) for row in series.tolist()])
    assert c.prob_satisfied == pytest.approx(fraction_satisfying(per_scenario_peak, "<=", peak * 1.01))
    # scalar: one sample, no prob_satisfied; a value exactly at a strict threshold fails, at <= passes
    assert d.value == pytest.approx(0.8) and d.passed and d.margin == 0.0 and d.prob_satisfied is None
    assert not e.passed and d.n_samples is None
    assert not res.passed  # B and E fail under `all`


def test_all_any_combination(outputs):
    mean = float(np.mean(outputs["harm.none"]))
    ok = leaf("ok", "harm.none", "mean", "<=", mean * 2)
    bad = leaf("bad", "harm.none", "mean", "<=", mean / 2)
    nested = {
        "title": "t",
        "claim": {
            "id": "C0",
            "text": "root",
            "argument": "all",
            "children": [
                {"id": "C1", "text": "all-node", "argument": "all", "children": [ok, bad]},
                {
                    "id": "C2",
                    "text": "any-node",
                    "argument": "any",
                    "children": [{**ok, "id": "ok2"}, {**bad, "id": "bad2"}],
                },
                {"id": "C3", "text": "any-all-bad", "argument": "any", "children": [{**bad, "id": "bad3"}]},
                {
                    "id": "C4",
                    "text": "default is all",
                    "children": [{**ok, "id": "ok4"}, {**bad, "id": "bad4"}],
                },
            ],
        },
    }
    res = evaluate_case(case_from_dict(nested), outputs)
    verdict = {r.claim.id: r.passed for r in res.root.walk()}
    assert verdict == {
        "C0": False,
        "C1": False,
        "ok": True,
        "bad": False,
        "C2": True,
        "ok2": True,
        "bad2": False,
        "C3": False,
        "bad3": False,
        "C4": False,
        "ok4": True,
        "bad4": False,
    }
    nested["claim"]["argument"] = "any"
    assert evaluate_case(case_from_dict(nested), outputs).passed
    nested["claim"]["children"] = [nested["claim"]["children"][i] for i in (0, 2, 3)]
    assert not evaluate_case(case_from_dict(nested), outputs).passed


# ----------------------------------------------------------------------------------------------------------------
# YAML parsing and errors

CASE_YAML = """\
title: "Misuse safeguards keep expected harm below threshold"
model: params.yaml
scenario: rapid_response
claim:
  id: C0
  text: "Expected annual harm from novice misuse is below the unacceptable threshold"
  argument: all
  children:
    - id: C1
      text: "Tail harm with safeguards is bounded"
      evidence:
        metric: harm.safeguarded
        statistic: p95
        op: "<="
        threshold: 1e6
        description: "95th percentile over scenarios"
    - id: C2
      text: "Safeguards remove most of the risk"
      argument: any
      children:
        - id: C21
          text: "Risk reduction is large"
          evidence: {metric: risk_reduction, statistic: mean, op: ">=", threshold: 0.5}
        - id: C22
          text: "Jailbreaks take months"
          evidence: {metric: jailbreak.median_months, statistic: median, op: ">", threshold: 100}
"""


def test_load_case_yaml(tmp_path):
    path = tmp_path / "sub" / "case.yaml"
    path.parent.mkdir()
    path.write_text(CASE_YAML)
    case = load_case(path)
    assert case.title == "Misuse safeguards keep expected harm below threshold"
    assert (
        case.model == path.parent / "params.yaml" and case.scenario == "rapid_response" and case.path == path
    )
    c1 = case.claim.children[0]
    assert c1.evidence is not None and c1.evidence.threshold == 1e6  # PyYAML reads `1e6` as a string
    assert c1.evidence.op == "<=" and c1.evidence.statistic == "p95"
    assert c1.evidence.description == "95th percentile over scenarios"
    assert case.claim.children[1].argument == "any"
    assert [c.id for c in case.leaves()] == ["C1", "C21", "C22"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.title = "x"  # type: ignore[misc]


def _bad(mutate) -> dict:
    import yaml

    data = yaml.safe_load(CASE_YAML)
    mutate(data)
    return data


def _set(path: list, value):
    def mutate(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: list):
    def mutate(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


C1 = ["claim", "children", 0]
C22 = ["claim", "children", 1, "children", 1]


@pytest.mark.parametrize(
    ("mutate", "field", "accepted"),
    [
        (_set(["colour"], "red"), "colour", "keys title, model, scenario, claim"),
        (
            _set([*C1, "evidence", "tresh"], 1),
            "claim.children[0].evidence.tresh",
            "keys metric, statistic, op",
        ),
        (_set([*C1, "note"], "x"), "claim.children[0].note", "keys id, text, argument, children, evidence"),
        (_delete(["title"]), "title", "a non-empty string"),
        (_delete(["claim"]), "claim", "the root claim"),
        (_delete([*C1, "id"]), "claim.children[0].id", "a non-empty string"),
        (_set([*C22, "text"], "   "), "claim.children[1].children[1].text", "a non-empty string"),
        (
            _set([*C22, "id"], "C1"),
            "claim.children[1].children[1].id",
            "used only once (already used at claim.children[0])",
        ),
        (
            _set([*C1, "children"], [{"id": "x", "text": "y"}]),
            "claim.children[0]",
            "exactly one of `children`",
        ),
        (_delete([*C22, "evidence"]), "claim.children[1].children[1]", "neither"),
        (_set([*C1, "evidence", "op"], "=="), "claim.children[0].evidence.op", "one of '<', '<=', '>', '>='"),
        (_set([*C22, "evidence", "op"], "<<"), "claim.children[1].children[1].evidence.op", "'>='"),
        (_set([*C1, "evidence", "statistic"], "average"), "claim.children[0].evidence.statistic", "pNN"),
        (_set([*C1, "evidence", "statistic"], "p101"), "claim.children[0].evidence.statistic", "prob_above"),
        (
            _set([*C1, "evidence", "statistic"], "prob_above:lots"),
            "claim.children[0].evidence.statistic",
            "mean",
        ),
        (
            _set([*C1, "evidence", "threshold"], "lots"),
            "claim.children[0].evidence.threshold",
            "a finite number",
        ),
        (
            _set([*C1, "evidence", "threshold"], True),
            "claim.children[0].evidence.threshold",
            "a finite number",
        ),
        (
            _set([*C1, "evidence", "threshold"], float("nan")),
            "claim.children[0].evidence.threshold",
            "finite",
        ),
        (
            _set([*C1, "evidence", "statistic"], "prob_above:1e5"),
            "claim.children[0].evidence.threshold",
            "[0, 1]",
        ),
        (_delete([*C1, "evidence", "op"]), "claim.children[0].evidence.op", "required"),
        (_set([*C1, "evidence", "month"], -1), "claim.children[0].evidence.month", "integer >= 0"),
        (_set(["claim", "argument"], "most"), "claim.argument", "one of 'all', 'any'"),
        (_set([*C1, "argument"], "all"), "claim.children[0].argument", "no argument on a leaf"),
        (_set(["claim", "children", 1, "children"], []), "claim.children[1].children", "non-empty list"),
        (_set(["claim", "children", 1], "C2"), "claim.children[1]", "a mapping with keys id, text"),
    ],
)
def test_case_errors_name_yaml_path(mutate, field, accepted):
    with pytest.raises(ConfigError) as info:
        case_from_dict(_bad(mutate))
    assert info.value.field == field
    assert accepted in info.value.accepted
    assert str(info.value).startswith(f"{field}=")


def test_load_case_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"case=.*missing\.yaml.*existing YAML case file"):
        load_case(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [unclosed\nclaim: {")
    with pytest.raises(ConfigError, match="a valid YAML file"):
        load_case(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a mapping with keys title"):
        load_case(notmap)


def test_bindings_checked_before_evaluation(outputs, tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text(CASE_YAML.replace("jailbreak.median_months", "jailbreak.mean_months"))
    case = load_case(path)
    with pytest.raises(ConfigError) as info:
        evaluate_case(case, outputs)
    assert info.value.field == "claim.children[1].children[1].evidence.metric"
    assert info.value.value == "jailbreak.mean_months"
    for name in outputs:  # the message lists every available metric
        assert name in info.value.accepted
    ev = "claim.children[0].evidence"
    cases = [
        (leaf("L", "harm_per_month.safeguarded", "p95", "<", 1), f"{ev}.month", "max_over_time"),
        (leaf("L", "harm_per_month.safeguarded", "p95", "<", 1, month=M), f"{ev}.month", f"0..{M - 1}"),
        (leaf("L", "harm.none", "p95", "<", 1, month=0), f"{ev}.month", "no month"),
        (leaf("L", "harm.none", "max_over_time", "<", 1), f"{ev}.statistic", "other than"),
    ]
    for claim, field, accepted in cases:
        with pytest.raises(ConfigError) as info:
            check_bindings(simple_case(claim), outputs)
        assert info.value.field == field and accepted in info.value.accepted
    with_nan = {**outputs, "harm.none": np.where(np.arange(S) == 7, np.nan, outputs["harm.none"])}
    with pytest.raises(ConfigError, match=r"outputs\['harm.none'\]\[7\]=nan"):
        evaluate_case(simple_case(leaf("L", "harm.none", "mean", "<", 1)), with_nan)


# ----------------------------------------------------------------------------------------------------------------
# text tree


def test_format_tree(outputs, tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text(CASE_YAML)
    result = evaluate_case(load_case(path), outputs)
    p95 = float(np.percentile(outputs["harm.safeguarded"], 95))
    median = float(np.median(outputs["jailbreak.median_months"]))
    lines = format_tree(result).splitlines()
    assert len(lines) == 5
    expect = [  # (indent, verdict, id) computed from the independent statistics
        (0, p95 <= 1e6 and (0.8 >= 0.5 or median > 100), "C0"),
        (1, p95 <= 1e6, "C1"),
        (1, True, "C2"),
        (2, True, "C21"),
        (2, median > 100, "C22"),
    ]
    for line, (depth, ok, cid) in zip(lines, expect, strict=True):
        assert line.startswith("  " * depth + ("[PASS] " if ok else "[FAIL] ") + cid + " ")
    assert "Expected annual harm from novice misuse" in lines[0] and "(all of 2)" in lines[0]
    assert "(any of 2)" in lines[2]
    assert f"harm.safeguarded p95 = {p95:.3g} <= 1e+06" in lines[1]
    assert f"jailbreak.median_months median = {median:.3g} > 100" in lines[4]
    assert "P(sat)" in lines[1] and "P(sat)" not in lines[3]  # scalar metric: no per-scenario probability


# ----------------------------------------------------------------------------------------------------------------
# report and plots


class TagChecker(HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.seen: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def figures(tmp_path_factory, outputs) -> dict[str, Path]:
    figdir = tmp_path_factory.mktemp("figs")
    tornado = report.plot_tornado(
        ["efficacy", "jailbreak rate", "novices"], [2e5, 5e5, 9e5], [8e5, 3e6, 1.1e6], 1e6,
        figdir / "tornado.png", xlabel="expected harm", log=True,
    )  # fmt: skip
    dist = report.plot_distributions(
        {k: outputs[k] for k in ("harm.none", "harm.safeguarded")}, figdir / "harm.png", threshold=1e6
    )
    return {"Tornado: expected harm": tornado, "Harm over scenarios": dist}


def test_plots_write_png_and_close(figures):
    import matplotlib.pyplot as plt

    for p in figures.values():
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert plt.get_fignums() == []
    assert not [f for f in figures["Harm over scenarios"].parent.iterdir() if f.name.endswith(".tmp")]


def test_tornado_sorted_by_swing(monkeypatch, tmp_path):
    captured = []
    original = report.save_figure  # jaxsafety.io.save_figure, as report imports it
    monkeypatch.setattr(
        report, "save_figure", lambda fig, path: (captured.append(fig), original(fig, path))[1]
    )
    names, low, high = (
        ["a", "b", "c", "d"],
        np.array([9.0, 5.0, 8.0, 9.5]),
        np.array([11.0, 20.0, 13.0, 10.0]),
    )
    report.plot_tornado(names, low, high, 10.0, tmp_path / "t.png", xlabel="x")
    ax = captured[0].axes[0]
    by_height = sorted(((t.get_position()[1], t.get_text()) for t in ax.get_yticklabels()), reverse=True)
    swing = {n: abs(h - lo) for n, lo, h in zip(names, low, high, strict=True)}
    assert [n for _, n in by_height] == sorted(names, key=lambda n: -swing[n])  # b, c, a, d: largest on top
    # every bar spans base -> low or base -> high
    ends = [(b.get_x(), b.get_x() + b.get_width()) for b in ax.patches]
    spans = sorted((round(min(e), 9), round(max(e), 9)) for e in ends)
    expected = sorted([(min(10.0, v), max(10.0, v)) for v in [*low, *high]])
    assert spans == expected


def test_plot_errors(tmp_path):
    with pytest.raises(ConfigError, match="low/high"):
        report.plot_tornado(["a", "b"], [1.0], [2.0, 3.0], 1.5, tmp_path / "t.png", xlabel="x")
    with pytest.raises(ConfigError, match=r"low\[1\]=-1"):
        report.plot_tornado(
            ["a", "b"], [1.0, -1.0], [2.0, 3.0], 1.5, tmp_path / "t.png", xlabel="x", log=True
        )
    with pytest.raises(ConfigError, match="non-empty mapping"):
        report.plot_distributions({}, tmp_path / "d.png", xlabel="x")
    with pytest.raises(ConfigError, match=r"samples\['h'\]"):
        report.plot_distributions({"h": np.ones((3, 2))}, tmp_path / "d.png", xlabel="x")
    with pytest.raises(ConfigError, match="threshold"):
        report.plot_distributions({"h": np.ones(3)}, tmp_path / "d.png", threshold=-1.0)
    assert not list(tmp_path.iterdir())  # nothing written on bad input


def _evil_case(outputs) -> SafetyCase:
    import yaml

    data = yaml.safe_load(CASE_YAML)
    data["claim"]["children"][1]["children"][0]["text"] = "<script>alert('x')</script> & co"
    data["claim"]["children"][0]["evidence"]["description"] = "a | pipe <b>bold</b>"
    return case_from_dict(data)


def test_write_report(outputs, figures, tmp_path):
    result = evaluate_case(_evil_case(outputs), outputs)
    out = tmp_path / "report"
    tables = {"Parameters <used>": [["name", "value"], ["efficacy", "0.9"], ["a|b", "<i>"]]}
    md_path, html_path = report.write_report(result, out, figures=figures, tables=tables)
    assert (md_path, html_path) == (out / "report.md", out / "report.html")
    assert not [f for f in out.iterdir() if f.name.startswith(".") or f.name.endswith(".tmp")]

    page = html_path.read_text()
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    for tag in ("html", "head", "style", "body", "main", "ul", "li", "table", "figure"):
        assert tag in checker.seen
    assert "script" not in checker.seen and "<script" not in page  # claim text is escaped, not markup
    text = "".join(checker.text)
    assert "<script>alert('x')</script> & co" in text  # ... and reads back as the original text
    for node in result.root.walk():
        assert node.claim.id in text
        status = "pass" if node.passed else "fail"
        assert re.search(
            rf'<li class="{status}"><span class="mark">{status.upper()}</span> <b>{node.claim.id}</b>', page
        )
    # figures embedded as data URIs holding exactly the PNG bytes
    assert len(checker.imgs) == 2
    for src, p in zip(checker.imgs, figures.values(), strict=True):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == p.read_bytes()
    # leaf table: the independently computed p95 and its margin appear in C1's row
    p95 = float(np.percentile(outputs["harm.safeguarded"], 95))
    row = re.search(r"<tr class=\"(pass|fail)\"><td>C1</td>(.*?)</tr>", page)
    assert row and row.group(1) == ("pass" if p95 <= 1e6 else "fail")
    assert f"{p95:.4g}" in row.group(2) and f"{1e6 - p95:.4g}" in row.group(2)
    assert f"{fraction_satisfying(outputs['harm.safeguarded'], '<=', 1e6):.3f}" in row.group(2)
    assert "Parameters &lt;used&gt;" in page and "<td>&lt;i&gt;</td>" in page

    md = md_path.read_text()
    assert md.startswith("# Misuse safeguards keep expected harm below threshold\n")
    assert "&lt;script>alert('x')&lt;/script> & co" in md and "<script" not in md
    assert "a \\| pipe &lt;b>bold&lt;/b>" in md
    assert "| &lt;= |" not in md and "| <= |" in md  # comparisons stay readable
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(refs) == ["harm.png", "tornado.png"]
    for ref in refs:  # copied next to the report, byte for byte
        assert (out / ref).read_bytes() == (figures["Harm over scenarios"].parent / ref).read_bytes()
    for node in result.root.walk():
        assert f"`{node.claim.id}`" in md
    assert "| C1 | harm.safeguarded | p95 |" in md


def test_write_report_is_atomic_and_validates(outputs, figures, tmp_path, monkeypatch):
    result = evaluate_case(_evil_case(outputs), outputs)
    out = tmp_path / "r"
    with pytest.raises(ConfigError, match=r"figures\['gone'\]"):
        report.write_report(result, out, figures={"gone": tmp_path / "gone.png"})
    with pytest.raises(ConfigError, match=r"tables\['t'\]\[1\]"):
        report.write_report(result, out, figures={}, tables={"t": [["a", "b"], ["1"]]})
    assert not out.exists()  # bad input: nothing written
    _, html_path = report.write_report(result, out, figures={}, title="First")
    before = html_path.read_text()
    assert "<title>First</title>" in before

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", failing_replace)  # report writes through jaxsafety.io.write_atomic
    with pytest.raises(OSError, match="disk full"):
        report.write_report(result, out, figures={}, title="Second")
    assert html_path.read_text() == before  # the previous report survives a failed write
    assert sorted(f.name for f in out.iterdir()) == ["report.html", "report.md"]  # no temp files left
