from vigil.streams.runtime.delivery import OffsetContinuity


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def decisions(guard, offsets, generation=1, tp="p", committed=None):
    return [guard.admit(generation, tp, o, committed) for o in offsets]


def test_in_order_records_are_processed_and_repeats_skipped():
    guard = OffsetContinuity()
    assert decisions(guard, [0, 1, 2, 1, 2, 3]) == ["process"] * 3 + ["skip"] * 2 + ["process"]


def test_a_hole_triggers_one_reseek_and_what_is_beyond_waits_for_it():
    guard = OffsetContinuity()
    assert decisions(guard, [10, 11, 13, 14]) == ["process", "process", "reseek", "skip"]
    assert guard.next_offset("p") == 12
    # after the seek the partition is delivered again from 12
    assert decisions(guard, [15, 12, 13, 14]) == ["skip", "process", "process", "process"]
    assert guard.reseeks == 1 and guard.accepted_jumps == 0


def test_a_real_gap_is_accepted_after_the_timeout():
    clock = FakeClock()
    guard = OffsetContinuity(resync_timeout_s=5.0, clock=clock)
    assert decisions(guard, [0, 3]) == ["process", "reseek"]
    clock.now = 4.0
    assert decisions(guard, [3]) == ["skip"]
    clock.now = 6.0
    assert decisions(guard, [3, 4]) == ["process", "process"]
    assert guard.accepted_jumps == 1


def test_first_record_after_assignment_starts_at_the_committed_offset():
    guard = OffsetContinuity()
    assert decisions(guard, [7], committed=5) == ["reseek"]
    assert guard.next_offset("p") == 5
    assert decisions(guard, [5, 6, 7], committed=5) == ["process"] * 3


def test_partitions_are_independent_and_a_new_generation_starts_afresh():
    guard = OffsetContinuity()
    assert guard.admit(1, "a", 0) == "process" and guard.admit(1, "b", 40) == "process"
    assert guard.admit(1, "a", 1) == "process" and guard.admit(1, "b", 41) == "process"
    assert guard.admit(2, "a", 0) == "process"  # after a rebalance Faust re-delivers from the committed offset
