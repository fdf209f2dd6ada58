"""Files from elsewhere never run code.

A checkpoint or fitted baseline may come from a shared bucket, a colleague or ``pull``; unpickling
one may call any function it names. Here a payload that creates a sentinel folder is planted in
each kind of file StefaLand loads (a pretraining checkpoint, a finetuning checkpoint, a
scikit-learn baseline), and every command that loads one (pretrain resume, embed, the leakage
check, finetune from a pretrained encoder, finetune resume, predict) must refuse it with one
``error:`` line naming the file, before the payload can run.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from stefaland.errors import StefaLandError
from stefaland.run.checkpoint import load_latest
from stefaland_cli.main import cli

from _finetune_store import write_finetune_store

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_TINY = REPO / "stefaland" / "configs" / "pretrain_tiny.yaml"
FINETUNE = {
    "task": "camels",
    "data": {"seq_len": 60, "train_start": "1980-01-01", "train_end": "2099-12-31",
             "test_start": "1980-01-01", "test_end": "2099-12-31"},
    "model": {"name": "lstm", "hidden": 8, "dropout": 0.0, "n_estimators": 5, "max_rows": 2000},
    "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 2},
}


class Payload:
    """Unpickling this calls ``os.mkdir(sentinel)``: the sentinel's existence proves code ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.mkdir, (str(self.sentinel),)


# -- runs to plant into (module scope: each is made once, then copied per test) -------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_finetune_store(tmp_path_factory.mktemp("untrusted") / "store.zarr", n_sites=8, days=300, n_pub=2)


@pytest.fixture(scope="module")
def pretrain_run(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pretraining, one epoch, with PUB fold 1 left out (so the leakage check would pass)."""
    folder = tmp_path_factory.mktemp("pretrain")
    raw = yaml.safe_load(PRETRAIN_TINY.read_text())
    raw["train"]["epochs"] = 1
    raw["data"].update(samples_per_site=2, exclude={"split": "pub", "fold": 1})
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    out = folder / "run"
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", str(folder / "config.yaml"),
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def _finetune_config(folder: Path, name: str, **model) -> Path:
    raw = json.loads(json.dumps(FINETUNE))
    raw["model"].update(name=name, **model)
    path = folder / f"{name}-{len(list(folder.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _finetune(store: str, config: Path, out: Path):
    return CliRunner().invoke(cli, ["finetune", "--store", store, "--config", str(config), "--out", str(out),
                                    "--split", "pub", "--fold", "1", "--quiet"])


@pytest.fixture(scope="module")
def finetune_runs(store: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``{model: (run folder, config)}`` for a torch model and a scikit-learn baseline, fold 1 each."""
    folder = tmp_path_factory.mktemp("finetune")
    runs = {}
    for name in ("lstm", "linear"):
        config = _finetune_config(folder, name)
        result = _finetune(store, config, folder / name)
        assert result.exit_code == 0, result.output
        runs[name] = (folder / name, config)
    return runs


# -- planting ---------------------------------------------------------------------------------------

def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def _latest_checkpoint(run: Path) -> Path:
    folder = run / "checkpoints"
    return folder / json.loads((folder / "latest.json").read_text())["file"]


def _plant_in_checkpoint(path: Path, sentinel: Path) -> None:
    """The genuine checkpoint with one more entry: what an edited file from a shared bucket looks like."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # the test's own file, just written
    state["note"] = Payload(sentinel)
    torch.save(state, path)


def _plant_pickled_baseline(fold: Path, sentinel: Path) -> Path:
    """A ``model.pkl`` (a pickled scikit-learn model, as earlier StefaLand versions saved one) in place of the fitted baseline."""
    for old in (fold / "checkpoints").glob("model.*"):
        old.unlink()
    path = fold / "checkpoints" / "model.pkl"
    path.write_bytes(pickle.dumps(Payload(sentinel)))
    return path


def _predict(run: Path, tmp_path: Path):
    """``predict`` reads every fold's model before it opens the catalog, so none is needed here."""
    return CliRunner().invoke(cli, ["predict", str(run), "--catalog", str(tmp_path / "unused.yaml"),
                                    "--out", str(tmp_path / "p.nc"), "--quiet"])


def _refused(result, path: Path, sentinel: Path) -> None:
    """Nothing ran, and the command stopped with one ``error:`` line naming the planted file."""
    assert not sentinel.exists(), "the planted payload ran"
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and "Traceback" not in result.output and len(errors) == 1, result.output
    assert str(path) in errors[0] and "refused" in errors[0], errors[0]


# -- pretraining checkpoints: pretrain resume, embed, the leakage check, finetune from the encoder ---

def test_pretrain_resume_refuses_a_planted_checkpoint_rather_than_an_older_one(pretrain_run: Path, store: str,
                                                                              tmp_path: Path) -> None:
    run, sentinel = _copy(pretrain_run, tmp_path), tmp_path / "PWNED"
    latest = _latest_checkpoint(run)
    shutil.copy(latest, run / "checkpoints" / "ckpt-000000.pt")  # an intact older one: not a fallback here
    _plant_in_checkpoint(latest, sentinel)
    result = CliRunner().invoke(cli, ["pretrain", "--store", store, "--config", str(run / "config.yaml"),
                                      "--out", str(run), "--quiet"])
    _refused(result, latest, sentinel)
    with pytest.raises(StefaLandError, match="objects other than tensors and plain metadata"):
        load_latest(str(run))
    assert not sentinel.exists()


def test_embed_refuses_a_planted_pretraining_checkpoint(pretrain_run: Path, store: str, tmp_path: Path) -> None:
    run, sentinel = _copy(pretrain_run, tmp_path), tmp_path / "PWNED"
    _plant_in_checkpoint(_latest_checkpoint(run), sentinel)
    result = CliRunner().invoke(cli, ["embed", str(run), "--store", store, "--out", str(tmp_path / "emb.zarr"),
                                      "--window", "60", "--quiet"])
    _refused(result, _latest_checkpoint(run), sentinel)


@pytest.mark.parametrize("allow_leakage", [False, True], ids=["leakage-check", "encoder-load"])
def test_finetune_refuses_a_planted_pretrained_encoder(pretrain_run: Path, store: str, tmp_path: Path,
                                                       allow_leakage: bool) -> None:
    """The leakage check reads the checkpoint first; with leakage allowed, the encoder loader does."""
    run, sentinel = _copy(pretrain_run, tmp_path), tmp_path / "PWNED"
    _plant_in_checkpoint(_latest_checkpoint(run), sentinel)
    config = _finetune_config(tmp_path, "stefaland_resconn", pretrained=str(run), allow_pretraining_leakage=allow_leakage)
    _refused(_finetune(store, config, tmp_path / "out"), _latest_checkpoint(run), sentinel)


# -- finetuning checkpoints: finetune resume, predict ---------------------------------------------

def test_finetune_resume_and_predict_refuse_a_planted_fold_checkpoint(finetune_runs: dict, store: str,
                                                                     tmp_path: Path) -> None:
    source, config = finetune_runs["lstm"]
    run, sentinel = _copy(source, tmp_path), tmp_path / "PWNED"
    planted = _latest_checkpoint(run / "fold-1")
    _plant_in_checkpoint(planted, sentinel)
    _refused(_finetune(store, config, run), planted, sentinel)
    result = _predict(run, tmp_path)
    _refused(result, planted, sentinel)


# -- scikit-learn baselines: finetune reuse, predict -----------------------------------------------

def test_finetune_and_predict_refuse_a_pickled_baseline(finetune_runs: dict, store: str, tmp_path: Path) -> None:
    source, config = finetune_runs["linear"]
    run, sentinel = _copy(source, tmp_path), tmp_path / "PWNED"
    planted = _plant_pickled_baseline(run / "fold-1", sentinel)
    _refused(_finetune(store, config, run), planted, sentinel)
    result = _predict(run, tmp_path)
    _refused(result, planted, sentinel)


def test_predict_refuses_a_baseline_file_with_a_pickled_array(finetune_runs: dict, store: str, tmp_path: Path) -> None:
    """An ``.npz`` may hold pickled object arrays; they are refused, not unpickled."""
    source, _ = finetune_runs["linear"]
    run, sentinel = _copy(source, tmp_path), tmp_path / "PWNED"
    for old in (run / "fold-1" / "checkpoints").glob("model.*"):
        old.unlink()
    planted = run / "fold-1" / "checkpoints" / "model.npz"
    buffer = io.BytesIO()
    np.savez(buffer, format=np.asarray("stefaland-baseline-1"), kind=np.asarray("linear"),
             coef=np.asarray([Payload(sentinel)], dtype=object))
    planted.write_bytes(buffer.getvalue())
    result = _predict(run, tmp_path)
    _refused(result, planted, sentinel)


# -- the baseline format itself -------------------------------------------------------------------

def test_saved_baselines_predict_exactly_as_the_fitted_scikit_learn_models() -> None:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    from stefaland.finetune.models.sklearn_baselines import SklearnBaseline, baseline_bytes, baseline_from_bytes

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = 2 * x[:, 0] + np.sin(3 * x[:, 1]) + 0.3 * rng.normal(size=len(x))
    unseen = rng.normal(size=(5000, 6)).astype(np.float32)
    for regressor in (LinearRegression(), RandomForestRegressor(n_estimators=4, min_samples_leaf=5, random_state=0)):
        regressor.fit(x, y)
        data = baseline_bytes(SklearnBaseline(regressor, 100))
        assert b"pickle" not in data.lower()
        restored = baseline_from_bytes("model.npz", data)
        np.testing.assert_array_equal(restored.regressor.predict(unseen), regressor.predict(unseen))


def test_a_baseline_file_whose_tree_loops_is_one_line() -> None:
    """Routing must end: a child that points back at its parent is refused, not followed forever."""
    from stefaland.finetune.models.sklearn_baselines import baseline_from_bytes

    buffer = io.BytesIO()
    np.savez(buffer, format=np.asarray("stefaland-baseline-1"), kind=np.asarray("forest"), max_rows=np.asarray(100),
             n_features=np.asarray(2), offsets=np.asarray([0, 3]), left=np.asarray([1, 0, -1]),
             right=np.asarray([2, 2, -1]), feature=np.asarray([0, 1, -2]), threshold=np.asarray([0.0, 0.0, -2.0]),
             value=np.asarray([0.0, 1.0, 2.0]))
    with pytest.raises(StefaLandError, match=r"model\.npz: not a StefaLand baseline model file \(a child index out of order"):
        baseline_from_bytes("model.npz", buffer.getvalue())
