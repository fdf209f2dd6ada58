"""What each of the paper's tables runs: its rows (models), column groups (holdout schemes) and,
per scale, the stores, configs and folds a run of it uses.

The rows and groups follow the paper's tables (``published.yaml``); the schemes and their folds
come from the holdout registry (:mod:`stefaland.splits.registry`); the configs derive from the
shipped paper configs (``stefaland/configs``). The plan (:mod:`stefaland.paper.plan`) expands this
into runs; a user's own rows are added to the plan file, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCALES = ("full", "small")
TEXTURES = ("clay", "sand", "silt")


@dataclass(frozen=True)
class RowSpec:
    """One row of a table: the model it trains and how.

    ``encoder``: the model reads a pretrained encoder, pretrained once per held-out fold without
    that fold's sites (the paper's leak-free setup). ``family`` picks the base config (``stream``,
    ``hbv``, ``soil``, ``texture``); ``task``/``groups`` override the table's for rows of another
    task (Table F1)."""

    row: str
    model: str
    encoder: bool = False
    family: str = "stream"
    variable: str | None = None
    task: str | None = None
    groups: dict[str, str] | None = None


#: The foreign encoders' published weights (an input of the full-scale plan) and why the small
#: scale cannot run them: they read the published files, and TerraMind its image patches.
FOREIGN = {"terramind_resconn": "terramind_weights", "prithviwxc_resconn": "prithviwxc_weights"}
FOREIGN_SMALL = ("the small scale has neither the published {model} weights nor, in the virtual world, the "
                 "image patches and forcings it reads")


@dataclass(frozen=True)
class TableSpec:
    key: str
    task: str
    groups: dict[str, str]  # column group -> holdout scheme of the task
    rows: tuple[RowSpec, ...]


def _texture_rows() -> tuple[RowSpec, ...]:
    rows = []
    for texture in TEXTURES:
        rows += [RowSpec(f"StefaLand-Transformer/{texture}", "stefaland_transformer", family="texture", variable=texture),
                 RowSpec(f"StefaLand-Finetune/{texture}", "stefaland_resconn", True, "texture", texture),
                 RowSpec(f"RandomForest/{texture}", "random_forest", family="texture", variable=texture)]
    return tuple(rows)


TABLES: dict[str, TableSpec] = {
    "1": TableSpec("1", "camels", {"random": "pub", "regional": "pur"}, (
        RowSpec("LSTM-SL", "lstm"),
        RowSpec("StefaLand-Transformer", "stefaland_transformer"),
        RowSpec("StefaLand-resConn", "stefaland_resconn", True),
        RowSpec("StefaLand-noResConn", "stefaland_noresconn", True),
        RowSpec("TerraMind-resConn", "terramind_resconn"),
        RowSpec("Ablation-resConn", "ablation_resconn"),
        RowSpec("LSTM-HBV1.1", "lstm_hbv", family="hbv"),
        RowSpec("StefaLand-resConn-HBV1.1", "stefaland_resconn_hbv", True, "hbv"),
        RowSpec("StefaLand-noResConn-HBV1.1", "stefaland_noresconn_hbv", True, "hbv"),
        RowSpec("Ablation-resConn-HBV1.1", "ablation_resconn_hbv", family="hbv"),
    )),
    "2": TableSpec("2", "global", {"random": "random", "regional": "continents"}, (
        RowSpec("LSTM-SL", "lstm"),
        RowSpec("StefaLand-Transformer", "stefaland_transformer"),
        RowSpec("TerraMind-finetuning", "terramind_resconn"),
    )),
    "3": TableSpec("3", "ismn", {"random": "random", "regional": "europe"}, (
        RowSpec("LSTM-SL", "lstm", family="soil"),
        RowSpec("StefaLand-Transformer", "stefaland_transformer", family="soil"),
        RowSpec("StefaLand-resConn", "stefaland_resconn", True, "soil"),
        RowSpec("StefaLand-noResConn", "stefaland_noresconn", True, "soil"),
        RowSpec("TerraMind-resConn", "terramind_resconn", family="soil"),
        RowSpec("PrithviWxC-resConn", "prithviwxc_resconn", family="soil"),
        RowSpec("Ablation-resConn", "ablation_resconn", family="soil"),
    )),
    "4": TableSpec("4", "wosis", {"random": "random"}, _texture_rows()),
    "F1": TableSpec("F1", "camels", {"random": "pub", "regional": "pur"}, (
        RowSpec("Linear/camels", "linear"),
        RowSpec("Linear/global", "linear", task="global", groups={"random": "random", "regional": "continents"}),
        RowSpec("Linear/soil-moisture", "linear", family="soil", task="ismn",
                groups={"random": "random", "regional": "europe"}),
    )),
}


@dataclass(frozen=True)
class TaskSetup:
    """How one task runs at one scale.

    ``store``: the store's input name (``inputs`` of the plan); ``split_source``: per scheme,
    ``store`` (the store's ``fold_<scheme>`` coordinate) or ``file`` (a ``splits make`` run);
    ``folds``: per scheme, a fold spec (``all`` = the registry's folds); ``unavailable``: per
    scheme, why it cannot run at this scale; ``configs``: base config per row family, with
    ``set`` applied to every finetuning config."""

    store: str
    configs: dict[str, str]
    split_source: dict[str, str]
    folds: dict[str, str]
    set: dict[str, Any] = field(default_factory=dict)
    family_set: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    encoder_store: str | None = None  # the pretraining store (default: ``store``)
    #: one encoder per held-out fold, pretrained without the fold's sites (they are in the
    #: pretraining store); False: one shared encoder (the task's sites are not in it)
    encoder_per_fold: bool = True


_TINY_TRAIN = {"train.epochs": 3, "train.iterations_per_epoch": 30, "train.batch_size": 16, "train.threads": 1}
_TINY_MODEL = {"model.hidden": 16, "model.dropout": 0.0,
               "model.encoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "decoder": "lstm"}}
_SMALL_WINDOW = {"data.seq_len": 60, "data.spinup_days": 0}

SMALL: dict[str, TaskSetup] = {
    "camels": TaskSetup(
        "world", {"stream": "finetune_tiny.yaml", "hbv": "finetune_tiny.yaml"},
        {"pub": "store", "pur": "store"}, {"pub": "1,2", "pur": "1,2"},
        set={**_TINY_TRAIN, **_TINY_MODEL, **_SMALL_WINDOW},
        family_set={"hbv": {"model.hbv": {"nmul": 2, "warmup_days": 30}}},
    ),
    "global": TaskSetup(
        "world", {"stream": "finetune_tiny.yaml"},
        {"random": "file", "continents": "file"}, {"random": "1,2", "continents": "1,2"},
        set={"task": "global", **_TINY_TRAIN, **_TINY_MODEL, **_SMALL_WINDOW},
    ),
    "ismn": TaskSetup(
        "smap", {"soil": "finetune_smap.yaml"},
        {"random": "file", "europe": "file"}, {"random": "1,2", "europe": "all"},
        set={"task": "ismn", "data.train_start": "2015-04-01", "data.train_end": "2017-03-31",
             "data.test_start": "2015-04-01", "data.test_end": "2017-03-31", **_TINY_TRAIN, **_TINY_MODEL,
             "data.seq_len": 30},
        unavailable={"europe": "the small scale's soil-moisture sample (SMAP, 412 CONUS cells) has no European site"},
    ),
    "wosis": TaskSetup(
        "world", {"texture": "finetune_wosis.yaml"},
        {"random": "file"}, {"random": "1,2"},
        set={**_TINY_TRAIN, **_TINY_MODEL, "data.seq_len": 60, "model.n_estimators": 20, "model.max_rows": 20000},
        family_set={"texture": {"data.hide": ["sand_frac", "silt_frac", "clay_frac"]}},
    ),
}
#: The small scale's texture targets: the virtual world's soil fractions stand in for WoSIS profiles.
SMALL_TEXTURE_TARGET = "{texture}_frac"

FULL: dict[str, TaskSetup] = {
    "camels": TaskSetup(
        "camels", {"stream": "finetune_camels_pub.yaml", "hbv": "finetune_camels_pub_hbv.yaml"},
        {"pub": "file", "pur": "file"}, {"pub": "all", "pur": "all"}, encoder_store="global",
    ),
    "global": TaskSetup(
        "global_streamflow", {"stream": "finetune_camels_pub.yaml"},
        {"random": "file", "continents": "file"}, {"random": "all", "continents": "all"},
        set={"task": "global"}, encoder_store="global",
    ),
    "ismn": TaskSetup(
        "ismn", {"soil": "finetune_ismn.yaml"},
        {"random": "file", "europe": "file"}, {"random": "all", "europe": "all"},
        # the paper's settings where the shipped ismn config is sized for the sample (its comments)
        set={"data.seq_len": 365, "model.hidden": 128, "model.dropout": 0.3, "train.epochs": 50,
             "train.batch_size": 128, "train.iterations_per_epoch": None},
        encoder_store="global", encoder_per_fold=False,
    ),
    "wosis": TaskSetup(
        "wosis", {"texture": "finetune_wosis.yaml"}, {"random": "file"}, {"random": "all"},
        set={"data.seq_len": 365, "model.hidden": 256, "model.dropout": 0.2, "train.epochs": 25,
             "train.batch_size": 64, "train.iterations_per_epoch": None},
        encoder_store="global", encoder_per_fold=False,
    ),
}

#: Pretraining config per scale, with the overrides of the small scale.
PRETRAIN = {
    "full": ("pretrain_default.yaml", {}),
    "small": ("pretrain_demo.yaml", {"train.epochs": 2, "data.samples_per_site": 1, "data.seq_len": 60,
                                     "model.d_model": 16, "model.d_ff": 32, "train.num_threads": 1}),
}


def setups(scale: str) -> dict[str, TaskSetup]:
    return SMALL if scale == "small" else FULL
