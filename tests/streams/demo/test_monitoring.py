"""The demo's read-back of the monitoring findings: folding them, and how long each injected change took to be found."""
from vigil.streams.demo.monitoring import InjectedChange, fold_findings, time_to_finding

HOUR_MS = 3_600_000


def finding(finding_id, state, opened_ms, end_ms, assets, scope="asset", kind="feature", **extra):
    return {"finding_id": finding_id, "scope": scope, "asset_id": assets[0] if scope == "asset" else "fleet", "kind": kind,
            "state": state, "opened_ts_ms": opened_ms, "window_end_ms": end_ms, "assets": assets,
            "features": [{"feature": "flow_l_min", "kl": 0.8, "drifted": True}], **extra}


def test_each_injected_change_is_timed_to_the_first_finding_naming_its_pump_and_to_the_first_fleet_finding():
    at = 100 * HOUR_MS
    drift = fold_findings([
        finding("before", "OPEN", at - HOUR_MS, at - HOUR_MS, ["p1"]),  # opened before the change: not its finding
        finding("fleet-1", "OPEN", at + 2 * HOUR_MS, at + 2 * HOUR_MS, [], scope="fleet"),
        finding("own-1", "OPEN", at + 36 * HOUR_MS, at + 36 * HOUR_MS, ["p1"]),
        finding("own-1", "CLOSE", at + 36 * HOUR_MS, at + 60 * HOUR_MS, ["p1"]),
    ], named="features")
    quality = fold_findings([{**finding("q", "OPEN", at, at + HOUR_MS, ["p2"]), "check": "stuck"}], named="check")
    rows = time_to_finding([InjectedChange("p1", "duty_point", at, "duty +30%"), InjectedChange("p2", "stuck_sensor", at, "flat"),
                            InjectedChange("p3", "duty_point", at, "duty +30%")], drift, quality)
    assert [(r["asset_id"], r["found_by"], r["hours_to_finding"], r["hours_to_fleet_finding"]) for r in rows] == [
        ("p1", "own-1", 36.0, 2.0), ("p2", "q", 1.0, None), ("p3", None, None, 2.0)]  # q: the hour it opened in closed
    assert [f["closed_ms"] for f in drift] == [None, None, at + 60 * HOUR_MS]
