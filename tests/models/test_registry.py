import pytest

from vigil.models.registry import ModelIntegrityError, ModelNotFoundError, ModelRegistry


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


def test_rollback_restores_the_previously_active_version(registry):
    first = registry.save("cloud", "a")
    second = registry.save("cloud", "b", activate=True)
    third = registry.save("cloud", "c")
    registry.promote("cloud", third)
    assert registry.load("cloud")[0] == "c"
    assert registry.rollback("cloud") == second
    assert registry.load("cloud")[0] == "b"
    # A second rollback walks further back, it does not bounce back to the third.
    assert registry.rollback("cloud") == first
    with pytest.raises(ModelNotFoundError, match="no earlier active version"):
        registry.rollback("cloud")
    assert [h["action"] for h in registry.history("cloud")] == ["save", "save", "promote", "rollback", "rollback"]


def test_rollback_to_any_earlier_version(registry):
    first = registry.save("cloud", "a")
    registry.save("cloud", "b", activate=True)
    assert registry.rollback("cloud", to=first) == first
    assert registry.active_version("cloud") == first


def test_rollback_without_an_active_model_is_refused(registry):
    with pytest.raises(ModelNotFoundError, match="nothing to roll back"):
        registry.rollback("cloud")


def test_metadata_updates_keep_the_artifact_identity(registry):
    version = registry.save("cloud", {"w": 1}, {"thresholds": {"vibration.v2": 3.0}})
    registry.update_metadata("cloud", version, {"thresholds": {"vibration.v2": 6.0}})
    model, meta = registry.load("cloud")
    assert model == {"w": 1} and meta["thresholds"] == {"vibration.v2": 6.0}
    with pytest.raises(ValueError, match="sha256"):
        registry.update_metadata("cloud", version, {"sha256": "0" * 64})


def test_a_replaced_artifact_is_refused_even_if_it_unpickles(registry, tmp_path):
    import pickle

    version = registry.save("edge", {"threshold": 0.7})
    (tmp_path / "models" / "edge" / version / "model.pkl").write_bytes(pickle.dumps({"threshold": 0.0}))
    with pytest.raises(ModelIntegrityError, match="refusing to load"):
        registry.load("edge", version)


def test_a_version_shipped_to_another_registry_loads_there_and_tampered_bytes_are_refused(registry, tmp_path):
    version = registry.save("edge", {"w": [1, 2, 3]}, {"note": "shipped"})
    payload, metadata = registry.files("edge", version)
    elsewhere = ModelRegistry(tmp_path / "elsewhere")
    elsewhere.install("edge", version, payload, metadata)
    model, meta = elsewhere.load("edge", version)
    assert model == {"w": [1, 2, 3]} and meta["note"] == "shipped"
    assert elsewhere.active_version("edge") is None  # installed, not activated
    with pytest.raises(ModelIntegrityError, match="hash to"):
        elsewhere.install("edge", version, payload[:-1] + b"\x00", metadata)
    with pytest.raises(ModelIntegrityError, match="not edge other"):
        elsewhere.install("edge", "other", payload, metadata)
