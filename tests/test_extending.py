"""docs/EXTENDING.md's two worked examples, run as written: the template files under
examples/extending/ are what a contributor copies, so they must keep working as the code moves.

1. ``my_model.py`` registers a GRU baseline ``my_gru``; a finetune config accepts the name and a
   tiny finetune on the virtual world writes finite predictions for the held-out fold.
2. ``my_source.py`` is an intake driver for JSON Lines station records; ``my_catalog.yaml`` built
   with ``stefaland data build`` gives a store whose values are the files' values in canonical units.
3. ``my_metric.py`` registers a metric, ``BetaNSE``; ``stefaland report`` scores it site by site
   (the per-site CSV, the summary, the JSON) as it scores the built-in metrics.
4. ``my_holdout.py`` registers a holdout scheme, ``camels/latitude``; ``splits make`` draws it,
   ``finetune --fold 1,2`` trains both folds in one command and ``report`` titles and checks them.
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


def _install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str, group: str,
                    entries: str) -> None:
    """What `pip install` of a plug-in package leaves: ``module``.py and a dist-info naming ``entries``
    (``name = module:object`` lines) in entry-point ``group``, importable for this test only."""
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entries}")
    monkeypatch.syspath_prepend(str(tmp_path))


def _load_plugins_again(monkeypatch: pytest.MonkeyPatch, group: str) -> None:
    """Let the next use of ``group``'s registry load its entry points again (the test installed one)."""
    from stefaland import plugins

    monkeypatch.setattr(plugins, "LOADED_GROUPS", plugins.LOADED_GROUPS - {group})


def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """What `pip install` of a plug-in package leaves: a dist-info with a `stefaland.models` entry point."""
    from stefaland.finetune.models import registry

    _install_plugin(tmp_path, monkeypatch, "stefaland_plugin_demo",
                    "import dataclasses\nfrom stefaland.finetune.models import MODELS\n"
                    "SPEC = dataclasses.replace(MODELS['lstm'], description='plug-in LSTM (entry-point test)')\n",
                    "stefaland.models", "plugin_lstm = stefaland_plugin_demo:SPEC\n"
                    "plugin_broken = stefaland_plugin_missing:SPEC\n")
    _load_plugins_again(monkeypatch, registry.ENTRY_POINT_GROUP)
    try:
        with caplog.at_level("WARNING", logger="stefaland.finetune"):
            assert "plugin_lstm" in registry.known_models()
        assert registry.MODELS["plugin_lstm"].description == "plug-in LSTM (entry-point test)"
        assert config_from_dict({"model": {"name": "plugin_lstm"}}).model.name == "plugin_lstm"
        assert "plugin_broken" not in registry.MODELS and "plugin_broken" in caplog.text  # logged, not fatal
    finally:
        registry.MODELS.pop("plugin_lstm", None)


# -- adding a metric ---------------------------------------------------------------------------------

@pytest.fixture()
def my_metric() -> Iterator[ModuleType]:
    """``BetaNSE`` registered for one test: the rest of the suite scores the built-in metrics only."""
    from stefaland.metrics import METRICS

    module = _load("my_metric")
    yield module
    METRICS.pop(module.NAME, None)


def _beta_nse(obs: np.ndarray, sim: np.ndarray) -> float:
    """Beta-NSE of one site the plain way, over the steps where both series are finite."""
    keep = np.isfinite(obs) & np.isfinite(sim)
    o, s = obs[keep].astype(np.float64), sim[keep].astype(np.float64)
    return float((s.mean() - o.mean()) / o.std())


def test_stefaland_report_scores_my_metric(my_metric: ModuleType, tmp_path: Path) -> None:
    """`stefaland report` on one PUB fold: BetaNSE per site in the CSV, its median in the summary and
    the JSON, and the task's table as it was (a table shows the metrics its task names)."""
    from stefaland.report import write_predictions

    rng = np.random.default_rng(5)
    obs = rng.gamma(2.0, 1.5, (6, 90))
    sim = obs * rng.uniform(0.7, 1.3, (6, 1)) + rng.normal(0, 0.5, obs.shape)
    obs[1, ::3] = np.nan  # gaps: scored over the paired steps
    obs[2] = 1.0  # constant observations: Beta-NSE is undefined there, so the site is skipped
    obs, sim = obs.astype(np.float32), sim.astype(np.float32)  # as predictions files store them
    sites = [f"site{k}" for k in range(6)]
    write_predictions(str(tmp_path / "runs" / "pub-fold-1.nc"), obs, sim, sites, pd.date_range("2001-01-01", periods=90),
                      "camels", "pub", "1", "GRU-SL", "mm/day")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "camels", "--split", "pub", "--folds", "1", "--runs",
                                      str(tmp_path / "runs"), "--out", str(out), "--format", "md,csv,json", "--quiet"])
    assert result.exit_code == 0, result.output
    per_site = pd.read_csv(out / "camels_sites.csv").set_index("site")["BetaNSE"]
    expected = [np.nan if k == 2 else _beta_nse(obs[k], sim[k]) for k in range(6)]
    np.testing.assert_allclose(per_site[sites].to_numpy(), expected, rtol=1e-9)
    summary = pd.read_csv(out / "camels_summary.csv").set_index("metric").loc["BetaNSE"]
    assert summary["value"] == pytest.approx(np.nanmedian(per_site)) and summary["aggregate"] == "median"
    assert (summary["n_scored"], summary["n_skipped"]) == (5, 1)
    document = json.loads((out / "camels_report.json").read_text())
    assert any(row["metric"] == "BetaNSE" for row in document["summary"])
    assert "BetaNSE" not in (out / "camels_table.md").read_text()


def test_an_installed_metric_plugin_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """What `pip install` of a plug-in package leaves: a dist-info with a `stefaland.metrics` entry point."""
    from stefaland import metrics

    _install_plugin(tmp_path, monkeypatch, "stefaland_metric_demo",
                    "from stefaland.metrics import Metric\n"
                    "METRIC = Metric(name='ME', direction='zero', fn=lambda b: b.error.sum(axis=1) / b.n_safe)\n"
                    "NOT_A_METRIC = 42\n",
                    "stefaland.metrics", "ME = stefaland_metric_demo:METRIC\nbroken = stefaland_metric_missing:METRIC\n"
                    "not_one = stefaland_metric_demo:NOT_A_METRIC\n")
    _load_plugins_again(monkeypatch, metrics.ENTRY_POINT_GROUP)
    try:
        with caplog.at_level("WARNING", logger="stefaland.metrics"):
            scores = metrics.site_metrics(np.array([[1.0, 2.0, 4.0]]), np.array([[2.0, 2.0, 5.0]]), min_valid=2)
        assert scores["ME"] == pytest.approx([2 / 3])
        assert "broken" not in metrics.METRICS and "broken" in caplog.text  # logged, not fatal
        assert "not_one" in caplog.text and "is not a Metric" in caplog.text
    finally:
        metrics.METRICS.pop("ME", None)


# -- adding a holdout scheme -------------------------------------------------------------------------

@pytest.fixture()
def my_holdout() -> Iterator[ModuleType]:
    """``camels/latitude`` registered for one test: the rest of the suite sees the built-in schemes."""
    from stefaland.splits.registry import HOLDOUTS

    module = _load("my_holdout")
    yield module
    HOLDOUTS.pop((module.TASK, module.NAME), None)


def test_my_holdout_splits_finetunes_and_reports_on_the_virtual_world(my_holdout: ModuleType, virtual_store: Path,
                                                                     tmp_path: Path) -> None:
    """`splits make --scheme latitude`, `finetune --split latitude --fold 1,2`, `report --split latitude`."""
    from stefaland.splits import read_split

    split = tmp_path / "latitude.csv"
    made = CliRunner().invoke(cli, ["splits", "make", "--task", "camels", "--scheme", "latitude", "--sites",
                                    str(virtual_store), "--basins", "all", "--out", str(split)])
    assert made.exit_code == 0, made.output
    assert "south=12 north=12" in made.output
    folds = read_split(str(split)).folds
    lat = open_store(str(virtual_store))["lat"].to_series().set_axis(folds.index)
    assert lat[folds == 1].max() < lat[folds == 2].min()  # the rule as written: south, then north
    config = yaml.safe_load((REPO / "configs" / "finetune_tiny.yaml").read_text())
    config["data"]["seq_len"] = 60
    config["train"].update(epochs=1, iterations_per_epoch=4)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    trained = CliRunner().invoke(cli, ["finetune", "--store", str(virtual_store), "--config", str(tmp_path / "ft.yaml"),
                                       "--out", str(runs / "lstm"), "--split", "latitude", "--split-file", str(split),
                                       "--fold", "1,2", "--quiet"])
    assert trained.exit_code == 0, trained.output
    assert [line.split(":")[0] for line in trained.stdout.splitlines() if line.startswith("fold ")] == ["fold 1", "fold 2"]
    for fold in (1, 2):
        with xr.open_dataset(runs / "lstm" / f"fold-{fold}" / "predictions.nc") as predictions:
            assert (predictions.attrs["split"], predictions.attrs["fold"]) == ("latitude", str(fold))
            assert sorted(predictions["site"].values.astype(str)) == sorted(folds.index[folds == fold])
    reported = CliRunner().invoke(cli, ["report", "camels", "--split", "latitude", "--runs", str(runs), "--out",
                                        str(tmp_path / "report"), "--format", "md", "--quiet"])
    assert reported.exit_code == 0, reported.output
    assert "latitude = Latitude holdout (southern and northern halves)" in reported.output
    assert "| LSTM-SL |" in reported.output


def test_a_holdout_scheme_is_refused_until_registered_and_never_replaced(my_holdout: ModuleType,
                                                                         tmp_path: Path) -> None:
    from stefaland.splits import Holdout, register_holdout
    from stefaland.splits.registry import HOLDOUTS

    HOLDOUTS.pop(("camels", "latitude"))
    refused = CliRunner().invoke(cli, ["report", "camels", "--split", "latitude", "--runs", str(tmp_path)])
    assert refused.exit_code == 1 and "task 'camels' has no split 'latitude'; known: pub, pur, temporal" in refused.output
    my_holdout.register()
    my_holdout.register()  # the same scheme again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_holdout(Holdout("camels", "latitude", title="another scheme under a taken name"))


def test_an_installed_holdout_plugin_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """What `pip install` of a plug-in package leaves: a dist-info with a `stefaland.holdouts` entry point."""
    from stefaland.report.tasks import TASKS
    from stefaland.splits import registry

    _install_plugin(tmp_path, monkeypatch, "stefaland_holdout_demo",
                    "from stefaland.splits import Holdout\n"
                    "HOLDOUT = Holdout('ismn', 'plugin_halves', title='Plug-in halves', fold_ids=(1, 2))\n",
                    "stefaland.holdouts", "plugin_halves = stefaland_holdout_demo:HOLDOUT\n"
                    "broken = stefaland_holdout_missing:HOLDOUT\n")
    _load_plugins_again(monkeypatch, registry.ENTRY_POINT_GROUP)
    try:
        with caplog.at_level("WARNING", logger="stefaland.splits"):
            scheme = TASKS["ismn"].schemes["plugin_halves"]  # the report's column group, from the registry
        assert (scheme.title, scheme.folds) == ("Plug-in halves", ("1", "2"))
        assert "broken" in caplog.text  # logged, not fatal
    finally:
        registry.HOLDOUTS.pop(("ismn", "plugin_halves"), None)
