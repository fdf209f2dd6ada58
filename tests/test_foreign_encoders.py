"""TerraMind-resConn and PrithviWxC-resConn: the paper's foreign-encoder rows, end to end on CPU.

The store is built by ``data build`` from the miniature Table C1 products (``data synth --products``)
with the shipped catalog/global.yaml sources (MSWX, GMTED and the TerraMind patch sources) plus a
streamflow target; the encoders are the tiny variants with random weights (no download, ever).
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.finetune.config import config_from_dict
from stefaland.finetune.data import resolve_variables
from stefaland.finetune.models.registry import build_torch_model, model_availability
from stefaland.finetune.models.terramind import TerraMindEncoder
from stefaland.gridded.patches import pixel_centres
from stefaland.run.checkpoint import load_latest
from stefaland.store import open_store
from stefaland_cli.main import cli

from _guarded import clean_env, cli_subprocess

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)
SOURCES = ["mswx", "gmted", "terramind_dem", "terramind_lulc", "terramind_ndvi"]
MODEL = {"hidden": 8, "dropout": 0.0, "variant": "tiny", "allow_random_init": True}
CONFIG = {
    "task": "camels",
    "data": {"target": "streamflow", "seq_len": 12, "train_start": "2017-01-01", "train_end": "2017-12-31",
             "test_start": "2018-01-01", "test_end": "2018-02-28"},
    "train": {"epochs": 1, "batch_size": 4, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 3},
}


@pytest.fixture(scope="module")
def world(miniature_products: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A catalog taking the shipped global.yaml sources plus a streamflow series, and its built store."""
    work = tmp_path_factory.mktemp("foreign")
    sites = pd.read_csv(miniature_products / "sites" / "pretraining_sites.csv", dtype={"site": str})["site"][:10]
    time = pd.date_range("2017-01-01", "2018-12-31", freq="D")
    rng = np.random.default_rng(0)
    flow = rng.gamma(2.0, 1.0, (len(sites), len(time))) * (1 + np.arange(len(sites)))[:, None] / 5
    xr.Dataset({"q": (("site", "time"), flow)}, coords={"site": sites.to_numpy(), "time": time}).to_netcdf(
        work / "flow.nc", engine="h5netcdf")
    catalog = {
        "metadata": {"version": 1, "stefaland": {
            "name": "foreign", "sites": "sites",
            "include": [{"catalog": str(REPO / "catalog" / "global.yaml"), "sources": ["sites", *SOURCES]}]}},
        "sources": {"flow": {"driver": "netcdf", "args": {"urlpath": "{{ CATALOG_DIR }}/flow.nc",
                                                           "xarray_kwargs": {"engine": "h5netcdf"}},
                             "metadata": {"role": "target", "site_id": "site",
                                          "variables": {"streamflow": {"from": "q", "units": "mm/day"}}}}},
    }
    (work / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    env = {"STEFALAND_GLOBAL_ROOT": str(miniature_products)}
    result = CliRunner(env=env).invoke(cli, ["data", "build", "--catalog", str(work / "catalog.yaml"), "--out",
                                             str(work / "store.zarr"), "--scheduler", "sync", "--quiet"])
    assert result.exit_code == 0, result.output
    return {"work": work, "store": str(work / "store.zarr"), "catalog": str(work / "catalog.yaml"), "env": env,
            "root": miniature_products}


def _nearest(array: xr.DataArray, lat: float, lon: float) -> float:
    lat_name = "lat" if "lat" in array.dims else "y"
    lon_name = "lon" if "lon" in array.dims else "x"
    return float(array.sel({lat_name: lat, lon_name: lon}, method="nearest"))


def test_patches_equal_the_raster_values_at_known_pixels(world: dict) -> None:
    store = open_store(world["store"])
    static = store["static"].to_pandas()
    root = world["root"]
    dem = xr.open_dataarray(root / "GMTED2010" / "mn30_grd.tif", engine="rasterio").squeeze(drop=True)
    cci = xr.open_dataset(root / "ESACCI-LC" / "ESACCI-LC-L4-LCCS-Map-300m-P1Y-2018-v2.1.1.nc")["lccs_class"]
    cci = cci.isel(time=0) if "time" in cci.dims else cci
    ndvi_files = sorted(glob.glob(str(root / "MOD13A3" / "*.tif")))
    ndvi = sum(xr.open_dataarray(f, engine="rasterio").squeeze(drop=True).astype(float) for f in ndvi_files) / len(ndvi_files)
    recode = yaml.safe_load((REPO / "catalog" / "global.yaml").read_text())["sources"]["terramind_lulc"]["metadata"]["gridded"]["recode"]
    checked = 0
    for site in static.index[:3]:
        lat, lon = float(store["lat"].sel(site=site)), float(store["lon"].sel(site=site))
        plat, plon = pixel_centres(np.array([lat]), np.array([lon]), 16, 0.0083333333333)
        for i, j in ((0, 0), (7, 7), (15, 3)):
            y, x = plat[0, i, j], plon[0, i, j]
            name = f"r{i:02d}c{j:02d}"
            assert static.loc[site, f"tm_dem_{name}"] == pytest.approx(_nearest(dem, y, x), abs=1e-3)
            assert static.loc[site, f"tm_lulc_{name}"] == recode[int(_nearest(cci, y, x))]
            assert static.loc[site, f"tm_ndvi_{name}"] == pytest.approx(_nearest(ndvi, y, x) * 1e-4, abs=1e-5)
            checked += 1
    assert checked == 9
    assert "elevation" in static.columns and len([c for c in static.columns if c.startswith("tm_")]) == 3 * 256


def _write_config(path: Path, name: str, **model) -> Path:
    raw = json.loads(json.dumps(CONFIG))
    raw["model"] = {"name": name, **MODEL, **model}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name,label", [("terramind_resconn", "TerraMind-resConn"),
                                        ("prithviwxc_resconn", "PrithviWxC-resConn")])
def test_finetune_predict_and_card_through_the_cli_with_a_frozen_encoder(world: dict, tmp_path: Path, name: str,
                                                                         label: str) -> None:
    config = _write_config(tmp_path / "config.yaml", name)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["finetune", "--store", world["store"], "--config", str(config), "--out", str(out),
                                      "--split", "temporal", "--quiet"])
    assert result.exit_code == 0, result.output
    fold = out / "temporal"
    predictions = xr.open_dataset(fold / "predictions.nc")
    assert predictions.attrs.get("model") == label or label in json.dumps(dict(predictions.attrs))
    assert np.isfinite(predictions["sim"].values).all()
    card = (out / "MODEL_CARD.md").read_text()
    assert label in card and "random initialisation" in card
    # the frozen encoder after training is the encoder as built (same seed), the heads moved
    state = load_latest(str(fold))["model"]
    torch.manual_seed(CONFIG.get("train", {}).get("seed", 111111))
    if name == "terramind_resconn":
        fresh = TerraMindEncoder("tiny", ("dem", "lulc", "ndvi")).state_dict()
    else:
        from stefaland.finetune.models.prithviwxc import PrithviWxCEncoder

        fresh = PrithviWxCEncoder("tiny").state_dict()
    prefix = "network.features.encoder."
    trained = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    assert set(trained) == set(fresh)
    assert all(torch.equal(trained[k], fresh[k]) for k in fresh)
    assert not torch.allclose(state["network.pre.weight"], torch.zeros_like(state["network.pre.weight"]))
    if name != "terramind_resconn":
        return  # predict's input build starts a dask cluster: once (TerraMind's patches) is enough here
    # predict builds its inputs from the catalog's products, as finetune's store was
    result = CliRunner(env=world["env"]).invoke(cli, ["predict", str(out), "--catalog", world["catalog"], "--out",
                                                      str(tmp_path / "p.nc"), "--start", "2018-01-01",
                                                      "--end", "2018-02-28", "--quiet"])
    assert result.exit_code == 0, result.output
    predicted = xr.open_dataset(tmp_path / "p.nc")
    assert np.isfinite(predicted["sim"].values).all() and predicted.sizes["site"] == 40  # every site, gauged or not


def _variables(world: dict):
    dataset = open_store(world["store"])
    return resolve_variables(dataset, config_from_dict({**CONFIG, "model": {"name": "lstm"}}).data)


def test_terramind_unfrozen_trains_its_encoder(world: dict) -> None:
    model = build_torch_model(config_from_dict({**CONFIG, "model": {"name": "terramind_resconn", **MODEL,
                                                                    "freeze_encoder": False}}).model, _variables(world))
    encoder = model.network.features.encoder
    assert all(p.requires_grad for p in encoder.parameters())
    dynamic, static = torch.randn(2, 12, 4), torch.randn(2, 771)
    model(dynamic, static).sum().backward()
    assert encoder.encoder[0].attn.qkv.weight.grad is not None


def test_published_state_dicts_round_trip(world: dict, tmp_path: Path) -> None:
    variables = _variables(world)
    torch.manual_seed(5)
    published = TerraMindEncoder("tiny", ("dem",)).state_dict()
    published["decoder_embeddings.x.weight"] = torch.ones(3)  # the published file holds more than the encoder
    torch.save(published, tmp_path / "TerraMind_v1_tiny.pt")
    section = {"name": "terramind_resconn", "hidden": 8, "variant": "tiny", "pretrained": str(tmp_path / "TerraMind_v1_tiny.pt")}
    model = build_torch_model(config_from_dict({**CONFIG, "model": section}).model, variables)
    loaded = model.network.features.encoder.state_dict()
    assert all(torch.equal(loaded[k], published[k]) for k in loaded if k in published)
    assert sum(k in published for k in loaded) > 100
    # Prithvi-WxC's file wraps its dict under "model_state"
    from stefaland.finetune.models.prithviwxc import PrithviWxCEncoder

    torch.manual_seed(6)
    wxc = PrithviWxCEncoder("tiny").wxc.state_dict()
    torch.save({"model_state": wxc}, tmp_path / "prithvi.wxc.pt")
    section = {"name": "prithviwxc_resconn", "hidden": 8, "variant": "tiny", "pretrained": str(tmp_path / "prithvi.wxc.pt")}
    model = build_torch_model(config_from_dict({**CONFIG, "model": section}).model, variables)
    assert all(torch.equal(v, wxc[k]) for k, v in model.network.features.encoder.wxc.state_dict().items())
    # another size of model: one line naming the tensor
    with pytest.raises(StefaLandError, match="has shape"):
        build_torch_model(config_from_dict({**CONFIG, "model": {**section, "name": "terramind_resconn", "variant": "small",
                                                                "pretrained": str(tmp_path / "TerraMind_v1_tiny.pt")}}).model,
                          variables)


def test_refuses_to_build_without_weights(world: dict) -> None:
    for name in ("terramind_resconn", "prithviwxc_resconn"):
        with pytest.raises(StefaLandError, match="needs model.pretrained .*allow_random_init"):
            build_torch_model(config_from_dict({**CONFIG, "model": {"name": name, "variant": "tiny"}}).model,
                              _variables(world))


def test_without_the_extra_one_line_names_it(world: dict, tmp_path: Path) -> None:
    assert model_availability("terramind_resconn") is None and model_availability("prithviwxc_resconn") is None
    blocker = tmp_path / "block" / "sitecustomize.py"  # this installation, PrithviWxC made unimportable
    blocker.parent.mkdir()
    blocker.write_text("import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
                       "        if name.split('.')[0] == 'PrithviWxC':\n            raise ModuleNotFoundError(name)\n"
                       "sys.meta_path.insert(0, _Block())\n")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")]))
    config = _write_config(tmp_path / "config.yaml", "prithviwxc_resconn")
    result = cli_subprocess("finetune", "--store", world["store"], "--config", str(config), "--out",
                            str(tmp_path / "run"), "--split", "temporal", "--quiet", env=env)
    lines = result.stderr.strip().splitlines() + result.stdout.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "stefaland[eo]" in lines[0]
    assert not (tmp_path / "run").exists()
