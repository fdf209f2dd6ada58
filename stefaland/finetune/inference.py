"""Predict the held-out sites over the whole test period and write the predictions file.

A sequence model cannot run 20 years in one window (the encoder's positions stop at 1000 days,
and memory would not like it either), so the period is cut into overlapping windows
(:class:`~stefaland.finetune.data.PredictionWindows`): each window's first outputs only warm the
model up and are thrown away, the rest tile the test period exactly once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stefaland.progress import progress
from stefaland.run.predictions import write_predictions

from .data import PredictionWindows, SiteData, Variables, padded_inputs
from .models.sklearn_baselines import HISTORY, SklearnBaseline


@torch.no_grad()
def predict_torch(model: nn.Module, data: SiteData, seq_len: int, overlap: int, batch_size: int,
                  quiet: bool = True, *, warmup: int) -> np.ndarray:
    """Z-scored predictions (n_sites, n_test_days) for the days after ``data.history``.

    ``warmup``: input days the model consumes before its first output (the registry's
    ``ModelSpec.warmup``); required, since a wrong value shifts every prediction by that many days.
    """
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    n_sites, n_test = data.dynamic.shape[0], data.dynamic.shape[1] - data.history
    windows = PredictionWindows(n_test, seq_len, warmup, overlap)
    dynamic, _ = padded_inputs(data, windows.pad)  # (n, pad + n_test, n_dyn)
    starts = windows.starts()
    items = [(site, start) for site in range(n_sites) for start in starts]
    result = np.full((n_sites, n_test), np.nan, dtype=np.float32)
    offsets = np.arange(windows.length)
    chunks = range(0, len(items), batch_size)
    for first in progress(chunks, f"predicting {n_sites} held-out sites", total=len(chunks), quiet=quiet):
        chunk = np.asarray(items[first:first + batch_size])  # (B, 2)
        sites, window_starts = chunk[:, 0], chunk[:, 1]
        x = torch.from_numpy(dynamic[sites[:, None], window_starts[:, None] + offsets[None, :]])  # (B, L, n_dyn)
        s = torch.from_numpy(data.static[sites])  # (B, n_static)
        out = model(x.to(device), s.to(device)).float().cpu().numpy()  # (B, seq_len)
        for row, (site, start) in enumerate(zip(sites, window_starts)):
            day0 = start + windows.warmup - windows.pad  # test-day index of output 0
            low = max(day0 + overlap, 0)  # the first `overlap` outputs only warm the model up
            result[site, low:day0 + seq_len] = out[row, low - day0:]
    return result.mean(axis=1) if data.target.ndim == 1 else result  # static target: the period's mean


def predict_sklearn(model: SklearnBaseline, data: SiteData) -> np.ndarray:
    dynamic, _ = padded_inputs(data, HISTORY)  # trailing means need a month of history
    if data.target.ndim == 1:
        return model.predict_static(dynamic[:, HISTORY:], data.static)
    return model.predict(dynamic, data.static)[:, HISTORY:]


def write_fold_predictions(url: str, data: SiteData, simulated: np.ndarray, variables: Variables,
                           task: str, split: str, fold: str | int, model_name: str) -> str:
    """Un-normalise and write ``obs``/``sim`` (site, time) through the predictions-file contract."""
    static = data.target.ndim == 1
    observed = data.target if static else data.target[:, data.history:]
    obs, sim = variables.physical(observed), variables.physical_simulation(simulated)
    times = None if static else data.times[data.history:]  # a static target has dims (site,)
    return write_predictions(url, obs, sim, list(data.sites), times, task, split, fold,
                             model_name, variables.target_units, lat=data.lat, lon=data.lon,
                             variable=variables.target)
