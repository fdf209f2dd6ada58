"""`stefaland embed`: the frozen encoder's embeddings per site, their shape and stitching, bad input,
and the README example (a random forest on embeddings vs raw attributes) run as a script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from stefaland.embed import load_frozen_encoder, open_embeddings, window_starts
from stefaland.errors import StefaLandError
from stefaland.store import open_store
from stefaland_cli.main import cli

from _stores import write_store

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "pretrain_tiny.yaml"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pretrained(virtual_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One short epoch of the tiny pretraining on the virtual world, through the real CLI."""
    folder = tmp_path_factory.mktemp("pretrain")
    raw = yaml.safe_load(TINY.read_text())
    raw["train"].update({"epochs": 1})
    raw["data"].update({"samples_per_site": 2})
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    out = str(folder / "run")
    result = CliRunner().invoke(cli, ["pretrain", "--store", str(virtual_store), "--config",
                                      str(folder / "config.yaml"), "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def embeddings(pretrained: str, virtual_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("emb") / "emb.zarr")
    result = CliRunner().invoke(cli, ["embed", pretrained, "--store", str(virtual_store), "--out", out,
                                      "--window", "100", "--hide", "clay_frac", "--hide", "sand_frac",
                                      "--hide", "silt_frac", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "embedded 24 sites" in result.output
    return out


def test_window_starts_cover_the_period_and_end_on_its_last_day() -> None:
    assert window_starts(250, 100) == [0, 100, 150]
    assert window_starts(200, 100) == [0, 100]
    assert window_starts(60, 60) == [0]


def test_embeddings_have_the_documented_shape_and_match_the_encoder(embeddings: str, pretrained: str,
                                                                    virtual_store: Path) -> None:
    emb = open_embeddings(embeddings)
    store = open_store(str(virtual_store))
    n_site, n_time = store.sizes["site"], store.sizes["time"]
    d = emb.attrs["d_model"]
    assert d == 32 and emb.attrs["window"] == 100
    assert emb["static_embedding"].dims == ("site", "feature") and emb["static_embedding"].shape == (n_site, d)
    assert emb["time_embedding"].dims == ("site", "time", "feature")
    assert emb["time_embedding"].shape == (n_site, n_time, d)
    assert [str(s) for s in emb["site"].values] == list(store["site"].values)
    np.testing.assert_array_equal(emb["time"].values, store["time"].values)
    np.testing.assert_allclose(emb["lat"].values, store["lat"].values)
    assert emb["time_embedding"].encoding["chunks"][0] == 8  # one chunk per store shard of sites
    assert np.isfinite(emb["static_embedding"].values).all() and np.isfinite(emb["time_embedding"].values).all()
    assert emb.attrs["hidden"] == ["clay_frac", "sand_frac", "silt_frac"]

    # recompute site 3's last window by hand: normalised with the checkpoint's statistics, texture hidden
    encoder, ckpt = load_frozen_encoder(pretrained)
    dvars, svars = list(store["dvar"].values), list(store["svar"].values)
    dyn = store["dynamic"].values[3][:, [dvars.index(v) for v in ckpt.dynamic_vars]].astype(np.float64)
    sta = store["static"].values[3][[svars.index(v) for v in ckpt.static_vars]].astype(np.float64)
    dyn = (dyn - ckpt.dynamic_mean) / np.where(ckpt.dynamic_std > 0, ckpt.dynamic_std, 1)
    sta = (sta - ckpt.static_mean) / np.where(ckpt.static_std > 0, ckpt.static_std, 1)
    sta[[ckpt.static_vars.index(v) for v in ("clay_frac", "sand_frac", "silt_frac")]] = np.nan
    with torch.no_grad():
        out = encoder(torch.tensor(dyn[None, -100:], dtype=torch.float32), torch.tensor(sta[None], dtype=torch.float32))
    np.testing.assert_allclose(emb["time_embedding"].values[3, -100:], out.time_tokens[0].numpy(), atol=1e-4)
    # the days before the last window come from other windows: a different context, different tokens
    first = emb["time_embedding"].values[3, :100]
    assert not np.allclose(first, emb["time_embedding"].values[3, 100:200])


def test_a_store_without_a_pretraining_variable_is_refused(pretrained: str, tmp_path: Path) -> None:
    other = write_store(str(tmp_path / "other.zarr"), n_sites=8, n_days=120, shard_size=8)
    result = CliRunner().invoke(cli, ["embed", pretrained, "--store", other, "--out", str(tmp_path / "e.zarr")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "variable" in result.output and "is not in the store" in result.output
    assert other in result.output and not (tmp_path / "e.zarr").exists()


def test_bad_hide_and_window_are_one_line_errors(pretrained: str, virtual_store: Path, tmp_path: Path) -> None:
    from stefaland.embed import embed

    with pytest.raises(StefaLandError, match="--hide 'nope' is not an input"):
        embed(pretrained, str(virtual_store), str(tmp_path / "e.zarr"), hide=["nope"], quiet=True)
    with pytest.raises(StefaLandError, match="max_len"):
        embed(pretrained, str(virtual_store), str(tmp_path / "e.zarr"), window=5000, quiet=True)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_readme_random_forest_example_runs(embeddings: str, virtual_store: Path, tmp_path: Path) -> None:
    scores_file = tmp_path / "scores.json"
    run = subprocess.run([sys.executable, str(REPO / "examples" / "embeddings_random_forest.py"),
                          "--store", str(virtual_store), "--embeddings", embeddings, "--target", "clay_frac",
                          "--folds", "3", "--trees", "20", "--json", str(scores_file)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    scores = json.loads(scores_file.read_text())
    assert set(scores) == {"raw attributes", "static embedding", "time embedding (mean over days)"}
    assert all(np.isfinite(v) and v <= 1.0 for v in scores.values())
    assert "static embedding" in run.stdout and "R2 =" in run.stdout


def test_embeddings_to_object_storage_match_the_local_ones(pretrained: str, virtual_store: Path, embeddings: str,
                                                           s3_bucket: str) -> None:
    out = f"{s3_bucket}/emb.zarr"
    result = CliRunner().invoke(cli, ["embed", pretrained, "--store", str(virtual_store), "--out", out,
                                      "--window", "100", "--hide", "clay_frac", "--hide", "sand_frac",
                                      "--hide", "silt_frac", "--quiet"])
    assert result.exit_code == 0, result.output
    remote, local = open_embeddings(out), open_embeddings(embeddings)
    np.testing.assert_allclose(remote["static_embedding"].values, local["static_embedding"].values, atol=1e-6)
    np.testing.assert_allclose(remote["time_embedding"].values[:, :50], local["time_embedding"].values[:, :50], atol=1e-6)
