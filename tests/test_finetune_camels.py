"""The real CAMELS sample basins go through the whole chain — build, PUR split, pretraining without
the held-out region, finetuning of LSTM-SL and StefaLand-resConn — without error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from stefaland.run.predictions import read_predictions
from stefaland.splits import read_split
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def camels_store(camels_sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = camels_sample_root
    out = tmp_path_factory.mktemp("store") / "camels.zarr"
    result = CliRunner().invoke(cli, [
        "data", "build", "--catalog", str(REPO / "catalog" / "camels.yaml"), "--out", str(out), "--quiet",
        "--sources", "forcing_nldas,attributes,streamflow", "--shard-size", "8",
        "--start", "2006-10-01", "--end", "2010-09-30"], env={"CAMELS_ROOT": str(root)})
    assert result.exit_code == 0, result.output
    return out


def test_real_camels_basins_finetune_lstm_and_resconn(camels_store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    split = tmp_path / "pur.csv"
    made = runner.invoke(cli, ["splits", "make", "--task", "camels", "--scheme", "pur", "--sites", str(camels_store),
                               "--basins", "all", "--out", str(split)])
    assert made.exit_code == 0, made.output
    folds = read_split(str(split)).folds
    held_out = set(folds.index[folds == 1])  # PUR region 1 = HUC-02 01 and 02
    assert held_out and "01022500" in held_out

    pretrain = (REPO / "configs" / "pretrain_tiny.yaml").read_text().replace("epochs: 5", "epochs: 1")
    pretrain = pretrain.replace("samples_per_site: 8}", f"samples_per_site: 2, exclude: {{split: pur, fold: 1, split_file: '{split}'}}}}")
    (tmp_path / "pretrain.yaml").write_text(pretrain)
    trained = runner.invoke(cli, ["pretrain", "--store", str(camels_store), "--config", str(tmp_path / "pretrain.yaml"),
                                  "--out", str(tmp_path / "pretrain-1"), "--quiet"])
    assert trained.exit_code == 0, trained.output

    config = yaml.safe_load((REPO / "configs" / "finetune_tiny.yaml").read_text())
    config["train"].update(epochs=1, iterations_per_epoch=3)
    config["model"]["pretrained"] = str(tmp_path / "pretrain-{fold}")
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config))
    for model in ("lstm", "stefaland_resconn"):
        out = tmp_path / "runs" / model
        result = runner.invoke(cli, ["finetune", "--store", str(camels_store), "--config", str(tmp_path / "finetune.yaml"),
                                     "--out", str(out), "--split", "pur", "--split-file", str(split), "--fold", "1",
                                     "--model", model, "--quiet"])
        assert result.exit_code == 0, result.output
        predictions = read_predictions(str(out / "fold-1" / "predictions.nc"))
        assert set(map(str, predictions["site"].values)) == held_out
        assert np.isfinite(predictions["sim"].values).all()  # NLDAS forcings are complete in this window
