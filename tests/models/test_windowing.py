import numpy as np
import pytest

from vigil.models.windowing import MIN_WINDOW_SAMPLES, append_chunk, gap_tolerance_ms

FS_HZ = 1000.0


def feed(chunks, window_s=1.0):
    """chunks: (seq, ts_ms, n_samples); samples are the running sample index, to check order."""
    buffer, windows, counter = None, [], 0
    for seq, ts_ms, n in chunks:
        samples = np.arange(counter, counter + n, dtype=np.float32)
        counter += n
        buffer, done = append_chunk(buffer, seq=seq, ts_ms=ts_ms, fs_hz=FS_HZ, rpm=1500.0, samples=samples, window_s=window_s)
        windows += done
    return buffer, windows


def test_continuous_chunks_are_cut_into_whole_windows_in_order():
    # 5 chunks of 0.4 s = 2 s -> two 1 s windows, nothing left over
    _, windows = feed([(i, 1_000_000 + 400 * i, 400) for i in range(5)])
    assert [w.seq for w in windows] == [0, 1]
    assert [w.ts_ms for w in windows] == [1_000_000, 1_001_000]
    assert [(w.first_input_seq, w.last_input_seq) for w in windows] == [(0, 2), (2, 4)]
    np.testing.assert_array_equal(np.concatenate([w.samples for w in windows]), np.arange(2000))


def test_a_chunk_longer_than_a_window_yields_several_windows_and_keeps_the_rest():
    buffer, windows = feed([(0, 0, 2500)])
    assert [len(w.samples) for w in windows] == [1000, 1000]
    assert len(buffer.samples) == 500
    assert buffer.end_ts_ms == pytest.approx(2500.0)


def test_snapshots_separated_by_gaps_are_windows_of_their_own():
    # PRONOSTIA-like: 100 ms snapshots every 10 s; each is emitted when the next one shows the gap
    _, windows = feed([(i, 10_000 * i, 100) for i in range(4)])
    assert [w.seq for w in windows] == [0, 1, 2]
    assert [w.ts_ms for w in windows] == [0, 10_000, 20_000]
    assert all(len(w.samples) == 100 and w.duration_s == pytest.approx(0.1) for w in windows)


def test_a_snapshot_exactly_one_window_long_is_emitted_at_once():
    _, windows = feed([(i, 10_000 * i, 100) for i in range(4)], window_s=0.1)
    assert [w.seq for w in windows] == [0, 1, 2, 3]


def test_small_jitter_continues_the_segment_and_a_tail_shorter_than_the_minimum_is_discarded():
    tolerance = gap_tolerance_ms(FS_HZ)
    buffer, windows = feed([(0, 0, 700), (1, 700 + tolerance * 0.9, 700), (2, 5000, 10)])
    assert [len(w.samples) for w in windows] == [1000, 400]  # 1.4 s continuous, then a gap flushes 0.4 s
    buffer, _ = append_chunk(buffer, seq=3, ts_ms=60_000, fs_hz=FS_HZ, rpm=None, samples=np.zeros(5, np.float32), window_s=1.0)
    assert buffer.discarded_samples == 10 < MIN_WINDOW_SAMPLES
    assert buffer.rpm == 1500.0  # unknown rpm keeps the last known


def test_a_change_of_sampling_rate_starts_a_new_segment():
    buffer, windows = feed([(0, 0, 500)])
    buffer, done = append_chunk(buffer, seq=1, ts_ms=500, fs_hz=2000.0, rpm=None, samples=np.zeros(2000, np.float32), window_s=1.0)
    assert [(w.fs_hz, len(w.samples)) for w in done] == [(FS_HZ, 500), (2000.0, 2000)]
    assert [w.seq for w in done] == [0, 1]
