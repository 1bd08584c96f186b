import pytest

from models.registry import ModelIntegrityError, ModelNotFoundError, ModelRegistry


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry(tmp_path / "models")


def test_save_load_round_trip_with_metadata(registry):
    version = registry.save("edge", {"weights": [1, 2, 3]}, {"threshold": 0.7})
    model, meta = registry.load("edge")
    assert model == {"weights": [1, 2, 3]}
    assert meta["version"] == version and meta["tier"] == "edge" and meta["threshold"] == 0.7
    assert len(meta["sha256"]) == 64 and "scikit-learn" in meta["libraries"]


def test_first_version_is_active_and_later_ones_only_when_asked(registry):
    first = registry.save("edge", "a")
    second = registry.save("edge", "b")
    assert registry.active_version("edge") == first
    registry.activate("edge", second)
    assert registry.load("edge")[0] == "b"
    third = registry.save("edge", "c", activate=True)
    assert registry.active_version("edge") == third
    assert [m["version"] for m in registry.versions("edge")] == [first, second, third]


def test_a_tampered_artifact_is_refused_before_unpickling(registry, tmp_path):
    version = registry.save("edge", {"ok": True})
    artifact = tmp_path / "models" / "edge" / version / "model.pkl"
    data = bytearray(artifact.read_bytes())
    data[-2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.load("edge")


def test_missing_models_say_so(registry):
    with pytest.raises(ModelNotFoundError, match="no active 'edge' model"):
        registry.load("edge")
    with pytest.raises(ModelNotFoundError):
        registry.activate("edge", "edge-nope")
