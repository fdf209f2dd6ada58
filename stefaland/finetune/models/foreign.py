"""Foreign encoders (TerraMind, Prithvi-WxC) in front of the resConn heads: the paper's comparison rows.

Each encoder's output goes where the StefaLand encoder's goes: LayerNorm → × learnable scale → the
configured adapter → :class:`~.stefaland.ResConnNetwork`. The encoder is frozen unless
``model.freeze_encoder: false`` ("TerraMind + finetuning"). Inputs come from the store
(docs/FOREIGN_ENCODERS.md): TerraMind reads the site's image patches (static columns
``tm_<modality>_r<ii>c<jj>``, cut by ``data build`` from the Table C1 rasters), Prithvi-WxC the
day's forcings. Weights are the published files, read with ``weights_only=True`` and checked key
by key against the published layout; without ``model.pretrained`` a model is built only when the
config says ``allow_random_init: true``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.run.checkpoint import load_torch_file

from .adapters import make_adapter

EXTRA = "stefaland[eo]"
#: model name → (Python module the model needs, what to install); None: nothing beyond StefaLand
REQUIRES: dict[str, tuple[str, str] | None] = {
    "terramind_resconn": None,
    "prithviwxc_resconn": ("PrithviWxC", EXTRA),
}
MODALITIES = ("dem", "lulc", "ndvi")
_PIXEL = re.compile(r"^tm_(dem|lulc|ndvi)_r(\d+)c(\d+)$")


def availability(name: str) -> str | None:
    """Why model ``name`` cannot be built in this installation (one line), or None when it can."""
    need = REQUIRES.get(name)
    if need is None:
        return None
    module, extra = need
    try:
        importlib.import_module(module)
    except ImportError:
        return f"model {name!r} needs the optional extra {extra} (pip install '{extra}'), which is not installed"
    return None


def refuse_unavailable(name: str) -> None:
    problem = availability(name)
    if problem:
        raise StefaLandError(problem)


def load_published(module: nn.Module, keys: Sequence[str], url: str, model: str) -> None:
    """Load the published weights file ``url`` into ``module``: the keys it publishes, as published.

    A file wrapping its state dict (``{"model_state": ...}`` as Prithvi-WxC's, or ``{"model": ...}``)
    is unwrapped; keys beyond ``keys`` (a decoder, tokenizers) are ignored; a missing key or another
    shape (another size of the model) is one line naming the key.
    """
    try:
        raw = load_torch_file(url, fileio.read_bytes(url))
    except StefaLandError:
        raise
    except Exception as exc:  # a truncated zip, not a torch file at all
        raise StefaLandError(f"{url}: not a readable torch weights file ({type(exc).__name__})") from None
    for wrapper in ("model_state", "state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    if not isinstance(raw, dict):
        raise StefaLandError(f"{url}: holds no state dict (a mapping of tensor names to tensors)")
    own = module.state_dict()
    for key in keys:
        if key not in raw:
            raise StefaLandError(f"{url}: has no tensor {key!r}; not {model}'s published weights (or another variant)")
        if tuple(raw[key].shape) != tuple(own[key].shape):
            raise StefaLandError(f"{url}: {key} has shape {tuple(raw[key].shape)}, the model {tuple(own[key].shape)}; "
                                 "set model.variant to the size the file was published for")
    module.load_state_dict({key: raw[key] for key in keys}, strict=False)


class SiteFeatures(nn.Module):
    """What a foreign encoder hands the resConn heads: (B, T, out_dim) features, normalised, scaled, adapted."""

    def __init__(self, encoder: nn.Module, dim: int, adapter: str, freeze: bool) -> None:
        super().__init__()
        self.encoder, self.freeze, self.out_dim = encoder, freeze, dim
        self.norm = nn.LayerNorm(dim)
        self.scale = nn.Parameter(torch.tensor(0.1))
        self.adapter = make_adapter(adapter, dim)
        if freeze:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> SiteFeatures:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self

    def encode(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            features = self.encode(dynamic, static)  # (B, T, d) or (B, d)
        if features.dim() == 2:
            features = features.unsqueeze(1).expand(-1, dynamic.shape[1], -1)
        return self.adapter(self.norm(features) * self.scale)


class TerraMindFeatures(SiteFeatures):
    """The site's patches → TerraMind → one vector per site, broadcast over the window's days.

    Frozen, a site's vector depends on its patch alone, so it is computed once per distinct patch
    and kept (keyed by the patch's bytes, so a changed patch can never be served a stale vector).
    """

    columns: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: nn.Module, adapter: str, freeze: bool, columns: dict[str, list[int]], size: int,
                 static_mean: np.ndarray, static_std: np.ndarray) -> None:
        super().__init__(encoder, _width(encoder), adapter, freeze)
        self.size, self.modalities = size, tuple(columns)
        every = [c for m in self.modalities for c in columns[m]]
        self.register_buffer("columns", torch.as_tensor(every, dtype=torch.long))
        self.register_buffer("mean", torch.as_tensor(static_mean[every], dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(static_std[every], dtype=torch.float32))
        self._cache: dict[bytes, torch.Tensor] = {}

    def images(self, static: torch.Tensor) -> dict[str, torch.Tensor]:
        from .terramind import standardise

        raw = static[:, self.columns] * self.std + self.mean  # (B, M·size²) physical values
        per = self.size * self.size
        return {m: standardise(m, raw[:, k * per:(k + 1) * per].reshape(-1, self.size, self.size))
                for k, m in enumerate(self.modalities)}

    def encode(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        if not self.freeze:
            return self.encoder(self.images(static))
        patches = static[:, self.columns]
        keys = [row.tobytes() for row in patches.detach().cpu().numpy()]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self._cache}.items(), key=lambda item: item[1])
        if todo:
            rows = torch.as_tensor([i for _, i in todo], device=static.device)
            vectors = self.encoder(self.images(static[rows]))
            for (key, _), vector in zip(todo, vectors):
                self._cache[key] = vector.detach()
        return torch.stack([self._cache[k] for k in keys])


class PrithviWxCFeatures(SiteFeatures):
    """Each day's forcings → Prithvi-WxC's surface state → its encoder → one vector a day."""

    dynamic_index: torch.Tensor
    dynamic_mean: torch.Tensor
    dynamic_std: torch.Tensor

    def __init__(self, encoder: nn.Module, adapter: str, freeze: bool, dynamic_index: list[int], static_index: int,
                 mean: tuple[np.ndarray, float], std: tuple[np.ndarray, float]) -> None:
        super().__init__(encoder, _width(encoder), adapter, freeze)
        self.register_buffer("dynamic_index", torch.as_tensor(dynamic_index, dtype=torch.long))
        self.static_index = static_index
        self.register_buffer("dynamic_mean", torch.as_tensor(mean[0], dtype=torch.float32))
        self.register_buffer("dynamic_std", torch.as_tensor(std[0], dtype=torch.float32))
        self.elevation_scale = (float(mean[1]), float(std[1]))

    def encode(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        from .prithviwxc import surface_state

        forcing = dynamic[..., self.dynamic_index] * self.dynamic_std + self.dynamic_mean  # (B, T, 3) °C, °C, %
        elevation = static[:, self.static_index] * self.elevation_scale[1] + self.elevation_scale[0]
        wxc: Any = self.encoder.wxc
        state = surface_state(forcing[..., 0], forcing[..., 1], forcing[..., 2], elevation,
                              wxc.input_scalers_mu.flatten())
        return self.encoder(state, elevation)


def _width(encoder: nn.Module) -> int:
    described: Any = encoder  # TerraMindEncoder and PrithviWxCEncoder say their width as ``dim``
    return int(described.dim)


def terramind_columns(static: Sequence[str]) -> tuple[dict[str, list[int]], int]:
    """Which static columns hold which modality's patch (row-major) and the patch size."""
    found: dict[str, dict[tuple[int, int], int]] = {}
    for index, name in enumerate(static):
        match = _PIXEL.match(name)
        if match:
            found.setdefault(match.group(1), {})[(int(match.group(2)), int(match.group(3)))] = index
    if not found:
        raise StefaLandError("model 'terramind_resconn' needs TerraMind's patches in the store's static variables "
                             "(tm_dem_r00c00 ...: the catalog/global.yaml sources terramind_dem, terramind_lulc, "
                             "terramind_ndvi); none found")
    columns, size = {}, 0
    for modality in MODALITIES:
        pixels = found.get(modality)
        if not pixels:
            continue
        side = int(round(len(pixels) ** 0.5))
        if side * side != len(pixels) or set(pixels) != {(i, j) for i in range(side) for j in range(side)}:
            raise StefaLandError(f"static variables tm_{modality}_r..c..: {len(pixels)} pixels do not form a square patch")
        if size and side != size:
            raise StefaLandError(f"TerraMind patches differ in size ({size} and {side} pixels, tm_{modality})")
        if side % 16:
            raise StefaLandError(f"TerraMind patches must be a multiple of 16 pixels a side (tm_{modality}: {side})")
        size = side
        columns[modality] = [pixels[(i, j)] for i in range(side) for j in range(side)]
    return columns, size
