"""The models a stage scores with, swapped whole between batches.

Per tier a worker serves up to three aliases of ``models.control``: the
``active`` model, a ``canary`` that takes over a stable share of assets
(``vigil.models.lifecycle.in_canary``), and a ``shadow`` that scores the same
windows as whatever served them, to its own topic, for comparison only.

A stage reads ``models`` once at the start of a batch and scores the whole
batch with what it read; ``swap`` replaces the set with one assignment
(atomic in CPython) from the control watcher's thread. So no batch is scored
by two versions of an alias, and a swap never waits for a batch to finish.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic, Mapping, TypeVar

from vigil.models.lifecycle import in_canary

M = TypeVar("M")


@dataclass(frozen=True)
class ServingModel(Generic[M]):
    model: M
    version: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingSet(Generic[M]):
    active: ServingModel[M]
    shadow: ServingModel[M] | None = None
    canary: ServingModel[M] | None = None
    canary_share: float = 0.0

    def for_asset(self, asset_id: str) -> ServingModel[M]:
        """The canary for the assets in its share, the active model for the rest."""
        if self.canary is not None and in_canary(asset_id, self.canary_share):
            return self.canary
        return self.active

    def version_of(self, alias: str) -> str | None:
        serving = getattr(self, alias)
        return serving.version if serving is not None else None


class ModelServingStage(Generic[M]):
    """Mixin of the stages that score with a registry model (edge, cloud, fall stage 2)."""

    tier: str
    models: ServingSet[M]
    # Where shadow outputs go (logical topic name); stages without one ignore a shadow.
    shadow_topic: str | None = None

    @property
    def serving(self) -> ServingModel[M]:
        return self.models.active

    @property
    def model(self) -> M:
        return self.models.active.model

    @property
    def model_version(self) -> str:
        return self.models.active.version

    def swap(self, model: M | None, version: str | None, metadata: Mapping[str, Any] | None = None, *,
             alias: str = "active", share: float = 1.0) -> None:
        """Serve ``model`` as ``alias`` from the next batch on; ``model`` None retires a shadow or canary."""
        serving = ServingModel(model, version, dict(metadata or {})) if model is not None and version is not None else None
        if alias == "active":
            if serving is None:
                raise ValueError("the active model cannot be retired, only replaced")
            self.models = replace(self.models, active=serving)
        elif alias == "canary":
            self.models = replace(self.models, canary=serving, canary_share=share if serving is not None else 0.0)
        elif alias == "shadow":
            self.models = replace(self.models, shadow=serving)
        else:
            raise ValueError(f"unknown alias {alias!r}")
