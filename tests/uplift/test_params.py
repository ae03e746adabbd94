"""Parameter files: distributions against scipy, and every bad field named before anything is drawn."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from scipy import special, stats

from jaxsafety.config import ConfigError
from jaxsafety.uplift.params import (
    NO_SAFEGUARDS,
    Distribution,
    draw_scenarios,
    load_params,
    parse_distribution,
    parse_params,
)

BASE = {
    "horizon_months": 12,
    "actors_per_year": {"dist": "lognormal", "median": 10, "p95": 100},
    "damage_per_success": 1.0,
    "damage_gsd": 2.0,
    "skill_sd": 1.0,
    "steps": [
        {
            "name": "a",
            "p_success": {"dist": "beta", "mean": 0.3, "concentration": 10},
            "uplift": 1.0,
            "queries": 3,
        },
        {"name": "b", "p_success": 0.5, "uplift": {"dist": "normal", "mean": 1, "sd": 0.2}, "queries": 1},
    ],
    "safeguards": {
        "refusal_bypass": 0.1,
        "give_up": 0.2,
        "detect": {"dist": "uniform", "low": 0.01, "high": 0.05},
        "reenter": 0.5,
        "jailbreak_detect": 0.01,
        "patch_months": {"dist": "lognormal", "median": 0.5, "gsd": 2},
    },
    "jailbreak": {"family": "weibull", "shape": 0.8, "scale_months": 6},
    "scenarios": {"lax": {"detect": 0.0}},
}


@pytest.mark.parametrize(
    ("spec", "kind", "scipy_dist"),
    [
        ({"dist": "lognormal", "median": 10, "gsd": 3}, "positive", stats.lognorm(s=math.log(3), scale=10)),
        ({"dist": "lognormal", "p5": 2, "p95": 50}, "positive",
         stats.lognorm(s=math.log(25) / (2 * stats.norm.ppf(0.95)), scale=10)),
        ({"dist": "beta", "mean": 0.2, "concentration": 10}, "probability", stats.beta(2, 8)),
        ({"dist": "beta", "alpha": 3, "beta": 4}, "probability", stats.beta(3, 4)),
        ({"dist": "normal", "mean": 1, "sd": 0.5}, "real", stats.norm(1, 0.5)),
        ({"dist": "uniform", "low": 0.1, "high": 0.3}, "probability", stats.uniform(0.1, 0.2)),
    ],
)  # fmt: skip
def test_distributions_match_scipy(spec, kind, scipy_dist):
    d = parse_distribution("x", spec, kind)
    for q in (0.05, 0.5, 0.95):
        assert d.quantile(q) == pytest.approx(scipy_dist.ppf(q), rel=1e-9)
    assert d.mean == pytest.approx(scipy_dist.mean(), rel=1e-9)
    x = d.sample(np.random.default_rng(0), 200_000)
    assert stats.kstest(x, scipy_dist.cdf).pvalue > 1e-4


def test_logitnormal_against_its_definition():
    d = parse_distribution("x", {"dist": "logitnormal", "median": 0.2, "sd": 0.7}, "probability")
    assert d.quantile(0.5) == pytest.approx(0.2)
    x = d.sample(np.random.default_rng(1), 100_000)
    assert stats.kstest(special.logit(x), stats.norm(special.logit(0.2), 0.7).cdf).pvalue > 1e-4
    assert d.mean == pytest.approx(x.mean(), abs=4 * x.std() / math.sqrt(x.size))


def test_example_file_loads_and_json_equals_yaml(tmp_path):
    from jaxsafety.uplift.params import DATA_DIR

    p = load_params(DATA_DIR / "example_params.yaml")
    assert p.step_names == ("planning", "acquisition", "production", "deployment")
    assert set(p.scenarios) == {"refusal_only", "monitoring", "rapid_response"}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(BASE))
    q = load_params(path)
    assert q == parse_params(BASE, source=str(path))
    assert q.safeguards_for("lax")["detect"] == Distribution("point", 0.0)
    assert q.safeguards_for("no_safeguards") == {
        k: Distribution("point", v) for k, v in NO_SAFEGUARDS.items()
    }


def test_draw_shapes_and_determinism():
    p = parse_params(BASE)
    a = draw_scenarios(p, 100, seed=1)
    b = draw_scenarios(p, 100, seed=1)
    assert a["p_success"].shape == (100, 2) and a["jb_z"].shape == (100, 64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["actors_per_year"], draw_scenarios(p, 100, seed=2)["actors_per_year"])


def _mutated(path, value):
    data = copy.deepcopy(BASE)
    *head, last = path
    node = data
    for k in head:
        node = node[k]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("horizon_months",), 0, r"horizon_months=0.0 .* > 0"),
        (("colour",), 1, r"colour=1 .*known key"),
        (("skill_sd",), KeyError, r"skill_sd=None .*required"),
        (("actors_per_year",), {"dist": "beta", "mean": 0.5, "concentration": 2}, r"actors_per_year.dist='beta'.*positive"),
        (("actors_per_year",), {"dist": "lognormal", "median": 10}, r"actors_per_year=.*lognormal with keys"),
        (("actors_per_year",), {"dist": "lognormal", "median": 10, "p95": 5}, r"actors_per_year.p95=5.*>= median"),
        (("actors_per_year",), {"dist": "gamma", "a": 1}, r"actors_per_year.dist='gamma'.*one of point, lognormal"),
        (("damage_per_success",), "lots", r"damage_per_success='lots'.*finite number"),
        (("damage_gsd",), 0.5, r"damage_gsd=0.5 .*>= 1"),
        (("steps",), [], r"steps=\[\] .*non-empty list"),
        (("steps", 1, "name"), "a", r"steps\[1\].name='a'.*not used by an earlier step"),
        (("steps", 0, "p_success"), 1.5, r"steps\[0\].p_success=1.5 .*probability in \[0, 1\]"),
        (("steps", 0, "p_success"), {"dist": "normal", "mean": 0.5, "sd": 0.1}, r"steps\[0\].p_success.dist='normal'"),
        (("steps", 0, "p_success"), {"dist": "beta", "mean": 1.2, "concentration": 3}, r"steps\[0\].p_success.mean=1.2"),
        (("steps", 1, "queries"), KeyError, r"steps\[1\].queries=None"),
        (("safeguards", "detect"), {"dist": "uniform", "low": 0.5, "high": 1.5}, r"safeguards.detect=\[0.5, 1.5\].*inside \[0, 1\]"),
        (("safeguards", "patch_months"), -1, r"safeguards.patch_months=-1.0 .*>= 0"),
        (("jailbreak", "family"), "gamma", r"jailbreak.family='gamma'.*weibull, lognormal"),
        (("jailbreak", "sigma"), 1.0, r"jailbreak.sigma=1.0 .*weibull family"),
        (("jailbreak", "fit_csv"), "missing.csv", r"jailbreak.scale_months=6 .*absent when fit_csv is given"),
        (("jailbreak",), {"family": "weibull", "fit_csv": "missing.csv", "effort_hours_per_month": 10},
         r"jailbreak.fit_csv=.*existing CSV"),
        (("jailbreak",), {"family": "weibull", "shape": 1.0}, r"jailbreak.scale_months=None .*needs"),
        (("scenarios", "lax", "speed"), 1, r"scenarios.lax.speed=1 .*known key"),
        (("scenarios", "lax", "give_up"), 2, r"scenarios.lax.give_up=2.0 .*probability"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(path, value, match):
    with pytest.raises(ConfigError, match=match):
        parse_params(_mutated(path, value))


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"params=.*existing"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "p.txt"
    bad.write_text("x")
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.json"):
        load_params(bad)
    broken = tmp_path / "p.yaml"
    broken.write_text("horizon_months: [1, 2\n")
    with pytest.raises(ConfigError, match=r"valid YAML"):
        load_params(broken)
    inner = tmp_path / "q.yaml"
    inner.write_text(json.dumps(_mutated(("skill_sd",), -1)))
    with pytest.raises(ConfigError, match=r"q.yaml: skill_sd=-1.0"):
        load_params(inner)
    with pytest.raises(ConfigError, match=r"scenario='strict'.*no_safeguards, lax"):
        draw_scenarios(parse_params(BASE), 10, seed=0, scenario="strict")


def test_yaml_reads_exponents_without_sign(tmp_path):
    """PyYAML reads ``1.0e9`` as a string (YAML 1.1); the loader accepts it as the number it is."""
    path = tmp_path / "p.yaml"
    import yaml

    text = yaml.safe_dump(_mutated(("scenarios", "lax", "patch_months"), "PLACEHOLDER"))
    path.write_text(text.replace("PLACEHOLDER", "1.0e9"))
    assert load_params(path).scenarios["lax"]["patch_months"].a == 1e9
