"""The model registry: every model builds and trains, pretrained weights load loudly, baselines fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from stefaland.errors import StefaLandError
from stefaland.finetune import config_from_dict, finetune_fold
from stefaland.finetune.data import WindowSampler, load_site_data, resolve_variables
from stefaland.finetune.models import MODELS, ModelSpec, build_torch_model, model_label
from stefaland.finetune.models.adapters import ADAPTERS, make_adapter
from stefaland.finetune.models.foreign import REQUIRES as FOREIGN_MODELS
from stefaland.finetune.trainer import masked_loss
from stefaland.model import MaskedReconstructionModel, ModelConfig
from stefaland.pretrain.loss import ReconstructionLoss
from stefaland.pretrain.objective import PretrainObjective
from stefaland.run.checkpoint import save_checkpoint
from stefaland.store import open_store

from _finetune_store import DVARS, SVARS, write_finetune_store

torch.set_num_threads(1)
ENCODER = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "decoder": "lstm"}
PERIOD = {"train_start": "1990-01-01", "train_end": "1991-12-31", "test_start": "1990-01-01", "test_end": "1991-12-31"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_finetune_store(tmp_path_factory.mktemp("ftm") / "store.zarr", n_sites=9, days=500, n_pub=3)


def _pretrain_run(folder: Path, dynamic: list[str], static: list[str], ddp: bool = False,
                  schema: bool = True, stats_shift: float = 0.0) -> tuple[str, dict]:
    """A checkpoint in the exact layout `stefaland pretrain` writes (objective → model.encoder.*)."""
    torch.manual_seed(3)
    model = MaskedReconstructionModel(len(dynamic), len(static), ModelConfig(**ENCODER))
    objective = PretrainObjective(model, ReconstructionLoss(len(dynamic), len(static)))
    weights = objective.state_dict()
    if ddp:
        weights = {f"module.{k}": v for k, v in weights.items()}
    state = {"objective": weights, "config": {"model": ModelConfig(**ENCODER).model_dump(mode="json")}}
    if schema:
        state["schema"] = {"dynamic_vars": dynamic, "static_vars": static,
                           "dynamic_mean": [stats_shift] * len(dynamic), "dynamic_std": [1.0] * len(dynamic),
                           "static_mean": [0.0] * len(static), "static_std": [1.0] * len(static)}
    save_checkpoint(str(folder), 7, state)
    return str(folder), {k: v.clone() for k, v in model.encoder.state_dict().items()}


def _config(name: str, pretrained: str | None = None, **model) -> object:
    return config_from_dict({
        "data": {"seq_len": 20, **PERIOD},
        "model": {"name": name, "hidden": 8, "dropout": 0.0, "encoder": ENCODER, "pretrained": pretrained,
                  "hbv": {"nmul": 2, "warmup_days": 10}, "n_estimators": 10, "max_rows": 5000, **model},
        "train": {"epochs": 1, "batch_size": 6, "optimizer": "adam", "lr": 0.01, "iterations_per_epoch": 3},
    })


# the foreign encoders read inputs this store lacks (image patches, MSWX names): tests/test_foreign_encoders.py
TORCH_MODELS = sorted(name for name, spec in MODELS.items() if spec.kind == "torch" and name not in FOREIGN_MODELS)


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_every_torch_model_builds_and_trains_a_step(name: str, store: str, tmp_path: Path) -> None:
    run, _ = _pretrain_run(tmp_path / "pre", list(DVARS), list(SVARS))
    config = _config(name, run if name.startswith("stefaland_") and name != "stefaland_transformer" else None)
    dataset = open_store(store)
    variables = resolve_variables(dataset, config.data)
    data = load_site_data(dataset, np.arange(6), variables, PERIOD["train_start"], PERIOD["train_end"], "train")
    torch.manual_seed(0)
    model = build_torch_model(config.model, variables)
    warmup = MODELS[name].warmup(config.model)
    assert warmup == int(getattr(model, "warmup", 0)) == (10 if name.endswith("_hbv") else 0)
    assert MODELS[name].pretrained_encoder == (name.startswith("stefaland_") and name != "stefaland_transformer")
    batch = next(iter(WindowSampler(data, 6, warmup + 20, 20, 1, np.random.default_rng(0))))
    trainable = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}
    model.train()
    prediction = model(batch.dynamic, batch.static)
    assert prediction.shape == (6, 20) and torch.isfinite(prediction).all()
    loss = masked_loss(prediction, batch.target[:, warmup:], "rmse")
    loss.backward()
    torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    changed = [k for k, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[k])]
    assert len(changed) > len(trainable) // 2
    assert all(torch.equal(p, frozen[k]) for k, p in model.named_parameters() if k in frozen)
    if name in ("stefaland_resconn", "ablation_resconn", "stefaland_noresconn", "stefaland_resconn_hbv"):
        assert frozen and all("encoder" in k for k in frozen)  # the encoder, and only it, stays frozen


def test_a_model_label_comes_from_its_spec_else_its_name() -> None:
    paper = {"lstm": "LSTM-SL", "linear": "Linear", "random_forest": "RandomForest",
             "stefaland_resconn": "StefaLand-resConn", "stefaland_noresconn": "StefaLand-noResConn",
             "stefaland_transformer": "StefaLand-Transformer", "ablation_resconn": "Ablation-resConn",
             "lstm_hbv": "LSTM-HBV1.1", "stefaland_resconn_hbv": "StefaLand-resConn-HBV1.1",
             "stefaland_noresconn_hbv": "StefaLand-noResConn-HBV1.1", "ablation_resconn_hbv": "Ablation-resConn-HBV1.1"}
    assert {name: model_label(name) for name in paper} == paper  # every built-in model carries the paper's name
    assert _config("lstm").model.display_label() == "LSTM-SL"
    assert model_label("not_registered") == "not_registered"  # a plug-in without a label: its registry name
    assert config_from_dict({"model": {"name": "lstm", "label": "mine"}}).model.display_label() == "mine"
    with pytest.raises(ValueError, match="model label 'two words'"):
        ModelSpec("torch", MODELS["lstm"].factory, "x", label="two words")


def test_pretrained_encoder_loads_by_name_and_shape(store: str, tmp_path: Path, capsys) -> None:
    run, weights = _pretrain_run(tmp_path / "pre", list(DVARS), list(SVARS), ddp=True, stats_shift=2.0)
    variables = resolve_variables(open_store(store), _config("lstm").data)
    model = build_torch_model(_config("stefaland_resconn", run).model, variables)
    encoder = model.network.features.encoder
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, weights[key])  # every tensor came from the checkpoint
    printed = capsys.readouterr().out
    assert f"loaded {len(weights)} tensor(s)" in printed and "kept random" not in printed
    # the pretraining store's statistics differ (mean 2, std 1): inputs are re-expressed in them
    features = model.network.features
    np.testing.assert_allclose(features.dynamic_gain.numpy(), variables.dynamic_std, rtol=1e-6)
    np.testing.assert_allclose(features.dynamic_shift.numpy(), variables.dynamic_mean - 2.0, rtol=1e-5)
    # the ablation takes the architecture and variables but none of the weights
    ablation = build_torch_model(_config("ablation_resconn", run).model, variables).network.features.encoder
    assert not torch.equal(ablation.dynamic_embedding.w2, weights["dynamic_embedding.w2"])


def test_encoder_fed_the_pretraining_variables_in_their_order(store: str, tmp_path: Path) -> None:
    run, _ = _pretrain_run(tmp_path / "pre", ["tmax", "prcp"], ["slope_mean"])
    variables = resolve_variables(open_store(store), _config("lstm").data)
    model = build_torch_model(_config("stefaland_noresconn", run).model, variables)
    assert model.network.features.dynamic_index.tolist() == [DVARS.index("tmax"), DVARS.index("prcp")]
    assert model.network.features.static_index.tolist() == [SVARS.index("slope_mean")]
    assert model(torch.zeros(2, 20, len(DVARS)), torch.zeros(2, len(SVARS))).shape == (2, 20)


def test_variable_set_mismatch_is_a_clear_error(store: str, tmp_path: Path) -> None:
    variables = resolve_variables(open_store(store), _config("lstm").data)
    run, _ = _pretrain_run(tmp_path / "a", [*DVARS, "swe"], list(SVARS))
    with pytest.raises(StefaLandError, match="pretrained dynamic variable 'swe' is not among the finetuning inputs"):
        build_torch_model(_config("stefaland_resconn", run).model, variables)
    old, _ = _pretrain_run(tmp_path / "b", list(DVARS), [*SVARS, "extra"], schema=False)  # no variable list
    with pytest.raises(StefaLandError, match=f"pretrained on {len(SVARS) + 1} static variables but the finetuning "
                                             f"data has {len(SVARS)}"):
        build_torch_model(_config("stefaland_resconn", old).model, variables)
    with pytest.raises(StefaLandError, match="needs model.pretrained"):
        build_torch_model(_config("stefaland_resconn").model, variables)
    with pytest.raises(StefaLandError, match="no pretrained checkpoint"):
        build_torch_model(_config("stefaland_resconn", str(tmp_path / "missing")).model, variables)


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_adapters_keep_the_width(kind: str) -> None:
    torch.manual_seed(0)
    adapter = make_adapter(kind, 16)
    x = torch.randn(2, 5, 16)
    y = adapter(x)
    assert y.shape == x.shape
    if kind in ("none", "residual"):  # the residual adapter starts as the identity
        torch.testing.assert_close(y, x)
    else:
        assert not torch.allclose(y, x)


def test_sklearn_baselines_predict_held_out_sites(store: str, tmp_path: Path) -> None:
    dataset = open_store(store)
    folds = np.asarray(dataset["fold_pub"].values)
    target = dataset["target"].values[..., 0]
    climatology = np.nanmean(target[folds != 1], axis=0)  # (time,) mean of the training sites per day
    for name in ("linear", "random_forest"):
        result = finetune_fold(store, _config(name), str(tmp_path / name), "pub", 1, quiet=True)
        predictions = xr.open_dataset(result.predictions)
        obs, sim = predictions["obs"].values, predictions["sim"].values
        ok = np.isfinite(obs)
        assert np.isfinite(sim).all() and predictions.attrs["model"] == MODELS[name].label  # the paper's name
        assert np.sqrt(np.mean((obs - sim)[ok] ** 2)) < np.sqrt(np.mean((obs - climatology)[ok] ** 2))
    saved = tmp_path / "random_forest" / "fold-1" / "checkpoints" / "model.npz"
    stamp = saved.stat().st_mtime_ns
    finetune_fold(store, _config("random_forest"), str(tmp_path / "random_forest"), "pub", 1, quiet=True)
    assert saved.stat().st_mtime_ns == stamp  # a re-run reuses the fitted model


def test_hbv_hybrid_end_to_end_and_its_inputs(store: str, tmp_path: Path) -> None:
    result = finetune_fold(store, _config("lstm_hbv"), str(tmp_path / "hbv"), "pub", 2, quiet=True)
    predictions = xr.open_dataset(result.predictions)
    sim = predictions["sim"].values
    assert sim.shape == (3, 500) and np.isfinite(sim).all() and (sim > -1e-5).all()  # HBV makes no negative flow
    variables = resolve_variables(open_store(store), _config("lstm").data)
    with pytest.raises(StefaLandError, match="HBV pet variable 'evap'"):
        build_torch_model(_config("lstm_hbv", hbv={"nmul": 2, "warmup_days": 10, "pet": "evap"}).model, variables)


def test_hargreaves_pet_when_the_store_has_none(store: str) -> None:
    from stefaland.finetune.models.hbv_hybrid import hargreaves_pet

    # Hargreaves (1975): a 25 degC day with 400 W/m2 over 14 daylight hours evaporates about 4.8 mm
    pet = hargreaves_pet(torch.tensor([25.0, 5.0]), torch.tensor([400.0, 100.0]), torch.tensor([50400.0, 32400.0]))
    expected = 0.0135 * (torch.tensor([25.0, 5.0]) + 17.8) * torch.tensor([400 * 50400, 100 * 32400]) / 1e6 / 2.45
    torch.testing.assert_close(pet, expected)
    assert 4.0 < float(pet[0]) < 5.5 and float(pet[1]) < 1.0
    variables = resolve_variables(open_store(store), _config("lstm").data)  # this store has no srad/dayl
    with pytest.raises(StefaLandError, match="HBV radiation variable 'srad'"):
        build_torch_model(_config("lstm_hbv", hbv={"nmul": 2, "warmup_days": 10, "pet": None}).model, variables)


def test_drop_connect_lstm_masks_weights_not_outputs() -> None:
    from stefaland.finetune.models.recurrent import DropConnectLSTM

    torch.manual_seed(0)
    lstm = DropConnectLSTM(5, 8, 0.5)
    plain = torch.nn.LSTM(5, 8)
    plain.load_state_dict(lstm.state_dict())  # same parameter names: checkpoints move between the two
    x = torch.randn(12, 4, 5)
    lstm.eval()
    torch.testing.assert_close(lstm(x)[0], plain(x)[0])  # no dropout outside training
    lstm.train()
    out, _ = lstm(x)
    out.sum().backward()
    for name in ("weight_ih_l0", "weight_hh_l0"):  # one mask for every sample and day: dropped weights get no gradient
        zero = (getattr(lstm, name).grad == 0).float().mean().item()
        assert 0.35 < zero < 0.65, (name, zero)
    assert (lstm.bias_hh_l0.grad != 0).all()  # biases are not dropped
    assert not torch.allclose(out, plain(x)[0])
    lstm.weight_dropout = 0.0
    torch.testing.assert_close(lstm(x)[0], plain(x)[0])  # p = 0 is the plain LSTM, also in training


def test_lstm_sl_time_major_network_matches_a_batch_first_reference() -> None:
    from stefaland.finetune.models.base import lstm_inputs
    from stefaland.finetune.models.lstm import LSTMNetwork

    torch.manual_seed(1)
    network = LSTMNetwork(3, 2, 6, 0.2, n_out=2).eval()
    dynamic, static = torch.randn(4, 9, 3), torch.randn(4, 2)
    reference = torch.nn.LSTM(6, 6, batch_first=True)
    reference.load_state_dict(network.lstm.state_dict())
    h, _ = reference(torch.relu(network.inp(lstm_inputs(dynamic, static))))
    torch.testing.assert_close(network(dynamic, static), network.out(h))  # (B, T, n_out), same numbers
