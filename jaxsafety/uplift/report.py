"""Safety-case report (Markdown + self-contained HTML) and the uplift plots it shows.

The report presents an evaluated claims-arguments-evidence tree (:func:`jaxsafety.uplift.case.evaluate_case`) the
way Clymer et al. 2025 (arXiv 2505.18003, Sec. 5 and Fig. 2) present their safety case: the claim tree with each
claim's verdict, the quantitative evidence behind each leaf (statistic, threshold, margin, fraction of scenarios
satisfying it), a tornado plot of the sensitivity of expected harm to each uncertain parameter (their Fig. 5), and
the distributions of harm over Monte Carlo scenarios with the unacceptable-harm threshold.

* ``report.html`` is self-contained: inline CSS, figures embedded as base64 ``data:`` URIs (the file can be moved
  or mailed alone), every text HTML-escaped.
* ``report.md`` references the figures by relative path; figures outside the report folder are copied next to it.

Files are written atomically (temp file in the same folder, then ``os.replace``), so a reader never sees a
half-written report and a failed run leaves the previous one intact.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from jaxsafety.config import ConfigError, first_bad, format_number
from jaxsafety.io import save_figure, write_atomic
from jaxsafety.uplift.case import CaseResult, ClaimResult

__all__ = [
    "LEAF_COLUMNS",
    "leaf_rows",
    "plot_distributions",
    "plot_over_time",
    "plot_tornado",
    "write_report",
]

LEAF_COLUMNS = (
    "claim",
    "metric",
    "statistic",
    "value",
    "op",
    "threshold",
    "margin",
    "prob_satisfied",
    "result",
)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f; }
main { max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
.verdict { font-size: 1.2em; font-weight: 600; padding: .5em .8em; border-radius: 4px; }
.verdict.pass { background: #e3f4e5; color: #1b5e20; } .verdict.fail { background: #fbe4e4; color: #8e1c1c; }
ul.tree, ul.tree ul { list-style: none; padding-left: 1.4em; margin: .2em 0; }
ul.tree { padding-left: 0; }
ul.tree li { margin: .25em 0; }
.mark { display: inline-block; min-width: 3.2em; text-align: center; font-weight: 700; font-size: .8em;
        border-radius: 3px; padding: 0 .3em; color: #fff; }
li.pass > .mark { background: #2e7d32; } li.fail > .mark { background: #c62828; }
li.pass > .text { color: #1b5e20; } li.fail > .text { color: #8e1c1c; }
.detail { color: #555; font-size: .9em; font-family: ui-monospace, monospace; }
.note { color: #666; font-size: .9em; font-style: italic; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-family: ui-monospace, monospace; }
tr.pass td.result { color: #1b5e20; font-weight: 600; } tr.fail td.result { color: #8e1c1c; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dl.meta dt { font-weight: 600; }
.wide { overflow-x: auto; }
@media print { main { max-width: none; margin: 0; } table { font-size: .72em; } }
"""


# ----------------------------------------------------------------------------------------------------------------
# shared pieces


def _num(x: float | None) -> str:
    return format_number(x, ".4g")


def leaf_rows(result: CaseResult) -> list[list[str]]:
    """One row of strings per evidence leaf, columns :data:`LEAF_COLUMNS` (``-`` where undefined)."""
    rows = []
    for r in result.leaves():
        ev = r.claim.evidence
        assert ev is not None
        metric = ev.metric if ev.month is None else f"{ev.metric}[month {ev.month}]"
        prob = "-" if r.prob_satisfied is None else format(r.prob_satisfied, ".3f")
        rows.append(
            [
                r.claim.id,
                metric,
                ev.statistic,
                _num(r.value),
                ev.op,
                _num(ev.threshold),
                _num(r.margin),
                prob,
                "PASS" if r.passed else "FAIL",
            ]
        )
    return rows


def _check_tables(tables: Mapping[str, Sequence[Sequence[str]]]) -> None:
    for name, rows in tables.items():
        if not rows or not rows[0]:
            raise ConfigError(f"tables[{name!r}]", rows, "a list of rows: a header row, then data rows")
        for i, row in enumerate(rows):
            if len(row) != len(rows[0]):
                raise ConfigError(
                    f"tables[{name!r}][{i}]", list(row), f"a row of {len(rows[0])} cells (the header's)"
                )


def _check_figures(figures: Mapping[str, str | Path]) -> dict[str, Path]:
    out = {}
    for name, p in figures.items():
        p = Path(p)
        if not p.is_file() or p.suffix.lower() not in _MIME:
            raise ConfigError(
                f"figures[{name!r}]", str(p), "the path of an existing .png/.jpg/.svg image file"
            )
        out[name] = p
    return out


def _markdown_figures(figures: Mapping[str, Path], out_dir: Path) -> dict[str, str]:
    """Relative path (from ``out_dir``) of each figure, copying those outside ``out_dir`` next to the report."""
    rel: dict[str, str] = {}
    taken: set[str] = set()
    root = out_dir.resolve()
    for name, p in figures.items():
        src = p.resolve()
        if src.is_relative_to(root):
            rel[name] = src.relative_to(root).as_posix()
            taken.add(rel[name])
    for name, p in figures.items():
        if name in rel:
            continue
        target, k = p.name, 1
        while target in taken:  # two figures with one file name from different folders
            target, k = f"{p.stem}_{k}{p.suffix}", k + 1
        taken.add(target)
        write_atomic(out_dir / target, p.read_bytes())
        rel[name] = target
    return rel


# ----------------------------------------------------------------------------------------------------------------
# Markdown


def _md(text: str) -> str:
    """Text safe inside Markdown (table cells included): raw HTML is not interpreted, pipes do not split cells.

    Only ``<`` that could open a tag (``<x``, ``</``, ``<!``, ``<?``) and ``&`` that could start an entity are
    escaped, so comparisons such as ``<=`` stay readable in the Markdown source."""
    text = re.sub(r"&(?=#?\w+;)", "&amp;", str(text))
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Sequence[str]]) -> list[str]:
    header, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(_md(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in body]
    return lines


def _md_tree(r: ClaimResult, depth: int, lines: list[str]) -> None:
    c = r.claim
    mark = "**PASS**" if r.passed else "**FAIL**"
    line = f"{'  ' * depth}- {mark} `{c.id}` {_md(c.text)}"
    ev = c.evidence
    if ev is None:
        line += f" _({c.argument} of {len(c.children)})_"
    else:
        line += f" -- `{ev.describe()} = {_num(r.value)} {ev.op} {_num(ev.threshold)}`"
        if ev.description:
            line += f" -- _{_md(ev.description)}_"
    lines.append(line)
    for child in r.children:
        _md_tree(child, depth + 1, lines)


def _markdown(
    result: CaseResult,
    title: str,
    fig_paths: Mapping[str, str],
    tables: Mapping[str, Sequence[Sequence[str]]],
) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    lines = [f"# {_md(title)}", "", f"**Overall: {verdict}** (root claim `{result.root.claim.id}`)", ""]
    lines += _meta_lines(result, lambda k, v: f"- {k}: `{v}`")
    lines += ["", "## Claims", ""]
    _md_tree(result.root, 0, lines)
    lines += ["", "## Evidence", ""]
    lines += _md_table([list(LEAF_COLUMNS), *leaf_rows(result)])
    lines += ["", "_margin_: distance of the statistic inside its threshold (positive = satisfied); "
              "_prob_satisfied_: fraction of scenarios whose own value satisfies the threshold."]  # fmt: skip
    if fig_paths:
        lines += ["", "## Figures", ""]
        for name, rel in fig_paths.items():
            lines += [f"![{_md(name)}]({quote(rel)})", "", f"_{_md(name)}_", ""]
    for name, rows in tables.items():
        lines += ["", f"## {_md(name)}", ""]
        lines += _md_table(rows)
    return "\n".join(lines).rstrip() + "\n"


def _meta_lines(result: CaseResult, fmt: Callable[[str, object], str]) -> list[str]:
    case = result.case
    items = [("case file", case.path), ("model parameters", case.model), ("scenario", case.scenario)]
    return [fmt(k, v) for k, v in items if v is not None]


# ----------------------------------------------------------------------------------------------------------------
# HTML


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_tree(r: ClaimResult, out: list[str]) -> None:
    c = r.claim
    status = "pass" if r.passed else "fail"
    out.append(f'<li class="{status}"><span class="mark">{status.upper()}</span> <b>{_e(c.id)}</b> ')
    out.append(f'<span class="text">{_e(c.text)}</span>')
    ev = c.evidence
    if ev is None:
        out.append(f' <span class="note">({_e(c.argument)} of {len(c.children)})</span>\n<ul>\n')
        for child in r.children:
            _html_tree(child, out)
        out.append("</ul>\n")
    else:
        detail = f"{ev.describe()} = {_num(r.value)} {ev.op} {_num(ev.threshold)}"
        out.append(f'<br><span class="detail">{_e(detail)}</span>')
        if ev.description:
            out.append(f' <span class="note">{_e(ev.description)}</span>')
    out.append("</li>\n")


def _html_table(
    rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = (), status_col: int | None = None
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in rows[0])
    body = []
    for row in rows[1:]:
        cls = f' class="{str(row[status_col]).lower()}"' if status_col is not None else ""
        cells = []
        for j, cell in enumerate(row):
            kind = "num" if j in numeric else ("result" if j == status_col else "")
            cells.append(f'<td class="{kind}">{_e(cell)}</td>' if kind else f"<td>{_e(cell)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    rows = "\n".join(body)
    return f'<div class="wide"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>\n'


def _html(
    result: CaseResult,
    title: str,
    figures: Mapping[str, Path],
    tables: Mapping[str, Sequence[Sequence[str]]],
) -> str:
    status = "pass" if result.passed else "fail"
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n",
        f"<h1>{_e(title)}</h1>\n",
        f'<p class="verdict {status}">Overall: {status.upper()} (root claim {_e(result.root.claim.id)})</p>\n',
    ]
    meta = _meta_lines(result, lambda k, v: f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>")
    if meta:
        out.append('<dl class="meta">' + "".join(meta) + "</dl>\n")
    out.append('<h2>Claims</h2>\n<ul class="tree">\n')
    _html_tree(result.root, out)
    out.append("</ul>\n<h2>Evidence</h2>\n")
    out.append(_html_table([list(LEAF_COLUMNS), *leaf_rows(result)], numeric=(3, 5, 6, 7), status_col=8))
    out.append(
        '<p class="note">margin: distance of the statistic inside its threshold (positive = satisfied); '
        "prob_satisfied: fraction of scenarios whose own value satisfies the threshold.</p>\n"
    )
    if figures:
        out.append("<h2>Figures</h2>\n")
        for name, p in figures.items():
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            mime = _MIME[p.suffix.lower()]
            out.append(
                f'<figure><img alt="{_e(name)}" src="data:{mime};base64,{data}">'
                f"<figcaption>{_e(name)}</figcaption></figure>\n"
            )
    for name, rows in tables.items():
        out.append(f"<h2>{_e(name)}</h2>\n" + _html_table(rows))
    out.append("</main>\n</body>\n</html>\n")
    return "".join(out)


def write_report(
    result: CaseResult,
    out_dir: str | Path,
    *,
    figures: Mapping[str, str | Path],
    tables: Mapping[str, Sequence[Sequence[str]]] | None = None,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/report.html`` for an evaluated safety case.

    ``figures``: caption -> image file (PNG, also JPEG/SVG), embedded in the HTML as data URIs and referenced by
    relative path from the Markdown (copied into ``out_dir`` if elsewhere). ``tables``: heading -> rows of cells,
    the first row being the header. ``title`` defaults to the case's title. Inputs are checked before anything is
    written. Returns ``(markdown_path, html_path)``.
    """
    tables = dict(tables or {})
    _check_tables(tables)
    figs = _check_figures(figures)
    title = title if title is not None else result.case.title
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = _markdown_figures(figs, out_dir)
    md_path = write_atomic(out_dir / "report.md", _markdown(result, title, rel, tables).encode("utf-8"))
    html_path = write_atomic(out_dir / "report.html", _html(result, title, figs, tables).encode("utf-8"))
    return md_path, html_path


# ----------------------------------------------------------------------------------------------------------------
# plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tornado(
    names: Sequence[str],
    low: Sequence[float] | np.ndarray,
    high: Sequence[float] | np.ndarray,
    base: float,
    path: str | Path,
    *,
    xlabel: str = "expected annual harm",
    log: bool = False,
    title: str | None = None,
) -> Path:
    """Tornado plot (one-at-a-time sensitivity; Clymer et al. 2025, Fig. 5): for parameter ``i`` a horizontal bar
    from ``base`` (the output at all-central parameters) to ``low[i]`` and one to ``high[i]`` (the output with
    parameter ``i`` at its low / high end), sorted by swing ``|high - low|``, largest on top. Shapes: ``names``,
    ``low``, ``high`` all [P]. Writes a PNG to ``path`` and returns it."""
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    n = len(names)
    if n == 0 or lo.shape != (n,) or hi.shape != (n,):
        raise ConfigError(
            "low/high", (lo.shape, hi.shape), f"two arrays of shape [{n}] (one entry per name), n > 0"
        )
    first_bad("low", ~np.isfinite(lo), lo, "finite numbers")
    first_bad("high", ~np.isfinite(hi), hi, "finite numbers")
    if not math.isfinite(base):
        raise ConfigError("base", base, "a finite number")
    if log:
        first_bad("low", lo <= 0, lo, "numbers > 0 (log=True)")
        first_bad("high", hi <= 0, hi, "numbers > 0 (log=True)")
        if base <= 0:
            raise ConfigError("base", base, "a number > 0 (log=True)")
    order = np.argsort(-np.abs(hi - lo), kind="stable")
    y = np.arange(n)[::-1]  # first in order (largest swing) on top
    plt = _pyplot()
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8, 0.45 * n + 1.6))
    colors = {"low": "#4c72b0", "high": "#dd8452"}
    for yi, i in zip(y, order, strict=True):
        # when both ends move the output the same way the bars overlap: draw the longer one first
        ends = sorted([("low", lo[i]), ("high", hi[i])], key=lambda e: -abs(e[1] - base))
        for end, value in ends:
            ax.barh(yi, value - base, left=base, height=0.6, color=colors[end], edgecolor="white", lw=0.5)
    handles = [Patch(color=colors[e], label=f"parameter at {e} end") for e in ("low", "high")]
    ax.axvline(base, color="k", lw=1)
    ax.set_yticks(y, [str(names[i]) for i in order])
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title or f"Sensitivity (base = {base:.3g})")
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    return save_figure(fig, path)


def plot_distributions(
    samples: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    threshold: float | None = None,
    log: bool = True,
    xlabel: str = "harm per scenario",
    title: str | None = None,
) -> Path:
    """Overlaid distributions of a per-scenario quantity (e.g. annual harm with/without safeguards, Clymer et al.
    2025 Sec. 5): left, histograms; right, exceedance curves ``P(X > x)``; ``threshold`` as a vertical line.
    ``samples``: label -> array [S]. With ``log=True`` the x axis is logarithmic and values <= 0 (no harm) cannot be
    drawn: their count is given in the legend. Writes a PNG to ``path`` and returns it."""
    if not samples:
        raise ConfigError("samples", {}, "a non-empty mapping of label -> samples [S]")
    arrays = {}
    for name, x in samples.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or x.size == 0:
            raise ConfigError(
                f"samples[{name!r}]", x.shape, "a non-empty 1-D array of per-scenario values [S]"
            )
        first_bad(f"samples[{name!r}]", ~np.isfinite(x), x, "finite numbers")
        arrays[str(name)] = x
    if threshold is not None and (not math.isfinite(threshold) or (log and threshold <= 0)):
        raise ConfigError("threshold", threshold, "a finite number" + (" > 0 (log=True)" if log else ""))
    everything = np.concatenate(list(arrays.values()))
    shown = everything[everything > 0] if log else everything
    if shown.size == 0:
        lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
    else:
        lo, hi = float(shown.min()), float(shown.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if log:
        lo, hi = (lo / 2, hi * 2) if hi > lo else (lo / 10, hi * 10)
        bins = np.geomspace(lo, hi, 41)
    else:
        pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo), 1.0) * 0.5
        bins = np.linspace(lo - pad, hi + pad, 41)
    plt = _pyplot()
    fig, (ax_h, ax_s) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, x in arrays.items():
        drawn = x[x > 0] if log else x
        label = name
        if log and drawn.size < x.size:
            label += f" ({x.size - drawn.size} of {x.size} at <= 0)"
        (line,) = ax_s.step(*_exceedance(x, bins), where="post", label=label)
        ax_h.hist(drawn, bins=bins, histtype="step", lw=1.6, color=line.get_color(), label=label)
    for ax in (ax_h, ax_s):
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        if threshold is not None:
            ax.axvline(threshold, color="r", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    ax_h.set_ylabel("scenarios")
    ax_s.set_ylabel("P(X > x)")
    ax_s.set_ylim(-0.02, 1.02)
    ax_h.legend(fontsize="small")
    ax_s.legend(fontsize="small")
    fig.suptitle(title or "Distribution over scenarios")
    return save_figure(fig, path)


def plot_over_time(
    series: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    threshold: float | None = None,
    ylabel: str = "expected harm per month",
    title: str | None = None,
    band: tuple[float, float] = (5.0, 95.0),
    band_for: Sequence[str] | None = None,
) -> Path:
    """Risk over the deployment (Clymer et al. 2025's deployment projection): for each label a per-scenario
    monthly series ``[S, M]``, drawn as the mean over scenarios with a ``band`` percentile ribbon (for the labels
    in ``band_for``; default all) on a log y axis; ``threshold`` as a horizontal line. Writes a PNG to ``path``
    and returns it."""
    if not series:
        raise ConfigError("series", {}, "a non-empty mapping of label -> per-scenario monthly values [S, M]")
    arrays = {}
    for name, x in series.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.size == 0:
            raise ConfigError(f"series[{name!r}]", x.shape, "a non-empty 2-D array [S, M]")
        first_bad(f"series[{name!r}]", ~np.isfinite(x), x, "finite numbers")
        arrays[str(name)] = x
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, x in arrays.items():
        months = np.arange(x.shape[1]) + 0.5
        lo, hi = np.percentile(x, band, axis=0)
        (line,) = ax.plot(months, x.mean(0), lw=1.8, label=f"{name} (mean)")
        if band_for is not None and name not in band_for:
            continue
        ax.fill_between(
            months, np.maximum(lo, 1e-300), np.maximum(hi, 1e-300), color=line.get_color(), alpha=0.15
        )
    if threshold is not None:
        ax.axhline(threshold, color="r", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("month of deployment")
    ax.set_ylabel(ylabel)
    ax.legend(
        fontsize="small", title=f"band: p{band[0]:g}-p{band[1]:g} over scenarios", title_fontsize="small"
    )
    ax.set_title(title or "Risk over the deployment")
    return save_figure(fig, path)


def _exceedance(x: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ``P(X > g)`` on ``grid`` (shape [G]) from samples ``x`` [S]: both arrays [G]."""
    xs = np.sort(x)
    return grid, 1.0 - np.searchsorted(xs, grid, side="right") / xs.size
