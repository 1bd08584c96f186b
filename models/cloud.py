"""Cloud tier: an LSTM autoencoder over an asset's most recent feature windows.

The edge tier judges one window at a time; the cloud tier looks at the last
``window`` deviation vectors of the same stream (each window's robust z-scores
against the asset's commissioning baseline) and asks whether that short
history looks like the healthy histories it was trained on. Its score is the
reconstruction error calibrated against the training sequences: the log error
in robust standard deviations above the healthy median, so 0 is typical, and
the threshold is a high quantile of the training scores.

Deviations are squashed with ``sign(z) * log1p(|z|)`` before standardization:
a failing bearing moves features by hundreds of sd, and an unsquashed input
would let one such feature dominate both training and the error.

The artifact pickles plain numpy arrays, never torch objects, so the registry's
pickles do not depend on torch's internals; the network is rebuilt on load.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

MAD_TO_SD = 1.4826
MIN_LOG_ERROR_SPREAD = 0.05
TINY = 1e-12


def squash(Z: np.ndarray) -> np.ndarray:
    Z = np.asarray(Z, dtype=np.float64)
    return np.sign(Z) * np.log1p(np.abs(Z))


def sliding_sequences(Z: np.ndarray, window: int) -> np.ndarray:
    """(n, features) consecutive vectors -> (n, window, features): row i ends at vector i.

    Rows before the first full window are padded at the start with zeros, the
    deviation of a window exactly at its baseline.

    >>> sliding_sequences(np.arange(3.0)[:, None], 2)[:, :, 0].tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 2.0]]
    """
    Z = np.asarray(Z, dtype=np.float64)
    padded = np.vstack([np.zeros((window - 1, Z.shape[1])), Z])
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (n, features, window)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


class _LstmAutoencoder(nn.Module):
    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.LSTM(n_features, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.output = nn.Linear(hidden, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        latent = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        decoded, _ = self.decoder(latent)
        return self.output(decoded)


@dataclass
class TrainingReport:
    sequences: int
    epochs: int
    final_loss: float
    threshold: float


class CloudScorer:
    """LSTM autoencoder on sequences of deviation vectors, scored against its training errors.

    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(600)
    >>> healthy = np.column_stack([np.sin(2 * np.pi * t / 12), np.cos(2 * np.pi * t / 12)]) + 0.05 * rng.standard_normal((600, 2))
    >>> scorer = CloudScorer(window=12, hidden=16, epochs=40, random_state=0).fit(sliding_sequences(healthy, 12)[11:])
    >>> spiked = healthy[-12:].copy(); spiked[6, 0] += 4.0
    >>> normal_score, spike_score = scorer.score_many(np.stack([healthy[-12:], spiked]))
    >>> bool(normal_score < scorer.threshold_ < spike_score)
    True
    """

    def __init__(
        self,
        *,
        window: int = 16,
        hidden: int = 32,
        epochs: int = 20,
        batch_size: int = 128,
        learning_rate: float = 3e-3,
        threshold_quantile: float = 0.99,
        random_state: int = 0,
    ) -> None:
        self.window = window
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.threshold_quantile = threshold_quantile
        self.random_state = random_state

    # -- training -----------------------------------------------------------------
    def fit(self, sequences: np.ndarray, feature_names: Sequence[str] | None = None) -> "CloudScorer":
        """Train on healthy sequences (n, window, features) of deviation vectors."""
        S = np.asarray(sequences, dtype=np.float64)
        if S.ndim != 3 or S.shape[1] != self.window:
            raise ValueError(f"sequences must be (n, {self.window}, features), got {S.shape}")
        if len(S) < 2:
            raise ValueError(f"need at least 2 training sequences, got {len(S)}")
        X = squash(S)
        flat = X.reshape(-1, X.shape[2])
        self.mean_ = flat.mean(axis=0)
        self.std_ = np.maximum(flat.std(axis=0), 1e-3)
        data = torch.from_numpy(((X - self.mean_) / self.std_).astype(np.float32))

        torch.manual_seed(self.random_state)
        net = _LstmAutoencoder(S.shape[2], self.hidden)
        optimiser = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        generator = torch.Generator().manual_seed(self.random_state)
        loss = torch.tensor(float("nan"))
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(data), generator=generator)
            for start in range(0, len(data), self.batch_size):
                batch = data[order[start : start + self.batch_size]]
                optimiser.zero_grad()
                loss = torch.mean((net(batch) - batch) ** 2)
                loss.backward()
                optimiser.step()
        self.n_features_ = S.shape[2]
        self.feature_names_ = tuple(feature_names) if feature_names is not None else tuple(f"x{i}" for i in range(S.shape[2]))
        if len(self.feature_names_) != self.n_features_:
            raise ValueError(f"{len(self.feature_names_)} feature names for {self.n_features_} features")
        self.weights_ = {name: tensor.detach().numpy().copy() for name, tensor in net.state_dict().items()}
        self._net = net.eval()

        log_errors = np.log(self.reconstruction_errors(S) + TINY)
        self.log_error_median_ = float(np.median(log_errors))
        spread = float(np.median(np.abs(log_errors - self.log_error_median_)) * MAD_TO_SD)
        self.log_error_spread_ = max(spread, MIN_LOG_ERROR_SPREAD)
        self.training_scores_ = self._calibrate(log_errors)
        self.threshold_ = float(np.quantile(self.training_scores_, self.threshold_quantile))
        self.report_ = TrainingReport(len(S), self.epochs, float(loss.item()), self.threshold_)
        return self

    # -- scoring ------------------------------------------------------------------
    def _network(self) -> _LstmAutoencoder:
        if not hasattr(self, "weights_"):
            raise RuntimeError("CloudScorer is not fitted; call fit() first")
        if getattr(self, "_net", None) is None:
            net = _LstmAutoencoder(self.n_features_, self.hidden)
            net.load_state_dict({name: torch.from_numpy(array) for name, array in self.weights_.items()})
            self._net = net.eval()
        return self._net

    def reconstruction_errors(self, sequences: np.ndarray) -> np.ndarray:
        """Per sequence, the worst step's mean squared reconstruction error (standardized squashed units).

        The worst step, not the mean over the sequence: a change confined to the
        newest windows would otherwise be diluted by the healthy rest (measured on
        a periodic signal with a +5 sd spike in one of 15 steps: 93 % of spiked
        sequences over the threshold with the mean, 100 % with the worst step)."""
        net = self._network()
        S = np.asarray(sequences, dtype=np.float64)
        if len(S) == 0:
            return np.zeros(0)
        X = ((squash(S) - self.mean_) / self.std_).astype(np.float32)
        with torch.inference_mode():
            data = torch.from_numpy(X)
            reconstructed = net(data).numpy()
        return ((reconstructed - X) ** 2).mean(axis=2).max(axis=1).astype(np.float64)

    def _calibrate(self, log_errors: np.ndarray) -> np.ndarray:
        return (log_errors - self.log_error_median_) / self.log_error_spread_

    def score_many(self, sequences: np.ndarray) -> np.ndarray:
        """Calibrated scores: robust sd of the log reconstruction error above the healthy median."""
        return self._calibrate(np.log(self.reconstruction_errors(sequences) + TINY))

    # -- pickling: numpy arrays only ----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_net", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._net = None


@dataclass
class CloudModel:
    """One cloud scorer per feature set; every scorer uses the same sequence length."""

    feature_sets: dict[str, CloudScorer]
    window: int

    def for_feature_set(self, name: str) -> CloudScorer | None:
        return self.feature_sets.get(name)
