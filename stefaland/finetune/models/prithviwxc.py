"""Prithvi-WxC (NASA/IBM) as a per-day site encoder, from its published package (``stefaland[eo]``).

The model is the package's own ``PrithviWxC.model.PrithviWxC`` (its pins fit ours, so nothing is
re-implemented); its state dict is the published one, key for key. Prithvi-WxC encodes two MERRA-2
states (160 channels: 20 surface variables and 10 variables on 14 model levels) on a lat/lon grid.
A site gives it one mask unit (``local`` pixels) around the site, every pixel holding the site's
values, for each day and the day before, and its encoder tokens are averaged to one vector a day.

What the store can supply (docs/FOREIGN_ENCODERS.md): T2M from MSWX Tmax/Tmin, PS from GMTED
elevation (standard atmosphere), QV2M from MSWX RelHum with T2M and PS, PHIS from elevation,
FRLAND = 1 (sites are on land). Every other channel is set to the published scalers' mean (0 after
scaling): MERRA-2's fluxes, winds, clouds and all 140 level variables have no counterpart in the
store, and Prithvi-WxC has no precipitation input at all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SURFACE = ("EFLUX", "GWETROOT", "HFLUX", "LAI", "LWGAB", "LWGEM", "LWTUP", "PS", "QV2M", "SLP", "SWGNT", "SWTNT",
           "T2M", "TQI", "TQL", "TQV", "TS", "U10M", "V10M", "Z0M")
VERTICAL = ("CLOUD", "H", "OMEGA", "PL", "QI", "QL", "QV", "T", "U", "V")
N_LEVELS = 14
N_CHANNELS = len(SURFACE) + len(VERTICAL) * N_LEVELS  # 160
N_STATIC = 8  # cos/sin day of year, cos/sin hour of day, FRACI, FRLAND, FROCEAN, PHIS (after lat, lon)
#: store variables the harmonisation reads (catalog/global.yaml names)
NEEDS_DYNAMIC = ("tmax", "tmin", "relhum")
NEEDS_STATIC = ("elevation",)
GRAVITY = 9.80665


@dataclass(frozen=True)
class WxCSize:
    embed_dim: int
    heads: int
    blocks_encoder: int
    blocks_decoder: int
    mlp: int
    local: tuple[int, int]  # one mask unit, pixels (lat, lon)


VARIANTS = {
    "2300m": WxCSize(2560, 16, 12, 2, 4, (30, 32)),  # the published prithvi.wxc.2300m.v1
    "tiny": WxCSize(32, 2, 1, 1, 2, (4, 4)),  # the same architecture at test size (random weights only)
}


def build_prithviwxc(variant: str) -> nn.Module:
    """The package's PrithviWxC with the published configuration (fourier positions, climate residual)."""
    from PrithviWxC.model import PrithviWxC  # stefaland[eo]; the registry checks it is there first

    size = VARIANTS[variant]
    return PrithviWxC(
        in_channels=N_CHANNELS, input_size_time=2, in_channels_static=N_STATIC,
        input_scalers_mu=torch.zeros(N_CHANNELS), input_scalers_sigma=torch.ones(N_CHANNELS), input_scalers_epsilon=0.0,
        static_input_scalers_mu=torch.zeros(N_STATIC + 3), static_input_scalers_sigma=torch.ones(N_STATIC + 3),
        static_input_scalers_epsilon=0.0, output_scalers=torch.ones(N_CHANNELS),
        n_lats_px=size.local[0], n_lons_px=size.local[1], patch_size_px=[2, 2], mask_unit_size_px=list(size.local),
        mask_ratio_inputs=0.0, mask_ratio_targets=0.0, embed_dim=size.embed_dim, n_blocks_encoder=size.blocks_encoder,
        n_blocks_decoder=size.blocks_decoder, mlp_multiplier=size.mlp, n_heads=size.heads, dropout=0.0, drop_path=0.0,
        parameter_dropout=0.0, residual="climate", masking_mode="both", positional_encoding="fourier",
        encoder_shifting=False, decoder_shifting=False,
    )


def surface_state(tmax: torch.Tensor, tmin: torch.Tensor, relhum: torch.Tensor, elevation: torch.Tensor,
                  mean: torch.Tensor) -> torch.Tensor:
    """(B, T) daily forcings in °C and %, elevation (B,) in m → (B, T, 160) MERRA-2 channels.

    Channels the store cannot supply (and missing days) hold ``mean``, the published scalers' mean.
    """
    state = mean.view(1, 1, -1).expand(*tmax.shape, -1).clone()
    t2m = (tmax + tmin) / 2 + 273.15
    ps = 101325.0 * (1 - 2.25577e-5 * elevation.clamp(min=-400.0)) ** 5.25588  # (B,) Pa
    celsius = t2m - 273.15
    vapour = relhum / 100 * 611.2 * torch.exp(17.67 * celsius / (celsius + 243.5))  # Pa
    qv2m = 0.622 * vapour / (ps[:, None] - 0.378 * vapour)
    for name, value in (("T2M", t2m), ("PS", ps[:, None].expand_as(t2m)), ("QV2M", qv2m)):
        index = SURFACE.index(name)
        state[..., index] = torch.where(torch.isfinite(value), value, state[..., index])
    return state


class PrithviWxCEncoder(nn.Module):
    """Per-day site vectors (B, T, D) from Prithvi-WxC's encoder, no masking, climatology = the scalers' mean."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.local = VARIANTS[variant].local
        self.dim = VARIANTS[variant].embed_dim
        self.wxc = build_prithviwxc(variant)
        for unused in ("decoder", "unembed"):  # the reconstruction half: in the published dict, never run here
            getattr(self.wxc, unused).requires_grad_(False)

    def forward(self, state: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
        """``state`` (B, T, 160) physical values, ``elevation`` (B,) m → (B, T, D)."""
        m: Any = self.wxc  # the package's module: its buffers and layers by name
        b, t, c = state.shape
        h, w = self.local
        previous = torch.cat([state[:, :1], state[:, :-1]], dim=1)  # the day before (day 0 repeats itself)
        pair = torch.stack([previous, state], dim=2).reshape(b * t, 2, c, 1, 1).expand(-1, -1, -1, h, w)
        x = ((pair - m.input_scalers_mu) / (m.input_scalers_sigma + m.input_scalers_epsilon)).flatten(1, 2)
        static = self._static(elevation, m.static_input_scalers_mu.flatten()[3:], b * t, h, w)  # (B·T, 10, h, w)
        x_static = (static[:, 2:] - m.static_input_scalers_mu[:, 3:]) / (
            m.static_input_scalers_sigma[:, 3:] + m.static_input_scalers_epsilon)
        climate = torch.zeros(b * t, c, h, w, dtype=state.dtype, device=state.device)  # scaled climatology: the mean
        tokens = (m.to_patching(m.patch_embedding(x))
                  + m.to_patching(m.patch_embedding_static(torch.cat((x_static, climate), dim=1))
                                  + m.fourier_pos_encoding(static))
                  + m.time_encoding(torch.full((b * t,), -24.0, device=state.device),
                                    torch.zeros(b * t, device=state.device)))
        with warnings.catch_warnings():  # the package's SDPA context manager is deprecated in torch >= 2.4
            warnings.simplefilter("ignore", FutureWarning)
            encoded = m.encoder(tokens)  # (B·T, global, local, D)
        return encoded.mean(dim=(1, 2)).reshape(b, t, -1)

    @staticmethod
    def _static(elevation: torch.Tensor, mean: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
        """[lat, lon, cos/sin doy, cos/sin hour, FRACI, FRLAND, FROCEAN, PHIS] per pixel.

        A finetuning window carries neither coordinates nor dates, so lat, lon (0) and the four
        time channels (the scalers' mean) are neutral; the surface fractions are a land site's.
        """
        values = torch.zeros(elevation.shape[0], 10, device=elevation.device)
        values[:, 2:6] = mean[:4]
        values[:, 7] = 1.0  # FRLAND
        values[:, 9] = GRAVITY * torch.nan_to_num(elevation)  # PHIS, m2/s2
        per_day = values.repeat_interleave(n // max(elevation.shape[0], 1), dim=0)
        return per_day[:, :, None, None].expand(-1, -1, h, w)
