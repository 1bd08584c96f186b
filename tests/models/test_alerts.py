import pytest

from vigil.models.alerts import AlertAssetState, AlertPolicy, AlertPolicyConfig, ScoredWindow, episode_id

ENVELOPE = {"envelope_bpfo": 60.0, "envelope_bpfi": 4.0, "envelope_bsf": 3.0}


def window(seq, *, flagged=True, confirmed=False, cloud=None, stream="vibration/h", period_s=10.0, deviations=None):
    return ScoredWindow(
        "pump-7", stream, seq, int(seq * period_s * 1000), flagged=flagged, confirmed=confirmed, edge_score=0.6 + 0.001 * seq,
        cloud_score=cloud if cloud is not None else (8.0 if confirmed else 1.0), cloud_threshold=4.0,
        deviations=deviations or {"kurtosis": 3.0 + seq, "rms_g": 1.0}, features=ENVELOPE,
        model_versions={"edge": "edge-1", "cloud": "cloud-1"},
    )


def run(policy, windows):
    state = AlertAssetState()
    return [e for w in windows for e in policy.step(state, w)], state


def test_k_of_the_last_n_flagged_windows_open_an_episode():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=3, confirm_n=5, quiet_s=600))
    pattern = [True, False, True, False, False, False, True, True, False, True]
    events, _ = run(policy, [window(i, confirmed=c) for i, c in enumerate(pattern)])
    # After seq 7 the last five flagged are F, F, T, T, ... only 2 of 5; seq 9 makes T,T,F,T = 3 of 5.
    assert [(e.state, e.last_seq) for e in events] == [("OPEN", 9)]
    assert events[0].alert_id == episode_id("pump-7", "vibration/h", 9)


def test_confirmations_older_than_confirm_within_s_do_not_count():
    # Three confirmed windows an hour apart: any of the last five, but never two within 90 minutes.
    sparse = [window(i, confirmed=True, period_s=3600.0) for i in range(3)]
    anytime = AlertPolicy(AlertPolicyConfig(confirm_k=3, confirm_n=5, quiet_s=600))
    assert [e.state for e in run(anytime, sparse)[0]] == ["OPEN"]
    recent = AlertPolicy(AlertPolicyConfig(confirm_k=3, confirm_n=5, quiet_s=600, confirm_within_s=5400))
    events, state = run(recent, sparse)
    assert events == [] and state.recent == [True, True] and state.recent_ts_ms == [3_600_000, 7_200_000]
    # Three within the span do open, at the third.
    dense = [window(i, confirmed=True, period_s=1800.0) for i in range(3)]
    assert [(e.state, e.last_seq) for e in run(recent, dense)[0]] == [("OPEN", 2)]


def test_state_from_before_timestamps_were_kept_still_counts():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=3, confirm_n=5, quiet_s=600, confirm_within_s=60))
    state = AlertAssetState(recent=[True, True])  # as AlertStageState decoded it from an older changelog
    assert [e.state for e in policy.step(state, window(5, confirmed=True))] == ["OPEN"]


def test_unflagged_windows_do_not_count_towards_n():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=2, confirm_n=2, quiet_s=600))
    windows = [window(0, confirmed=True), window(1, flagged=False), window(2, flagged=False), window(3, confirmed=True)]
    events, _ = run(policy, windows)
    assert [e.state for e in events] == ["OPEN"]


def test_an_episode_stays_open_while_confirmations_continue_and_closes_after_the_quiet_period():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=2, confirm_n=3, quiet_s=60))
    windows = [window(i, confirmed=True) for i in range(10)]  # a confirmation every 10 s
    windows += [window(i, flagged=False) for i in range(10, 16)]  # 60 s after seq 9: not yet quiet
    windows += [window(16, flagged=False)]  # 70 s: closes
    events, state = run(policy, windows)
    assert [e.state for e in events] == ["OPEN", "CLOSE"]
    assert events[1].confirmations == 9 and state.episode is None
    # A new streak opens a new episode with a new id.
    more = [e for w in [window(20, confirmed=True), window(21, confirmed=True)] for e in policy.step(state, w)]
    assert [e.state for e in more] == ["OPEN"] and more[0].alert_id != events[0].alert_id


def test_severity_grows_with_the_cloud_margin_and_is_announced_once():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=1, confirm_n=1, quiet_s=600))
    events, _ = run(policy, [window(0, confirmed=True, cloud=5.0), window(1, confirmed=True, cloud=7.0), window(2, confirmed=True, cloud=6.5),
                             window(3, confirmed=True, cloud=30.0)])
    assert [(e.state, e.severity) for e in events] == [("OPEN", "LOW"), ("UPDATE", "MEDIUM"), ("UPDATE", "CRITICAL")]


def test_the_alert_carries_evidence_versions_and_a_diagnosis():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=2, confirm_n=2, quiet_s=600))
    events, _ = run(policy, [window(0, confirmed=True), window(1, confirmed=True, deviations={"kurtosis": -9.0, "envelope_bpfo": 40.0, "rms_g": 2.0, "peak_g": 1.0})])
    alert = events[0]
    assert alert.model_versions == {"edge": "edge-1", "cloud": "cloud-1"}
    assert alert.top_features == {"envelope_bpfo": 40.0, "kurtosis": -9.0, "rms_g": 2.0}
    assert alert.diagnosis is not None and alert.diagnosis.fault == "outer_race"
    assert alert.edge_score == pytest.approx(0.601) and alert.cloud_score == 8.0


def test_replaying_the_same_windows_gives_the_same_alert_ids():
    policy = AlertPolicy(AlertPolicyConfig(confirm_k=2, confirm_n=3, quiet_s=30))
    windows = [window(i, confirmed=(i % 7) in (1, 2, 3)) for i in range(60)]
    first, _ = run(policy, windows)
    second, _ = run(policy, windows)
    assert len({e.alert_id for e in first}) >= 3
    assert [(e.alert_id, e.state) for e in first] == [(e.alert_id, e.state) for e in second]


def test_bad_policy_settings_are_refused():
    with pytest.raises(ValueError, match="confirm_k"):
        AlertPolicyConfig(confirm_k=4, confirm_n=3)
    with pytest.raises(ValueError, match="quiet_s"):
        AlertPolicyConfig(quiet_s=0)
    with pytest.raises(ValueError, match="confirm_within_s"):
        AlertPolicyConfig(confirm_within_s=0)
