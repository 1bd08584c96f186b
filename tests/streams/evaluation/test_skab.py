import numpy as np
import pytest

from vigil.streams.evaluation.skab import SkabFile, confusion, episode_rows, evaluate_skab, read_skab_file, skab_files, skab_metrics


def test_metrics_by_hand():
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    counts = confusion(y_true, y_pred)
    assert counts == {"tp": 3, "fp": 1, "fn": 1, "tn": 5}
    # F1 = 3 / (3 + (1 + 1) / 2) = 0.75; FAR = 1 / 6; MAR = 1 / 4
    assert skab_metrics(counts) == {"f1": 0.75, "far": 0.1667, "mar": 0.25}


def test_always_anomaly_reproduces_the_leaderboard_reference():
    # SKAB's test rows are 53.7 % anomalies; flagging everything gives F1 = 2p / (1 + p) = 0.698.
    p = 0.537
    y_true = np.r_[np.ones(537), np.zeros(463)]
    assert skab_metrics(confusion(y_true, np.ones(1000))) == {"f1": 0.6988, "far": 1.0, "mar": 0.0}
    assert skab_metrics(confusion(y_true, np.zeros(1000))) == {"f1": 0.0, "far": 0.0, "mar": 1.0}
    assert round(2 * p / (1 + p), 3) == 0.699


def test_episode_rows_map_windows_back_to_rows():
    # Row 3 was dead-lettered: window 3 is row 4.
    row_of_window = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    alerts = [{"state": "OPEN", "first_seq": 2, "last_seq": 2}, {"state": "CLOSE", "first_seq": 2, "last_seq": 4},
              {"state": "OPEN", "first_seq": 7, "last_seq": 7}]
    assert episode_rows(alerts, row_of_window, 10).astype(int).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]


def synthetic_skab_file(tmp_path, seed):
    """A pump at a steady duty for 600 s whose flow drops and current rises from row 700 to 900 (a closing valve)."""
    rng = np.random.default_rng(seed)
    n = 1100
    rows = ["datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint"]
    for i in range(n):
        fault = 700 <= i < 900
        flow = 32.0 - (6.0 if fault else 0.0) + rng.normal(0, 0.3)
        current = 1.3 + (0.25 if fault else 0.0) + rng.normal(0, 0.02)
        rows.append(f"2020-03-09 10:{(14 + i // 60) % 60:02d}:{i % 60:02d};{0.027 + rng.normal(0, 0.001):.5f};{0.040 + rng.normal(0, 0.001):.5f};"
                    f"{current:.4f};{0.2 + rng.normal(0, 0.02):.4f};{79.0 + rng.normal(0, 0.1):.3f};{26.0 + rng.normal(0, 0.05):.3f};"
                    f"{233.0 + rng.normal(0, 1.0):.2f};{flow:.2f};{1.0 if fault else 0.0};0")
    path = tmp_path / f"{seed}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_protocol_finds_a_synthetic_valve_fault(tmp_path):
    files = []
    for seed in (1, 2):
        records, anomaly = read_skab_file(synthetic_skab_file(tmp_path, seed), f"skab-valve1-{seed}")
        files.append(SkabFile("valve1", f"{seed}.csv", records, anomaly))
    report = evaluate_skab(tmp_path, files=files)
    assert report["files"] == 2 and report["test_rows"] == 2 * 700
    assert report["mar"] < 0.05 and [p["episodes"] for p in report["per_file"]] == [1, 1]
    # The false alarms are the tail of each episode: the trailing mean still holds fault samples for
    # process_window_samples rows after the fault ends, then the quiet period keeps the episode open.
    tail_rows = report["process_window_samples"] + report["policy"]["quiet_s"] + 15
    assert report["confusion"]["fp"] <= 2 * tail_rows
    assert report["f1"] > 0.85


def test_a_folder_without_the_skab_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a SKAB data folder"):
        skab_files(tmp_path)
