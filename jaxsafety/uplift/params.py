"""Uncertain parameters of the uplift model: distributions, the parameter file (YAML / JSON) and scenario draws.

A parameter file names every input of :mod:`jaxsafety.uplift.model` once. Each scalar input is either a number
(a point value) or a distribution::

    actors_per_year: {dist: lognormal, median: 30, p95: 300}      # or {dist: lognormal, median: .., gsd: ..}
    skill_sd: 1.0                                                  # point
    p_success: {dist: beta, mean: 0.3, concentration: 20}          # or {dist: beta, alpha: .., beta: ..}
    uplift: {dist: normal, mean: 1.5, sd: 0.5}
    detect: {dist: uniform, low: 0.01, high: 0.05}
    p_success: {dist: logitnormal, median: 0.3, sd: 0.5}          # logit(p) ~ N(logit(median), sd)

Each input has a *kind* that fixes its support and the direction of the sensitivity shift ``delta`` of
:func:`shift`: ``positive`` (``x * exp(delta)``: an elasticity), ``probability`` (``sigmoid(logit(x) + delta)``:
a log-odds shift) or ``real`` (``x + delta``). A distribution whose support does not fit the kind (a normal for a
probability, a beta for a damage) is refused with the field's path.

The file's layout (every key is checked; unknown keys are errors)::

    horizon_months: 24
    actors_per_year: ...            # novice actors who attempt an attack per year (a)
    damage_per_success: ...         # expected damage of one successful attack (D)
    damage_gsd: ...                 # spread of one success's damage around D (realised harm only)
    skill_sd: ...                   # sd of actor skill, in log-odds of every step's success
    steps:                          # the attack pathway, in order
      - {name: ..., p_success: ..., uplift: ..., queries: ...}
    safeguards: {refusal_bypass: .., give_up: .., detect: .., reenter: .., jailbreak_detect: .., patch_months: ..}
    jailbreak:                      # time to find a universal jailbreak, in months of deployment
      family: weibull               # weibull | lognormal
      shape: ...  scale_months: ... # weibull (lognormal: mu_months, sigma), or instead of those:
      fit_csv: redteam.csv          # red-team / bug-bounty attempts (jaxsafety.uplift.survival), hours of effort,
      effort_hours_per_month: ...   #   converted to months by the public's jailbreak-search effort per month
      bootstrap: 200
    scenarios:                      # named overrides of `safeguards` (and nothing else)
      refusal_only: {detect: 0.0, patch_months: 1.0e9}

:func:`load_params` parses and validates the whole file before anything is drawn; :func:`draw_scenarios` draws
``num_scenarios`` joint samples with numpy (JAX's beta sampler costs seconds of compilation, numpy's costs
nothing) into the flat dict the jitted model takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from jaxsafety.config import ConfigError

__all__ = [
    "DATA_DIR",
    "DISTRIBUTIONS",
    "Distribution",
    "JailbreakSpec",
    "ModelParams",
    "Scenarios",
    "draw_scenarios",
    "load_params",
    "parse_params",
    "shift",
    "standard_gap_draws",
]

Kind = Literal["positive", "probability", "real"]
DISTRIBUTIONS = ("point", "lognormal", "normal", "beta", "logitnormal", "uniform")
_DIST_KEYS = {
    "point": ({"value"},),
    "lognormal": ({"median", "gsd"}, {"median", "p95"}, {"p5", "p95"}),
    "normal": ({"mean", "sd"},),
    "beta": ({"mean", "concentration"}, {"alpha", "beta"}),
    "logitnormal": ({"median", "sd"},),
    "uniform": ({"low", "high"},),
}
_SUPPORT = {  # the kinds each distribution can describe
    "point": ("positive", "probability", "real"),
    "lognormal": ("positive",),
    "normal": ("real",),
    "beta": ("probability",),
    "logitnormal": ("probability",),
    "uniform": ("positive", "probability", "real"),
}
_Z95 = float(stats.norm.ppf(0.95))
DATA_DIR = Path(__file__).parent / "data"  # example_params.yaml, example_case.yaml, redteam_example.csv


@dataclasses.dataclass(frozen=True)
class Distribution:
    """One uncertain scalar: ``dist`` in :data:`DISTRIBUTIONS` with its two canonical numbers ``a, b``
    (point: value; lognormal: log-median, log-sd; normal: mean, sd; beta: alpha, beta; logitnormal: logit-median,
    sd; uniform: low, high)."""

    dist: str
    a: float
    b: float = 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``[n]`` float64 draws."""
        if self.dist == "point":
            return np.full(n, self.a)
        if self.dist == "lognormal":
            return np.exp(self.a + self.b * rng.standard_normal(n))
        if self.dist == "normal":
            return self.a + self.b * rng.standard_normal(n)
        if self.dist == "beta":
            return rng.beta(self.a, self.b, n)
        if self.dist == "logitnormal":
            return special.expit(self.a + self.b * rng.standard_normal(n))
        return rng.uniform(self.a, self.b, n)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (exact, scipy)."""
        if self.dist == "point":
            return self.a
        if self.dist == "lognormal":
            return math.exp(self.a + self.b * stats.norm.ppf(q))
        if self.dist == "normal":
            return self.a + self.b * stats.norm.ppf(q)
        if self.dist == "beta":
            return float(stats.beta.ppf(q, self.a, self.b))
        if self.dist == "logitnormal":
            return float(special.expit(self.a + self.b * stats.norm.ppf(q)))
        return self.a + q * (self.b - self.a)

    @property
    def mean(self) -> float:
        """The exact mean (logitnormal: by 64-point Gauss-Hermite quadrature)."""
        if self.dist == "lognormal":
            return math.exp(self.a + 0.5 * self.b**2)
        if self.dist == "beta":
            return self.a / (self.a + self.b)
        if self.dist == "logitnormal":
            x, w = np.polynomial.hermite_e.hermegauss(64)
            return float(np.sum(w * special.expit(self.a + self.b * x)) / np.sqrt(2 * np.pi))
        if self.dist == "uniform":
            return 0.5 * (self.a + self.b)
        return self.a

    def describe(self) -> str:
        if self.dist == "point":
            return f"{self.a:.4g}"
        if self.dist == "lognormal":
            return f"lognormal(median {math.exp(self.a):.4g}, gsd {math.exp(self.b):.3g})"
        if self.dist == "beta":
            return f"beta({self.a:.3g}, {self.b:.3g})"
        if self.dist == "logitnormal":
            return f"logitnormal(median {special.expit(self.a):.3g}, sd {self.b:.3g})"
        return f"{self.dist}({self.a:.4g}, {self.b:.4g})"


def _number(field: str, value: Any) -> float:
    if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e9 / 1.0e9 without a sign as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(field, value, "a finite number")
    return float(value)


def parse_distribution(field: str, spec: Any, kind: Kind) -> Distribution:
    """A number or a ``{dist: ..., ...}`` mapping -> :class:`Distribution`, checked against ``kind``'s support."""
    if not isinstance(spec, Mapping):
        x = _number(field, spec)
        spec = {"dist": "point", "value": x}
    dist = spec.get("dist")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{field}.dist", dist, "one of " + ", ".join(DISTRIBUTIONS))
    if kind not in _SUPPORT[dist]:
        ok = [d for d in DISTRIBUTIONS if kind in _SUPPORT[d]]
        raise ConfigError(f"{field}.dist", dist, f"a distribution for a {kind} value: one of {', '.join(ok)}")
    keys = set(spec) - {"dist"}
    if keys not in _DIST_KEYS[dist]:
        forms = " or ".join("{" + ", ".join(sorted(k)) + "}" for k in _DIST_KEYS[dist])
        raise ConfigError(field, dict(spec), f"{dist} with keys {forms}")
    v = {k: _number(f"{field}.{k}", spec[k]) for k in keys}

    def pos(k: str) -> float:
        if v[k] <= 0:
            raise ConfigError(f"{field}.{k}", v[k], "a number > 0")
        return v[k]

    def prob(k: str) -> float:
        if not 0 < v[k] < 1:
            raise ConfigError(f"{field}.{k}", v[k], "a number in (0, 1)")
        return v[k]

    if dist == "point":
        x = v["value"]
        if kind == "positive" and x < 0:
            raise ConfigError(field, x, "a number >= 0")
        if kind == "probability" and not 0 <= x <= 1:
            raise ConfigError(field, x, "a probability in [0, 1]")
        return Distribution("point", x)
    if dist == "lognormal":
        if "gsd" in v:
            if pos("gsd") < 1:
                raise ConfigError(f"{field}.gsd", v["gsd"], "a geometric sd >= 1")
            return Distribution(dist, math.log(pos("median")), math.log(v["gsd"]))
        lo = math.log(pos("median")) if "median" in v else None
        hi = math.log(pos("p95"))
        if lo is None:
            lo5 = math.log(pos("p5"))
            if hi < lo5:
                raise ConfigError(f"{field}.p95", v["p95"], f"a number >= p5 ({v['p5']})")
            return Distribution(dist, 0.5 * (lo5 + hi), (hi - lo5) / (2 * _Z95))
        if hi < lo:
            raise ConfigError(f"{field}.p95", v["p95"], f"a number >= median ({v['median']})")
        return Distribution(dist, lo, (hi - lo) / _Z95)
    if dist == "normal":
        if v["sd"] < 0:
            raise ConfigError(f"{field}.sd", v["sd"], "a number >= 0")
        return Distribution(dist, v["mean"], v["sd"])
    if dist == "beta":
        if "mean" in v:
            m, c = prob("mean"), pos("concentration")
            return Distribution(dist, m * c, (1 - m) * c)
        return Distribution(dist, pos("alpha"), pos("beta"))
    if dist == "logitnormal":
        if v["sd"] < 0:
            raise ConfigError(f"{field}.sd", v["sd"], "a number >= 0")
        return Distribution(dist, float(special.logit(prob("median"))), v["sd"])
    lo, hi = v["low"], v["high"]
    if hi < lo:
        raise ConfigError(f"{field}.high", hi, f"a number >= low ({lo})")
    if kind == "positive" and lo <= 0:
        raise ConfigError(f"{field}.low", lo, "a number > 0 (the value must be positive)")
    if kind == "probability" and (lo < 0 or hi > 1):
        raise ConfigError(field, [lo, hi], "bounds inside [0, 1]")
    return Distribution(dist, lo, hi)


# ----------------------------------------------------------------------------------------------------------------
# the parameter file

#: top-level scalar inputs and their kinds
TOP = {
    "actors_per_year": "positive",  # novice actors attempting an attack per year (a)
    "damage_per_success": "positive",  # expected damage of one successful attack (D)
    "damage_gsd": "positive",  # geometric sd of one success's damage around its mean (realised-harm draws only)
    "skill_sd": "positive",  # sd of actor skill, in log-odds of every step's success
}
#: per-step inputs
STEP = {"p_success": "probability", "uplift": "real", "queries": "positive"}
#: safeguard inputs (what the scenarios override)
SAFEGUARDS = {
    "refusal_bypass": "probability",  # p. a hazardous query is answered (not refused), no universal jailbreak
    "give_up": "probability",  # p. a novice abandons the model after a refusal
    "detect": "probability",  # p. a hazardous query is flagged and the account banned
    "reenter": "probability",  # p. a banned actor comes back with a new account
    "jailbreak_detect": "probability",  # p. a query sent through a universal jailbreak is flagged
    "patch_months": "positive",  # months from a universal jailbreak being found to its patch
}
#: what each safeguard input is when there are no safeguards at all
NO_SAFEGUARDS = {
    "refusal_bypass": 1.0,
    "give_up": 0.0,
    "detect": 0.0,
    "reenter": 1.0,
    "jailbreak_detect": 0.0,
    "patch_months": 1e9,
}
JAILBREAK_FAMILIES = ("weibull", "lognormal")
_JB_DIRECT = {"weibull": {"shape": "positive", "scale_months": "positive"},
              "lognormal": {"mu_months": "real", "sigma": "positive"}}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class JailbreakSpec:
    """Time to find a universal jailbreak (months): ``family`` with its parameters given directly
    (``params``), or fitted to red-team data (``fit_csv``, hours of effort) and converted to months by
    ``effort_hours_per_month``, the bootstrap resamples carrying the fit's uncertainty into the scenarios."""

    family: str
    params: Mapping[str, Distribution] | None = None
    fit_csv: Path | None = None
    effort_hours_per_month: Distribution | None = None
    bootstrap: int = 200


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """A parsed, validated parameter file (module docstring)."""

    horizon_months: float
    scalars: Mapping[str, Distribution]  # TOP inputs
    step_names: tuple[str, ...]
    steps: tuple[Mapping[str, Distribution], ...]
    safeguards: Mapping[str, Distribution]
    jailbreak: JailbreakSpec
    scenarios: Mapping[str, Mapping[str, Distribution]]
    source: str = "<dict>"

    def safeguards_for(self, scenario: str | None) -> dict[str, Distribution]:
        """The safeguard inputs of ``scenario`` (None: the file's base ``safeguards``; ``"no_safeguards"``: the
        built-in :data:`NO_SAFEGUARDS`, unless the file defines a scenario of that name)."""
        if scenario is None:
            return dict(self.safeguards)
        if scenario in self.scenarios:
            return {**self.safeguards, **self.scenarios[scenario]}
        if scenario == "no_safeguards":
            return {k: Distribution("point", v) for k, v in NO_SAFEGUARDS.items()}
        names = ["no_safeguards", *self.scenarios]
        raise ConfigError("scenario", scenario, "one of " + ", ".join(names))


def _mapping(field: str, value: Any, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(field, value, "a mapping with keys " + ", ".join(sorted(allowed)))
    unknown = sorted(set(value) - allowed)
    if unknown:
        where = f"{field}.{unknown[0]}" if field else unknown[0]
        raise ConfigError(where, value[unknown[0]], "a known key: one of " + ", ".join(sorted(allowed)))
    missing = sorted(required - set(value))
    if missing:
        where = f"{field}.{missing[0]}" if field else missing[0]
        raise ConfigError(where, None, "a value (the key is required)")
    return value


def _parse_jailbreak(spec: Any, base: Path | None) -> JailbreakSpec:
    keys = {
        "family",
        "shape",
        "scale_months",
        "mu_months",
        "sigma",
        "fit_csv",
        "effort_hours_per_month",
        "bootstrap",
    }
    spec = _mapping("jailbreak", spec, keys, {"family"})
    family = spec["family"]
    if family not in JAILBREAK_FAMILIES:
        raise ConfigError("jailbreak.family", family, "one of " + ", ".join(JAILBREAK_FAMILIES))
    direct = _JB_DIRECT[family]
    other = set(_JB_DIRECT["weibull" if family == "lognormal" else "lognormal"])
    bad = sorted(other & set(spec))
    if bad:
        raise ConfigError(
            f"jailbreak.{bad[0]}", spec[bad[0]], f"a key of the {family} family: {sorted(direct)}"
        )
    if "fit_csv" in spec:
        extra = sorted(set(direct) & set(spec))
        if extra:
            raise ConfigError(f"jailbreak.{extra[0]}", spec[extra[0]], "absent when fit_csv is given")
        if "effort_hours_per_month" not in spec:
            raise ConfigError("jailbreak.effort_hours_per_month", None, "a value when fit_csv is given")
        path = Path(spec["fit_csv"])
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ConfigError("jailbreak.fit_csv", str(path), "the path of an existing CSV file")
        boot = spec.get("bootstrap", 200)
        if isinstance(boot, bool) or not isinstance(boot, int) or boot < 2:
            raise ConfigError("jailbreak.bootstrap", boot, "an integer >= 2")
        effort = parse_distribution(
            "jailbreak.effort_hours_per_month", spec["effort_hours_per_month"], "positive"
        )
        return JailbreakSpec(family, None, path, effort, boot)
    for k in ("effort_hours_per_month", "bootstrap"):
        if k in spec:
            raise ConfigError(f"jailbreak.{k}", spec[k], "absent unless fit_csv is given")
    missing = sorted(set(direct) - set(spec))
    if missing:
        raise ConfigError(
            f"jailbreak.{missing[0]}", None, f"a value (the {family} family needs {sorted(direct)})"
        )
    params = {k: parse_distribution(f"jailbreak.{k}", spec[k], kind) for k, kind in direct.items()}
    return JailbreakSpec(family, params)


def parse_params(data: Any, *, base_dir: Path | None = None, source: str = "<dict>") -> ModelParams:
    """Validate a parameter mapping (the parsed file) into :class:`ModelParams`; every error names the field's
    path (``steps[1].p_success.mean``, ``scenarios.rapid_response.detect``) and the accepted values."""
    top_keys = {"horizon_months", "steps", "safeguards", "jailbreak", "scenarios", *TOP}
    data = _mapping("", data, top_keys, {"horizon_months", "steps", "safeguards", "jailbreak", *TOP})
    horizon = _number("horizon_months", data["horizon_months"])
    if horizon <= 0:
        raise ConfigError("horizon_months", horizon, "a number > 0")
    scalars = {k: parse_distribution(k, data[k], kind) for k, kind in TOP.items()}
    if scalars["damage_gsd"].dist != "point" or scalars["damage_gsd"].a < 1:
        raise ConfigError("damage_gsd", data["damage_gsd"], "a number >= 1 (a point value: 1 = no spread)")
    raw_steps = data["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError("steps", raw_steps, "a non-empty list of steps {name, p_success, uplift, queries}")
    names, steps = [], []
    for i, st in enumerate(raw_steps):
        st = _mapping(f"steps[{i}]", st, {"name", *STEP}, {"name", *STEP})
        name = st["name"]
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"steps[{i}].name", name, "an identifier (letters, digits, _)")
        if name in names:
            raise ConfigError(f"steps[{i}].name", name, "a name not used by an earlier step")
        names.append(name)
        steps.append({k: parse_distribution(f"steps[{i}].{k}", st[k], kind) for k, kind in STEP.items()})
    sg = _mapping("safeguards", data["safeguards"], set(SAFEGUARDS), set(SAFEGUARDS))
    safeguards = {k: parse_distribution(f"safeguards.{k}", sg[k], kind) for k, kind in SAFEGUARDS.items()}
    jailbreak = _parse_jailbreak(data["jailbreak"], base_dir)
    raw_sc = data.get("scenarios", {}) or {}
    if not isinstance(raw_sc, Mapping):
        raise ConfigError("scenarios", raw_sc, "a mapping of scenario name -> safeguard overrides")
    scenarios = {}
    for name, over in raw_sc.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError("scenarios", name, "scenario names that are identifiers")
        over = _mapping(f"scenarios.{name}", over or {}, set(SAFEGUARDS), set())
        scenarios[name] = {
            k: parse_distribution(f"scenarios.{name}.{k}", v, SAFEGUARDS[k]) for k, v in over.items()
        }
    return ModelParams(horizon, scalars, tuple(names), tuple(steps), safeguards, jailbreak, scenarios, source)


def load_params(path: str | Path) -> ModelParams:
    """Read and validate a ``.yaml`` / ``.yml`` / ``.json`` parameter file (relative ``fit_csv`` paths are
    resolved against the file's folder)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("params", str(path), "the path of an existing .yaml/.yml/.json file")
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError("params", str(path), "a file ending in .yaml, .yml or .json")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(
            "params", str(path), f"valid {path.suffix[1:].upper()} ({err})".replace("\n", " ")
        ) from err
    try:
        return parse_params(data, base_dir=path.parent, source=str(path))
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err.field}", err.value, err.accepted) from None


# ----------------------------------------------------------------------------------------------------------------
# scenario draws


class Scenarios(dict):
    """Flat dict of float32 arrays, one joint draw per scenario (``S`` of them):

    - ``actors_per_year``, ``damage_per_success``, ``skill_sd``: ``[S]``;
    - ``p_success``, ``uplift``, ``queries``: ``[S, K]`` (K steps);
    - the safeguard inputs of :data:`SAFEGUARDS`: ``[S]`` each;
    - ``jb_a``, ``jb_b``: ``[S]`` the jailbreak-time distribution's parameters in months (weibull: shape, scale;
      lognormal: mu, sigma) and ``jb_z``: ``[S, cycles]`` standardised draws of the successive discovery gaps
      (:func:`standard_gap_draws`).
    """

    family: str = "weibull"


def _jailbreak_draws(spec: JailbreakSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    if spec.fit_csv is None:
        assert spec.params is not None
        a_name, b_name = _JB_DIRECT[spec.family]
        return spec.params[a_name].sample(rng, n), spec.params[b_name].sample(rng, n)
    from jaxsafety.uplift import survival

    data = survival.read_redteam_csv(spec.fit_csv)
    boot = survival.bootstrap_survival(
        data, spec.family, num_resamples=spec.bootstrap, seed=int(rng.integers(2**31))
    )
    ok = np.flatnonzero(np.asarray(boot["converged"]))  # resamples with an MLE (two distinct found times)
    if ok.size == 0:
        raise ConfigError(
            "jailbreak.fit_csv", str(spec.fit_csv), "data whose bootstrap resamples can be fitted"
        )
    pick = ok[rng.integers(ok.size, size=n)]
    effort = spec.effort_hours_per_month.sample(rng, n)  # hours -> months: t_months = t_hours / effort
    if spec.family == "weibull":
        return np.asarray(boot["shape"])[pick], np.asarray(boot["scale"])[pick] / effort
    return np.asarray(boot["mu"])[pick] - np.log(effort), np.asarray(boot["sigma"])[pick]


def standard_gap_draws(family: str, u: np.ndarray) -> np.ndarray:
    """The standardised form of uniforms ``u`` in which the model draws jailbreak-discovery gaps by one ``exp``
    (:func:`draw_scenarios` draws these directly; this maps given uniforms, e.g. for an independent check):
    weibull ``z = log(-log(1 - u))`` (the log of a unit exponential: gap = scale exp(z / shape)); lognormal
    ``z = Phi^-1(u)`` (gap = exp(mu + sigma z)). ``u`` is clipped to ``[1e-7, 1 - 1e-7]``."""
    u = np.clip(np.asarray(u, np.float64), 1e-7, 1 - 1e-7)
    return np.log(-np.log1p(-u)) if family == "weibull" else special.ndtri(u)


def draw_scenarios(
    params: ModelParams, num_scenarios: int, *, seed: int, scenario: str | None = None, cycles: int = 64
) -> Scenarios:
    """``num_scenarios`` joint draws of every input (independent across inputs), for the safeguards of
    ``scenario`` (see :meth:`ModelParams.safeguards_for`); deterministic in ``seed``. Draw order is fixed per
    input, so two scenarios drawn with one seed share every non-safeguard draw (common random numbers: their
    difference has less Monte Carlo noise)."""
    if isinstance(num_scenarios, bool) or not isinstance(num_scenarios, int) or num_scenarios < 1:
        raise ConfigError("num_scenarios", num_scenarios, "an integer >= 1")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise ConfigError("cycles", cycles, "an integer >= 1")
    safeguards = params.safeguards_for(scenario)
    n = num_scenarios
    ss = np.random.SeedSequence([seed, 97])
    streams = iter(np.random.default_rng(s) for s in ss.spawn(64))
    out = Scenarios()
    for k in TOP:
        out[k] = params.scalars[k].sample(next(streams), n)
    for k in STEP:
        rng = next(streams)
        out[k] = np.stack([step[k].sample(rng, n) for step in params.steps], axis=1)
    jb_a, jb_b = _jailbreak_draws(params.jailbreak, next(streams), n)
    out["jb_a"], out["jb_b"] = jb_a, jb_b
    gap_rng = next(streams)  # drawn directly in float32 (the 64 x S numbers are most of the drawing time)
    if params.jailbreak.family == "weibull":
        out["jb_z"] = np.log(np.maximum(gap_rng.standard_exponential((n, cycles), dtype=np.float32), 1e-30))
    else:
        out["jb_z"] = gap_rng.standard_normal((n, cycles), dtype=np.float32)
    for k in SAFEGUARDS:  # after every shared draw, so scenarios share them
        out[k] = safeguards[k].sample(next(streams), n)
    for k, v in out.items():
        out[k] = np.asarray(v, np.float32)
    out.family = params.jailbreak.family
    return out


def shift(x, delta, kind: Kind):
    """The sensitivity perturbation of a drawn input: ``x * exp(delta)`` (positive), ``sigmoid(logit(x) +
    delta)`` (probability; exact 0 and 1 stay put) or ``x + delta`` (real). Works on numpy and jax arrays."""
    import jax.numpy as jnp

    if kind == "positive":
        return x * jnp.exp(delta)
    if kind == "probability":
        # d/d delta of sigmoid(logit x + delta) at 0 is x (1 - x): written so that x in {0, 1} stays finite
        e = jnp.exp(delta)
        return x * e / (1 - x + x * e)
    return x + delta
