"""The monitoring configuration in docker/: the Prometheus alerting rules, their wiring, and the Grafana dashboard.

- every rule has expr, for, labels.severity and annotations (summary, description), and its threshold is the
  brief's number, named in its annotations;
- every metric a rule or a dashboard panel reads is one a worker exports: registered in
  ``vigil.streams.runtime.metrics``, prometheus_client's default process collector or Prometheus's own ``up``, or
  listed in ``MONITORING_ISSUE_METRICS`` (added by the monitoring issue: once one lands in metrics.py its type and
  labels must be the ones listed); the labels a query selects or groups by belong to the metrics it reads;
- compose.yaml mounts the rules file where prometheus.yml's ``rule_files`` looks for it;
- the dashboard JSON parses, keeps its panels and has one for each monitored topic.

With ``promtool`` on PATH (Debian's ``prometheus`` package ships it) the files also go through
``promtool check rules``, ``promtool check config``, ``promtool test rules`` (docker/prometheus/rules_test*.yml:
synthetic series on both sides of each threshold) and the dashboard's queries through its PromQL parser.
The YAML checks use PyYAML (a dev extra).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
PROMETHEUS_DIR = DOCKER / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = (PROMETHEUS_DIR / "rules_test.yml", PROMETHEUS_DIR / "rules_test_weekly.yml")
COMPOSE = DOCKER / "compose.yaml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "vigil.json"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# Added by the monitoring issue: metrics the rules and the dashboard read that vigil.streams.runtime.metrics did not
# register before it. Name as passed to prometheus_client (counters with _total) -> (type, label names).
MONITORING_ISSUE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vigil_inference_seconds": ("histogram", ("tier",)),
    "vigil_consumer_lag": ("gauge", ("topic", "partition")),
    "vigil_drift_findings_open": ("gauge", ("kind", "scope")),
    "vigil_drift_kl": ("gauge", ("feature_set", "feature")),
    "vigil_quality_bad_device_share": ("gauge", ("topology",)),
    "vigil_quality_bad_reading_share": ("gauge", ("topology",)),
    "vigil_quality_findings_open": ("gauge", ("check", "scope")),
    "vigil_alert_feedback_total": ("counter", ("model_version", "outcome")),
    "vigil_failure_verdicts_total": ("counter", ("verdict",)),
}

# prometheus_client's default ProcessCollector (Linux only; the workers run on Linux) and the series Prometheus
# writes for every target it scrapes.
PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes")
TARGET_LABELS = {"job", "instance"}
SCRAPE_SERIES = {"up": set()}

# Alert -> (its expr's threshold comparison, matched against the expr on one line with single spaces; metrics it must
# read; how its annotations name the threshold).
THRESHOLDS: dict[str, tuple[str, set[str], str]] = {
    "VigilEventLatencyP50High": (r"^histogram_quantile\(0\.5, .*\) > 0\.1$", {"vigil_event_latency_seconds_bucket"}, "100 ms"),
    "VigilEventLatencyP99High": (r"^histogram_quantile\(0\.99, .*\) > 0\.5$", {"vigil_event_latency_seconds_bucket"}, "500 ms"),
    "VigilInferenceP99High": (r"^histogram_quantile\(0\.99, .*\) > 0\.5$", {"vigil_inference_seconds_bucket"}, "500 ms"),
    "VigilPublishTimeoutsHigh": (r"\) > 0\.01$",
                                 {"vigil_publish_retries_total", "vigil_publish_refused_total", "vigil_records_out_total"}, "1 %"),
    "VigilConsumerLagHigh": (r"\) > 10000$", {"vigil_consumer_lag"}, "10,000"),
    "VigilDriftFindingOpen": (r"\) > 0$", {"vigil_drift_findings_open"}, "KL > 0.3"),
    "VigilFeatureDriftKLHigh": (r"\) > 0\.3$", {"vigil_drift_kl"}, "KL > 0.3"),
    "VigilBadDeviceShareHigh": (r"\) > 0\.05$", {"vigil_quality_bad_device_share"}, "5 %"),
    "VigilBadReadingShareHigh": (r"\) > 0\.01$", {"vigil_quality_bad_reading_share"}, "1 %"),
    "VigilQualityFindingOpen": (r"\) > 0$", {"vigil_quality_findings_open"}, "> 0"),
    # this week's false-positive share > 1.5 x the previous week's (a rise of more than 50 %), given 20 feedback records
    "VigilFalsePositiveShareRising": (r"\) > 1\.5 \* \(.*\) and sum by \(model_version\) \(.*\) >= 20$",
                                      {"vigil_alert_feedback_total"}, "50 %"),
    "VigilMissedFailure": (r"\) > 0$", {"vigil_failure_verdicts_total"}, "any missed failure"),
    "VigilDeadLetterShareHigh": (r"\) > 0\.01$", {"vigil_deadletters_total", "vigil_records_in_total"}, "1 %"),
    "VigilWorkerCPUHigh": (r"\) > 0\.9$", {"process_cpu_seconds_total"}, "0.9 core"),
    "VigilWorkerDown": (r"\} == 0$", {"up"}, "up == 0"),
}

# Dashboard topic -> (words its title holds, lower case; a metric one of its queries reads).
DASHBOARD_TOPICS: dict[str, tuple[tuple[str, ...], str]] = {
    "drift KL per feature": (("drift", "kl", "feature"), "vigil_drift_kl"),
    "open drift findings": (("drift", "findings"), "vigil_drift_findings_open"),
    "open quality findings by check": (("quality", "findings", "check"), "vigil_quality_findings_open"),
    "bad device share": (("quality", "bad device"), "vigil_quality_bad_device_share"),
    "bad reading share": (("quality", "bad reading"), "vigil_quality_bad_reading_share"),
    "realised precision per model version": (("precision", "model version"), "vigil_alert_feedback_total"),
    "event latency p50 / p99 per stage": (("p50", "p99"), "vigil_event_latency_seconds_bucket"),
    "inference p99 per tier": (("inference", "p99", "tier"), "vigil_inference_seconds_bucket"),
    "consumer lag per partition": (("consumer lag", "partition"), "vigil_consumer_lag"),
    "records in / out per stage": (("records in", "out", "stage"), "vigil_records_out_total"),
    "dead letters by reason": (("dead letters", "reason"), "vigil_deadletters_total"),
    "worker CPU": (("worker", "cpu"), "process_cpu_seconds_total"),
    "worker memory": (("worker", "memory"), "process_resident_memory_bytes"),
}
DASHBOARD_ROWS = {"Throughput", "Dead letters and publish timeouts", "Latency and consumer lag", "Drift", "Data quality",
                  "Realised performance", "Worker resources"}
# The panels the dashboard had before the monitoring issue, by id: kept.
ORIGINAL_PANELS = {
    1: "Records in / out per stage",
    2: "Dead letters per reason",
    3: "Event time to output, p50 / p99",
    4: "Batch processing time p99",
    5: "Duplicates skipped",
    6: "Edge flags and cloud confirmations",
    7: "Fall outcomes per hour (DISMISSED: false alarms the wearer dismissed)",
}
SCHEMA_VERSION = 39

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus brings it)")


# ------------------------------------------------------------------------------------------------ metric names

def _series_of(name: str, kind: str, labels: tuple[str, ...]) -> dict[str, set[str]]:
    """The series names (with their labels) a prometheus_client metric exposes; ``name`` without the _total suffix."""
    labels_ = set(labels)
    if kind == "counter":
        return {f"{name}_total": labels_, f"{name}_created": labels_}
    if kind == "gauge":
        return {name: labels_}
    if kind == "histogram":
        return {f"{name}_bucket": labels_ | {"le"}, f"{name}_sum": labels_, f"{name}_count": labels_, f"{name}_created": labels_}
    if kind == "summary":
        return {name: labels_ | {"quantile"}, f"{name}_sum": labels_, f"{name}_count": labels_, f"{name}_created": labels_}
    if kind == "info":
        return {f"{name}_info": labels_}
    if kind == "stateset":
        return {name: labels_ | {name}}
    if kind == "enum":
        return {name: labels_ | {name}}
    raise AssertionError(f"unknown metric type {kind} of {name}")


def _base_name(name: str, kind: str) -> str:
    return name.removesuffix("_total") if kind == "counter" else name


def registered_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metrics vigil.streams.runtime.metrics registers: base name -> (type, label names)."""
    from vigil.streams.runtime import metrics

    return {m._name: (m._type, tuple(m._labelnames)) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


def process_series() -> set[str]:
    from prometheus_client import ProcessCollector

    names = {sample.name for family in ProcessCollector(registry=None).collect() for sample in family.samples}
    return names or set(PROCESS_METRICS)  # no /proc (not Linux): the names the workers' Linux collector exports


def allowed_series() -> dict[str, set[str]]:
    """Every series name a rule or panel may read -> its labels (the target's job and instance come on top)."""
    allowed: dict[str, set[str]] = {}
    for base, (kind, labels) in registered_metrics().items():
        allowed.update(_series_of(base, kind, labels))
    for name, (kind, labels) in MONITORING_ISSUE_METRICS.items():
        allowed.update(_series_of(_base_name(name, kind), kind, labels))
    allowed.update({name: set() for name in process_series()})
    allowed.update(SCRAPE_SERIES)
    return allowed


# ------------------------------------------------------------------------------------------------------ PromQL

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^{}]*)\}")
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "inf", "nan"}


def parse_promql(expr: str) -> tuple[set[str], list[tuple[str, set[str]]], set[str]]:
    """(metric names, [(metric, labels its selector matches on)], labels grouped by) of a PromQL expression.

    Enough PromQL for these files, not a parser: strings, ranges and grouping clauses are cut out, and what is left
    that is neither a function call nor a keyword is a metric name. ``promtool`` parses the real thing.
    """
    text = _STRING.sub('""', expr)
    selectors = [(name, set(_MATCHER.findall(inner))) for name, inner in _SELECTOR.findall(text)]
    text = _RANGE.sub("", _BRACES.sub("", text))
    grouped = {label.strip() for labels in _GROUPING.findall(text) for label in labels.split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    names = {m.group(1) for m in _IDENT.finditer(text) if not m.group(2) and m.group(1).lower() not in _KEYWORDS}
    return names, selectors, grouped


def check_query(expr: str, allowed: dict[str, set[str]], where: str) -> set[str]:
    """Asserts the query reads known metrics with their own labels; returns the labels its result may carry."""
    assert expr.count("(") == expr.count(")"), f"{where}: unbalanced parentheses in {expr!r}"
    names, selectors, grouped = parse_promql(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - allowed.keys()
    assert not unknown, f"{where}: metrics no worker exports (nor MONITORING_ISSUE_METRICS lists): {sorted(unknown)}"
    for name, labels in selectors:
        assert name, f"{where}: a selector without a metric name in {expr!r}"
        assert labels <= allowed[name] | TARGET_LABELS, f"{where}: {name} has no label {sorted(labels - allowed[name])}"
    available = set().union(*(allowed[n] for n in names)) | TARGET_LABELS
    assert grouped <= available, f"{where}: grouped by labels none of {sorted(names)} has: {sorted(grouped - available)}"
    return available


def test_parse_promql_finds_names_selectors_and_grouping():
    names, selectors, grouped = parse_promql(
        '(sum by (stage) (rate(a_total[5m])) or 0 * sum by (stage) (rate(b_total{stage="x",error=~"y.*"}[5m] offset 1d)))'
        ' / on (stage) group_left sum without (reason) (c) > bool 0.01 unless absent(up{job="w"})')
    assert names == {"a_total", "b_total", "c", "up"}
    assert selectors == [("b_total", {"stage", "error"}), ("up", {"job"})]
    assert grouped == {"stage", "reason"}


# --------------------------------------------------------------------------------------------------------- YAML

@pytest.fixture(scope="module")
def yaml_module() -> Any:
    import yaml  # in the dev extra: without it the rules and compose files go unchecked

    return yaml


@pytest.fixture(scope="module")
def rules(yaml_module: Any) -> list[dict[str, Any]]:
    document = yaml_module.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert group["name"] and group["rules"], group
        found += group["rules"]
    return found


def _alerts(rules: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for rule in rules:
        assert "alert" in rule, f"only alerting rules here: {rule}"
        yield rule["alert"], rule


def test_every_rule_has_expr_for_severity_and_annotations(rules):
    names = [name for name, _ in _alerts(rules)]
    assert len(names) == len(set(names)), "alert names repeat"
    for name, rule in _alerts(rules):
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smhdwy]", str(rule["for"])), f"{name}: for: {rule.get('for')!r}"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), name


def test_thresholds_are_the_briefs(rules):
    alerts = dict(_alerts(rules))
    assert set(alerts) == set(THRESHOLDS), "each alert's threshold is listed in THRESHOLDS"
    for name, (comparison, metrics, named) in THRESHOLDS.items():
        expr = " ".join(alerts[name]["expr"].split())
        assert re.search(comparison, expr), f"{name}: expr does not match {comparison!r}: {expr}"
        assert metrics <= parse_promql(expr)[0], f"{name} reads {sorted(metrics)}"
        text = alerts[name]["annotations"]["summary"] + " " + alerts[name]["annotations"]["description"]
        assert named in text, f"{name}: annotations do not name the threshold {named!r}"


def test_false_positive_rule_compares_with_the_previous_week(rules):
    expr = " ".join(dict(_alerts(rules))["VigilFalsePositiveShareRising"]["expr"].split())
    assert re.search(r"\)\s*>\s*1\.5\s*\*\s*\(", expr), "this week's share > 1.5 x the previous week's (a rise of more than 50 %)"
    assert "[7d] offset 7d" in expr and 'outcome="nothing-found"' in expr


def test_timeout_and_dead_letter_rules_divide_by_the_stage_throughput(rules):
    alerts = dict(_alerts(rules))
    assert re.search(r"/\s*sum by \(stage\) \(rate\(vigil_records_out_total\[5m\]\)\)\s*>\s*0\.01$",
                     " ".join(alerts["VigilPublishTimeoutsHigh"]["expr"].split()))
    assert re.search(r"/\s*sum by \(stage\) \(rate\(vigil_records_in_total\[5m\]\)\)\s*>\s*0\.01$",
                     " ".join(alerts["VigilDeadLetterShareHigh"]["expr"].split()))


def test_rules_read_exported_metrics_and_their_labels(rules):
    allowed = allowed_series()
    for name, rule in _alerts(rules):
        available = check_query(rule["expr"], allowed, name)
        text = " ".join(rule["annotations"].values())
        used = set(re.findall(r"\$labels\.(\w+)", text))
        assert used <= available, f"{name}: annotations use labels the expr does not carry: {sorted(used - available)}"


def test_prometheus_loads_the_rules_compose_mounts(yaml_module):
    config = yaml_module.safe_load(PROMETHEUS_CONFIG.read_text())
    compose = yaml_module.safe_load(COMPOSE.read_text())
    mounts = {}
    for volume in compose["services"]["prometheus"]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[(COMPOSE.parent / source).resolve()] = PurePosixPath(target)
    config_target = mounts[PROMETHEUS_CONFIG.resolve()]
    assert config_target == PurePosixPath("/etc/prometheus/prometheus.yml"), "the image's --config.file"
    rules_target = mounts[RULES.resolve()]
    rule_files = config["rule_files"]
    # Prometheus resolves rule_files against the config file's folder: the same in the container and the checkout.
    assert rules_target in {config_target.parent / f for f in rule_files}
    assert RULES.resolve() in {(PROMETHEUS_CONFIG.parent / f).resolve() for f in rule_files}


def test_monitoring_issue_metrics_match_metrics_py_once_registered():
    registered = registered_metrics()
    for name, (kind, labels) in MONITORING_ISSUE_METRICS.items():
        base = _base_name(name, kind)
        if base in registered:
            assert registered[base] == (kind, labels), f"{name}: metrics.py registers {registered[base]}, the rules expect {(kind, labels)}"


def test_every_monitoring_issue_metric_is_used(rules):
    used = set()
    for _, rule in _alerts(rules):
        used |= parse_promql(rule["expr"])[0]
    for _, expr in dashboard_queries(json.loads(DASHBOARD.read_text())):
        used |= parse_promql(expr)[0]
    for name, (kind, labels) in MONITORING_ISSUE_METRICS.items():
        assert set(_series_of(_base_name(name, kind), kind, labels)) & used, f"{name} is listed but no rule or panel reads it"


# ---------------------------------------------------------------------------------------------------- dashboard

def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"]


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_keeps_its_identity_and_panels(dashboard):
    assert dashboard["uid"] == "vigil-pumps" and dashboard["schemaVersion"] == SCHEMA_VERSION
    panels = {p["id"]: p for p in _panels(dashboard)}
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for pid, title in ORIGINAL_PANELS.items():
        assert panels[pid]["title"] == title


def test_dashboard_panels_are_grouped_in_rows_without_overlap(dashboard):
    top = dashboard["panels"]
    assert top[0]["type"] == "row"
    assert {p["title"] for p in top if p["type"] == "row"} == DASHBOARD_ROWS
    taken: set[tuple[int, int]] = set()
    for panel in top:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
    for panel in top:
        if panel["type"] == "row":
            assert panel["collapsed"] is False and panel["panels"] == [], "open rows: their panels follow them"


def test_dashboard_queries_the_provisioned_datasource(dashboard):
    uid = re.search(r"^\s*uid:\s*(\S+)\s*$", DATASOURCES.read_text(), flags=re.MULTILINE).group(1)
    for panel in _panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_has_a_panel_for_each_topic(dashboard):
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    for topic, (words, metric) in DASHBOARD_TOPICS.items():
        matching = [p for p in panels
                    if all(w in p["title"].lower() for w in words)
                    and any(metric in parse_promql(t["expr"])[0] for t in p["targets"])]
        assert matching, f"no panel for {topic}: a title with {words} reading {metric}"


def test_dashboard_reads_exported_metrics_and_their_labels(dashboard):
    allowed = allowed_series()
    for where, expr in dashboard_queries(dashboard):
        check_query(expr, allowed, where)
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            names, _, grouped = parse_promql(target["expr"])
            carried = grouped or set().union(*(allowed[n] for n in names)) | TARGET_LABELS
            assert legend <= carried, f"panel {panel['title']}: legend labels {sorted(legend - carried)} not in the result"


# ------------------------------------------------------------------------------------------------------ promtool

def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PROMTOOL, *args], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@needs_promtool
def test_promtool_checks_rules_and_config():
    _promtool("check", "rules", str(RULES))
    _promtool("check", "config", str(PROMETHEUS_CONFIG))


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    _promtool("test", "rules", *map(str, RULE_TESTS))


@needs_promtool
def test_promtool_parses_the_dashboard_queries(dashboard, tmp_path):
    # Each query as a recording rule: `promtool check rules` runs them through Prometheus's own parser.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(dashboard_queries(dashboard)):
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text("\n".join(lines) + "\n")
    _promtool("check", "rules", str(path))
