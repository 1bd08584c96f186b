"""A model registry on disk: versioned artifacts with metadata and a sha256 checked before loading.

Layout under the root (``VIGIL_MODELS``, default ``./.vigil/models``)::

    <tier>/<version>/model.pkl     the pickled model
    <tier>/<version>/meta.json     tier, version, created_at, sha256, library versions, caller's metadata
    <tier>/ACTIVE                  the version workers load
    <tier>/HISTORY.json            every activation, promotion and rollback, oldest first

Nothing is unpickled before its bytes hash to the sha256 recorded at save
time: a tampered or truncated artifact is refused with ``ModelIntegrityError``.
Pickles are version-sensitive, so the numpy/scikit-learn/python versions
that wrote the artifact are recorded with it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

ARTIFACT = "model.pkl"
# The pump topology's tiers; named here so a worker can name a tier without importing its model code (torch).
EDGE_TIER = "edge"
CLOUD_TIER = "cloud"
FALL_TIER = "falls"  # fall detection stage 2
METADATA = "meta.json"
ACTIVE = "ACTIVE"
HISTORY = "HISTORY.json"


class ModelIntegrityError(RuntimeError):
    """The artifact's bytes do not match the sha256 in its metadata."""


class ModelNotFoundError(LookupError):
    pass


def _library_versions() -> dict[str, str]:
    import numpy
    import scipy
    import sklearn

    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}
    torch = sys.modules.get("torch")  # only when a torch model is being saved; importing it costs seconds
    if torch is not None:
        versions["torch"] = torch.__version__
    return versions


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, tier: str, model: Any, metadata: Mapping[str, Any] | None = None, *, activate: bool = False) -> str:
        """Store ``model`` as a new version of ``tier``; returns the version.

        The first version of a tier becomes active; later ones only with ``activate=True``.
        """
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        sha256 = hashlib.sha256(payload).hexdigest()
        created = datetime.now(timezone.utc)
        version = f"{tier}-{created:%Y%m%dT%H%M%S%f}-{sha256[:8]}"
        directory = self.root / tier / version
        directory.mkdir(parents=True, exist_ok=False)
        meta = {
            **(metadata or {}),
            "tier": tier,
            "version": version,
            "created_at": created.isoformat(),
            "sha256": sha256,
            "libraries": _library_versions(),
        }
        _atomic_write(directory / ARTIFACT, payload)
        _atomic_write(directory / METADATA, json.dumps(meta, indent=2, sort_keys=True).encode())
        if activate or self.active_version(tier) is None:
            self.activate(tier, version, action="save")
        return version

    def versions(self, tier: str) -> list[dict[str, Any]]:
        """Metadata of every version of ``tier``, oldest first."""
        base = self.root / tier
        if not base.is_dir():
            return []
        metas = [json.loads((d / METADATA).read_text()) for d in base.iterdir() if (d / METADATA).is_file()]
        return sorted(metas, key=lambda m: m["created_at"])

    def activate(self, tier: str, version: str, *, action: str = "promote") -> None:
        """Make ``version`` the one workers load, and record it in the tier's history."""
        self.metadata(tier, version)  # raises if absent
        history = self.history(tier)
        history.append({"action": action, "version": version, "previous": self.active_version(tier), "at": datetime.now(timezone.utc).isoformat()})
        _atomic_write(self.root / tier / HISTORY, json.dumps(history, indent=2).encode())
        _atomic_write(self.root / tier / ACTIVE, version.encode())

    promote = activate

    def history(self, tier: str) -> list[dict[str, Any]]:
        path = self.root / tier / HISTORY
        return json.loads(path.read_text()) if path.is_file() else []

    def rollback(self, tier: str, to: str | None = None) -> str:
        """Re-activate ``to``, or by default the version that was active before the current one; returns it.

        Repeated rollbacks walk further back through the promotions, not back and forth."""
        current = self.active_version(tier)
        if current is None:
            raise ModelNotFoundError(f"no active {tier!r} model under {self.root}: nothing to roll back")
        if to is None:
            from vigil.models.lifecycle import rollback_target

            to = rollback_target(self.history(tier), current)
            if to is None:
                raise ModelNotFoundError(f"{tier!r} has no earlier active version than {current}")
        self.activate(tier, to, action="rollback")
        return to

    def metadata(self, tier: str, version: str | None = None) -> dict[str, Any]:
        version = version or self.active_version(tier)
        if version is None:
            raise ModelNotFoundError(f"no active {tier!r} model under {self.root}")
        path = self.root / tier / version / METADATA
        if not path.is_file():
            raise ModelNotFoundError(f"no version {version!r} of tier {tier!r} under {self.root}")
        return json.loads(path.read_text())

    def update_metadata(self, tier: str, version: str, updates: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``updates`` into a version's metadata (tuned thresholds, evaluation results).
        The artifact and its sha256 are untouched; identity fields cannot be changed."""
        frozen = {"tier", "version", "created_at", "sha256", "libraries"} & set(updates)
        if frozen:
            raise ValueError(f"metadata fields {sorted(frozen)} identify the artifact and cannot be changed")
        meta = {**self.metadata(tier, version), **updates}
        _atomic_write(self.root / tier / version / METADATA, json.dumps(meta, indent=2, sort_keys=True).encode())
        return meta

    def tiers(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir()) if self.root.is_dir() else []

    def active_version(self, tier: str) -> str | None:
        path = self.root / tier / ACTIVE
        return path.read_text().strip() if path.is_file() else None

    def files(self, tier: str, version: str) -> tuple[bytes, bytes]:
        """The artifact's bytes and its meta.json's, as stored (for shipping a version to another registry)."""
        directory = self.root / tier / version
        if not (directory / METADATA).is_file():
            raise ModelNotFoundError(f"no version {version!r} of tier {tier!r} under {self.root}")
        return (directory / ARTIFACT).read_bytes(), (directory / METADATA).read_bytes()

    def install(self, tier: str, version: str, payload: bytes, metadata: bytes) -> None:
        """Store a version received from another registry, byte for byte; refuses bytes that do not hash to
        the sha256 their metadata names, or metadata naming another version. Does not activate it."""
        meta = json.loads(metadata)
        if (meta.get("tier"), meta.get("version")) != (tier, version):
            raise ModelIntegrityError(f"metadata names {meta.get('tier')} {meta.get('version')}, not {tier} {version}")
        actual = hashlib.sha256(payload).hexdigest()
        if actual != meta.get("sha256"):
            raise ModelIntegrityError(f"{tier} {version}: received bytes hash to {actual}, its metadata says {meta.get('sha256')}")
        directory = self.root / tier / version
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / ARTIFACT, payload)
        _atomic_write(directory / METADATA, metadata)  # written last: a version without it does not exist

    def checked_artifact(self, tier: str, version: str) -> tuple[bytes, dict[str, Any]]:
        """A version's artifact bytes and metadata, once the bytes hash to the sha256 the metadata names."""
        directory = self.root / tier / version
        if not (directory / METADATA).is_file():
            raise ModelNotFoundError(f"no version {version!r} of tier {tier!r} under {self.root}")
        meta = json.loads((directory / METADATA).read_text())
        payload = (directory / ARTIFACT).read_bytes()
        actual = hashlib.sha256(payload).hexdigest()
        if actual != meta.get("sha256"):
            raise ModelIntegrityError(
                f"{directory / ARTIFACT} has sha256 {actual}, its metadata says {meta.get('sha256')}: refusing to load it"
            )
        return payload, meta

    def load(self, tier: str, version: str | None = None) -> tuple[Any, dict[str, Any]]:
        """Load a version (default: the active one) after checking its sha256."""
        version = version or self.active_version(tier)
        if version is None:
            raise ModelNotFoundError(f"no active {tier!r} model under {self.root}")
        payload, meta = self.checked_artifact(tier, version)
        return pickle.loads(payload), meta
