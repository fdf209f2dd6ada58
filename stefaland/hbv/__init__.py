"""Differentiable HBV 1.1p (Song et al. 2025) for the physics-informed finetuning heads."""

from .model import HBV11p, HBVOutput, HBVStates, hbv_step, simulate
from .parameters import (
    DEFAULT_DYNAMIC,
    PARAMETER_NAMES,
    PARAMETER_RANGES,
    ROUTING_RANGES,
    HBVParameters,
    n_outputs,
    raw_from_physical,
    scale_parameters,
)
from .routing import gamma_unit_hydrograph, route

__all__ = [
    "DEFAULT_DYNAMIC", "PARAMETER_NAMES", "PARAMETER_RANGES", "ROUTING_RANGES", "HBV11p",
    "HBVOutput", "HBVParameters", "HBVStates", "gamma_unit_hydrograph", "hbv_step",
    "n_outputs", "raw_from_physical", "route", "scale_parameters", "simulate",
]
