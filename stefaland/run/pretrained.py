"""Load a pretrained StefaLand encoder (for finetuning, ``embed`` and ``predict``): by name and shape, loudly.

Here, below the stages that read it, because finetuning, ``stefaland embed`` and the run record
``predict`` relies on all open the same pretraining checkpoints.

A silent partial load is the worst outcome (a "pretrained" model that is really half random), so
every tensor that did or did not load is reported, and a checkpoint trained on other variables
than the finetuning data provides is refused with the name of the first missing variable.

Checkpoints come from ``stefaland pretrain``: ``<run>/checkpoints/latest.json`` names a
``ckpt-XXXXXX.pt`` holding the weights (``objective`` → ``model.encoder.*``, or ``model`` →
``encoder.*``, or a bare encoder state dict), the config (``config.model``) and the variables
and their statistics (``schema``).

These files are read with :func:`stefaland.run.checkpoint.load_torch_file` (``weights_only``): a
checkpoint is often someone else's, and one that would run code to load is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import ValidationError

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.model import ModelConfig, StefaLandEncoder
from stefaland.run.checkpoint import RefusedFile, load_torch_file

log = logging.getLogger("stefaland.run.pretrained")

POINTER = "latest.json"


def resolve_checkpoint(url: str) -> str:
    """A ``.pt`` file as is; a run folder (or its ``checkpoints/``) through ``latest.json``."""
    url = str(url).rstrip("/")
    if url.endswith(".pt"):
        if not fileio.exists(url):
            raise StefaLandError(f"{url}: pretrained checkpoint not found")
        return url
    for folder in (fileio.join(url, "checkpoints"), url):
        pointer = fileio.join(folder, POINTER)
        if fileio.exists(pointer):
            try:
                name = json.loads(fileio.read_bytes(pointer))["file"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise StefaLandError(f"{pointer}: corrupt checkpoint pointer ({exc})") from exc
            return fileio.join(folder, name)
    raise StefaLandError(f"{url}: no pretrained checkpoint (neither a .pt file nor a run folder with checkpoints/{POINTER})")


@dataclass
class PretrainedCheckpoint:
    url: str
    state_dict: dict[str, torch.Tensor]  # encoder keys (``dynamic_embedding.w1`` ...), prefixes stripped
    config: ModelConfig | None
    dynamic_vars: list[str] | None
    static_vars: list[str] | None
    dynamic_mean: np.ndarray | None = None
    dynamic_std: np.ndarray | None = None
    static_mean: np.ndarray | None = None
    static_std: np.ndarray | None = None


def _strip(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    key = key.replace("._orig_mod.", ".").removeprefix("_orig_mod.")  # torch.compile wrappers
    return key


def encoder_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the encoder's tensors, named as :class:`StefaLandEncoder` names them."""
    stripped = {_strip(k): v for k, v in raw.items()}
    for prefix in ("model.encoder.", "encoder."):
        found = {k[len(prefix):]: v for k, v in stripped.items() if k.startswith(prefix)}
        if found:
            return found
    return stripped


def read_state(url: str) -> tuple[str, dict]:
    """``(resolved file, its top-level dict)``; tensors and plain metadata only, so nothing in it runs.

    Shared by :func:`read_checkpoint` and the leakage check, so every reader of a pretraining
    checkpoint refuses a planted pickle the same way.
    """
    url = resolve_checkpoint(url)
    data = fileio.read_bytes(url)
    try:
        state = load_torch_file(url, data)
    except RefusedFile:
        raise
    except Exception as exc:
        raise StefaLandError(f"{url}: cannot be read as a torch checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict):
        raise StefaLandError(f"{url}: not a StefaLand checkpoint (expected a dict)")
    return url, state


def read_checkpoint(url: str) -> PretrainedCheckpoint:
    url, state = read_state(url)
    weights = state.get("objective") or state.get("model") or state.get("state_dict")
    if weights is None and all(isinstance(v, torch.Tensor) for v in state.values()):
        weights = state
    if not isinstance(weights, dict):
        raise StefaLandError(f"{url}: holds no model weights (keys: {', '.join(map(str, state))})")
    config = None
    model_cfg = (state.get("config") or {}).get("model") if isinstance(state.get("config"), dict) else None
    if isinstance(model_cfg, dict):
        try:
            config = ModelConfig.model_validate(model_cfg)
        except ValidationError as exc:
            raise StefaLandError(f"{url}: its config.model is not a StefaLand encoder config (a finetuning "
                                 f"checkpoint?): {exc.errors()[0]['msg']}") from exc
    schema = state.get("schema") or state.get("variables") or {}
    stats = {k: (np.asarray(schema[k], np.float64) if k in schema else None)
             for k in ("dynamic_mean", "dynamic_std", "static_mean", "static_std")}
    return PretrainedCheckpoint(url, encoder_state(weights), config,
                                schema.get("dynamic_vars"), schema.get("static_vars"), **stats)


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the encoder, not in the checkpoint
    mismatched: list[str] = field(default_factory=list)  # same name, other shape
    unused: list[str] = field(default_factory=list)  # in the checkpoint, not in the encoder

    def summary(self) -> str:
        lines = [f"pretrained encoder: loaded {len(self.loaded)} tensor(s)"]
        for label, names in (("not in checkpoint (kept random)", self.missing),
                             ("shape mismatch (kept random)", self.mismatched),
                             ("in checkpoint but unused", self.unused)):
            if names:
                lines.append(f"  {label}: {', '.join(names)}")
        return "\n".join(lines)


def load_by_name_and_shape(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    own = module.state_dict()
    report = LoadReport()
    chosen = {}
    for name, value in state.items():
        if name not in own:
            report.unused.append(name)
        elif tuple(own[name].shape) != tuple(value.shape):
            report.mismatched.append(f"{name} {tuple(value.shape)}->{tuple(own[name].shape)}")
        else:
            chosen[name] = value
            report.loaded.append(name)
    report.missing = [name for name in own if name not in state]
    module.load_state_dict(chosen, strict=False)
    return report


def check_variables(checkpoint: PretrainedCheckpoint, dynamic: list[str], static: list[str]) -> tuple[list[int], list[int]]:
    """Indices into the finetuning inputs that feed the encoder, in the pretraining order.

    The encoder's embeddings are per variable: feeding them another variable (or another order)
    would be a silent corruption, so any pretraining variable the finetuning data lacks is an error.
    """
    result = []
    for kind, wanted, have in (("dynamic", checkpoint.dynamic_vars, dynamic), ("static", checkpoint.static_vars, static)):
        if wanted is None:  # an old checkpoint without its variable list: only the count can be checked
            key = f"{kind}_embedding.w1"
            n = checkpoint.state_dict[key].shape[0] if key in checkpoint.state_dict else len(have)
            if n != len(have):
                raise StefaLandError(
                    f"{checkpoint.url}: the encoder was pretrained on {n} {kind} variables but the finetuning "
                    f"data has {len(have)} ({', '.join(have)}); set data.{kind} to the pretraining variables"
                )
            result.append(list(range(len(have))))
            continue
        missing = [name for name in wanted if name not in have]
        if missing:
            raise StefaLandError(
                f"{checkpoint.url}: pretrained {kind} variable {missing[0]!r} is not among the finetuning "
                f"inputs ({', '.join(have)}); the variable sets of pretraining and finetuning must match"
            )
        result.append([have.index(name) for name in wanted])
    return result[0], result[1]


def load_encoder(checkpoint: PretrainedCheckpoint, n_dynamic: int, n_static: int,
                 fallback: ModelConfig) -> tuple[StefaLandEncoder, LoadReport]:
    """Build the encoder the checkpoint describes and load its weights; print what loaded."""
    encoder = StefaLandEncoder(n_dynamic, n_static, checkpoint.config or fallback)
    report = load_by_name_and_shape(encoder, checkpoint.state_dict)
    if not report.loaded:
        raise StefaLandError(f"{checkpoint.url}: no tensor matched the StefaLand encoder by name and shape")
    print(report.summary())
    log.info("loaded %d encoder tensors from %s: %s", len(report.loaded), checkpoint.url, ", ".join(report.loaded))
    return encoder, report
