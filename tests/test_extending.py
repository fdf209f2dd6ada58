"""docs/EXTENDING.md's two worked examples, run as written: the template files under
examples/extending/ are what a contributor copies, so they must keep working as the code moves.

1. ``my_model.py`` registers a GRU baseline ``my_gru``; a finetune config accepts the name and a
   tiny finetune on the virtual world writes finite predictions for the held-out fold.
2. ``my_source.py`` is an intake driver for JSON Lines station records; ``my_catalog.yaml`` built
   with ``stefaland data build`` gives a store whose values are the files' values in canonical units.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import intake
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.finetune import config_from_dict
from stefaland.finetune.models import MODELS
from stefaland.store import open_store
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "extending"
CATALOG = EXAMPLES / "my_catalog.yaml"
FT3 = 0.3048**3  # ft3 -> m3


def _load(name: str) -> ModuleType:
    """Import an example by path, as a contributor's own module would be imported."""
    spec = importlib.util.spec_from_file_location(f"stefaland_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def my_model() -> Iterator[ModuleType]:
    """The example registered for this module's tests only: the rest of the suite sees the built-ins."""
    module = _load("my_model")
    yield module
    MODELS.pop(module.NAME, None)


@pytest.fixture()
def my_driver() -> Iterator[type]:
    """``my_jsonl`` registered at run time (an installed package would use an entry point)."""
    module = _load("my_source")
    intake.register_driver("my_jsonl", module.JsonLinesStationSource, clobber=True)
    yield module.JsonLinesStationSource
    intake.unregister_driver("my_jsonl")


# -- 1. adding a model -------------------------------------------------------------------------------

def test_the_name_is_refused_until_registered_then_validated_with_its_capabilities(my_model: ModuleType) -> None:
    spec = MODELS.pop("my_gru")
    with pytest.raises(StefaLandError, match="model.name: unknown model 'my_gru'; known: lstm"):
        config_from_dict({"model": {"name": "my_gru"}})  # what a config says before the module is imported
    my_model.register()
    assert MODELS["my_gru"] is spec
    config = config_from_dict({"model": {"name": "my_gru", "hidden": 8}})
    assert config.model.name == "my_gru"  # model.name is checked against the registry as the config is read
    assert spec.kind == "torch" and not spec.pretrained_encoder
    assert spec.warmup(config.model) == 0 and spec.output_width(config.model) == 1  # asked of GRUBaseline
    assert config.model.display_label() == "my_gru"  # no paper name: the registry name labels predictions
    my_model.register()  # registering the same spec again is harmless
    with pytest.raises(ValueError, match="already registered"):
        _load("my_model")  # another spec under a taken name never silently replaces a model


def test_my_gru_finetunes_on_the_virtual_world(my_model: ModuleType, virtual_store: Path, tmp_path: Path) -> None:
    """`stefaland finetune --model my_gru` (validated override) on PUB fold 1 of the virtual world."""
    config = yaml.safe_load((REPO / "configs" / "finetune_tiny.yaml").read_text())
    config["data"]["seq_len"] = 60
    config["train"].update(epochs=2, iterations_per_epoch=8)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["finetune", "--store", str(virtual_store), "--config", str(tmp_path / "ft.yaml"),
                                      "--out", str(out), "--split", "pub", "--fold", "1", "--model", "my_gru", "--quiet"])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "fold-1" / "predictions.nc") as predictions:
        assert predictions.attrs["model"] == "my_gru" and predictions.attrs["units"] == "mm/day"
        folds = open_store(str(virtual_store))["fold_pub"].values
        sites = open_store(str(virtual_store))["site"].values.astype(str)
        assert sorted(predictions["site"].values.astype(str)) == sorted(sites[folds == 1])
        sim = predictions["sim"].values
        assert sim.size > 0 and np.isfinite(sim).all()
    assert json.loads((out / "fold-1" / "run.json").read_text())["model"] == "my_gru"


# -- 2. adding a data source -------------------------------------------------------------------------

def _records() -> pd.DataFrame:
    """The JSON Lines file read the plain way: absent keys and nulls are NaN."""
    lines = (EXAMPLES / "data" / "observations.jsonl").read_text().splitlines()
    frame = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
    return frame.set_index(["station", "date"]).astype(float)


def test_catalog_builds_a_store_equal_to_the_files(my_driver: type, tmp_path: Path) -> None:
    checked = CliRunner().invoke(cli, ["catalog", "validate", str(CATALOG)])  # the doc's first step
    assert checked.exit_code == 0 and "4 sources ok" in checked.output, checked.output
    out = tmp_path / "stations.zarr"
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(CATALOG), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    ds = open_store(str(out))
    stations = pd.read_csv(EXAMPLES / "data" / "stations.csv", dtype={"station": str}).set_index("station")
    records = _records()
    assert list(ds["site"].values.astype(str)) == list(stations.index)
    assert ds.attrs["provenance"]["dataset"] == "my_stations"
    assert dict(zip(ds["dvar"].values, ds["dvar_units"].values)) == {"prcp": "mm/day", "tmean": "degC"}
    assert list(ds["tvar_units"].values) == ["mm/day"] and list(ds["svar_units"].values) == ["km2", "m"]
    days = pd.DatetimeIndex(ds["time"].values)
    assert days[0] == pd.Timestamp("2001-03-01") and len(days) == 45
    for site in stations.index:
        area = stations.loc[site, "area_km2"]
        assert float(ds["static"].sel(site=site, svar="area")) == pytest.approx(area)
        assert float(ds["static"].sel(site=site, svar="elevation")) == pytest.approx(stations.loc[site, "elev_m"])
        assert float(ds["lat"].sel(site=site)) == pytest.approx(stations.loc[site, "lat"])
        rows = records.loc[site].reindex([f"{d:%Y-%m-%d}" for d in days])  # days without a record: NaN
        dynamic = ds["dynamic"].sel(site=site).values.astype(np.float64)
        np.testing.assert_allclose(dynamic[:, 0], rows["precip"], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(dynamic[:, 1], (rows["tair"] - 32.0) * 5.0 / 9.0, rtol=1e-5, atol=1e-5,
                                   equal_nan=True)
        depth = rows["discharge"] * FT3 * 86.4 / area  # ft3/s over the area -> mm/day
        np.testing.assert_allclose(ds["target"].sel(site=site).values[:, 0], depth, rtol=1e-5, equal_nan=True)
    # the gaps the example file holds: a null, an absent key, a record that ends early
    assert np.isnan(float(ds["target"].sel(site="ST02", time="2001-03-11", tvar="streamflow")))
    assert np.isnan(float(ds["dynamic"].sel(site="ST03", time="2001-03-21", dvar="tmean")))
    assert np.isnan(ds["dynamic"].sel(site="ST01", time=slice("2001-04-10", None)).values).all()


def _copy_example(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    shutil.copy(CATALOG, tmp_path / "my_catalog.yaml")
    return tmp_path / "my_catalog.yaml"


def _build_error(catalog: Path) -> str:
    result = CliRunner().invoke(cli, ["data", "build", "--catalog", str(catalog), "--out",
                                      str(catalog.parent / "out.zarr"), "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_what_stefaland_and_the_driver_refuse_in_one_line(my_driver: type, tmp_path: Path) -> None:
    catalog = _copy_example(tmp_path)
    text = catalog.read_text()
    catalog.write_text(text.replace("units: degF", "units: fahrenheit"))
    assert "unknown unit 'fahrenheit'" in _build_error(catalog)  # the build checks the catalog's units
    catalog.write_text(text.replace("role: target", "role: targets"))
    assert "targets" in _build_error(catalog)  # and its roles
    catalog.write_text(text)
    jsonl = tmp_path / "data" / "observations.jsonl"
    lines = jsonl.read_text().splitlines()
    lines[6] = lines[6].replace('"tair": ', '"tair": "x').replace(', "discharge"', '", "discharge"', 1)
    jsonl.write_text("\n".join(lines) + "\n")
    message = _build_error(catalog)  # the driver names the file and the line
    assert "observations.jsonl line 7" in message and "tair is not a number" in message


def test_an_unregistered_driver_is_named(tmp_path: Path) -> None:
    """Without the entry point (or register_driver) the catalog is refused before anything is read."""
    if "my_jsonl" in intake.registry:
        pytest.skip("my_jsonl is installed in this environment")
    message = _build_error(_copy_example(tmp_path))
    assert "unknown driver 'my_jsonl'" in message


def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """What `pip install` of a plug-in package leaves: a dist-info with a `stefaland.models` entry point."""
    from stefaland.finetune.models import registry

    (tmp_path / "stefaland_plugin_demo.py").write_text(
        "import dataclasses\nfrom stefaland.finetune.models import MODELS\n"
        "SPEC = dataclasses.replace(MODELS['lstm'], description='plug-in LSTM (entry-point test)')\n")
    info = tmp_path / "stefaland_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stefaland-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stefaland.models]\nplugin_lstm = stefaland_plugin_demo:SPEC\n"
                                           "plugin_broken = stefaland_plugin_missing:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        with caplog.at_level("WARNING", logger="stefaland.finetune"):
            assert "plugin_lstm" in registry.known_models()
        assert registry.MODELS["plugin_lstm"].description == "plug-in LSTM (entry-point test)"
        assert config_from_dict({"model": {"name": "plugin_lstm"}}).model.name == "plugin_lstm"
        assert "plugin_broken" not in registry.MODELS and "plugin_broken" in caplog.text  # logged, not fatal
    finally:
        registry.MODELS.pop("plugin_lstm", None)
