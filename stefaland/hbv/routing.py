"""Gamma unit-hydrograph routing: spreads each day's runoff over the following days.

HBV's buckets release water the day it drains; a river takes days to carry it to the gauge. A
two-parameter gamma density, discretised at day mid-points over a fixed window (15 days) and
normalised to sum to one, delays and smooths the runoff without creating or destroying water
(except what is still in transit past the end of the series).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_ROUTE_DAYS = 15


def gamma_unit_hydrograph(route_a: torch.Tensor, route_b: torch.Tensor, days: int) -> torch.Tensor:
    """Weights (basin, days), each row summing to 1.

    Shape ``a = relu(route_a) + 0.1`` and scale ``theta = relu(route_b) + 0.5`` keep the density
    finite and away from a degenerate spike; the density is evaluated at t = 0.5, 1.5, ... days.
    Computed in log space so large shapes do not overflow.
    """
    shape = F.relu(route_a).unsqueeze(-1) + 0.1
    theta = F.relu(route_b).unsqueeze(-1) + 0.5
    t = torch.arange(days, dtype=shape.dtype, device=shape.device) + 0.5
    log_density = (shape - 1.0) * torch.log(t) - t / theta - torch.lgamma(shape) - shape * torch.log(theta)
    return torch.softmax(log_density, dim=-1)  # exp + normalisation in one stable step


def route(runoff: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Causal convolution of runoff (time, basin) with per-basin weights (basin, days).

    ``out[t] = sum_k weights[k] * runoff[t - k]``; one grouped conv1d handles every basin at once.
    """
    n_time, n_basin = runoff.shape
    days = weights.shape[-1]
    signal = runoff.transpose(0, 1).unsqueeze(0)            # (1, basin, time)
    signal = F.pad(signal, (days - 1, 0))                    # causal: only past days contribute
    kernel = torch.flip(weights, dims=[-1]).unsqueeze(1)     # conv1d correlates, so flip
    out = F.conv1d(signal, kernel, groups=n_basin)           # (1, basin, time)
    return out.squeeze(0).transpose(0, 1)
