"""TerraMind v1's encoder (IBM/ESA), re-implemented to load the published weights as published.

terratorch (where TerraMind lives) cannot be installed next to StefaLand: it needs torchgeo 0.9,
which needs Python >= 3.12 (docs/FOREIGN_ENCODERS.md). This module is the raw-input ViT that
terratorch builds as ``terramind_v1_{tiny,small,base,large}`` (``TerraMindViT``), written from
its architecture, with the same module names so the published ``TerraMind_v1_<size>.pt`` state
dict loads key for key: ``encoder_embeddings.untok_dem@224.{proj.weight, mod_emb, pos_emb}``,
``encoder.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2[, mlp.fc3]}``, ``encoder_norm``.

Modalities: DEM through its published raw embedding (``untok_dem@224``, standardised with
TerraMind's pretraining mean and std). TerraMind reads LULC and NDVI only as tokens of its VQ-VAE
tokenizers (separately published networks, not re-implemented here), so they enter as new raw
modalities (``lulc``: one-hot over the legend, ``ndvi``), the way terratorch adds a modality the
model has no raw embedding for: a new patch embedding, initialised at random. Tokens of every
modality go through the shared transformer; image tokens are averaged over modalities
(``merge_method="mean"``) and then over the patch, giving one vector per site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

#: TerraMind v1's DEM standardisation (terratorch ``v1_pretraining_mean/std["untok_dem@224"]``).
DEM_MEAN, DEM_STD = 670.665, 951.272
#: NDVI's (``tok_ndvi@224``): the scale its tokenizer was trained on.
NDVI_MEAN, NDVI_STD = 0.327, 0.322
#: The ESRI / Impact Observatory 10 m land-cover legend TerraMind's LULC was made from (catalog codes).
LULC_CODES = (1, 2, 4, 5, 7, 8, 9, 10, 11)
DEM_KEY = "untok_dem@224"
IMAGE_SIZE, PATCH = 224, 16


@dataclass(frozen=True)
class TerraMindSize:
    depth: int
    dim: int
    heads: int
    bias: bool  # qkv, attention projection and MLP biases
    gated: bool  # SwiGLU feed-forward (base, large) instead of GELU


VARIANTS = {
    "tiny": TerraMindSize(12, 192, 3, True, False),
    "small": TerraMindSize(12, 384, 6, True, False),
    "base": TerraMindSize(12, 768, 12, False, True),
    "large": TerraMindSize(24, 1024, 16, False, True),
}


class LayerNorm(nn.Module):
    """TerraMind's LayerNorm without a learned bias: the zero bias is a buffer, as in the published dict."""

    bias: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps, self.shape = eps, (dim,)
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, c / heads); scale = head_dim ** -0.5
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc2(act(fc1 x)), or SwiGLU fc2(silu(fc1 x) * fc3 x) with 2/3 of the hidden width (gated)."""

    def __init__(self, dim: int, bias: bool, gated: bool) -> None:
        super().__init__()
        hidden = int(2 * 4 * dim / 3) if gated else 4 * dim
        self.gated = gated
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        if gated:
            self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, size: TerraMindSize) -> None:
        super().__init__()
        self.norm1 = LayerNorm(size.dim)
        self.attn = Attention(size.dim, size.heads, size.bias)
        self.norm2 = LayerNorm(size.dim)
        self.mlp = Mlp(size.dim, size.bias, size.gated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo-v3's fixed 2-D sine-cosine positions (1, h * w, dim), in TerraMind's order of terms."""
    grid_w, grid_h = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_w = grid_w.reshape(-1, 1).float() * omega
    out_h = grid_h.reshape(-1, 1).float() * omega
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1).unsqueeze(0)


class ImageEmbedding(nn.Module):
    """Patches → tokens: a linear projection of each 16 x 16 patch, plus positions and a modality vector."""

    pos_emb: torch.Tensor

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("pos_emb", sincos_2d(IMAGE_SIZE // PATCH, IMAGE_SIZE // PATCH, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.proj = nn.Linear(channels * PATCH * PATCH, dim, bias=False)
        nn.init.normal_(self.mod_emb, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        patches = image.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 3, 5, 1)
        tokens = self.proj(patches.reshape(b, (h // PATCH) * (w // PATCH), PATCH * PATCH * c))  # (ph pw c) order
        pos = self.pos_emb
        if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):  # as terratorch: bicubic interpolation of the 14 x 14 grid
            side = int(math.isqrt(pos.shape[1]))
            grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h // PATCH, w // PATCH), mode="bicubic", align_corners=False)
            pos = grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
        return tokens + pos + self.mod_emb  # (B, N, D)


class TerraMindEncoder(nn.Module):
    """TerraMindViT for DEM (published embedding) and new LULC / NDVI embeddings; one vector per site.

    ``forward(images)`` takes ``{modality: (B, C, H, W)}`` with H, W multiples of 16 and returns
    (B, dim): the mean over the patch of the mean over modalities of the normed last layer.
    """

    def __init__(self, variant: str, modalities: tuple[str, ...]) -> None:
        super().__init__()
        size = VARIANTS[variant]
        self.variant, self.dim, self.modalities = variant, size.dim, modalities
        channels = {"dem": 1, "lulc": len(LULC_CODES), "ndvi": 1}
        names = {"dem": DEM_KEY, "lulc": "lulc", "ndvi": "ndvi"}
        self.encoder_embeddings = nn.ModuleDict({names[m]: ImageEmbedding(channels[m], size.dim) for m in modalities})
        self.encoder = nn.ModuleList([Block(size) for _ in range(size.depth)])
        self.encoder_norm = LayerNorm(size.dim)
        self._names = names
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE's initialisation, as TerraMindViT.init_weights (random weights: allow_random_init)."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if name.endswith("qkv"):
                    bound = math.sqrt(6.0 / (module.weight.shape[0] // 3 + module.weight.shape[1]))
                    nn.init.uniform_(module.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def published_keys(self) -> list[str]:
        """Keys of this encoder that the published state dict holds (the new modalities' are not there)."""
        new = tuple(f"encoder_embeddings.{m}." for m in ("lulc", "ndvi"))
        return [k for k in self.state_dict() if not k.startswith(new)]

    def forward(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = [self.encoder_embeddings[self._names[m]](images[m]) for m in self.modalities]
        counts = [t.shape[1] for t in tokens]
        x = torch.cat(tokens, dim=1)  # (B, M * N, D)
        for block in self.encoder:
            x = block(x)
        x = self.encoder_norm(x)
        per_modality = torch.stack(torch.split(x, counts, dim=1), dim=1)  # (B, M, N, D)
        return per_modality.mean(dim=1).mean(dim=1)  # (B, D)


def standardise(modality: str, values: torch.Tensor) -> torch.Tensor:
    """Physical patch values (B, H, W) → the model's input (B, C, H, W); missing pixels at the mean (0)."""
    if modality == "lulc":
        codes = torch.as_tensor(LULC_CODES, dtype=values.dtype, device=values.device)
        onehot = (values.round().unsqueeze(1) == codes.view(1, -1, 1, 1)).to(values.dtype)  # NaN: all zero
        return onehot
    mean, std = (DEM_MEAN, DEM_STD) if modality == "dem" else (NDVI_MEAN, NDVI_STD)
    return torch.nan_to_num((values - mean) / std, nan=0.0).unsqueeze(1)
