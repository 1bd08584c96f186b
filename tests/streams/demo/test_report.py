"""The demo report: numbers and marks in the matplotlib SVGs, and the Jinja2 page that inlines them.

Positions are checked against the figure's own axis ticks, so the tests do not depend on layout details.
"""
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from vigil.streams.demo.report import (
    DAY_MS,
    HOUR_MS,
    AlertSpan,
    DemoReport,
    FallSection,
    PumpTrace,
    funnel_svg,
    health_trend_svg,
    latency_histogram_svg,
    percentile,
    safe_file_stem,
    write_report,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_767_225_600_000
HOSTILE_ID = "<pump&1>"


def parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg")  # no XML prolog: it is inlined into the page as is
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]


def group(root: ET.Element, gid: str) -> ET.Element | None:
    return next((g for g in root.iter(f"{SVG}g") if g.get("id") == gid), None)


def gids(root: ET.Element, prefix: str) -> list[str]:
    return [g.get("id") for g in root.iter(f"{SVG}g") if g.get("id", "").startswith(prefix)]


def tooltip(g: ET.Element) -> str:
    return g.find(f"{SVG}title").text


def points(g: ET.Element) -> list[tuple[float, float]]:
    """The vertices of the first path in a group."""
    d = g.find(f".//{SVG}path").get("d")
    return [(float(x), float(y)) for x, y in re.findall(r"([-\d.]+) ([-\d.]+)", d)]


def x_extent(g: ET.Element) -> tuple[float, float]:
    xs = [x for x, _ in points(g)]
    return min(xs), max(xs)


def ticks(root: ET.Element, axis: str) -> dict[str, float]:
    """Tick label -> position in SVG coordinates (x for the x axis, y for the y axis), from its tick mark or grid line."""
    out = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("id", "").startswith(f"{axis}tick_"):
            mark, label = g.find(f".//{SVG}use"), g.find(f".//{SVG}text")
            if label is not None:
                x, y = (float(mark.get("x")), float(mark.get("y"))) if mark is not None else points(g)[0]
                out["".join(label.itertext())] = x if axis == "x" else y
    return out


def style(g: ET.Element) -> str:
    return g.find(f".//{SVG}path").get("style")


@pytest.fixture
def faulty_pump() -> PumpTrace:
    starts = [T0 + h * HOUR_MS for h in range(10)] + [T0 + h * HOUR_MS for h in range(14, 20)]
    health: list[float | None] = [0.1, 0.1, 0.2, None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.95, 0.97, 1.0]
    return PumpTrace(
        asset_id=HOSTILE_ID,
        fault="outer",
        failure_ts_ms=T0 + 20 * HOUR_MS,
        hour_start_ms=starts,
        health=health,
        threshold=0.6,
        alerts=[
            AlertSpan("a-1", T0 + 6 * HOUR_MS, T0 + 9 * HOUR_MS, "high"),
            AlertSpan("a-2", T0 + 15 * HOUR_MS, None, "critical"),
        ],
    )


@pytest.fixture
def healthy_pump() -> PumpTrace:
    starts = [T0 + h * HOUR_MS for h in range(24)]
    return PumpTrace("pump-2", None, None, starts, [0.05] * 24, 0.6)


@pytest.fixture
def report(faulty_pump: PumpTrace, healthy_pump: PumpTrace) -> DemoReport:
    return DemoReport(
        title="vigil demo <run>",
        generated_at="2026-01-01T00:00:00Z",
        summary=[("pumps", "2"), ("records", "200")],
        funnel=[("raw records", 200), ("windows", 200), ("scored", 100), ("flagged", 50), ("confirmed", 0), ("alerts", 0)],
        latency_ms={"edge": [1.0, 2.0, 3.0, 40.0], "cloud": [10.0, 20.0, 250.0], "alert": []},
        pumps=[healthy_pump, faulty_pump],
        alert_rows=[{"alert": "a-1", "asset": HOSTILE_ID, "severity": "high"}, {"alert": "a-2", "lead h": 5}],
        notes=["Latency is wall time from produce to consume & commit."],
    )


# --------------------------------------------------------------------------- percentile


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float):
    values = [5.0, 1.0, 9.5, 3.25, 7.0, 2.0, 100.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases():
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    assert percentile([10.0, 1000.0], 99) == pytest.approx(990.1)
    for q in (-1, 101):
        with pytest.raises(ValueError):
            percentile([1.0], q)


# --------------------------------------------------------------------------- funnel


def test_funnel_labels_counts_and_share_of_previous():
    root = parse(funnel_svg([("raw", 200), ("windows", 200), ("flagged", 50), ("confirmed", 0), ("alerts", 0)]))
    all_text = texts(root)
    for label in ("raw", "windows", "flagged", "confirmed", "alerts", "records per stage (log scale)"):
        assert label in all_text
    assert "200" in all_text  # the first stage has no previous one to compare with
    assert "200 (100.0% of previous)" in all_text
    assert "50 (25.0% of previous)" in all_text
    assert "0 (0.0% of previous)" in all_text
    assert "0 (n/a of previous)" in all_text
    # A bar per non-zero stage, each with its count as hover text.
    assert gids(root, "bar-") == ["bar-0", "bar-1", "bar-2"]
    assert [tooltip(group(root, g)) for g in gids(root, "bar-")] == ["raw: 200", "windows: 200", "flagged: 50"]
    assert f"fill: {'#2f80ed'}" in style(group(root, "bar-0"))


def test_funnel_bars_are_log_scaled():
    root = parse(funnel_svg([("a", 100_000), ("b", 1_000), ("c", 100)]))
    left = ticks(root, "x")["1"] - (ticks(root, "x")["10"] - ticks(root, "x")["1"]) * np.log10(2) / (np.log10(11) - np.log10(2))
    a, b, c = (x_extent(group(root, f"bar-{i}"))[1] for i in range(3))
    # Two decades take twice the width of one; "1,000" is where a bar of 1,000 ends.
    assert a - b == pytest.approx(2 * (b - c), rel=0.01)
    assert b == pytest.approx(ticks(root, "x")["1,000"], abs=0.5)
    assert x_extent(group(root, "bar-2"))[0] == pytest.approx(left, abs=0.5)  # bars start at 0


def test_empty_funnel_says_so():
    root = parse(funnel_svg([]))
    assert texts(root) == ["no funnel data"]
    assert root.find(f"{SVG}title").text == "Cascade funnel"


# --------------------------------------------------------------------------- latency


def test_latency_legends_give_n_p50_p99_per_stage():
    latency = {"edge": [1.0, 2.0, 3.0, 4.0], "cloud": [10.0, 1000.0], "alert": []}
    root = parse(latency_histogram_svg(latency))
    all_text = texts(root)
    assert "edge: n=4 · p50=2.50 ms · p99=3.97 ms" in all_text
    assert "cloud: n=2 · p50=505 ms · p99=990 ms" in all_text
    assert "alert: no samples" in all_text
    assert gids(root, "p50-") == ["p50-0", "p50-1"] and gids(root, "p99-") == ["p99-0", "p99-1"]


def test_latency_bins_are_shared_log_bins_with_percentile_marks():
    latency = {"edge": [1.0, 2.0, 3.0, 4.0], "cloud": [10.0, 1000.0]}
    root = parse(latency_histogram_svg(latency))
    # numpy.histogram over 30 log-spaced edges from 1 to 1000 ms: every sample falls in its own bin.
    assert len(gids(root, "bin-0-")) == 4 and len(gids(root, "bin-1-")) == 2
    assert all(tooltip(group(root, g)).endswith(" ms: 1") for g in gids(root, "bin-"))
    # Panels share the axis 1..1000 ms (ends and decades labelled); the p50 line sits at log10(2.5) of 3 decades.
    x = ticks(root, "x")
    assert {"1.00", "10.0", "100", "1,000"} <= set(x)
    (p50_x, _), _ = points(group(root, "p50-0"))[:2]
    assert p50_x == pytest.approx(x["1.00"] + (x["1,000"] - x["1.00"]) * np.log10(2.5) / 3, abs=0.5)
    first_bin, last_bin = group(root, gids(root, "bin-0-")[0]), group(root, gids(root, "bin-1-")[-1])
    assert x_extent(first_bin)[0] == pytest.approx(x["1.00"], abs=0.5)
    assert x_extent(last_bin)[1] == pytest.approx(x["1,000"], abs=0.5)


def test_latency_non_positive_samples_are_counted_not_binned():
    root = parse(latency_histogram_svg({"edge": [0.0, 5.0, 6.0], "cloud": [0.0]}))
    all_text = texts(root)
    assert "edge: n=3 · p50=5.00 ms · p99=5.98 ms · 1 ≤ 0 ms not binned" in all_text
    assert "cloud: n=1 · p50=0.00 ms · p99=0.00 ms · 1 ≤ 0 ms not binned" in all_text
    assert not gids(root, "p50-1")  # a log axis has no place for 0 ms


def test_latency_without_anything_to_plot_says_so():
    assert texts(parse(latency_histogram_svg({}))) == ["no latency stages"]
    all_text = texts(parse(latency_histogram_svg({"edge": [], "cloud": [0.0]})))
    assert "edge: no samples" in all_text and "cloud: n=1, none > 0 ms" in all_text


# --------------------------------------------------------------------------- health


def day_x(root: ET.Element, ts_ms: int, start_ms: int) -> float:
    """Where ts_ms falls on the plot's time axis, from its 0d and 1d ticks."""
    x = ticks(root, "x")
    return x["0d"] + (x["1d"] - x["0d"]) * (ts_ms - start_ms) / DAY_MS


def test_health_alert_spans_are_shaded_by_severity_where_they_happened(faulty_pump: PumpTrace):
    faulty_pump.alerts.append(AlertSpan("a-3", T0, T0 + HOUR_MS, "weird"))
    start, end = T0 - 2 * HOUR_MS, T0 + 2 * DAY_MS
    root = parse(health_trend_svg(faulty_pump, start, end))
    closed, still_open, unknown = (group(root, f"alert-{k}") for k in range(3))
    assert "fill: #eb5757" in style(closed) and tooltip(closed) == "a-1 (high, closed)"
    assert "fill: #9b1c1c" in style(still_open) and tooltip(still_open) == "a-2 (critical, open)"
    assert "fill: #9e9e9e" in style(unknown)
    assert x_extent(closed) == pytest.approx((day_x(root, T0 + 6 * HOUR_MS, start), day_x(root, T0 + 9 * HOUR_MS, start)), abs=0.2)
    # Still open: shaded to the end of the axis.
    assert x_extent(still_open) == pytest.approx((day_x(root, T0 + 15 * HOUR_MS, start), day_x(root, end, start)), abs=0.2)


def test_health_line_breaks_at_missing_scores_and_gaps(faulty_pump: PumpTrace):
    root = parse(health_trend_svg(faulty_pump, T0, T0 + DAY_MS))
    d = group(root, "health").find(f".//{SVG}path").get("d")
    # Buckets 0-2 | None | 4-9 | gap of 4 h | 14-19: three runs, each starting with a move.
    assert d.count("M") == 3
    first_x, first_y = points(group(root, "health"))[0]
    assert first_x == pytest.approx(day_x(root, T0 + HOUR_MS // 2, T0), abs=0.1)  # mid-bucket
    y = ticks(root, "y")
    assert first_y == pytest.approx(y["0"] + 0.1 * (y["1"] - y["0"]), abs=0.1)
    assert group(root, "health-dots") is None


def test_a_lone_scored_bucket_is_drawn_as_a_dot():
    pump = PumpTrace("p", None, None, [T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS], [0.4, None, 0.5], None)
    root = parse(health_trend_svg(pump, T0, T0 + DAY_MS))
    assert len(group(root, "health-dots").findall(f".//{SVG}use")) == 2


def test_health_threshold_failure_and_title(faulty_pump: PumpTrace):
    svg = health_trend_svg(faulty_pump, T0, T0 + DAY_MS)
    root = parse(svg)
    y = ticks(root, "y")
    threshold = group(root, "threshold")
    assert [py for _, py in points(threshold)] == pytest.approx([y["0"] + 0.6 * (y["1"] - y["0"])] * 2, abs=0.1)
    assert "stroke-dasharray" in style(threshold) and tooltip(threshold) == "edge threshold 0.6"
    failure = group(root, "failure")
    assert x_extent(failure)[0] == pytest.approx(day_x(root, T0 + 20 * HOUR_MS, T0), abs=0.1)
    assert "stroke: #c0392b" in style(failure) and "failure" in texts(root)
    assert "<pump&1> — fault: outer" in texts(root)
    assert "&lt;pump&amp;1&gt;" in svg and HOSTILE_ID not in svg


def test_health_without_scores_says_so():
    pump = PumpTrace("p", None, None, [T0, T0 + HOUR_MS], [None, None], None)
    root = parse(health_trend_svg(pump, T0, T0 + DAY_MS))
    assert group(root, "health") is None and group(root, "threshold") is None
    assert "no scored windows" in texts(root) and "p — healthy" in texts(root)


# --------------------------------------------------------------------------- page


def test_safe_file_stem():
    assert safe_file_stem("pump-01.a_b") == "pump-01.a_b"
    assert safe_file_stem("pump/04 <east>") == "pump_04__east_"
    assert safe_file_stem("pümp") == "p_mp"
    assert safe_file_stem("") == "_"


def test_write_report_writes_the_page_and_every_plot_it_links(report: DemoReport, tmp_path: Path):
    out = tmp_path / "vigil-report"
    index = write_report(report, out)
    assert index == out / "index.html"
    page = index.read_text(encoding="utf-8")
    linked = re.findall(r'href="plots/([^"]+)"', page)
    on_disk = sorted(p.name for p in (out / "plots").iterdir())
    assert sorted(linked) == on_disk == ["funnel.svg", "health-_pump_1_.svg", "health-pump-2.svg", "latency.svg"]
    for name in on_disk:
        svg = (out / "plots" / name).read_text(encoding="utf-8")
        parse(svg)
        assert svg in page  # inlined as well as linked
    # Ids inside inlined SVGs stay distinct, so no figure picks up another's clip path.
    clip_ids = re.findall(r'<clipPath id="([^"]+)"', page)
    assert clip_ids and len(clip_ids) == len(set(clip_ids))


def test_the_page_shows_every_section_escaped(report: DemoReport, tmp_path: Path):
    page = write_report(report, tmp_path).read_text(encoding="utf-8")
    headings = re.findall(r"<h[23]>([^<]*)</h[23]>", page)
    assert headings == ["Summary", "Alerts", "Cascade funnel", "Latency", "Health trends",
                        "Simulated faults (1)", "Healthy (1)", "Notes"]
    assert HOSTILE_ID not in page and "&lt;pump&amp;1&gt;" in page  # autoescape is on for .j2
    assert "<title>vigil demo &lt;run&gt;</title>" in page and "<h1>vigil demo &lt;run&gt;</h1>" in page
    assert "Generated 2026-01-01T00:00:00Z" in page
    assert "<td>records</td><td>200</td>" in page
    assert "produce to consume &amp; commit" in page
    # Alert table columns are the union of row keys; a missing cell stays empty.
    assert "<tr><th>alert</th><th>asset</th><th>severity</th><th>lead h</th></tr>" in page
    assert "<tr><td>a-2</td><td></td><td></td><td>5</td></tr>" in page
    for severity, colour in [("low", "#f2c94c"), ("medium", "#f2994a"), ("high", "#eb5757"), ("critical", "#9b1c1c"), ("other", "#9e9e9e")]:
        assert f'style="background:{colour}"></i>{severity}</span>' in page
    assert page.index("&lt;pump&amp;1&gt; — fault: outer") < page.index("pump-2 — healthy")  # faulty first
    assert "<script" not in page and 'id="falls"' not in page


def test_empty_report_says_so_instead_of_crashing(tmp_path: Path):
    page = write_report(DemoReport("empty", "now", [], [], {}, [], []), tmp_path).read_text(encoding="utf-8")
    for message in ("No summary.", "No alerts were raised.", "no funnel data", "no latency stages", "No pumps.", "No notes."):
        assert message in page


def test_the_fall_section_has_its_table_alerts_and_plots(report: DemoReport, tmp_path: Path):
    report.falls = FallSection(
        summary=[("trials", "32: 8 falls, 24 ADL")],
        funnel=[("accelerometer chunks", 480), ("stage 1: candidates", 11), ("stage 2: suspected falls", 8), ("emergency alerts", 6)],
        latency_ms={"fall.candidates -> fall.suspected": [40.0, 60.0, 900.0]},
        alert_rows=[{"alert": "<w-1>/fall/5", "really a fall": "yes"}],
    )
    page = write_report(report, tmp_path).read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "plots").glob("falls-*.svg")) == ["falls-funnel.svg", "falls-latency.svg"]
    falls = page[page.index('<section id="falls">'):page.index('<section id="notes">')]
    assert "<h2>Fall detection</h2>" in falls and "<h3>Emergency alerts</h3>" in falls
    assert "32: 8 falls, 24 ADL" in falls and "&lt;w-1&gt;/fall/5" in falls and "<th>really a fall</th>" in falls
    assert (tmp_path / "plots" / "falls-funnel.svg").read_text(encoding="utf-8") in falls
    assert "6 (75.0% of previous)" in falls
    assert "fall.candidates -&gt; fall.suspected: n=3 · p50=60.0 ms · p99=883 ms" in falls
    report.falls = None
    write_report(report, tmp_path)
    assert not list((tmp_path / "plots").glob("falls-*.svg"))


def test_rewriting_drops_stale_plots_and_is_byte_identical(report: DemoReport, tmp_path: Path):
    first = write_report(report, tmp_path).read_bytes()
    assert write_report(report, tmp_path).read_bytes() == first  # no dates or random ids in the output
    report.pumps = report.pumps[:1]
    write_report(report, tmp_path)
    assert not (tmp_path / "plots" / "health-_pump_1_.svg").exists()
    assert (tmp_path / "plots" / "health-pump-2.svg").exists()


def test_same_sanitised_ids_get_distinct_files(healthy_pump: PumpTrace, report: DemoReport, tmp_path: Path):
    twin = PumpTrace("pump/2", None, None, healthy_pump.hour_start_ms, healthy_pump.health, 0.6)
    clash = PumpTrace("pump:2", None, None, healthy_pump.hour_start_ms, healthy_pump.health, 0.6)
    report.pumps = [twin, clash]
    write_report(report, tmp_path)
    assert {p.name for p in (tmp_path / "plots").glob("health-*")} == {"health-pump_2.svg", "health-pump_2-2.svg"}


def test_fleet_of_50_renders_and_stays_small(tmp_path: Path):
    rng = np.random.default_rng(0)
    starts = [T0 + h * HOUR_MS for h in range(168)]
    pumps = [
        PumpTrace(f"pump-{i}", "inner" if i % 5 == 0 else None, T0 + 160 * HOUR_MS if i % 5 == 0 else None,
                  starts, [float(v) for v in rng.random(168)], 0.7,
                  [AlertSpan(f"a{i}", T0 + 100 * HOUR_MS, None, "medium")] if i % 5 == 0 else [])
        for i in range(50)
    ]
    report = DemoReport("fleet", "now", [], [("raw", 33_600), ("alerts", 3)],
                        {"edge": list(rng.lognormal(1, 1, 5000))}, pumps, [])
    began = time.perf_counter()
    index = write_report(report, tmp_path)
    # Loose: about 0.1 s a figure here; this catches a pathological slow-down, not normal jitter.
    assert time.perf_counter() - began < 60
    assert index.stat().st_size < 2_000_000
    assert len(list((tmp_path / "plots").glob("health-*.svg"))) == 50
