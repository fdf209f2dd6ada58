"""The commands as a user types them, through the real CLI.

``submit`` and ``report`` take the store, the run root and the image from flags, the environment or a
settings file, and the paper's config from the package; per-fold pretraining is one command; model
labels, ``predict --sources``, ``data build``'s default store, ``catalog validate``'s counts,
``splits make --basins``, identical variables, ``--quiet``, unwrapped logs, the model card and the
declared torch requirement.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from click.testing import CliRunner

from stefaland import settings
from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = kubernetes_validate.latest_version()

torch.set_num_threads(1)


def invoke(*args: str, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


@pytest.fixture()
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and a user config folder with no settings, and none of the variables."""
    for name in settings.ENVIRONMENT.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# -- submit ---------------------------------------------------------------------------------------

def _jobs(stdout: str) -> list[dict]:
    documents = [d for d in yaml.safe_load_all(stdout) if d]
    for document in documents:
        kubernetes_validate.validate(document, SCHEMA_VERSION, strict=True)
    return [d for d in documents if d["kind"] == "Job"]


def test_submit_pretrain_with_store_and_runs_from_the_environment_prints_a_valid_job(bare, monkeypatch):
    monkeypatch.setenv("STEFALAND_STORE", "s3://bucket/stores/global.zarr")
    monkeypatch.setenv("STEFALAND_RUNS", "s3://bucket/runs")
    result = invoke("submit", "pretrain", "--gpus", "6", "--dry-run")
    assert result.exit_code == 0, result.output
    (job,) = _jobs(result.stdout)
    notes = result.stderr
    annotations = job["metadata"]["annotations"]
    assert annotations["stefaland.io/store"] == "s3://bucket/stores/global.zarr"
    out = annotations["stefaland.io/out"]
    run_id = job["metadata"]["labels"]["stefaland.io/run"]
    assert out == f"s3://bucket/runs/{run_id}" and run_id.startswith("pretrain-")  # a fresh name per run
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (6, "6")
    assert "store: s3://bucket/stores/global.zarr (from $STEFALAND_STORE)" in notes
    assert "runs: s3://bucket/runs (from $STEFALAND_RUNS)" in notes
    assert "pretrain_default.yaml (the paper's, packaged)" in notes
    again = invoke("submit", "pretrain", "--gpus", "6", "--dry-run")
    assert _jobs(again.stdout)[0]["metadata"]["annotations"]["stefaland.io/out"] != out


def test_submit_with_nothing_set_is_one_line_naming_what_to_set(bare):
    result = invoke("submit", "pretrain", "--gpus", "6", "--dry-run")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    line = result.output.strip()
    assert line.startswith("error: nothing says where the store and the run root are: ")
    assert "$STEFALAND_STORE and $STEFALAND_RUNS" in line and "stefaland.yaml" in line
    only_runs = invoke("submit", "pretrain", "--store", "s3://b/s.zarr", "--dry-run")
    assert only_runs.output.strip().startswith("error: nothing says where the run root is: set $STEFALAND_RUNS")


def test_settings_file_in_the_working_directory_and_the_config_dir(bare, tmp_path, monkeypatch):
    user = tmp_path / "xdg" / "stefaland"
    user.mkdir(parents=True)
    (user / "stefaland.yaml").write_text("store: s3://user/store.zarr\nruns: s3://user/runs\n")
    result = invoke("submit", "pretrain", "--dry-run")
    assert result.exit_code == 0, result.output
    job = _jobs(result.stdout)[0]
    assert job["metadata"]["annotations"]["stefaland.io/store"] == "s3://user/store.zarr"
    assert f"(from {user / 'stefaland.yaml'})" in result.stderr
    # ./stefaland.yaml wins over the user's; the environment wins over both; a flag over everything
    (bare / "stefaland.yaml").write_text("store: s3://here/store.zarr\nruns: s3://here/runs\n"
                                         "image: registry.example.org/stefaland:9\n")
    monkeypatch.setenv("STEFALAND_RUNS", "s3://env/runs")
    result = invoke("submit", "pretrain", "--dry-run", "--store", "s3://flag/store.zarr")
    job = _jobs(result.stdout)[0]
    assert job["metadata"]["annotations"]["stefaland.io/store"] == "s3://flag/store.zarr"
    assert job["metadata"]["annotations"]["stefaland.io/out"].startswith("s3://env/runs/pretrain-")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.org/stefaland:9"
    (bare / "stefaland.yaml").write_text("store: s3://here/store.zarr\nrun: s3://typo\n")
    monkeypatch.delenv("STEFALAND_RUNS")
    result = invoke("submit", "pretrain", "--dry-run")
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: {bare / 'stefaland.yaml'}: run: unknown key (known: store, runs, image)")


def test_submit_finetune_defaults_to_the_paper_config_of_the_split(bare, monkeypatch):
    monkeypatch.setenv("STEFALAND_STORE", "s3://bucket/camels.zarr")
    monkeypatch.setenv("STEFALAND_RUNS", "s3://bucket/runs")
    result = invoke("submit", "finetune", "--task", "camels", "--split", "pur", "--folds", "1-7", "--dry-run")
    assert result.exit_code == 0, result.output
    (job,) = _jobs(result.stdout)
    assert job["metadata"]["annotations"]["stefaland.io/out"].startswith("s3://bucket/runs/finetune-")
    assert "finetune_camels_pur.yaml (the paper's, packaged)" in result.stderr
    assert job["spec"]["completions"] == 7
    odd = invoke("submit", "finetune", "--task", "camels", "--split", "odd", "--folds", "1", "--dry-run")
    assert odd.exit_code == 1 and "pass --config for split 'odd'" in odd.output


def test_configs_are_package_data_and_the_repository_folder_names_the_same_files():
    packaged = Path(settings.packaged_config("pretrain_default.yaml"))
    assert packaged.parent == REPO / "stefaland" / "configs"
    for name in ("pretrain_default.yaml", "pretrain_tiny.yaml", "finetune_camels_pub.yaml", "finetune_tiny.yaml"):
        assert (REPO / "configs" / name).samefile(packaged.parent / name)
    pyproject = (REPO / "pyproject.toml").read_text()
    import tomllib

    package_data = tomllib.loads(pyproject)["tool"]["setuptools"]["package-data"]["stefaland"]
    assert "configs/*.yaml" in package_data and "paper/*.yaml" in package_data  # the published numbers too
    from stefaland.pretrain.config import PretrainConfig, load_config

    assert load_config(packaged) == PretrainConfig()


# -- report ----------------------------------------------------------------------------------------

def test_report_without_runs_says_where_it_looked(bare, tmp_path, monkeypatch):
    result = invoke("report", "camels", "--split", "pub")
    assert result.exit_code == 1
    assert "looking for predictions in ./runs (no run root set)" in result.output
    assert "$STEFALAND_RUNS" in result.output.strip().splitlines()[-1]
    monkeypatch.setenv("STEFALAND_RUNS", str(tmp_path / "nowhere"))
    result = invoke("report", "camels", "--split", "pub")
    assert result.exit_code == 1
    assert f"looking for predictions in {tmp_path / 'nowhere'} (from $STEFALAND_RUNS)" in result.output


# -- on a virtual world: per-fold pretraining, labels, report from the run root, predict --sources

@pytest.fixture(scope="module")
def workflow(virtual_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workflow")
    tiny = yaml.safe_load((REPO / "configs" / "pretrain_tiny.yaml").read_text())
    tiny["train"]["epochs"] = 1
    tiny["data"]["samples_per_site"] = 2
    (root / "pretrain.yaml").write_text(yaml.safe_dump(tiny))
    result = invoke("pretrain", "--store", virtual_store, "--config", root / "pretrain.yaml",
                    "--out", root / "pretrain", "--split", "pub", "--fold", "1,2", "--quiet")
    assert result.exit_code == 0, result.output
    finetune = yaml.safe_load((REPO / "configs" / "finetune_tiny.yaml").read_text())
    finetune["train"].update(epochs=1, iterations_per_epoch=2)
    for name, model in (("lstm", {}), ("lstm-b", {"label": "LSTM-b"}),
                        ("resconn", {"name": "stefaland_resconn", "pretrained": str(root / "pretrain" / "fold-{fold}")})):
        config = json.loads(json.dumps(finetune))
        config["model"].update(model)
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
        result = invoke("finetune", "--store", virtual_store, "--config", root / f"{name}.yaml",
                        "--out", root / "runs" / name, "--split", "pub", "--fold", "1", "--quiet")
        assert result.exit_code == 0, result.output
    return root


def test_pretrain_split_fold_writes_one_run_per_fold_each_excluding_it(workflow, virtual_store):
    for k in (1, 2):
        saved = yaml.safe_load((workflow / "pretrain" / f"fold-{k}" / "config.yaml").read_text())
        assert saved["data"]["exclude"] == {"split": "pub", "fold": k, "split_file": None}
    assert not (workflow / "pretrain" / "fold-3").exists()
    from stefaland.pretrain import load_config
    from stefaland.pretrain.runs import plan_runs

    runs = plan_runs(str(virtual_store), load_config(workflow / "pretrain.yaml"), "x", "pub", "all")
    assert [run.fold for run in runs] == list(range(1, 11)) and runs[0].out == "x/fold-1"
    bad = invoke("pretrain", "--store", virtual_store, "--out", workflow / "x", "--split", "pub", "--fold", "11")
    assert bad.exit_code == 1 and bad.output.startswith("error: --fold 11: fold 11 is not in split 'pub'")
    alone = invoke("pretrain", "--store", virtual_store, "--out", workflow / "x", "--fold", "all")
    assert alone.output.strip() == "error: --split and --fold go together (e.g. --split pub --fold all)"
    # the resConn run read fold 1's encoder through {fold}, and its model card says which checkpoint
    card = (workflow / "runs" / "resconn" / "MODEL_CARD.md").read_text()
    assert "# Model card: StefaLand-resConn (camels)" in card
    assert f"* Pretrained encoder: `{workflow / 'pretrain' / 'fold-1'}" in card


def test_labels_name_the_models_in_predictions_run_json_and_the_report(workflow, monkeypatch, tmp_path):
    runs = workflow / "runs"
    for name, label, model in (("lstm", "LSTM-SL", "lstm"), ("lstm-b", "LSTM-b", "lstm"),
                               ("resconn", "StefaLand-resConn", "stefaland_resconn")):
        with xr.open_dataset(runs / name / "fold-1" / "predictions.nc") as predictions:
            assert predictions.attrs["model"] == label
        record = json.loads((runs / name / "fold-1" / "run.json").read_text())
        assert record["model"] == model and record["label"] == label
    monkeypatch.setenv("STEFALAND_RUNS", str(runs))
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "camels", "--split", "pub", "--folds", "1", "--format", "md", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert f"looking for predictions in {runs} (from $STEFALAND_RUNS)" in result.stderr
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert {"LSTM-SL", "LSTM-b", "StefaLand-resConn"} <= set(rows)  # one model, two runs, side by side


def test_model_card_says_half_records_no_encoder_and_keeps_flv_sane(workflow):
    card = (workflow / "runs" / "lstm" / "MODEL_CARD.md").read_text()
    assert "half of the held-out sites do worse" in card and "a quarter" not in card
    assert "* Pretrained encoder: none" in card
    header, _, values = [line for line in card.splitlines() if line.startswith("|")][:3]
    flv = float(values.strip("|").split("|")[header.strip("|").split("|").index(" FLV ")])
    assert not np.isfinite(flv) or abs(flv) < 1000
    if not np.isfinite(flv):
        assert "FLV leaves out" in card
    from stefaland.report.model_card import flv_unscorable

    flows = np.array([[0.0] * 7 + [1e-4, 5.0, 10.0], [1.0] * 4 + [2.0] * 6, [0.005] * 4 + [0.01] * 6])
    assert flv_unscorable(flows, "mm/day").tolist() == [True, False, True]
    assert flv_unscorable(flows, "m3/m3").tolist() == [True, False, False]


def test_predict_sources_builds_the_inputs_from_the_named_sources(workflow, virtual_world, tmp_path):
    run = workflow / "runs" / "lstm"
    result = invoke("predict", run, "--catalog", virtual_world, "--sources", "sites,forcing,attributes",
                    "--out", tmp_path / "p.nc", "--quiet")
    assert result.exit_code == 0, result.output
    with xr.open_dataset(tmp_path / "p.nc") as predictions:
        assert predictions.attrs["model"] == "LSTM-SL" and np.isfinite(predictions["sim"].values).all()
    result = invoke("predict", run, "--catalog", virtual_world, "--sources", "sites,attributes",
                    "--out", tmp_path / "q.nc", "--quiet")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1  # no forcings: refused


# -- on the real CAMELS sample ---------------------------------------------------------------------

def test_build_defaults_to_the_working_directory_warns_identical_variables_and_quiet_is_quiet(
        shared_data, bare, monkeypatch):
    monkeypatch.setenv("CAMELS_ROOT", str(shared_data / "camels_us_sample18"))
    catalog = REPO / "catalog" / "camels.yaml"
    result = invoke("data", "build", "--catalog", catalog, "--sources", "sites,forcing_nldas,attributes",
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert (bare / "camels.zarr").is_dir() and not (REPO / "catalog" / "camels.zarr").exists()
    assert "store: camels.zarr (in the working directory; --out to choose)" in result.stderr
    assert "dynamic variables: tmax is identical to tmin" in result.stderr and "warning:" in result.stderr
    assert "INFO" not in result.output
    store = xr.open_zarr(bare / "camels.zarr", consolidated=False)
    units = dict(zip(map(str, store["svar"].values), map(str, store["svar_units"].values)))
    assert units["high_prec_freq"] == "days" and units["low_prec_dur"] == "days"  # not "1"

    # splits make --basins: a list naming basins the store lacks is intersected, and the count said
    listed = (shared_data / "camels_us_sample18" / "sample_basins.txt").read_text().split()[:6]
    (bare / "basins.txt").write_text("\n".join(listed + ["99999998", "99999999"]) + "\n")
    in_store = [s for s in listed if s in set(map(str, store["site"].values))]
    result = invoke("splits", "make", "--task", "camels", "--scheme", "pub", "--folds", "2",
                    "--sites", "camels.zarr", "--basins", "basins.txt", "--out", "split.csv")
    assert result.exit_code == 0, result.output
    assert (f"basins.txt: {len(in_store)} of the {len(listed) + 2} listed sites are in camels.zarr, "
            f"{len(listed) + 2 - len(in_store)} are not") in result.output
    assert f"split.csv: {len(in_store)} sites" in result.stdout


def test_catalog_validate_checks_every_named_source_and_counts_them(shared_data, bare, monkeypatch):
    monkeypatch.setenv("CAMELS_ROOT", str(shared_data / "camels_us_sample18"))
    result = invoke("catalog", "validate", REPO / "catalog" / "camels.yaml",
                    "--sources", "forcing_maurer,forcing_nldas,attributes,nosuch")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1] if not line.startswith("warn")] == [
        "ok   sites", "FAIL nosuch", "ok   forcing_nldas", "FAIL forcing_maurer", "ok   attributes"]
    assert "warn forcing_nldas: tmax is identical to tmin" in result.output
    assert lines[-1].startswith("error: 2 of 5 sources failed validation (nosuch, forcing_maurer;")


# -- output that is not a terminal; torch declared -----------------------------------------------

def test_tables_and_logs_are_not_cut_when_not_a_terminal(bare):
    result = invoke("catalog", "show", REPO / "catalog" / "camels.yaml", "--source", "attributes")
    assert result.exit_code == 0, result.output
    assert "frequency of high-precipitation days (days/yr)" in result.output  # one cell, not wrapped
    assert max(len(line) for line in result.output.splitlines()) > 80
    import logging

    from stefaland.progress import configure_logging

    configure_logging()
    handler = logging.getLogger("stefaland").handlers[0]
    assert type(handler).__name__ == "_PlainHandler"  # stderr is not a terminal here


def test_pyproject_declares_torch_accepting_the_pinned_wheel():
    from packaging.requirements import Requirement

    pyproject = (REPO / "pyproject.toml").read_text()
    start = pyproject.index("dependencies = [")
    block = pyproject[start:pyproject.index("]", start)]
    torch_req = next(Requirement(line.strip().strip(",").strip('"')) for line in block.splitlines()
                     if line.strip().startswith('"torch'))
    assert torch_req.specifier.contains("2.13.0")
    assert "torch==2.13.0" in (REPO / "scripts" / "setup.sh").read_text()


def test_finetune_doc_documents_fold_placeholder_and_per_fold_pretraining():
    text = (REPO / "docs" / "FINETUNE.md").read_text()
    assert "{fold}" in text and "stefaland pretrain" in text and "--split pub --fold all" in text
    assert "model.label" in text
