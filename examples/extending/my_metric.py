"""Template: a new skill metric for StefaLand (here Beta-NSE, named ``BetaNSE``).

Copy this file, rename ``NAME`` and change ``beta_nse``. Importing the module registers the metric,
after which ``stefaland.metrics.site_metrics`` computes it and ``stefaland report`` scores it for
every time-series task: a column of ``<task>_sites.csv``, rows of ``<task>_summary.csv`` and of the
JSON's ``summary``, with the median, mean, std and the sites scored and skipped.

The contract a metric must keep (``stefaland/metrics.py``, :class:`~stefaland.metrics.Metric`):

* ``fn(block)`` gets a :class:`~stefaland.metrics.SiteBlock`, a few sites' ``(site, time)`` series,
  and returns one float per site. The block's statistics (means, variances, the paired error,
  Pearson's r, the sorted flows) are over the steps where both series are finite, computed once and
  shared with every other metric;
* NaN where the metric is undefined at a site. StefaLand makes a site NaN (skipped, never dropped)
  when it has fewer than ``min_valid`` paired steps, and turns ±inf into NaN, whatever ``fn`` returns.

Docs: docs/EXTENDING.md ("Adding a metric"). Test: tests/test_extending.py.
"""

from __future__ import annotations

import numpy as np

from stefaland.metrics import Metric, SiteBlock, register_metric

#: The metric's key: its column in the per-site CSV and its ``metric`` in the summary.
NAME = "BetaNSE"


def beta_nse(block: SiteBlock) -> np.ndarray:
    """Beta-NSE (neuralhydrology's ``beta_nse``): the bias of the mean in units of the observed spread.

    (mean sim - mean obs) / std obs, per site. Undefined (NaN) where the observations do not vary.
    """
    return np.where(block.obs_constant, np.nan, (block.mean_sim - block.mean_obs) / np.sqrt(block.var_obs))


#: ``direction="zero"``: closer to 0 is better (the table's →0). Not a [-1, 1] skill score
#: (``bounded=False``), not on the model card (``on_card=None``), and it needs a time series per site
#: (``pooled=None``), so a static target such as soil texture is not scored on it.
METRIC = Metric(name=NAME, direction="zero", fn=beta_nse, decimals=3)


def register() -> None:
    """Add ``METRIC`` to the registry.

    ``register_metric`` refuses a different metric that already has the name, so a plug-in cannot
    silently replace a built-in one. An installed package declares the entry point instead, and every
    ``stefaland`` command finds it: ``[project.entry-points."stefaland.metrics"] BetaNSE = "my_metric:METRIC"``.
    """
    register_metric(METRIC)


register()
