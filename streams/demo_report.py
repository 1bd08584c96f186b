"""HTML report for `vigil demo`: hand-made SVG plots of a simulated fleet run.

`write_report` turns a `DemoReport` (filled in by the demo from the pipeline's
outputs) into one static page, ``index.html``, plus the same plots as separate
files under ``plots/``: the cascade funnel, per-stage latency histograms and a
health trend per pump with its alert spans. Standard library only, so the demo
needs no plotting dependency and the page has no external resources.
"""
from __future__ import annotations

import html
import math
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SVG_NS = "http://www.w3.org/2000/svg"

SEVERITY_COLOURS = {
    "low": "#f2c94c",
    "medium": "#f2994a",
    "high": "#eb5757",
    "critical": "#9b1c1c",
}
UNKNOWN_SEVERITY_COLOUR = "#9e9e9e"
STAGE_COLOURS = ["#2f80ed", "#27ae60", "#9b51e0", "#f2994a", "#eb5757", "#56ccf2", "#6d4c41"]

FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"


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


# --------------------------------------------------------------------------- SVG primitives


def _num(value: float) -> str:
    return f"{value:.1f}"


def _attrs(attrs: dict[str, Any]) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        text = _num(value) if isinstance(value, float) else str(value)
        parts.append(f' {name}="{html.escape(text, quote=True)}"')
    return "".join(parts)


def _el(tag: str, content: str | None = None, **attrs: Any) -> str:
    """One SVG element; `content` is raw markup (escape text with `_text`)."""
    if content is None:
        return f"<{tag}{_attrs(attrs)}/>"
    return f"<{tag}{_attrs(attrs)}>{content}</{tag}>"


def _text(x: float, y: float, text: str, **attrs: Any) -> str:
    return _el("text", html.escape(text), x=float(x), y=float(y), **attrs)


def _hover(text: str) -> str:
    return _el("title", html.escape(text))


def _document(width: int, height: int, title: str, body: Iterable[str]) -> str:
    head = (
        f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" font-family="{html.escape(FONT, quote=True)}" font-size="11">'
    )
    return "".join([head, _hover(title), *body, "</svg>"])


def _message(width: int, height: int, title: str, message: str) -> str:
    return _document(width, height, title, [
        _text(width / 2, height / 2, message, text_anchor="middle", fill="#666", class_="empty"),
    ])


# --------------------------------------------------------------------------- numbers


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default; None for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([], 99) is None
    True
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def _fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _nice_step(span: float, max_ticks: int) -> float:
    for step in (0.25, 0.5, 1, 2, 7, 14, 28, 56):
        if span / step <= max_ticks:
            return step
    return span / max_ticks


# --------------------------------------------------------------------------- funnel

FUNNEL_WIDTH = 720
FUNNEL_LABEL_W = 150
FUNNEL_VALUE_W = 190
FUNNEL_ROW_H = 30
FUNNEL_TOP = 30


def _share(count: int, previous: int | None) -> str:
    if previous is None:
        return ""
    if previous <= 0:
        return " (n/a of previous)"
    return f" ({100 * count / previous:.1f}% of previous)"


def funnel_svg(funnel: list[tuple[str, int]]) -> str:
    """Horizontal bars, one per stage, on a log scale; a count of 0 keeps its label but draws no bar."""
    title = "Cascade funnel"
    if not funnel:
        return _message(FUNNEL_WIDTH, 60, title, "no funnel data")
    height = FUNNEL_TOP + FUNNEL_ROW_H * len(funnel) + 24
    plot_w = FUNNEL_WIDTH - FUNNEL_LABEL_W - FUNNEL_VALUE_W
    top_decade = max(1, math.ceil(math.log10(max(1, max(c for _, c in funnel)))))
    # log10(1 + n) rather than log10(n) so that a count of 1 still shows a bar.
    scale_max = math.log10(1 + 10**top_decade)

    def bar_w(count: float) -> float:
        return plot_w * math.log10(1 + count) / scale_max

    body = [_text(FUNNEL_LABEL_W, 16, "records per stage (log scale)", fill="#444")]
    axis_y = FUNNEL_TOP + FUNNEL_ROW_H * len(funnel)
    for decade in range(top_decade + 1):
        x = FUNNEL_LABEL_W + bar_w(10**decade)
        body.append(_el("line", x1=x, x2=x, y1=float(FUNNEL_TOP - 4), y2=float(axis_y), stroke="#e0e0e0"))
        body.append(_text(x, axis_y + 14, f"{10**decade:,}", text_anchor="middle", fill="#666", font_size=10))
    previous: int | None = None
    for i, (stage, count) in enumerate(funnel):
        y = FUNNEL_TOP + i * FUNNEL_ROW_H
        mid = y + FUNNEL_ROW_H / 2 + 4
        body.append(_text(FUNNEL_LABEL_W - 8, mid, stage, text_anchor="end"))
        width = bar_w(count) if count > 0 else 0.0
        if count > 0:
            body.append(_el("rect", _hover(f"{stage}: {count:,}"), class_="bar", x=float(FUNNEL_LABEL_W),
                            y=float(y + 5), width=width, height=float(FUNNEL_ROW_H - 10),
                            fill=STAGE_COLOURS[0], rx=2))
        body.append(_text(FUNNEL_LABEL_W + width + 6, mid, f"{count:,}{_share(count, previous)}", class_="value"))
        previous = count
    return _document(FUNNEL_WIDTH, height, title, body)


# --------------------------------------------------------------------------- latency

LAT_WIDTH = 720
LAT_LEFT = 50
LAT_RIGHT = 20
LAT_PANEL_H = 110
LAT_EMPTY_H = 24
LAT_BAR_H = 60
LAT_BINS = 30


def _log_edges(values: Iterable[float], bins: int) -> list[float]:
    positive = [v for v in values if v > 0]
    if not positive:
        return []
    lo, hi = min(positive), max(positive)
    if hi <= lo * 1.0001:
        # One distinct value: widen so the single bin has a visible extent.
        lo, hi = lo / 1.5, hi * 1.5
    ratio = hi / lo
    return [lo * ratio ** (i / bins) for i in range(bins + 1)]


def _histogram(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        if v <= 0:
            continue
        counts[min(bisect_right(edges, v) - 1, len(counts) - 1)] += 1
    return counts


def _log_ticks(lo: float, hi: float) -> list[float]:
    decades = [10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inner = [d for d in decades if lo < d < hi]
    return [lo, *inner, hi]


def _latency_panel(stage: str, samples: list[float], edges: list[float], colour: str, top: float) -> list[str]:
    plot_w = LAT_WIDTH - LAT_LEFT - LAT_RIGHT
    base = top + 22 + LAT_BAR_H
    if not samples:
        return [_text(LAT_LEFT, top + 14, f"{stage}: no samples", class_="legend", fill="#666")]
    if not edges:
        # Every sample across all stages is ≤ 0 ms, so there is no log axis to bin on.
        return [_text(LAT_LEFT, top + 14, f"{stage}: n={len(samples):,}, none > 0 ms", class_="legend")]
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    unbinned = sum(1 for v in samples if v <= 0)
    legend = f"{stage}: n={len(samples):,} · p50={_fmt_ms(p50)} ms · p99={_fmt_ms(p99)} ms"
    if unbinned:
        legend += f" · {unbinned:,} ≤ 0 ms not binned"
    out = [_text(LAT_LEFT, top + 14, legend, class_="legend", font_weight="600")]
    log_lo, log_span = math.log10(edges[0]), math.log10(edges[-1]) - math.log10(edges[0])

    def x_of(v: float) -> float:
        v = min(max(v, edges[0]), edges[-1])
        return LAT_LEFT + plot_w * (math.log10(v) - log_lo) / log_span

    counts = _histogram(samples, edges)
    peak = max(counts) or 1
    for count, left, right in zip(counts, edges, edges[1:]):
        if count:
            h = LAT_BAR_H * count / peak
            out.append(_el("rect", _hover(f"{_fmt_ms(left)}–{_fmt_ms(right)} ms: {count}"), class_="bin",
                           x=x_of(left), y=base - h, width=max(x_of(right) - x_of(left) - 0.5, 0.5),
                           height=h, fill=colour, fill_opacity="0.75"))
    out.append(_el("line", x1=float(LAT_LEFT), x2=float(LAT_LEFT + plot_w), y1=base, y2=base, stroke="#888"))
    for name, value, dash in (("p50", p50, "4 2"), ("p99", p99, "1 2")):
        if value is not None and value > 0:
            x = x_of(value)
            out.append(_el("line", class_=name, x1=x, x2=x, y1=base - LAT_BAR_H - 4, y2=base,
                           stroke="#222", stroke_dasharray=dash, stroke_width=1.5))
            out.append(_text(x + 3, base - LAT_BAR_H + 4, name, font_size=9, fill="#222"))
    for tick in _log_ticks(edges[0], edges[-1]):
        out.append(_text(x_of(tick), base + 13, _fmt_ms(tick), text_anchor="middle", font_size=9, fill="#666"))
    return out


def latency_histogram_svg(latency_ms: dict[str, list[float]]) -> str:
    """One histogram panel per stage on shared log-spaced bins, p50 and p99 marked and in each legend."""
    title = "Latency per stage (ms, log scale)"
    if not latency_ms:
        return _message(LAT_WIDTH, 60, title, "no latency stages")
    edges = _log_edges((v for samples in latency_ms.values() for v in samples), LAT_BINS)
    body = [_text(LAT_LEFT, 16, title, fill="#444")]
    top = 24.0
    for i, (stage, samples) in enumerate(latency_ms.items()):
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        body.extend(_latency_panel(stage, samples, edges, colour, top))
        # A stage with nothing to plot only needs its legend line.
        top += LAT_PANEL_H if samples and edges else LAT_EMPTY_H
    return _document(LAT_WIDTH, math.ceil(top) + 6, title, body)


# --------------------------------------------------------------------------- health trends

HEALTH_WIDTH = 360
HEALTH_HEIGHT = 200
HEALTH_LEFT = 34
HEALTH_RIGHT = 10
HEALTH_TOP = 26
HEALTH_BOTTOM = 28


@dataclass(frozen=True)
class _Frame:
    start_ms: int
    end_ms: int
    x0: float = HEALTH_LEFT
    y0: float = HEALTH_TOP
    w: float = HEALTH_WIDTH - HEALTH_LEFT - HEALTH_RIGHT
    h: float = HEALTH_HEIGHT - HEALTH_TOP - HEALTH_BOTTOM

    def x(self, ts_ms: float) -> float:
        return self.x0 + self.w * (ts_ms - self.start_ms) / max(self.end_ms - self.start_ms, 1)

    def y(self, health: float) -> float:
        return self.y0 + self.h * (1 - min(max(health, 0.0), 1.0))


def _health_segments(starts: list[int], health: list[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of scored buckets, split where a bucket has no score or the next bucket is more than an hour later."""
    segments: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    previous_start: int | None = None
    for start, value in zip(starts, health):
        contiguous = previous_start is not None and start - previous_start <= HOUR_MS * 1.5
        if value is None or not contiguous:
            if current:
                segments.append(current)
            current = []
        if value is not None:
            # Plot at mid-bucket: the value is the mean over the hour that starts here.
            current.append((start + HOUR_MS // 2, value))
        previous_start = start
    if current:
        segments.append(current)
    return segments


def _axes(frame: _Frame) -> list[str]:
    out = [_el("rect", class_="frame", x=frame.x0, y=frame.y0, width=frame.w, height=frame.h,
               fill="#fafafa", stroke="#ccc")]
    for level in (0.0, 0.5, 1.0):
        y = frame.y(level)
        out.append(_text(frame.x0 - 4, y + 3, f"{level:g}", text_anchor="end", font_size=9, fill="#666"))
    days = (frame.end_ms - frame.start_ms) / DAY_MS
    step = _nice_step(days, 8)
    tick = 0.0
    while tick <= days + 1e-9:
        x = frame.x(frame.start_ms + tick * DAY_MS)
        out.append(_el("line", x1=x, x2=x, y1=frame.y0 + frame.h, y2=frame.y0 + frame.h + 3, stroke="#888"))
        out.append(_text(x, frame.y0 + frame.h + 13, f"{tick:g}d", text_anchor="middle", font_size=9, fill="#666"))
        tick += step
    return out


def _alert_rects(alerts: list[AlertSpan], frame: _Frame) -> list[str]:
    out = []
    for alert in alerts:
        opened = max(alert.opened_ts_ms, frame.start_ms)
        closed = min(frame.end_ms if alert.closed_ts_ms is None else alert.closed_ts_ms, frame.end_ms)
        if closed < opened:
            continue
        colour = SEVERITY_COLOURS.get(alert.severity.lower(), UNKNOWN_SEVERITY_COLOUR)
        state = "open" if alert.closed_ts_ms is None else "closed"
        out.append(_el("rect", _hover(f"{alert.alert_id} ({alert.severity}, {state})"), class_="alert",
                       x=frame.x(opened), y=frame.y0, width=frame.x(closed) - frame.x(opened), height=frame.h,
                       fill=colour, fill_opacity="0.3"))
    return out


def _trend_lines(pump: PumpTrace, frame: _Frame) -> list[str]:
    out = []
    for segment in _health_segments(pump.hour_start_ms, pump.health):
        if len(segment) == 1:
            # A lone bucket would be an invisible one-point polyline.
            [(ts, value)] = segment
            out.append(_el("circle", class_="health-dot", cx=frame.x(ts), cy=frame.y(value), r=1.5, fill="#2f80ed"))
        else:
            points = " ".join(f"{frame.x(ts):.1f},{frame.y(v):.1f}" for ts, v in segment)
            out.append(_el("polyline", class_="health", points=points, fill="none", stroke="#2f80ed",
                           stroke_width=1.2, stroke_linejoin="round"))
    return out


def health_trend_svg(pump: PumpTrace, start_ms: int, end_ms: int) -> str:
    """Health 0..1 over event time in days from start_ms, with threshold, alert spans and failure marker."""
    frame = _Frame(start_ms, end_ms)
    title = f"{pump.asset_id} — {'fault: ' + pump.fault if pump.fault else 'healthy'}"
    body = [_text(frame.x0, 16, title, font_weight="600", font_size=12, class_="title"), *_axes(frame)]
    body += _alert_rects(pump.alerts, frame)
    if pump.threshold is not None:
        y = frame.y(pump.threshold)
        body.append(_el("line", _hover(f"edge threshold {pump.threshold:.3g}"), class_="threshold",
                        x1=frame.x0, x2=frame.x0 + frame.w, y1=y, y2=y, stroke="#555", stroke_dasharray="5 3"))
    body += _trend_lines(pump, frame)
    if not any(v is not None for v in pump.health):
        body.append(_text(frame.x0 + frame.w / 2, frame.y0 + frame.h / 2, "no scored windows",
                          text_anchor="middle", fill="#666", class_="empty"))
    if pump.failure_ts_ms is not None and start_ms <= pump.failure_ts_ms <= end_ms:
        x = frame.x(pump.failure_ts_ms)
        body.append(_el("line", _hover("simulated failure"), class_="failure", x1=x, x2=x, y1=frame.y0,
                        y2=frame.y0 + frame.h, stroke="#c0392b", stroke_width=1.5))
        body.append(_text(x - 3, frame.y0 + 10, "failure", text_anchor="end", font_size=9, fill="#c0392b"))
    return _document(HEALTH_WIDTH, HEALTH_HEIGHT, title, body)


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


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #222;
       max-width: 1200px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
section { margin: 2rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.3rem 0.8rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
figure { margin: 0.5rem 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.8rem; color: #666; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 0.8rem; }
.grid figure { border: 1px solid #eee; border-radius: 4px; padding: 0.3rem; margin: 0; }
.legend span { display: inline-block; margin-right: 1rem; font-size: 0.85rem; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin-right: 0.3em; opacity: 0.6; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str] | None, rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p>{_e(empty)}</p>"
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _alerts_table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return _table(columns, [[row.get(c, "") for c in columns] for row in rows], "No alerts were raised.")


def _figure(svg: str, file_name: str) -> str:
    href = html.escape(f"plots/{file_name}", quote=True)
    return f'<figure>{svg}<figcaption><a href="{href}">{_e(file_name)}</a></figcaption></figure>'


def _section(anchor: str, heading: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(heading)}</h2>{content}</section>'


def _severity_legend() -> str:
    items = [f'<span><i class="swatch" style="background:{c}"></i>{_e(s)}</span>'
             for s, c in [*SEVERITY_COLOURS.items(), ("other", UNKNOWN_SEVERITY_COLOUR)]]
    return ('<p class="legend">Alert spans: ' + "".join(items)
            + "<span>dashed line: edge flag threshold</span><span>red line: simulated failure</span></p>")


def safe_file_stem(asset_id: str) -> str:
    """An asset id as a file-name part: keeps [A-Za-z0-9._-], replaces anything else with "_"."""
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


def _health_section(groups: list[tuple[str, list[tuple[str, str]]]]) -> str:
    parts = [_severity_legend()]
    for heading, figures in groups:
        if figures:
            parts.append(f"<h3>{_e(heading)} ({len(figures)})</h3>")
            parts.append('<div class="grid">' + "".join(_figure(svg, name) for name, svg in figures) + "</div>")
    if len(parts) == 1:
        parts.append("<p>No pumps.</p>")
    return "".join(parts)


def write_report(report: DemoReport, out_dir: Path) -> Path:
    """Write out_dir/index.html and out_dir/plots/*.svg; return the index path. Creates out_dir; overwrites previous files."""
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    # Health plots are named after pumps, so a previous run's fleet would otherwise leave stale files.
    for stale in plots.glob("*.svg"):
        stale.unlink()

    start_ms, end_ms = _fleet_range(report.pumps)
    ordered = sorted(report.pumps, key=lambda p: p.fault is None)
    files = {"funnel.svg": funnel_svg(report.funnel), "latency.svg": latency_histogram_svg(report.latency_ms)}
    faulty: list[tuple[str, str]] = []
    healthy: list[tuple[str, str]] = []
    for pump, name in zip(ordered, _health_files(ordered)):
        files[name] = health_trend_svg(pump, start_ms, end_ms)
        (faulty if pump.fault is not None else healthy).append((name, files[name]))
    falls_html = ""
    if report.falls is not None:
        files["falls-funnel.svg"] = funnel_svg(report.falls.funnel)
        files["falls-latency.svg"] = latency_histogram_svg(report.falls.latency_ms)
        falls_html = _section("falls", "Fall detection", "".join([
            _table(None, [list(r) for r in report.falls.summary], "No summary."),
            "<h3>Emergency alerts</h3>", _table(list(report.falls.alert_rows[0]) if report.falls.alert_rows else None,
                                                [list(r.values()) for r in report.falls.alert_rows], "No emergency alerts were raised."),
            _figure(files["falls-funnel.svg"], "falls-funnel.svg"), _figure(files["falls-latency.svg"], "falls-latency.svg"),
        ]))
    for name, svg in files.items():
        (plots / name).write_text(svg, encoding="utf-8")

    notes = "".join(f"<p>{_e(n)}</p>" for n in report.notes) or "<p>No notes.</p>"
    page = "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{_e(report.title)}</h1><p class="meta">Generated {_e(report.generated_at)}</p></header>',
        _section("summary", "Summary", _table(None, [list(r) for r in report.summary], "No summary.")),
        _section("alerts", "Alerts", _alerts_table(report.alert_rows)),
        _section("funnel", "Cascade funnel", _figure(files["funnel.svg"], "funnel.svg")),
        _section("latency", "Latency", _figure(files["latency.svg"], "latency.svg")),
        _section("health", "Health trends", _health_section([("Simulated faults", faulty), ("Healthy", healthy)])),
        falls_html,
        _section("notes", "Notes", notes),
        "</body></html>\n",
    ])
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
