"""Data and prediction drift from binned counts: is what a pump sends now still what its model was trained on?

A model's metadata holds reference histograms of its training deviations
(``vigil.models.training.reference_histograms``: fractions over the fixed
robust-z edges ``REFERENCE_BIN_EDGES``) and, for prediction drift, of its
training scores (``reference_score_histogram``). The drift stage keeps only
per-window bin COUNTS (``bin_counts``, mergeable by addition, so the fleet
check sums the assets' counts) and calls ``judge_window`` when a window closes.

Per feature the verdict needs both an effect size and evidence:
``KL(observed || reference) > kl`` (the brief: KL > 0.3 -> investigate) AND,
as in Evidently's default drift method, a test for small samples
(``n <= max_test_samples`` = 1,000: p < 0.05) or a distance above that
(Jensen-Shannon >= 0.1), where any test would call a negligible shift
significant. Evidently tests raw numeric columns with K-S; only counts are
kept here, so the test is the chi-square goodness of fit that Evidently and
NannyML use for categorical columns (alert at p < 0.05). A dataset drifts
when at least half its judged columns do (Evidently's ``drift_share``). PSI is
reported with its usual 0.1 line (Evidently's PSI default; the 0.1 / 0.25
credit-scoring rule) but does not decide. ``DriftEpisode`` adds hysteresis,
as river's detectors keep a warning apart from a detected drift, so one noisy
window does not flap an alert.

With the defaults, on features drawn from the reference itself, about 0.4 %
of 30-sample windows drift per feature, at most 1 in 30,000 of 60-sample ones
and none of 200 or more; no episode opens (``tests/models/test_drift.py``).
KL 0.3 is a mean shift of about 0.8 sigma or a spread of about 2x: a 1 sigma
shift is found in >= 93 % of 30-sample windows; at 2,000 samples a 0.5 sigma
shift, a 1.5x spread or a halved one never is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special, stats

EPS = 1e-4  # pseudo-fraction added to every bin before renormalizing (Evidently clips empty bins to 1e-4)

# Edge-score bins in units of the flag threshold (flagged means score > threshold). Isolation-Forest-like
# scores sit near 0.5 with the threshold at a high training quantile, so typical windows fall at 0.6-0.95x:
# the bins are finest there, and the outer edges are finite (+-1e9) so the stored reference stays valid JSON.
SCORE_RATIO_EDGES = (-1e9, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1e9)


@dataclass(frozen=True)
class DriftThresholds:
    kl: float = 0.3  # KL(observed || reference), nats, above which a feature's shift is worth investigating (the brief)
    js: float = 0.1  # Jensen-Shannon distance (base 2) deciding for samples above max_test_samples (Evidently)
    alpha: float = 0.05  # chi-square significance for samples up to max_test_samples (Evidently)
    max_test_samples: int = 1000
    min_samples: int = 30  # below this a feature is "insufficient", never drifted
    dataset_share: float = 0.5  # share of judged features that must drift for the dataset to drift (Evidently)
    psi: float = 0.1  # reported line only: FeatureDrift.psi above it is "some shift"; it does not decide
    eps: float = EPS  # smoothing pseudo-fraction so empty bins keep KL, PSI and expected counts finite
    flag_rate_up: float = 1.5  # flag-rate drift needs observed >= 1.5x expected (the brief: FP rate +50 % -> retrain)
    flag_rate_down: float = 0.5  # ... or observed <= 0.5x expected (the scorer went blind)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    n: int
    psi: float
    kl: float
    js: float
    test: str  # "chi2" (n <= max_test_samples) or "js"
    p_value: float | None  # chi-square goodness-of-fit p-value; None when the js rule decided
    drifted: bool


@dataclass(frozen=True)
class DriftVerdict:
    features: tuple[FeatureDrift, ...]  # every judged feature, in the order given
    drifted: tuple[str, ...]
    unreferenced: tuple[str, ...]  # counts but no (or an empty) reference: reported, never judged as drift
    insufficient: tuple[str, ...]  # fewer than min_samples
    dataset_drifted: bool


def bin_counts(values: np.ndarray, bin_edges: Sequence[float]) -> np.ndarray:
    """Counts per column and bin, shape (k, len(bin_edges) - 1), with ``np.histogram``'s bins.

    Bins are [e_i, e_i+1), the last one closed. NaN and +-inf are not counted
    (see ``nonfinite_counts``), nor are finite values outside the edges, as in
    ``np.histogram``. A 1-D ``values`` is one column. Vectorized: one
    comparison per edge (a (edges, n, k) boolean temporary), no loop over rows.

    >>> bin_counts(np.array([[0.5, -7.0], [1.5, np.nan], [0.2, 2.0]]), [-1e9, 0.0, 1.0, 1e9]).tolist()
    [[0, 2, 1], [1, 0, 1]]
    """
    edges = np.asarray(bin_edges, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"bin_edges must be at least two strictly increasing values, got {list(bin_edges)}")
    v = np.asarray(values, dtype=float)
    v = v.reshape(-1, 1) if v.ndim == 1 else v
    at_least = (v >= edges[:, None, None]).sum(axis=1)  # per edge and column: values >= edge (NaN never is)
    at_least[-1] = (v > edges[-1]).sum(axis=0)  # the last bin keeps its right edge
    return (at_least[:-1] - at_least[1:]).T.astype(np.int64)


def nonfinite_counts(values: np.ndarray) -> np.ndarray:
    """NaN and +-inf per column (shape (k,)): the values ``bin_counts`` leaves out."""
    v = np.asarray(values, dtype=float)
    v = v.reshape(-1, 1) if v.ndim == 1 else v
    return np.count_nonzero(~np.isfinite(v), axis=0).astype(np.int64)


def _distributions(observed_counts: Any, reference_fractions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, observed fractions, reference fractions), validated and normalized along the last axis."""
    c = np.asarray(observed_counts, dtype=float)
    r = np.asarray(reference_fractions, dtype=float)
    if c.shape != r.shape:
        raise ValueError(f"observed counts have {c.shape[-1]} bins but the reference has {r.shape[-1]}: "
                         "built on other bin edges?")
    if (c < 0).any() or (r < 0).any() or not np.isfinite(r).all():
        raise ValueError("counts and reference fractions must be finite and non-negative")
    n, total = c.sum(axis=-1, keepdims=True), r.sum(axis=-1, keepdims=True)
    if (n <= 0).any() or (total <= 0).any():
        raise ValueError("observed counts and reference fractions must not be all zero")
    return c, c / n, r / total


def _smooth(p: np.ndarray, eps: float) -> np.ndarray:
    return (p + eps) / (1.0 + eps * p.shape[-1])


# The statistics on validated distributions, one per row of a 2-D batch (judge_window judges a window's
# features in one pass: per-call overhead, not arithmetic, is the cost at 10 bins).
def _psi(o: np.ndarray, r: np.ndarray, eps: float) -> np.ndarray:
    o, r = _smooth(o, eps), _smooth(r, eps)
    return np.sum((o - r) * np.log(o / r), axis=-1)


def _kl(o: np.ndarray, r: np.ndarray, eps: float) -> np.ndarray:
    o, r = _smooth(o, eps), _smooth(r, eps)
    return np.sum(o * np.log(o / r), axis=-1)


def _js(o: np.ndarray, r: np.ndarray) -> np.ndarray:
    # scipy.spatial.distance.jensenshannon(o, r, base=2), row-wise
    m = (o + r) / 2
    return np.sqrt(np.maximum(0.0, np.sum(special.rel_entr(o, m) + special.rel_entr(r, m), axis=-1) / (2 * np.log(2))))


def _chi2_p(c: np.ndarray, r: np.ndarray, eps: float) -> np.ndarray:
    # scipy.stats.chisquare(c, f_exp) (Pearson, df = bins - 1), row-wise: chisquare itself costs ~600 us a call
    expected = _smooth(r, eps) * c.sum(axis=-1, keepdims=True)
    return special.chdtrc(c.shape[-1] - 1, np.sum((c - expected) ** 2 / expected, axis=-1))


def psi(observed_counts: Any, reference_fractions: Any, eps: float = EPS) -> float:
    """Population stability index sum((o - r) ln(o / r)), both distributions smoothed by ``eps``."""
    _, o, r = _distributions(np.ravel(observed_counts), np.ravel(reference_fractions))
    return float(_psi(o, r, eps))


def kl_divergence(observed_counts: Any, reference_fractions: Any, eps: float = EPS) -> float:
    """KL(observed || reference) in nats, both distributions smoothed by ``eps``."""
    _, o, r = _distributions(np.ravel(observed_counts), np.ravel(reference_fractions))
    return float(_kl(o, r, eps))


def js_distance(observed_counts: Any, reference_fractions: Any) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]), as ``scipy.spatial.distance.jensenshannon``; needs no smoothing."""
    _, o, r = _distributions(np.ravel(observed_counts), np.ravel(reference_fractions))
    return float(_js(o, r))


def chi2_p_value(observed_counts: Any, reference_fractions: Any, eps: float = EPS) -> float:
    """``scipy.stats.chisquare`` goodness-of-fit p-value against the reference smoothed by ``eps`` (no expected 0)."""
    c, _, r = _distributions(np.ravel(observed_counts), np.ravel(reference_fractions))
    return float(_chi2_p(c, r, eps))


def _judge(names: Sequence[str], counts: Any, reference: Any, t: DriftThresholds) -> list[FeatureDrift]:
    """Judge rows of (features, bins) counts against rows of reference fractions in one vectorized pass."""
    c, o, r = _distributions(counts, reference)
    n = c.sum(axis=-1).astype(np.int64)
    kl, js, psi_, p = _kl(o, r, t.eps), _js(o, r), _psi(o, r, t.eps), _chi2_p(c, r, t.eps)
    tested = n <= t.max_test_samples
    drifted = (kl > t.kl) & np.where(tested, p < t.alpha, js >= t.js)
    return [FeatureDrift(name, int(n[i]), float(psi_[i]), float(kl[i]), float(js[i]), "chi2" if tested[i] else "js",
                         float(p[i]) if tested[i] else None, bool(drifted[i])) for i, name in enumerate(names)]


def judge_feature(
    feature: str, counts: Any, reference_fractions: Any, thresholds: DriftThresholds = DriftThresholds()
) -> FeatureDrift:
    """One feature's window: drifted needs KL above ``thresholds.kl`` AND evidence (chi-square p, or JS for large n).

    ``min_samples`` is ``judge_window``'s gate; this judges whatever it is given.

    >>> ref = [0.1, 0.4, 0.4, 0.1]
    >>> judge_feature("rms", [10, 40, 40, 10], ref).drifted
    False
    >>> d = judge_feature("rms", [0, 5, 25, 30], ref)
    >>> d.drifted, d.test, round(d.kl, 2), d.p_value < 0.05
    (True, 'chi2', 0.69, True)
    >>> small = judge_feature("rms", [150, 350, 350, 150], ref)  # significant, but too small a shift to chase
    >>> small.drifted, round(small.kl, 3), small.p_value < 1e-9
    (False, 0.028, True)
    """
    return _judge([feature], np.ravel(counts)[None], np.ravel(reference_fractions)[None], thresholds)[0]


def judge_window(
    counts: Mapping[str, Any], reference: Mapping[str, Sequence[float]], thresholds: DriftThresholds = DriftThresholds()
) -> DriftVerdict:
    """Judge every feature of a closed window (``counts[feature]``: its bin counts) against ``reference`` fractions.

    Features without a reference (or with an all-zero one) are ``unreferenced``;
    those with fewer than ``min_samples`` counts ``insufficient``; neither drifts.
    A reference with another number of bins raises ``ValueError``.
    """
    unreferenced, insufficient, by_bins = [], [], {}
    for name, c in counts.items():
        c, ref = np.ravel(c), reference.get(name)
        if ref is None or not np.any(np.asarray(ref, dtype=float) > 0):
            unreferenced.append(name)
        elif len(c) != len(ref):
            raise ValueError(f"feature {name!r}: {len(c)} count bins but {len(ref)} reference fractions")
        elif c.sum() < thresholds.min_samples:
            insufficient.append(name)
        else:
            by_bins.setdefault(len(c), []).append((name, c, ref))
    judged = {f.feature: f for rows in by_bins.values()
              for f in _judge([n for n, _, _ in rows], [c for _, c, _ in rows], [r for _, _, r in rows], thresholds)}
    features = tuple(judged[name] for name in counts if name in judged)
    drifted = tuple(f.feature for f in features if f.drifted)
    dataset = bool(drifted) and len(drifted) >= thresholds.dataset_share * len(features)
    return DriftVerdict(features, drifted, tuple(unreferenced), tuple(insufficient), dataset)


def score_bin_edges(threshold: float) -> tuple[float, ...]:
    """Score edges ``SCORE_RATIO_EDGES`` x threshold (outer edges stay +-1e9), for ``bin_counts`` of edge scores."""
    if not threshold > 0:
        raise ValueError(f"score bins are in units of a positive flag threshold, got {threshold}")
    inner = tuple(r * threshold for r in SCORE_RATIO_EDGES[1:-1])
    return (SCORE_RATIO_EDGES[0], *inner, SCORE_RATIO_EDGES[-1])


def reference_score_histogram(training_scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Training scores' fractions over ``score_bin_edges(threshold)`` and their flag rate (share > threshold)."""
    s = np.asarray(training_scores, dtype=float).ravel()
    s = s[np.isfinite(s)]
    if not len(s):
        raise ValueError("no finite training scores")
    counts = bin_counts(s, score_bin_edges(threshold))[0]
    return {"bin_edges": list(SCORE_RATIO_EDGES), "fractions": np.round(counts / counts.sum(), 6).tolist(),
            "flag_rate": float(np.mean(s > threshold))}


def flag_rate_drift(
    flagged: int, n: int, expected_rate: float, thresholds: DriftThresholds = DriftThresholds()
) -> tuple[bool, float]:
    """(drifted, two-sided binomial p) of ``flagged`` of ``n`` against the training flag rate.

    Drifted needs p < alpha AND a ratio observed/expected of at least
    ``flag_rate_up`` (1.5: the brief's "false positives up 50 % -> retrain") or
    at most ``flag_rate_down`` (0.5), so a large fleet cannot call a 5 % wobble
    drift. Below ``min_samples`` the answer is (False, 1.0).
    """
    if not 0 <= expected_rate <= 1 or not 0 <= flagged <= n:
        raise ValueError(f"need 0 <= expected_rate <= 1 and 0 <= flagged <= n, got {expected_rate}, {flagged}/{n}")
    if n < thresholds.min_samples:
        return False, 1.0
    p = float(stats.binomtest(int(flagged), int(n), expected_rate).pvalue)
    rate = flagged / n
    moved = rate >= thresholds.flag_rate_up * expected_rate or rate <= thresholds.flag_rate_down * expected_rate
    return bool(p < thresholds.alpha and moved), p


@dataclass
class DriftEpisode:
    """Hysteresis so one noisy window does not flap: opens after ``open_after`` consecutive drifted windows,
    closes after ``close_after`` consecutive clean ones. ``streak`` counts windows toward the next change.

    Step only on windows that judged something: an insufficient window is neither drifted nor clean.

    >>> ep = DriftEpisode()
    >>> [ep.step(d, end) for d, end in [(True, 1), (False, 2), (True, 3), (True, 4)]]
    [None, None, None, 'OPEN']
    >>> ep.opened_ms, [ep.step(False, end) for end in (5, 6, 7)], ep.is_open
    (4, [None, None, 'CLOSE'], False)
    """
    open_after: int = 2
    close_after: int = 3
    is_open: bool = False
    streak: int = 0
    opened_ms: int | None = None

    def __post_init__(self) -> None:
        if self.open_after < 1 or self.close_after < 1:
            raise ValueError(f"open_after and close_after must be >= 1, got {self.open_after}, {self.close_after}")

    def step(self, drifted: bool, window_end_ms: int) -> str | None:
        """Feed one judged window; returns "OPEN", "CLOSE" or None."""
        if bool(drifted) == self.is_open:  # drifted while open, clean while closed: nothing is changing
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < (self.close_after if self.is_open else self.open_after):
            return None
        self.is_open, self.streak = not self.is_open, 0
        self.opened_ms = int(window_end_ms) if self.is_open else None
        return "OPEN" if self.is_open else "CLOSE"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftEpisode:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
