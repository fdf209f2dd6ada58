"""The experiment matrix of the paper's tables as a plan: plain YAML a user can read and edit.

A plan holds its settings (scale, where outputs go, the input stores, the Kubernetes pod
options, the GPU rates), the tables with their rows, and every run the rows expand to: the
data preparation (small scale), the split files, the per-fold encoders, one finetuning run per
(row, scheme, fold) and one report per (row, scheme). Each run is a ``stefaland`` command line,
its config (a shipped paper config plus overrides), the output that proves it finished and the
runs it needs.

Editing: on reading, the rows are expanded again and every run the file lists replaces the run
of the same id, so an edited run is honoured as written, and a row added to a table (a user's own
model) gets its runs without re-planning. The folds come from the holdout registry
(:mod:`stefaland.splits`): ``all`` is the scheme's registered folds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.outputs import claim_output
from stefaland.run import layout
from stefaland.splits import get_holdout, parse_fold_spec
from stefaland.yaml_mapping import load_mapping

from . import matrix
from .availability import unavailable
from .cost import default_rates, gpu_hours
from .published import table_keys

FORMAT = 1
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REPO = Path(__file__).resolve().parents[2]
KINDS = ("synth", "build", "splits", "pretrain", "finetune", "report")
ROOT_TOKEN, CONFIG_TOKEN = "{root}", "{config}"


@dataclass
class Run:
    """One ``stefaland`` command of the plan.

    ``args`` follow ``stefaland`` (``{root}``: the plan's root; ``{config}``: this run's config,
    written from ``config`` before it starts); ``output`` is what proves it finished (a fold
    folder with its run record and manifest, a complete store, a file); ``unavailable`` says why
    it cannot run here (it then never runs, and neither does anything that needs it)."""

    id: str
    kind: str
    args: list[str]
    output: str
    needs: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    gpu_hours: float = 0.0
    table: str | None = None
    row: str | None = None
    unavailable: str | None = None
    #: the digest of the run as the plan generated it: a listed run whose content still has it was
    #: not edited, and follows the rows and folds; one that differs was edited, and is kept as written
    generated: str | None = None

    def content(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items()
                if value not in (None, [], {}) and key != "generated"}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**self.content(), "generated": self.generated or self.digest()}

    def edited(self) -> bool:
        return self.generated is not None and self.generated != self.digest()


@dataclass(frozen=True)
class Row(matrix.RowSpec):
    """A table row as the plan file holds it (``set``: the row's own config overrides)."""

    set: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, {}, False)}


@dataclass
class Table:
    table: str
    task: str
    groups: dict[str, str]
    rows: list[Row]

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "task": self.task, "groups": self.groups,
                "rows": [row.to_dict() for row in self.rows]}


@dataclass
class Plan:
    scale: str
    root: str
    tables: list[Table]
    inputs: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    kubernetes: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=default_rates)
    folds: dict[str, str] = field(default_factory=dict)  # "task/scheme" -> fold spec (all, 1,2, 1-5)
    runs: dict[str, Run] = field(default_factory=dict)
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    # -- where things are ------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """The root as a URL or an absolute path (a relative root is relative to the plan file)."""
        if fileio.is_remote(self.root) or os.path.isabs(self.root) or self.path is None:
            return self.root
        return str((self.path.parent / self.root).resolve())

    @property
    def state_dir(self) -> Path:
        """Beside the plan file: each run's config and log, the last failures, the Kubernetes runs."""
        assert self.path is not None
        return self.path.with_name(self.path.stem + ".state")

    def resolve(self, text: str) -> str:
        return text.replace(ROOT_TOKEN, self.root_url)

    def config_path(self, run: Run) -> Path:
        return self.state_dir / "configs" / (safe_name(run.id) + ".yaml")

    def log_path(self, run: Run) -> Path:
        return self.state_dir / "logs" / (safe_name(run.id) + ".log")

    def argv(self, run: Run) -> list[str]:
        """The run's ``stefaland`` arguments with the root and its config filled in."""
        return [self.resolve(a).replace(CONFIG_TOKEN, str(self.config_path(run))) for a in run.args]

    def config_text(self, run: Run) -> str:
        """The run's config: its base (a shipped config or a path) with ``set`` applied."""
        assert run.config is not None
        return yaml.safe_dump(resolve_values(self, derive_config(run.config)), sort_keys=False)

    def table(self, key: str) -> Table:
        for table in self.tables:
            if table.table == key:
                return table
        raise StefaLandError(f"plan has no table {key!r} (tables: {', '.join(t.table for t in self.tables)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "stefaland_paper_plan": FORMAT, "scale": self.scale, "root": self.root, "notes": self.notes,
            "inputs": self.inputs, "folds": self.folds, "env": self.env, "kubernetes": self.kubernetes,
            "cost": self.cost,
            "tables": [t.to_dict() for t in self.tables], "runs": [r.to_dict() for r in self.runs.values()],
        }


def safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def resolve_values(plan: Plan, value: Any) -> Any:
    if isinstance(value, str):
        return plan.resolve(value)
    if isinstance(value, dict):
        return {k: resolve_values(plan, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_values(plan, v) for v in value]
    return value


def derive_config(spec: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a shipped config's file name, or a path) with each dotted key of ``set`` applied."""
    base = str(spec.get("base", ""))
    path = CONFIGS / base if (CONFIGS / base).is_file() else Path(base)
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in CONFIGS.glob("*.yaml")))
        raise StefaLandError(f"plan config base {base!r}: neither a shipped config ({shipped}) nor a file")
    values = load_mapping(path.read_bytes(), str(path), "expected a YAML mapping")
    for key, value in (spec.get("set") or {}).items():
        target = values
        parts = str(key).split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return values


# -- making a plan -----------------------------------------------------------------------------------

def default_tables(keys: list[str]) -> list[Table]:
    """The paper's tables ``keys`` as rows of a plan."""
    tables = []
    for key in keys:
        spec = matrix.TABLES[key]
        rows = [Row(r.row, r.model, r.encoder, r.family, r.variable, r.task, dict(r.groups) if r.groups else None)
                for r in spec.rows]
        tables.append(Table(key, spec.task, dict(spec.groups), rows))
    return tables


def parse_tables(text: str) -> list[str]:
    """``--tables 1,2,F1``: known table keys, in the paper's order."""
    known = table_keys()
    wanted = [t.strip().upper() for t in text.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in known]
    if unknown or not wanted:
        raise StefaLandError(f"--tables {text!r}: expected a list of {', '.join(known)}")
    return [t for t in known if t in wanted]


def shared_data() -> Path:
    """The real samples: ``$STEFALAND_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("STEFALAND_SHARED_DATA") or REPO.parent / "shared" / "data")


def make_plan(tables: list[str], scale: str, path: Path, root: str | None = None) -> Plan:
    """A new plan of ``tables`` at ``scale``, to be written to ``path``."""
    if scale not in matrix.SCALES:
        raise StefaLandError(f"--scale {scale!r}: expected one of {', '.join(matrix.SCALES)}")
    plan = Plan(scale, root or f"{path.stem}-outputs", default_tables(tables), {}, path=path.resolve())
    if scale == "small":
        plan.inputs = {"world": "{root}/data/world.zarr", "smap": "{root}/data/smap.zarr"}
        plan.env = {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                    "HYDRODL_ROOT": str(shared_data() / "hydrodl_smap_conusv4f1" / "data")}
        plan.notes = ["small scale: the virtual world (data synth) stands in for CAMELS, the global basins and the "
                      "WoSIS profiles (its soil fractions as targets), the real SMAP sample for the ISMN stations; "
                      "it shows the machinery, not the paper's numbers"]
    else:
        plan.inputs = {name: f"{{root}}/stores/{name}.zarr"
                       for name in ("global", "camels", "global_streamflow", "ismn", "wosis")}
        plan.inputs |= {name: f"{{root}}/weights/{name}.pt" for name in matrix.FOREIGN.values()}
        plan.kubernetes = {"image": os.environ.get("STEFALAND_IMAGE", ""), "namespace": None,
                           "gpus": {"pretrain": 6, "finetune": 2}, "backoff_limit": 3, "secret": "stefaland-s3",
                           "poll_seconds": 30}
        plan.notes = ["full scale: build the input stores first (docs/PAPER.md), or point inputs at yours"]
    setups = matrix.setups(scale)
    for table in plan.tables:
        for row in table.rows:
            task = row.task or table.task
            for scheme in (row.groups or table.groups).values():
                plan.folds.setdefault(f"{task}/{scheme}", setups[task].folds.get(scheme, "all"))
    plan.runs = expand(plan)
    return plan


def expand(plan: Plan) -> dict[str, Run]:
    """Every run the plan's tables need, in dependency order."""
    runs: dict[str, Run] = {}
    if plan.scale == "small":
        _small_data(plan, runs)
    for table in plan.tables:
        for row in table.rows:
            _row_runs(plan, table, row, runs)
    return runs


def _add(runs: dict[str, Run], run: Run) -> Run:
    return runs.setdefault(run.id, run)


def _small_data(plan: Plan, runs: dict[str, Run]) -> None:
    tasks = {row.task or table.task for table in plan.tables for row in table.rows}
    setups = matrix.setups(plan.scale)
    stores = {setups[t].store for t in tasks}
    if "world" in stores:
        catalog = "{root}/data/world/virtual_world.yaml"
        _add(runs, Run("data.world-synth", "synth", ["data", "synth", "{root}/data/world", "--sites", "160",
                                                     "--years", "2", "--seed", "1", "--quiet"], catalog))
        _add(runs, Run("data.world-store", "build", ["data", "build", "--catalog", catalog, "--out",
                                                     "{root}/data/world.zarr", "--shard-size", "160", "--quiet"],
                       "{root}/data/world.zarr", ["data.world-synth"]))
    if "smap" in stores:
        catalog_file = REPO / "catalog" / "smap_conus.yaml"
        sample = Path(plan.env.get("HYDRODL_ROOT", ""))
        why = None
        if not catalog_file.is_file():
            why = f"{catalog_file} not found (a source checkout has it)"
        elif not sample.is_dir():
            why = f"the SMAP sample {sample} is not here (set STEFALAND_SHARED_DATA)"
        _add(runs, Run("data.smap-store", "build", ["data", "build", "--catalog", str(catalog_file), "--out",
                                                    "{root}/data/smap.zarr", "--quiet"], "{root}/data/smap.zarr",
                       unavailable=why))


def _store_run(plan: Plan, store: str) -> list[str]:
    """The run that builds input ``store`` (small scale), as a ``needs`` list."""
    return [f"data.{store}-store"] if plan.scale == "small" else []


def _split_run(plan: Plan, runs: dict[str, Run], task: str, scheme: str) -> tuple[str | None, list[str]]:
    """The split file of (task, scheme), made by a ``splits make`` run; None for the store's coordinate."""
    setup = matrix.setups(plan.scale)[task]
    if setup.split_source.get(scheme, "store") == "store":
        return None, []
    path = f"{{root}}/splits/{task}-{scheme}.csv"
    args = ["splits", "make", "--task", task, "--scheme", scheme, "--sites", plan.inputs[setup.store], "--out", path]
    if task == "camels":
        args += ["--basins", "all"] if plan.scale == "small" else []
    run = _add(runs, Run(f"split.{task}-{scheme}", "splits", args, path, _store_run(plan, setup.store),
                         unavailable=setup.unavailable.get(scheme)))
    return path, [run.id]


def _folds(plan: Plan, task: str, scheme: str) -> list[int]:
    """The folds of (task, scheme) the plan runs: its ``folds`` entry, else the scale's; ``all`` is the
    registry's folds of the scheme."""
    spec = plan.folds.get(f"{task}/{scheme}") or matrix.setups(plan.scale)[task].folds.get(scheme, "all")
    return parse_fold_spec(str(spec), get_holdout(task, scheme).fold_ids, scheme, f"folds {task}/{scheme}")


def _encoder(plan: Plan, runs: dict[str, Run], task: str, scheme: str, split_file: str | None,
             split_needs: list[str], folds: list[int]) -> tuple[str, dict[int, str]]:
    """The encoders a row of (task, scheme) reads: one per fold, pretrained without the fold's sites
    where those sites are in the pretraining store, else one shared. Returns (path template, run per fold)."""
    setup = matrix.setups(plan.scale)[task]
    base, overrides = matrix.PRETRAIN[plan.scale]
    store = setup.encoder_store or setup.store
    needs = _store_run(plan, store)
    epochs = int(overrides.get("train.epochs", derive_config({"base": base}).get("train", {}).get("epochs", 20)))
    hours = gpu_hours(plan.cost, "pretrain", None, epochs) if plan.scale == "full" else 0.0
    if not setup.encoder_per_fold:  # the task's sites are not in the pretraining store: nothing to leave out
        out = f"{{root}}/encoders/{store}"
        run = _add(runs, Run(f"pretrain.{store}", "pretrain",
                             ["pretrain", "--store", plan.inputs[store], "--config", CONFIG_TOKEN, "--out", out,
                              "--quiet"], out, needs, {"base": base, "set": dict(overrides)}, hours))
        return out, {k: run.id for k in folds}
    folder = f"{{root}}/encoders/{task}-{scheme}"
    ids = {}
    for k in folds:
        out = f"{folder}/{layout.fold_folder(k)}"
        exclude = {"split": scheme, "fold": k, "split_file": split_file}
        run = _add(runs, Run(f"pretrain.{task}-{scheme}.{k}", "pretrain",
                             ["pretrain", "--store", plan.inputs[store], "--config", CONFIG_TOKEN, "--out", out,
                              "--quiet"], out, needs + split_needs,
                             {"base": base, "set": {**overrides, "data.exclude": exclude}}, hours,
                             unavailable=setup.unavailable.get(scheme)))
        ids[k] = run.id
    return f"{folder}/{layout.FOLD_PREFIX}{{fold}}", ids


def _row_runs(plan: Plan, table: Table, row: Row, runs: dict[str, Run]) -> None:
    task = row.task or table.task
    groups = row.groups or table.groups
    setups = matrix.setups(plan.scale)
    if task not in setups:
        raise StefaLandError(f"plan table {table.table}, row {row.row}: task {task!r} has no setup at scale "
                             f"{plan.scale} (tasks: {', '.join(setups)})")
    setup = setups[task]
    why_model = unavailable(row.model)
    if why_model is None and row.model in matrix.FOREIGN and plan.scale == "small":
        why_model = matrix.FOREIGN_SMALL.format(model=row.model)
    for scheme in groups.values():
        split_file, split_needs = _split_run(plan, runs, task, scheme)
        folds = _folds(plan, task, scheme)
        encoder: str | None = None
        encoder_runs: dict[int, str] = {}
        if row.encoder:
            encoder, encoder_runs = _encoder(plan, runs, task, scheme, split_file, split_needs, folds)
        config = _finetune_config(plan, setup, row, encoder)
        base_prefix = f"t{table.table}.{slug(row.row)}.{scheme}"
        out = f"{{root}}/runs/t{table.table}/{slug(row.row)}/{scheme}"
        why = why_model or setup.unavailable.get(scheme)
        epochs = derive_config(config).get("train", {}).get("epochs")
        hours = gpu_hours(plan.cost, "finetune", row.model, epochs) if plan.scale == "full" else 0.0
        fold_ids = []
        for k in folds:
            args = ["finetune", "--store", plan.inputs[setup.store], "--config", CONFIG_TOKEN, "--out", out,
                    "--task", task, "--split", scheme, "--fold", str(k), "--quiet"]
            args += ["--split-file", split_file] if split_file else []
            needs = _store_run(plan, setup.store) + split_needs + ([encoder_runs[k]] if k in encoder_runs else [])
            run = _add(runs, Run(f"{base_prefix}.{k}", "finetune", args, f"{out}/{layout.fold_folder(k)}", needs,
                                 config, hours, table.table, row.row, why))
            fold_ids.append(run.id)
        report = f"{{root}}/reports/t{table.table}/{slug(row.row)}/{scheme}"
        _add(runs, Run(f"{base_prefix}.report", "report",
                       ["report", task, "--split", scheme, "--runs", out, "--folds", ",".join(map(str, folds)),
                        "--out", report, "--format", "md,csv,json", "--force", "--quiet"],
                       f"{report}/{task}_summary.csv", fold_ids, None, 0.0, table.table, row.row, why))


def _finetune_config(plan: Plan, setup: matrix.TaskSetup, row: Row, encoder: str | None) -> dict[str, Any]:
    base = setup.configs.get(row.family) or next(iter(setup.configs.values()))
    values: dict[str, Any] = {**setup.set, **setup.family_set.get(row.family, {}), "model.name": row.model}
    if row.variable:
        target = matrix.SMALL_TEXTURE_TARGET if plan.scale == "small" else "wosis_{texture}"
        values["data.target"] = target.format(texture=row.variable)
    if encoder:
        values["model.pretrained"] = encoder
    if row.model in matrix.FOREIGN:
        values["model.pretrained"] = plan.inputs.get(matrix.FOREIGN[row.model], "")
    values.update(row.set)
    return {"base": base, "set": values}


# -- reading and writing -----------------------------------------------------------------------------

PLAN_KIND = "paper-plan"  # its first line says so (stefaland.outputs.HEADER_KINDS)


def write_plan(plan: Plan, path: Path, force: bool = False) -> None:
    """The plan as YAML, written whole (temp file + rename).

    An existing plan is replaced only with ``force`` (a user may have edited it); any other file is
    never replaced.
    """
    text = ("# stefaland paper plan: edit rows (tables: ... rows:) or runs; `stefaland paper run` honours both.\n"
            + yaml.safe_dump(plan.to_dict(), sort_keys=False, width=120))
    with claim_output(str(path), PLAN_KIND, force=force):
        fileio.write_bytes_atomic(str(path), text.encode())


def read_plan(path: str | Path) -> Plan:
    """A plan file, its rows expanded again and its listed runs honoured as written."""
    path = Path(path)
    if not path.is_file():
        raise StefaLandError(f"{path}: plan not found (make one with `stefaland paper plan --out {path}`)")
    document = load_mapping(path.read_bytes(), str(path), "expected a stefaland paper plan (a YAML mapping)")
    if document.get("stefaland_paper_plan") != FORMAT:
        raise StefaLandError(f"{path}: not a stefaland paper plan (no 'stefaland_paper_plan: {FORMAT}')")
    try:
        tables = [Table(str(t["table"]), str(t["task"]), dict(t["groups"]),
                        [_row(r, path, t) for r in t.get("rows") or []]) for t in document.get("tables") or []]
        plan = Plan(str(document["scale"]), str(document["root"]), tables, dict(document.get("inputs") or {}),
                    dict(document.get("env") or {}), dict(document.get("kubernetes") or {}),
                    dict(document.get("cost") or default_rates()),
                    {str(k): str(v) for k, v in (document.get("folds") or {}).items()}, path=path.resolve(),
                    notes=list(document.get("notes") or []))
        listed = [_run(r, path) for r in document.get("runs") or []]
    except (KeyError, TypeError, ValueError) as exc:
        raise StefaLandError(f"{path}: malformed plan ({type(exc).__name__}: {exc})") from None
    if plan.scale not in matrix.SCALES:
        raise StefaLandError(f"{path}: scale {plan.scale!r}: expected one of {', '.join(matrix.SCALES)}")
    runs = expand(plan)
    for run in listed:  # an edited run (or one the user added) as written; the others as the rows say now
        if run.edited() or run.generated is None:
            runs[run.id] = run
    _check_needs(runs, path)
    plan.runs = runs
    return plan


def _row(entry: dict[str, Any], path: Path, table: dict[str, Any]) -> Row:
    known = set(Row.__dataclass_fields__)
    extra = set(entry) - known
    if extra or "row" not in entry or "model" not in entry:
        raise StefaLandError(f"{path}: table {table.get('table')}: row {entry.get('row')!r} needs 'row' and 'model'"
                             + (f"; unknown keys {', '.join(sorted(extra))} (known: {', '.join(sorted(known))})"
                                if extra else ""))
    return Row(**entry)


def _run(entry: dict[str, Any], path: Path) -> Run:
    known = set(Run.__dataclass_fields__)
    extra = set(entry) - known
    if extra:
        raise StefaLandError(f"{path}: run {entry.get('id')!r}: unknown keys {', '.join(sorted(extra))}")
    run = Run(**entry)
    if run.kind not in KINDS:
        raise StefaLandError(f"{path}: run {run.id}: kind {run.kind!r}: expected one of {', '.join(KINDS)}")
    if run.kind in ("pretrain", "finetune") and CONFIG_TOKEN in run.args and not run.config:
        raise StefaLandError(f"{path}: run {run.id}: its args name {CONFIG_TOKEN} but it has no config")
    return run


def _check_needs(runs: dict[str, Run], path: Path) -> None:
    for run in runs.values():
        for need in run.needs:
            if need not in runs:
                raise StefaLandError(f"{path}: run {run.id} needs {need!r}, which the plan does not have")
    order(runs, path)


def order(runs: dict[str, Run], path: Path | None = None) -> list[str]:
    """Run ids with every run after the runs it needs; a cycle is one line naming a run in it."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(run_id: str, trail: tuple[str, ...]) -> None:
        if state.get(run_id) == 2:
            return
        if state.get(run_id) == 1:
            raise StefaLandError(f"{path or 'plan'}: runs need each other in a cycle: {' -> '.join(trail + (run_id,))}")
        state[run_id] = 1
        for need in runs[run_id].needs:
            visit(need, trail + (run_id,))
        state[run_id] = 2
        done.append(run_id)

    for run_id in runs:
        visit(run_id, ())
    return done
