"""HTML report for `vigil demo`: what one simulated fleet run did, on one static page.

`write_report` turns a `DemoReport` (filled in by the demo from the pipeline's outputs) into
``index.html`` plus each plot as an SVG file under ``plots/``. The page inlines the same SVGs, so it
opens offline with no external resources. It shows:

* a summary table and the alerts raised;
* the cascade funnel: records reaching each stage, on a log axis;
* latency histograms per stage on shared log-spaced bins, with p50 and p99 marked;
* a health trend per pump (hourly mean edge score) with the edge threshold, alert spans shaded by
  severity and the simulated failure, faulty pumps first;
* the fall-detection cascade's summary, emergency alerts, funnel and latency, when the demo ran it.

Plots are matplotlib figures, the page is the Jinja2 template ``templates/report.html.j2``.
"""
from __future__ import annotations

import hashlib
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from matplotlib import ticker
from matplotlib.figure import Figure

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

SEVERITY_COLOURS = {
    "low": "#f2c94c",
    "medium": "#f2994a",
    "high": "#eb5757",
    "critical": "#9b1c1c",
}
UNKNOWN_SEVERITY_COLOUR = "#9e9e9e"
STAGE_COLOURS = ["#2f80ed", "#27ae60", "#9b51e0", "#f2994a", "#eb5757", "#56ccf2", "#6d4c41"]
TREND_COLOUR = "#2f80ed"
FAILURE_COLOUR = "#c0392b"
MUTED = "#666"

WIDE_IN = 7.5            # funnel and latency figures: 720 px at the browser's 96 px per inch
HEALTH_SIZE_IN = (4.2, 2.3)
LAT_BINS = 30

# Text stays <text> rather than glyph paths: the SVGs stay small, searchable and readable by tests.
STYLE = {
    "svg.fonttype": "none",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],  # DejaVu first: matplotlib lays text out with its metrics
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.edgecolor": "#ccc",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
}
# Jinja2 only autoescapes the extensions it is told about, and ours end in .j2.
_PAGES = Environment(loader=PackageLoader("vigil.streams.demo", "templates"),
                     autoescape=select_autoescape(("html", "j2")), trim_blocks=True, lstrip_blocks=True)


@dataclass
class AlertSpan:
    alert_id: str
    opened_ts_ms: int
    closed_ts_ms: int | None   # None: still open at the end of the run
    severity: str


@dataclass
class PumpTrace:
    asset_id: str
    fault: str | None
    failure_ts_ms: int | None
    hour_start_ms: list[int]
    health: list[float | None]
    threshold: float | None
    alerts: list[AlertSpan] = field(default_factory=list)


@dataclass
class FallSection:
    summary: list[tuple[str, str]]
    funnel: list[tuple[str, int]]
    latency_ms: dict[str, list[float]]
    alert_rows: list[dict[str, Any]]


@dataclass
class ModelSection:
    """The mid-run model change: what happened, each worker's switches, and the windows each edge version scored."""

    summary: list[tuple[str, str]]
    switch_rows: list[dict[str, Any]]
    version_rows: list[dict[str, Any]]


@dataclass
class DemoReport:
    title: str
    generated_at: str
    summary: list[tuple[str, str]]
    funnel: list[tuple[str, int]]
    latency_ms: dict[str, list[float]]
    pumps: list[PumpTrace]
    alert_rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    falls: FallSection | None = None
    models: ModelSection | None = None
    # Titled tables of the monitoring findings (drift, data quality, realised performance); empty without them.
    monitoring: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- numbers


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation, as numpy computes it; None for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90)
    4.6
    >>> percentile([], 99) is None
    True
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if len(values) == 0:
        return None
    return float(np.percentile(values, q))


def _fmt_ms(value: float) -> str:
    """Milliseconds with about three significant digits.

    >>> [_fmt_ms(v) for v in (0.123, 12.34, 1234.5)]
    ['0.12', '12.3', '1,234']
    """
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _log_edges(samples: np.ndarray, bins: int) -> np.ndarray | None:
    """Log-spaced bin edges over the positive samples; None when there are none (a log axis needs > 0)."""
    positive = samples[samples > 0]
    if positive.size == 0:
        return None
    lo, hi = positive.min(), positive.max()
    if hi <= lo * 1.0001:
        # One distinct value: widen so the single bin has a visible extent.
        lo, hi = lo / 1.5, hi * 1.5
    return np.geomspace(lo, hi, bins + 1)


def _log_ticks(lo: float, hi: float) -> np.ndarray:
    """Both ends of a log axis plus the powers of ten between them, so even a narrow axis gets labels."""
    decades = 10.0 ** np.arange(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    return np.array([lo, *decades[(decades > lo) & (decades < hi)], hi])


def _nice_step(span: float, max_ticks: int) -> float:
    for step in (0.25, 0.5, 1, 2, 7, 14, 28, 56):
        if span / step <= max_ticks:
            return step
    return span / max_ticks


# --------------------------------------------------------------------------- figures -> SVG


def _svg(fig: Figure, title: str, data: Any, tips: dict[str, str] | None = None) -> str:
    """The figure as a bare <svg> element (no XML prolog, so it can be inlined into HTML).

    `title` becomes the SVG's hover title; `tips` maps artist gids to hover text. A `Figure` made
    without pyplot is not tracked anywhere, so there is nothing to close: it goes with its last reference.
    """
    # SVG ids are hashes salted with the plotted data: the same data gives the same bytes, and two
    # figures inlined in one page never share an id (their clip paths would otherwise collide).
    salt = hashlib.sha256(repr(data).encode()).hexdigest()[:16]
    out = io.StringIO()
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": salt}):
        # No date, and no RDF metadata block at all: it would only repeat the title.
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = out.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = svg.replace(">", f">\n <title>{html.escape(title)}</title>", 1)  # after the <svg ...> tag
    for gid, text in (tips or {}).items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(text)}</title>', 1)
    return svg


@matplotlib.rc_context(STYLE)
def _message_svg(title: str, message: str) -> str:
    fig = Figure(figsize=(WIDE_IN, 0.6))
    fig.text(0.5, 0.5, message, ha="center", va="center", color=MUTED, gid="empty")
    return _svg(fig, title, message)


# --------------------------------------------------------------------------- funnel


def _share(count: int, previous: int | None) -> str:
    if previous is None:
        return ""
    if previous <= 0:
        return " (n/a of previous)"
    return f" ({100 * count / previous:.1f}% of previous)"


@matplotlib.rc_context(STYLE)
def funnel_svg(funnel: list[tuple[str, int]]) -> str:
    """Horizontal bars, one per stage, on a log axis; a count of 0 keeps its label but draws no bar."""
    title = "Cascade funnel"
    if not funnel:
        return _message_svg(title, "no funnel data")
    counts = np.array([count for _, count in funnel])
    rows = np.arange(len(funnel))
    fig = Figure(figsize=(WIDE_IN, 0.75 + 0.3 * len(funnel)), layout="constrained")
    ax = fig.add_subplot()
    # log10(1 + n) rather than log10(n), so that a count of 1 still shows a bar.
    ax.set_xscale("function", functions=(lambda x: np.log10(1 + np.maximum(x, 0)), lambda y: 10.0**y - 1))
    top_decade = max(1, math.ceil(math.log10(max(1, counts.max()))))
    decades = 10 ** np.arange(top_decade + 1)
    ax.set_xlim(0, decades[-1])
    ax.set_xticks(decades, labels=[f"{d:,}" for d in decades])
    ax.xaxis.grid(True, color="#e0e0e0")
    ax.set_axisbelow(True)
    ax.spines[["left", "bottom"]].set_visible(False)
    ax.tick_params(axis="both", length=0)
    ax.tick_params(axis="y", labelsize=8, labelcolor="#222")
    ax.set_yticks(rows, labels=[stage for stage, _ in funnel])
    ax.set_ylim(len(funnel) - 0.5, -0.5)  # first stage on top
    ax.set_title("records per stage (log scale)", loc="left", color="#444")
    shown = counts > 0
    bars = ax.barh(rows[shown], counts[shown], height=0.66, color=STAGE_COLOURS[0])
    tips = {}
    for bar, i in zip(bars, rows[shown]):
        bar.set_gid(f"bar-{i}")
        tips[f"bar-{i}"] = f"{funnel[i][0]}: {funnel[i][1]:,}"
    previous: int | None = None
    for i, (_, count) in enumerate(funnel):
        ax.annotate(f"{count:,}{_share(count, previous)}", (max(count, 0), i), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, annotation_clip=False)
        previous = count
    return _svg(fig, title, funnel, tips)


# --------------------------------------------------------------------------- latency


@matplotlib.rc_context(STYLE)
def latency_histogram_svg(latency_ms: dict[str, list[float]]) -> str:
    """One histogram panel per stage on shared log-spaced bins, p50 and p99 marked and in each legend."""
    title = "Latency per stage (ms, log scale)"
    if not latency_ms:
        return _message_svg(title, "no latency stages")
    stages = {stage: np.asarray(samples, dtype=float) for stage, samples in latency_ms.items()}
    edges = _log_edges(np.concatenate([np.empty(0), *stages.values()]), LAT_BINS)
    plotted = [edges is not None and samples.size > 0 for samples in stages.values()]
    # A stage with nothing to plot only needs its legend line.
    heights = [1.0 if p else 0.18 for p in plotted]
    fig = Figure(figsize=(WIDE_IN, 0.3 + 1.15 * sum(heights)), layout="constrained")
    fig.suptitle(title, x=0.01, ha="left", fontsize=8, color="#444")
    axes = fig.subplots(len(stages), 1, height_ratios=heights, squeeze=False)[:, 0]
    tips: dict[str, str] = {}
    for i, ((stage, samples), ax, has_plot) in enumerate(zip(stages.items(), axes, plotted)):
        if not has_plot:
            ax.axis("off")
            # Every sample across all stages is <= 0 ms when there are no edges: no log axis to bin on.
            legend = f"{stage}: no samples" if samples.size == 0 else f"{stage}: n={samples.size:,}, none > 0 ms"
            ax.set_title(legend, loc="left", color=MUTED, fontsize=8)
            continue
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        legend = f"{stage}: n={samples.size:,} · p50={_fmt_ms(p50)} ms · p99={_fmt_ms(p99)} ms"
        unbinned = int(np.count_nonzero(samples <= 0))
        if unbinned:
            legend += f" · {unbinned:,} ≤ 0 ms not binned"
        ax.set_title(legend, loc="left", fontweight="bold", fontsize=8)
        counts, _ = np.histogram(samples[samples > 0], bins=edges)
        nonzero = np.flatnonzero(counts)
        bars = ax.bar(edges[nonzero], counts[nonzero], width=np.diff(edges)[nonzero], align="edge",
                      color=STAGE_COLOURS[i % len(STAGE_COLOURS)], alpha=0.75, edgecolor="white", linewidth=0.5)
        for bar, k in zip(bars, nonzero):
            bar.set_gid(f"bin-{i}-{k}")
            tips[f"bin-{i}-{k}"] = f"{_fmt_ms(edges[k])}–{_fmt_ms(edges[k + 1])} ms: {counts[k]}"
        for name, value, dash in (("p50", p50, "--"), ("p99", p99, ":")):
            if value > 0:
                ax.axvline(value, color="#222", linestyle=dash, linewidth=1.2, gid=f"{name}-{i}")
                ax.annotate(name, (value, 1), xycoords=("data", "axes fraction"), xytext=(2, -1),
                            textcoords="offset points", va="top", fontsize=7, color="#222")
        ax.set_xscale("log")
        ax.set_xlim(edges[0], edges[-1])
        ticks = _log_ticks(edges[0], edges[-1])
        ax.set_xticks(ticks, labels=[_fmt_ms(t) for t in ticks])
        ax.minorticks_off()  # decade labels suffice; minor ticks on six log axes cost more time than the rest of the report
        ax.set_ylim(0, max(1, counts.max()) * 1.05)
        ax.yaxis.set_major_locator(ticker.MaxNLocator(3, integer=True))
    return _svg(fig, title, latency_ms, tips)


# --------------------------------------------------------------------------- health trends


@matplotlib.rc_context(STYLE)
def health_trend_svg(pump: PumpTrace, start_ms: int, end_ms: int) -> str:
    """Health 0..1 over event time in days from start_ms, with threshold, alert spans and failure marker."""
    title = f"{pump.asset_id} — {'fault: ' + pump.fault if pump.fault else 'healthy'}"
    span_days = max(end_ms - start_ms, 1) / DAY_MS

    def days(ts_ms: Any) -> Any:
        return (np.asarray(ts_ms, dtype=float) - start_ms) / DAY_MS

    # Fixed margins rather than constrained layout: every health plot has the same labels' extent, and
    # layout would more than double the time a fleet's worth of them takes.
    fig = Figure(figsize=HEALTH_SIZE_IN)
    fig.subplots_adjust(left=0.075, right=0.965, bottom=0.12, top=0.89)
    ax = fig.add_subplot(facecolor="#fafafa")
    ax.spines[["top", "right"]].set_visible(True)
    ax.set_title(title, loc="left", fontweight="bold")
    ax.set_xlim(0, span_days)
    ax.set_ylim(-0.03, 1.03)
    ax.set_yticks([0, 0.5, 1], labels=["0", "0.5", "1"])
    ticks = np.arange(0, span_days + 1e-9, _nice_step(span_days, 8))
    ax.set_xticks(ticks, labels=[f"{t:g}d" for t in ticks])
    tips = {}
    for k, alert in enumerate(pump.alerts):
        opened = max(alert.opened_ts_ms, start_ms)
        closed = min(end_ms if alert.closed_ts_ms is None else alert.closed_ts_ms, end_ms)
        if closed < opened:
            continue
        state = "open" if alert.closed_ts_ms is None else "closed"
        ax.axvspan(days(opened), days(closed), color=SEVERITY_COLOURS.get(alert.severity.lower(), UNKNOWN_SEVERITY_COLOUR),
                   alpha=0.3, linewidth=0, gid=f"alert-{k}")
        tips[f"alert-{k}"] = f"{alert.alert_id} ({alert.severity}, {state})"
    if pump.threshold is not None:
        ax.axhline(pump.threshold, color="#555", linestyle=(0, (5, 3)), linewidth=1, gid="threshold")
        tips["threshold"] = f"edge threshold {pump.threshold:.3g}"
    if any(v is not None for v in pump.health):
        # Plot at mid-bucket (the value is the mean over the hour that starts there) and break the line
        # where a bucket has no score (NaN) or the next bucket is more than an hour later.
        x = days(np.asarray(pump.hour_start_ms, dtype=float) + HOUR_MS / 2)
        y = np.clip(np.array(pump.health, dtype=float), 0, 1)
        gaps = np.flatnonzero(np.diff(pump.hour_start_ms) > 1.5 * HOUR_MS) + 1
        x, y = np.insert(x, gaps, np.nan), np.insert(y, gaps, np.nan)
        ax.plot(x, y, color=TREND_COLOUR, linewidth=1, gid="health")
        # A scored bucket with no scored neighbour would be an invisible line of one point.
        padded = np.pad(np.isnan(y), 1, constant_values=True)
        lone = ~padded[1:-1] & padded[:-2] & padded[2:]
        if lone.any():
            ax.plot(x[lone], y[lone], "o", color=TREND_COLOUR, markersize=2, gid="health-dots")
    else:
        ax.text(0.5, 0.5, "no scored windows", transform=ax.transAxes, ha="center", va="center", color=MUTED, gid="empty")
    if pump.failure_ts_ms is not None and start_ms <= pump.failure_ts_ms <= end_ms:
        ax.axvline(days(pump.failure_ts_ms), color=FAILURE_COLOUR, linewidth=1.5, gid="failure")
        tips["failure"] = "simulated failure"
        ax.annotate("failure", (days(pump.failure_ts_ms), 1), xycoords=("data", "axes fraction"), xytext=(-3, -2),
                    textcoords="offset points", ha="right", va="top", fontsize=7, color=FAILURE_COLOUR)
    return _svg(fig, title, (pump, start_ms, end_ms), tips)


def _fleet_range(pumps: list[PumpTrace]) -> tuple[int, int]:
    """One event-time axis for every pump so their plots line up."""
    starts = [ts for p in pumps for ts in p.hour_start_ms[:1]] + [a.opened_ts_ms for p in pumps for a in p.alerts]
    ends = ([p.hour_start_ms[-1] + HOUR_MS for p in pumps if p.hour_start_ms]
            + [a.closed_ts_ms for p in pumps for a in p.alerts if a.closed_ts_ms is not None]
            + [p.failure_ts_ms for p in pumps if p.failure_ts_ms is not None])
    if not starts:
        return 0, DAY_MS
    start = min(starts)
    return start, max([start + HOUR_MS, *ends])


# --------------------------------------------------------------------------- page


def safe_file_stem(asset_id: str) -> str:
    """An asset id as a file-name part: keeps [A-Za-z0-9._-], replaces anything else with "_".

    >>> safe_file_stem("pump/04 <east>")
    'pump_04__east_'
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", asset_id) or "_"


def _health_files(pumps: list[PumpTrace]) -> list[str]:
    """A distinct file name per pump; ids that sanitise alike get a numeric suffix."""
    used: set[str] = set()
    names = []
    for pump in pumps:
        stem = f"health-{safe_file_stem(pump.asset_id)}"
        name, n = f"{stem}.svg", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.svg"
        used.add(name)
        names.append(name)
    return names


def _columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """A table from dict rows: the union of their keys in first-seen order; a missing cell stays empty."""
    header = list(dict.fromkeys(key for row in rows for key in row))
    return header, [[row.get(key, "") for key in header] for row in rows]


def write_report(report: DemoReport, out_dir: Path) -> Path:
    """Write out_dir/index.html and out_dir/plots/*.svg; return the index path. Creates out_dir; overwrites previous files."""
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    # Health plots are named after pumps, so a previous run's fleet would otherwise leave stale files.
    for stale in plots.glob("*.svg"):
        stale.unlink()

    start_ms, end_ms = _fleet_range(report.pumps)
    svgs = {"funnel.svg": funnel_svg(report.funnel), "latency.svg": latency_histogram_svg(report.latency_ms)}
    health_groups: dict[str, list[str]] = {"Simulated faults": [], "Healthy": []}
    ordered = sorted(report.pumps, key=lambda p: p.fault is None)
    for pump, name in zip(ordered, _health_files(ordered)):
        svgs[name] = health_trend_svg(pump, start_ms, end_ms)
        health_groups["Simulated faults" if pump.fault is not None else "Healthy"].append(name)
    if report.falls is not None:
        svgs["falls-funnel.svg"] = funnel_svg(report.falls.funnel)
        svgs["falls-latency.svg"] = latency_histogram_svg(report.falls.latency_ms)
    for name, svg in svgs.items():
        (plots / name).write_text(svg, encoding="utf-8")

    page = _PAGES.get_template("report.html.j2").render(
        report=report,
        svgs={name: Markup(svg) for name, svg in svgs.items()},  # our own SVG markup; its text is escaped by matplotlib
        health_groups=health_groups,
        alerts=_columns(report.alert_rows),
        fall_alerts=_columns(report.falls.alert_rows) if report.falls is not None else None,
        model_switches=_columns(report.models.switch_rows) if report.models is not None else None,
        model_versions=_columns(report.models.version_rows) if report.models is not None else None,
        monitoring={title: _columns(rows) for title, rows in report.monitoring.items()},
        severities=[*SEVERITY_COLOURS.items(), ("other", UNKNOWN_SEVERITY_COLOUR)],
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
