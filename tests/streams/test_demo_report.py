import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from streams.demo_report import (
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
    write_report,
)

NS = {"svg": "http://www.w3.org/2000/svg"}
T0 = 1_767_225_600_000
HOSTILE_ID = "<pump&1>"


def parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def find(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['svg']}}}{tag}") if e.get("class") == cls]


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{{{NS['svg']}}}text")]


def frame_x(root: ET.Element, ts_ms: int, start_ms: int, end_ms: int) -> float:
    """Where ts_ms falls on the plot frame drawn in a health svg."""
    (frame,) = find(root, "rect", "frame")
    x0, w = float(frame.get("x")), float(frame.get("width"))
    return x0 + w * (ts_ms - start_ms) / (end_ms - start_ms)


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


def test_write_report_writes_index_and_named_svgs(report: DemoReport, tmp_path: Path):
    out = tmp_path / "vigil-report"
    index = write_report(report, out)
    assert index == out / "index.html"
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert names == ["funnel.svg", "health-_pump_1_.svg", "health-pump-2.svg", "latency.svg"]
    for path in (out / "plots").iterdir():
        parse(path.read_text(encoding="utf-8"))


def test_write_report_overwrites_and_drops_stale_plots(report: DemoReport, tmp_path: Path):
    write_report(report, tmp_path)
    report.pumps = report.pumps[:1]
    write_report(report, tmp_path)
    assert not (tmp_path / "plots" / "health-_pump_1_.svg").exists()
    assert (tmp_path / "plots" / "health-pump-2.svg").exists()


def test_html_embeds_svgs_escapes_text_and_orders_faulty_first(report: DemoReport, tmp_path: Path):
    page = write_report(report, tmp_path).read_text(encoding="utf-8")
    assert HOSTILE_ID not in page
    assert "&lt;pump&amp;1&gt;" in page
    assert "vigil demo &lt;run&gt;" in page
    assert "produce to consume &amp; commit" in page
    for name in ("funnel.svg", "latency.svg", "health-pump-2.svg"):
        assert (tmp_path / "plots" / name).read_text(encoding="utf-8") in page
    assert page.index("&lt;pump&amp;1&gt; — fault: outer") < page.index("pump-2 — healthy")
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # Alert table columns are the union of row keys; a missing cell stays empty.
    assert "<th>lead h</th>" in page and "<td>5</td>" in page


def test_the_fall_section_has_its_table_alerts_and_plots(report: DemoReport, tmp_path: Path):
    report.falls = FallSection(
        summary=[("trials", "32: 8 falls, 24 ADL")],
        funnel=[("accelerometer chunks", 480), ("stage 1: candidates", 11), ("stage 2: suspected falls", 8), ("emergency alerts", 6)],
        latency_ms={"fall.candidates -> fall.suspected": [40.0, 60.0, 900.0]},
        alert_rows=[{"alert": "<w-1>/fall/5", "really a fall": "yes"}],
    )
    page = write_report(report, tmp_path).read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "plots").glob("falls-*.svg")) == ["falls-funnel.svg", "falls-latency.svg"]
    falls = page[page.index('<section id="falls">'):]
    assert "32: 8 falls, 24 ADL" in falls and "&lt;w-1&gt;/fall/5" in falls and "<th>really a fall</th>" in falls
    assert (tmp_path / "plots" / "falls-funnel.svg").read_text(encoding="utf-8") in falls
    assert "6 (75.0% of previous)" in falls
    report.falls = None
    assert 'id="falls"' not in write_report(report, tmp_path).read_text(encoding="utf-8")


def test_same_sanitised_ids_get_distinct_files(healthy_pump: PumpTrace, report: DemoReport, tmp_path: Path):
    twin = PumpTrace("pump/2", None, None, healthy_pump.hour_start_ms, healthy_pump.health, 0.6)
    clash = PumpTrace("pump:2", None, None, healthy_pump.hour_start_ms, healthy_pump.health, 0.6)
    report.pumps = [twin, clash]
    write_report(report, tmp_path)
    assert {p.name for p in (tmp_path / "plots").glob("health-*")} == {"health-pump_2.svg", "health-pump_2-2.svg"}


def test_funnel_has_bar_per_nonzero_stage_and_share_of_previous():
    root = parse(funnel_svg([("raw", 200), ("windows", 200), ("flagged", 50), ("confirmed", 0), ("alerts", 0)]))
    bars = find(root, "rect", "bar")
    assert len(bars) == 3
    widths = [float(b.get("width")) for b in bars]
    assert widths[0] == widths[1] > widths[2] > 0
    all_text = texts(root)
    assert "confirmed" in all_text and "alerts" in all_text
    assert "200" in all_text  # the first stage has no previous one to compare with
    assert "200 (100.0% of previous)" in all_text
    assert "50 (25.0% of previous)" in all_text
    assert "0 (0.0% of previous)" in all_text
    assert "0 (n/a of previous)" in all_text


def test_funnel_width_is_log_scaled():
    root = parse(funnel_svg([("a", 100_000), ("b", 1_000), ("c", 100)]))
    a, b, c = (float(r.get("width")) for r in find(root, "rect", "bar"))
    # Two decades take off twice the width of one on a log axis.
    assert a - b == pytest.approx(2 * (b - c), rel=0.01)


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float):
    values = [5.0, 1.0, 9.5, 3.25, 7.0, 2.0, 100.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases():
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_panels_mark_percentiles_and_empty_stages():
    latency = {"edge": [1.0, 2.0, 3.0, 4.0], "cloud": [10.0, 1000.0], "alert": []}
    root = parse(latency_histogram_svg(latency))
    legends = [t for t in texts(root) if t.split(":")[0] in latency]
    assert "alert: no samples" in legends
    assert "edge: n=4 · p50=2.50 ms · p99=3.97 ms" in legends
    assert "cloud: n=2 · p50=505 ms · p99=990 ms" in legends
    assert len(find(root, "line", "p50")) == 2 and len(find(root, "line", "p99")) == 2
    assert sum(1 for _ in find(root, "rect", "bin")) == 4 + 2
    # Shared log bins: the largest sample's bar ends at the right edge, the smallest starts at the left.
    xs = [float(r.get("x")) for r in find(root, "rect", "bin")]
    ends = [float(r.get("x")) + float(r.get("width")) for r in find(root, "rect", "bin")]
    assert min(xs) == pytest.approx(50.0, abs=0.1)
    assert max(ends) == pytest.approx(720 - 20, abs=0.7)


def test_latency_all_empty_still_renders():
    root = parse(latency_histogram_svg({"edge": [], "cloud": [0.0]}))
    assert "edge: no samples" in texts(root)


def test_health_polyline_breaks_at_none_and_gaps(faulty_pump: PumpTrace):
    start, end = T0, T0 + DAY_MS
    root = parse(health_trend_svg(faulty_pump, start, end))
    lines = find(root, "polyline", "health")
    # Buckets 0-2 | None | 4-9 | gap of 4 h | 14-19.
    assert [len(p.get("points").split()) for p in lines] == [3, 6, 6]
    first_x = float(lines[0].get("points").split()[0].split(",")[0])
    assert first_x == pytest.approx(frame_x(root, T0 + HOUR_MS // 2, start, end), abs=0.1)


def test_health_alert_spans_follow_the_time_axis(faulty_pump: PumpTrace):
    start, end = T0 - 2 * HOUR_MS, T0 + 2 * DAY_MS
    root = parse(health_trend_svg(faulty_pump, start, end))
    closed, still_open = find(root, "rect", "alert")
    x0, x1 = frame_x(root, T0 + 6 * HOUR_MS, start, end), frame_x(root, T0 + 9 * HOUR_MS, start, end)
    assert float(closed.get("x")) == pytest.approx(x0, abs=0.1)
    assert float(closed.get("width")) == pytest.approx(x1 - x0, abs=0.15)
    assert closed.get("fill") == "#eb5757"
    open_x = float(still_open.get("x"))
    assert open_x + float(still_open.get("width")) == pytest.approx(frame_x(root, end, start, end), abs=0.15)
    assert open_x == pytest.approx(frame_x(root, T0 + 15 * HOUR_MS, start, end), abs=0.1)


def test_health_threshold_failure_and_title(faulty_pump: PumpTrace):
    faulty_pump.alerts.append(AlertSpan("a-3", T0, T0 + HOUR_MS, "weird"))
    start, end = T0, T0 + DAY_MS
    svg = health_trend_svg(faulty_pump, start, end)
    root = parse(svg)
    (threshold,) = find(root, "line", "threshold")
    (frame,) = find(root, "rect", "frame")
    fy, fh = float(frame.get("y")), float(frame.get("height"))
    assert float(threshold.get("y1")) == pytest.approx(fy + fh * (1 - 0.6), abs=0.1)
    assert threshold.get("stroke-dasharray")
    (failure,) = find(root, "line", "failure")
    assert float(failure.get("x1")) == pytest.approx(frame_x(root, T0 + 20 * HOUR_MS, start, end), abs=0.1)
    assert find(root, "rect", "alert")[-1].get("fill") == "#9e9e9e"
    assert "<pump&1> — fault: outer" in texts(root)
    assert "&lt;pump&amp;1&gt;" in svg


def test_health_without_scores_says_so():
    pump = PumpTrace("p", None, None, [T0, T0 + HOUR_MS], [None, None], None)
    root = parse(health_trend_svg(pump, T0, T0 + DAY_MS))
    assert not find(root, "polyline", "health") and not find(root, "line", "threshold")
    assert "no scored windows" in texts(root)


def test_fleet_of_50_renders_fast_and_small(tmp_path: Path):
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
    assert time.perf_counter() - began < 1.0
    assert index.stat().st_size < 2_000_000
    assert len(list((tmp_path / "plots").glob("health-*.svg"))) == 50
