"""Hybrid models: a network emits HBV 1.1p parameters, HBV turns forcings into streamflow.

Trained end to end: the loss on simulated streamflow back-propagates through HBV into the network.
HBV needs forcings in physical units, so the z-scored inputs are un-normalised here with the
store statistics of the driving variables (precipitation, the mean of the temperature variables,
PET). Its output (mm/day) is z-scored with the target statistics so every model shares one loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from stefaland.errors import StefaLandError
from stefaland.hbv import HBV11p, n_outputs

from .base import FinetuneModel

if TYPE_CHECKING:  # annotations only: the run config imports the registry, not the other way round
    from ..config import HBVConfig, ModelSection
    from ..data import Variables


def hargreaves_pet(temperature: torch.Tensor, radiation: torch.Tensor, day_length: torch.Tensor) -> torch.Tensor:
    """Hargreaves (1975), radiation form: 0.0135 (T + 17.8) Rs, Rs as mm/day of evaporated water.

    ``radiation`` W/m2 averaged over the daylight period, ``day_length`` s (Daymet's srad, dayl).
    """
    shortwave = radiation.clamp_min(0.0) * day_length.clamp_min(0.0) / 1e6 / 2.45  # MJ/m2/day -> mm/day
    return (0.0135 * (temperature + 17.8) * shortwave).clamp_min(0.0)


def _column(variables: Variables, name: str, role: str) -> int:
    if name not in variables.dynamic:
        raise StefaLandError(
            f"HBV {role} variable {name!r} is not among the dynamic inputs ({', '.join(variables.dynamic)}); "
            f"set model.hbv.{role} or data.dynamic"
        )
    return variables.dynamic.index(name)


class HBVHybrid(FinetuneModel):
    """``network(dynamic, static)`` → (B, T, 14·nmul + 2) raw parameters → HBV → (B, T − warm-up)."""

    # buffers: the forcing columns HBV reads, and their store statistics
    columns: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, config: HBVConfig, variables: Variables) -> None:
        super().__init__()
        if variables.static_target:
            raise StefaLandError(f"HBV models simulate streamflow; the static target {variables.target!r} needs a direct model")
        self.network = network
        self.hbv = HBV11p(config.nmul, config.dynamic_parameters, config.warmup_days, config.routing,
                          dynamic_dropout=config.dynamic_dropout)
        self.warmup = self.hbv.warmup_days  # what warmup_days() promised for this config
        columns = [_column(variables, config.precipitation, "precipitation"),
                   *[_column(variables, t, "temperature") for t in config.temperature]]
        if config.pet is not None:
            columns.append(_column(variables, config.pet, "pet"))
        else:
            columns += [_column(variables, config.radiation, "radiation"), _column(variables, config.day_length, "day_length")]
        self.n_temperature = len(config.temperature)
        self.hargreaves = config.pet is None
        self.register_buffer("columns", torch.as_tensor(columns, dtype=torch.long))
        self.register_buffer("mean", torch.as_tensor(variables.dynamic_mean[columns], dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(variables.dynamic_std[columns], dtype=torch.float32))
        self.target_mean, self.target_std = float(variables.target_mean), float(variables.target_std)

    @classmethod
    def warmup_days(cls, config: ModelSection) -> int:
        return config.hbv.warmup_days

    @classmethod
    def network_width(cls, config: ModelSection) -> int:
        """HBV's raw parameter layout (:mod:`stefaland.hbv.parameters`) fixes the network's width."""
        return n_outputs(config.hbv.nmul)

    @property
    def n_outputs(self) -> int:
        return self.hbv.n_outputs

    def physical_forcings(self, dynamic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(time, basin) precipitation ≥ 0, mean temperature, PET ≥ 0; a missing day counts as dry and mild."""
        raw = dynamic[..., self.columns] * self.std + self.mean  # (B, T, 2 + n_temp)
        raw = torch.where(torch.isnan(raw), self.mean.expand_as(raw), raw)
        precipitation = raw[..., 0].clamp_min(0.0)  # (B, T)
        temperature = raw[..., 1:1 + self.n_temperature].mean(-1)  # (B, T)
        if self.hargreaves:
            pet = hargreaves_pet(temperature, raw[..., -2], raw[..., -1])  # (B, T)
        else:
            pet = raw[..., -1].clamp_min(0.0)  # (B, T)
        return precipitation.T, temperature.T, pet.T  # (T, B) each

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        parameters = self.network(dynamic, static)  # (B, T, 14·nmul + 2)
        p, t, e = self.physical_forcings(dynamic)
        flow = self.hbv(p, t, e, parameters.transpose(0, 1)).streamflow  # (T − warm-up, B) mm/day
        return ((flow - self.target_mean) / self.target_std).T  # (B, T − warm-up)
