"""HBV 1.1p parameter ranges and the mapping from raw network outputs to physical values.

A network cannot be told to emit "a field capacity between 50 and 1000 mm", so it emits an
unbounded number per parameter and component; a sigmoid squashes it into (0, 1) and a linear map
stretches that into the published range. Keeping that map here (and nowhere else) means the
ranges of HBV 1.1p (Song et al. 2025; MHPI's hydrodl2 is the reference implementation) live in
exactly one place.

Layout of the raw network output (last dimension, size ``14 * nmul + 2``)::

    index p * nmul + k   -> physical parameter PARAMETER_NAMES[p] of component k
                            (p = 0..13, k = 0..nmul-1; parameter-major, component-minor)
    index 14 * nmul + 0  -> routing shape parameter (range ROUTING_RANGES["route_a"])
    index 14 * nmul + 1  -> routing scale parameter (range ROUTING_RANGES["route_b"])

Every parameter gets a value on every day, so one layout serves any choice of dynamic
parameters: a static parameter simply takes the value of the last day of the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from stefaland.errors import StefaLandError

#: Physical parameter ranges (low, high); the order fixes the output layout above.
PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "BETA": (1.0, 6.0),       # shape of the soil-moisture / recharge curve (-)
    "FC": (50.0, 1000.0),     # field capacity (mm)
    "K0": (0.05, 0.9),        # fast upper-zone recession above UZL (1/day)
    "K1": (0.01, 0.5),        # upper-zone recession (1/day)
    "K2": (0.001, 0.2),       # lower-zone recession (1/day)
    "LP": (0.2, 1.0),         # fraction of FC above which ET is at its potential (-)
    "PERC": (0.0, 10.0),      # maximum percolation to the lower zone (mm/day)
    "UZL": (0.0, 100.0),      # upper-zone threshold for fast runoff (mm)
    "TT": (-2.5, 2.5),        # snow/rain and melt threshold temperature (degC)
    "CFMAX": (0.5, 10.0),     # degree-day melt factor (mm/degC/day)
    "CFR": (0.0, 0.1),        # refreezing coefficient (-)
    "CWH": (0.0, 0.2),        # water holding capacity of the snowpack (-)
    "BETAET": (0.3, 5.0),     # HBV 1.1p ET shape exponent (-)
    "C": (0.0, 1.0),          # capillary-rise coefficient (1/day)
}
PARAMETER_NAMES: tuple[str, ...] = tuple(PARAMETER_RANGES)

#: Gamma unit-hydrograph parameters (before the relu(.)+0.1 / relu(.)+0.5 of the routing).
ROUTING_RANGES: dict[str, tuple[float, float]] = {"route_a": (0.0, 2.9), "route_b": (0.0, 6.5)}
ROUTING_NAMES: tuple[str, ...] = tuple(ROUTING_RANGES)

#: The paper's (Table C2) dynamic parameters.
DEFAULT_DYNAMIC: tuple[str, ...] = ("BETA", "K0", "BETAET")


def n_outputs(nmul: int) -> int:
    """Size of the network output per basin and day: 14 parameters per component + 2 routing."""
    return len(PARAMETER_NAMES) * nmul + len(ROUTING_NAMES)


def canonical_names(names: Iterable[str]) -> tuple[str, ...]:
    """Accept both ``BETA`` and the hydroDL-style ``parBETA`` and reject unknown names early."""
    result = []
    for name in names:
        bare = name[3:] if name.startswith("par") and name[3:] in PARAMETER_RANGES else name
        if bare not in PARAMETER_RANGES:
            raise StefaLandError(
                f"unknown HBV parameter {name!r}; known: {', '.join(PARAMETER_NAMES)}"
            )
        result.append(bare)
    return tuple(result)


def scale(raw: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Squash an unbounded value into ``(low, high)`` through a sigmoid."""
    return low + torch.sigmoid(raw) * (high - low)


def unscale(value: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Inverse of :func:`scale`: the raw value that yields ``value`` (for tests and warm starts)."""
    return torch.logit((value - low) / (high - low))


@dataclass(frozen=True)
class HBVParameters:
    """Physical parameters ready for the model.

    ``physical[name]`` has shape ``(time, basin, nmul)`` (static parameters are broadcast, not
    copied, along time); ``routing[name]`` has shape ``(basin,)``.
    """

    physical: dict[str, torch.Tensor]
    routing: dict[str, torch.Tensor]


def split_raw(raw: torch.Tensor, nmul: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the width of ``raw`` (time, basin, 14*nmul+2) and cut it into physical and routing."""
    if raw.dim() != 3 or raw.shape[-1] != n_outputs(nmul):  # the caller's network is the wrong width: a bug
        raise ValueError(
            f"HBV raw parameters must have shape (time, basin, {n_outputs(nmul)}) for nmul={nmul}, "
            f"got {tuple(raw.shape)}"
        )
    n_phys = len(PARAMETER_NAMES) * nmul
    physical = raw[..., :n_phys].reshape(raw.shape[0], raw.shape[1], len(PARAMETER_NAMES), nmul)
    return physical, raw[..., n_phys:]


def scale_parameters(
    raw: torch.Tensor,
    nmul: int,
    dynamic: Sequence[str] = DEFAULT_DYNAMIC,
    dynamic_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> HBVParameters:
    """Turn raw network outputs (time, basin, 14*nmul+2) into physical parameters.

    Static parameters and the routing parameters take the **last** day's output, because that
    day's network state has seen the whole input window. ``dynamic_dropout`` is the probability,
    per basin, that a dynamic parameter is replaced by its static value (a regulariser used in
    training; 0 in the paper's configuration).
    """
    dynamic = canonical_names(dynamic)
    physical_raw, routing_raw = split_raw(raw, nmul)
    n_time, n_basin = raw.shape[0], raw.shape[1]
    physical: dict[str, torch.Tensor] = {}
    for index, name in enumerate(PARAMETER_NAMES):
        low, high = PARAMETER_RANGES[name]
        static = scale(physical_raw[-1:, :, index, :], low, high)  # (1, basin, nmul)
        if name in dynamic:
            values = scale(physical_raw[:, :, index, :], low, high)
            if dynamic_dropout > 0.0:
                keep_static = torch.rand(
                    (1, n_basin, 1), generator=generator, device=raw.device
                ) < dynamic_dropout
                values = torch.where(keep_static, static, values)
            physical[name] = values
        else:
            physical[name] = static.expand(n_time, n_basin, nmul)
    routing = {
        name: scale(routing_raw[-1, :, i], *ROUTING_RANGES[name])
        for i, name in enumerate(ROUTING_NAMES)
    }
    return HBVParameters(physical=physical, routing=routing)


def raw_from_physical(
    values: dict[str, torch.Tensor | float],
    routing: dict[str, torch.Tensor | float],
    n_time: int,
    n_basin: int,
    nmul: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Build a raw output tensor that scales back to the given physical values.

    Each value may be a number or anything broadcastable to (time, basin, nmul) (routing:
    (basin,)). Used by tests and by runs with hand-set parameters instead of a network.
    """
    missing = set(PARAMETER_NAMES) - set(values)
    if missing:
        raise ValueError(f"HBV parameters missing: {', '.join(sorted(missing))}")
    parts = []
    for name in PARAMETER_NAMES:
        low, high = PARAMETER_RANGES[name]
        value = torch.as_tensor(values[name], dtype=dtype).expand(n_time, n_basin, nmul)
        parts.append(unscale(value, low, high))
    physical = torch.stack(parts, dim=2).reshape(n_time, n_basin, len(PARAMETER_NAMES) * nmul)
    route = [
        unscale(torch.as_tensor(routing[name], dtype=dtype).expand(n_basin), *ROUTING_RANGES[name])
        for name in ROUTING_NAMES
    ]
    route_raw = torch.stack(route, dim=-1).expand(n_time, n_basin, len(ROUTING_NAMES))
    return torch.cat([physical, route_raw], dim=-1)
