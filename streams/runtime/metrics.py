"""Prometheus metrics of the stream stages (served at the worker's /metrics).

Labels are bounded (stage, reason); never an asset id.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.parser import text_string_to_metric_families

RECORDS_IN = Counter("vigil_records_in_total", "Records consumed by a stage", ["stage"])
RECORDS_OUT = Counter("vigil_records_out_total", "Records published by a stage", ["stage"])
DEAD_LETTERS = Counter("vigil_deadletters_total", "Records rejected to a dead-letter topic", ["stage", "reason"])
DUPLICATES = Counter("vigil_duplicates_total", "Records skipped because their (asset, seq) was already processed", ["stage"])
STALE_EVENTS = Counter("vigil_stale_events_total", "Events from before a rebalance, left for Faust to deliver again", ["stage"])
SEQ_GAPS = Counter("vigil_seq_gaps_total", "Sequence numbers skipped between consecutive records of an asset", ["stage"])
RESEEKS = Counter("vigil_offset_reseeks_total", "Times a stage saw a partition's offsets jump and sought back", ["stage"])
OFFSET_JUMPS = Counter("vigil_offset_jumps_accepted_total", "Offset jumps still there after re-seeking, accepted as real gaps", ["stage"])
REPLAYS_SUPPRESSED = Counter("vigil_replayed_outputs_suppressed_total",
                             "Outputs not published again after a takeover: the partition's previous owner had published them",
                             ["stage"])
PUBLISH_RETRIES = Counter("vigil_publish_retries_total", "Batches whose outputs had to be sent again after a transient failure", ["stage"])
PUBLISH_REFUSED = Counter("vigil_publish_refused_total",
                          "Records never sent as they were, being too large or invalid: dead letters truncated, outputs dead-lettered",
                          ["stage", "error"])
EDGE_FLAGGED = Counter("vigil_edge_flagged_total", "Windows the edge tier flagged", ["feature_set"])
CLOUD_CONFIRMED = Counter("vigil_cloud_confirmed_total", "Flagged windows the cloud tier confirmed", ["feature_set"])
FALL_OUTCOMES = Counter("vigil_fall_outcomes_total",
                        "Suspected falls settled by stage 3: DISMISSED (a false alarm, by the wearer), EMERGENCY_NO_RESPONSE, EMERGENCY_HELP",
                        ["outcome"])
BATCH_SECONDS = Histogram(
    "vigil_batch_seconds",
    "Wall time a stage spends on one batch, publishing included",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENT_LATENCY = Histogram(
    "vigil_event_latency_seconds",
    "Event time (end of the window or record) to publication of the stage's output",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BUILD = Info("vigil_build", "vigil version and the models the worker started with")
MODEL_SERVING = Gauge("vigil_model_serving", "1 for the model version a tier's alias (active, canary, shadow) serves now, 0 for ones it served before",
                      ["tier", "alias", "version"])
CANARY_SHARE = Gauge("vigil_canary_share", "Share of assets a tier's canary serves (0: no canary)", ["tier"])
MODEL_SWITCHES = Counter("vigil_model_switches_total", "Models swapped in from models.control", ["tier", "alias"])
MODEL_REFUSALS = Counter("vigil_model_refusals_total",
                         "models.control changes not applied (the worker kept its model): unknown version, failed checksum, bad record",
                         ["tier", "reason"])

# Monitoring (streams.ops): each worker reports the findings its partitions hold; Prometheus sums the workers.
DRIFT_FINDINGS_OPEN = Gauge("vigil_drift_findings_open", "Drift findings open now on this worker's partitions",
                            ["kind", "scope"])
DRIFT_KL = Gauge("vigil_drift_kl", "Fleet KL divergence of each feature's deviations from the reference, latest closed short window",
                 ["feature_set", "feature"])
QUALITY_FINDINGS_OPEN = Gauge("vigil_quality_findings_open", "Data-quality findings open now on this worker's partitions",
                              ["check", "scope"])
QUALITY_BAD_DEVICE_SHARE = Gauge("vigil_quality_bad_device_share", "Share of devices with an open quality finding, latest fleet window",
                                 ["topology"])
QUALITY_BAD_READING_SHARE = Gauge("vigil_quality_bad_reading_share", "Share of readings judged bad, latest fleet window", ["topology"])
ALERT_FEEDBACK = Counter("vigil_alert_feedback_total", "Alert episodes labelled by maintenance (latest label per alert)",
                         ["model_version", "outcome"])
# No model_version label: a missed failure's version is only known when it is reported, and a child created by its first
# inc() hides that increment from increase(); the stage creates both verdicts' children at 0. ops.failures names versions.
FAILURE_VERDICTS = Counter("vigil_failure_verdicts_total",
                           "Reported failures judged (and judged again when the verdict changed), by the verdict reached", ["verdict"])
INFERENCE_SECONDS = Histogram("vigil_inference_seconds", "Time a tier's model takes on one batch", ["tier"],
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
CONSUMER_LAG = Gauge("vigil_consumer_lag", "Records between a partition's end and this worker's position", ["topic", "partition"])


def parse_samples(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{label="value",...}': value}, read by prometheus_client's own parser.

    >>> parse_samples('# TYPE x_total counter\\nx_total{stage="edge"} 3.0\\nup 1\\n')
    {'x_total{stage="edge"}': 3.0, 'up': 1.0}
    """
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return samples


def scrape_metrics(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Samples from a worker's /metrics (raises OSError when it does not answer)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse_samples(response.read().decode())
