import pytest

from vigil.models.assets import AssetCatalog, AssetConfig
from vigil.models.bearing import PRONOSTIA_BEARING, SKF_6205, BearingGeometry


def test_skf_6205_matches_the_cwru_published_orders():
    orders = SKF_6205.fault_orders()
    assert orders.bpfi_x == pytest.approx(5.4152, abs=1e-3)
    assert orders.bpfo_x == pytest.approx(3.5848, abs=1e-3)
    assert orders.bsf_x == pytest.approx(2.357, abs=1e-3)
    assert orders.ftf_x == pytest.approx(0.3983, abs=1e-3)
    assert orders.hz(1800.0)["bpfo"] == pytest.approx(3.5848 * 30, abs=0.05)


def test_pronostia_bearing_orders():
    orders = PRONOSTIA_BEARING.fault_orders()
    assert orders.bpfo_x + orders.bpfi_x == pytest.approx(13.0)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="roller_diameter_mm"):
        BearingGeometry(roller_diameter_mm=50.0, pitch_diameter_mm=40.0)


def test_asset_catalog_exact_then_patterns_then_defaults():
    catalog = AssetCatalog.from_mapping(
        {
            "defaults": {"window_s": 2.0},
            "assets": {
                "Bearing1_*": {"bearing": "pronostia", "window_s": 0.1},
                "Bearing1_3": {"bearing": {"n_rollers": 8, "roller_diameter_mm": 5.0, "pitch_diameter_mm": 30.0}},
            },
        }
    )
    assert catalog.for_asset("Bearing1_1").bearing == PRONOSTIA_BEARING
    assert catalog.for_asset("Bearing1_1").window_s == 0.1
    assert catalog.for_asset("Bearing1_3").bearing.n_rollers == 8
    assert catalog.for_asset("Bearing1_3").window_s == 2.0  # defaults apply under an exact entry
    assert catalog.for_asset("pump-1") == AssetConfig(window_s=2.0)


def test_asset_catalog_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown asset settings"):
        AssetCatalog.from_mapping({"assets": {"p": {"window": 1}}})
    with pytest.raises(ValueError, match="unknown bearing"):
        AssetCatalog.from_mapping({"assets": {"p": {"bearing": "nsk9999"}}})


def test_the_documented_example_asset_file_loads():
    from pathlib import Path

    catalog = AssetCatalog.load(Path(__file__).resolve().parents[2] / "docs" / "examples" / "assets-pronostia.json")
    assert catalog.for_asset("Bearing2_1").window_s == 0.1 and catalog.for_asset("Bearing2_1").bearing == PRONOSTIA_BEARING
    assert catalog.for_asset("cwru-X105").bearing == SKF_6205
