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


def test_a_hole_triggers_one_reseek_and_what_is_beyond_is_held_until_it_comes():
    guard = OffsetContinuity()
    assert decisions(guard, [10, 11, 13, 14]) == ["process", "process", "reseek", "hold"]
    assert guard.next_offset("p") == 12
    # after the seek the partition is delivered again from 12
    assert decisions(guard, [15, 12, 13, 14]) == ["hold", "process", "process", "process"]
    assert guard.reseeks == 1 and guard.accepted_jumps == 0


def test_a_real_gap_is_accepted_after_the_timeout():
    clock = FakeClock()
    guard = OffsetContinuity(resync_timeout_s=5.0, clock=clock)
    assert decisions(guard, [0, 3]) == ["process", "reseek"]
    clock.now = 4.0
    assert decisions(guard, [3]) == ["hold"]
    clock.now = 6.0
    assert guard.due_reseeks(1) == []  # past the timeout the timer gives up on the hole
    assert decisions(guard, [3, 4]) == ["process", "process"]
    assert guard.accepted_jumps == 1 and guard.gaps == [("p", 1, 2)]  # offsets 1 and 2 never came


def test_the_seek_is_repeated_on_a_timer_while_the_hole_stays_open():
    # Faust drops a re-fetched record below the highest offset it has handed out, and records fetched
    # past the hole before the seek still arrive after it: one seek can be undone, and once everything
    # up to the partition's end has been dropped nothing arrives at all, so the timer seeks again.
    clock = FakeClock()
    guard = OffsetContinuity(resync_timeout_s=60.0, reseek_interval_s=0.5, clock=clock)
    assert decisions(guard, [0, 1, 5]) == ["process", "process", "reseek"]
    clock.now = 0.3
    assert decisions(guard, [6, 7]) == ["hold", "hold"] and guard.due_reseeks(1) == []
    clock.now = 0.8
    assert guard.due_reseeks(1) == [("p", 2)] and guard.due_reseeks(1) == []
    clock.now = 1.4
    assert guard.due_reseeks(1) == [("p", 2)]
    assert guard.due_reseeks(2) == []  # a new generation starts from the committed offsets anyway
    assert guard.reseeks == 3
    clock.now = 30.0  # the hole arrives at last: nothing beyond it was lost, nothing accepted as a gap
    assert decisions(guard, [2, 3, 4, 5, 6]) == ["process"] * 5
    assert guard.accepted_jumps == 0 and guard.due_reseeks(1) == []
    clock.now = 31.0
    assert decisions(guard, [8]) == ["reseek"]  # a new hole starts its own timer and seek


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


def test_an_idle_stage_short_of_the_partition_end_seeks_to_its_next_offset():
    # A hole at the partition's end shows no jump: nothing arrives beyond it. The consumer's end offset does.
    clock = FakeClock()
    guard = OffsetContinuity(stall_s=10.0, clock=clock)
    guard.batch_started()
    assert decisions(guard, range(143)) == ["process"] * 143
    guard.batch_finished()
    clock.now = 9.0
    assert guard.due_reseeks(1, {"p": 160}) == []  # not idle for long enough yet
    clock.now = 10.5
    assert guard.due_reseeks(1, {"p": 143}) == []  # at the end: idle is fine
    assert guard.due_reseeks(1, {"p": None}) == []  # revoked meanwhile: no end known
    assert guard.due_reseeks(2, {"p": 160}) == []  # a new generation seeks to the committed offsets itself
    assert guard.due_reseeks(1, {"p": 160}) == [("p", 143)]
    clock.now = 15.0
    assert guard.due_reseeks(1, {"p": 160}) == []  # once per stall_s, not on every tick
    clock.now = 21.0
    assert guard.due_reseeks(1, {"p": 160}) == [("p", 143)]
    assert guard.stalled_reseeks == 2 and guard.accepted_jumps == 0
    assert decisions(guard, range(140, 160)) == ["skip"] * 3 + ["process"] * 17


def test_a_stage_busy_with_a_long_batch_is_not_stalled():
    clock = FakeClock()
    guard = OffsetContinuity(stall_s=10.0, clock=clock)
    guard.batch_started()
    decisions(guard, range(10))
    clock.now = 30.0  # records wait behind a slow batch: they arrive when it is done
    assert guard.due_reseeks(1, {"p": 500}) == []
    guard.batch_finished()
    assert guard.due_reseeks(1, {"p": 500}) == []
    assert guard.stalled_reseeks == 0
