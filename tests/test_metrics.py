"""Metrics against hand-computed values and against an independent per-site loop (scipy for Corr)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats

from stefaland.metrics import METRICS, pooled_metrics, site_metrics, summarise

OBS = [1.0, 2.0, 3.0, 4.0]
SIM = [2.0, 2.0, 4.0, 4.0]


def one_site(obs, sim, **kwargs):
    return {k: float(v[0]) for k, v in site_metrics(np.array([obs]), np.array([sim]), min_valid=2, **kwargs).items()}


def test_hand_computed_values_with_nan_gaps_match_the_gapless_pairs():
    # the same four (obs, sim) pairs, with one step missing in obs and one in sim
    gappy = one_site([1.0, np.nan, 2.0, 3.0, 9.0, 4.0], [2.0, 5.0, 2.0, 4.0, np.nan, 4.0])
    plain = one_site(OBS, SIM)
    # errors 1, 0, 1, 0; anomalies obs -1.5 -.5 .5 1.5, sim -1 -1 1 1; SST 5, SSE 2
    corr = 1.0 / math.sqrt(1.25)
    expected = {
        "RMSE": math.sqrt(0.5), "MAE": 0.5, "ubRMSE": 0.5, "NSE": 1 - 2 / 5, "Corr": corr, "R2": corr**2,
        "PBIAS": 2 / 10 * 100,
        "KGE": 1 - math.sqrt((corr - 1) ** 2 + (math.sqrt(1 / 1.25) - 1) ** 2 + (3 / 2.5 - 1) ** 2),
    }
    for name, value in expected.items():
        assert gappy[name] == pytest.approx(value, rel=1e-12), name
        assert plain[name] == pytest.approx(value, rel=1e-12), name


def test_perfect_simulation_scores_one_and_zero():
    obs = np.sin(np.linspace(0, 12, 400)) + 2.0
    scores = one_site(obs, obs.copy())
    for name in ("NSE", "KGE", "Corr", "R2"):
        assert scores[name] == pytest.approx(1.0, abs=1e-12), name
    for name in ("RMSE", "ubRMSE", "MAE", "PBIAS", "FLV", "FHV", "FLV_log", "RMSE_FDC"):
        assert scores[name] == pytest.approx(0.0, abs=1e-9), name


def test_constant_observations_make_variance_metrics_nan_and_count_as_skipped():
    obs = np.array([[0.1] * 50, list(np.linspace(1, 2, 50))])
    sim = obs + 0.5
    per_site = site_metrics(obs, sim, min_valid=2)
    for name in ("NSE", "Corr", "KGE", "R2"):
        assert math.isnan(per_site[name][0]) and math.isfinite(per_site[name][1]), name
    assert per_site["RMSE"][0] == pytest.approx(0.5)  # error metrics stay defined
    summary = summarise(per_site)
    assert summary["NSE"]["n_scored"] == 1 and summary["NSE"]["n_skipped"] == 1
    assert summary["RMSE"]["n_scored"] == 2 and summary["RMSE"]["n_skipped"] == 0
    # a constant simulation has no correlation either
    assert math.isnan(one_site(list(np.linspace(1, 2, 50)), [3.0] * 50)["Corr"])


def test_sites_with_too_few_paired_steps_are_nan_for_every_metric():
    obs = np.tile(np.linspace(1.0, 5.0, 60), (2, 1))
    sim = obs * 1.1 + np.cos(np.arange(60.0))
    obs[0, 2:] = np.nan  # site 0: two paired steps, below the threshold
    per_site = site_metrics(obs, sim, min_valid=3)
    for name, values in per_site.items():
        assert math.isnan(values[0]) and math.isfinite(values[1]), name
    assert summarise(per_site)["RMSE"] == pytest.approx(
        {"median": per_site["RMSE"][1], "mean": per_site["RMSE"][1], "std": 0.0, "n_scored": 1, "n_skipped": 1})


def test_flow_duration_metrics_by_hand():
    obs = np.arange(1.0, 51.0)  # 50 steps: low 30 % = 15 values, top 2 % = 1 value (index round(49) = 49)
    shuffled = np.random.default_rng(1).permutation(obs)
    plus_one = one_site(obs, shuffled + 1.0)  # timing is ignored: the curves are sorted independently
    assert plus_one["FLV"] == pytest.approx(15 / sum(range(1, 16)) * 100)
    assert plus_one["FHV"] == pytest.approx(1 / 50 * 100)
    assert plus_one["RMSE_FDC"] == pytest.approx(1.0)
    assert plus_one["PBIAS"] == pytest.approx(50 / sum(range(1, 51)) * 100)
    # Yilmaz's log-space FLV compares shapes: doubling keeps it at 0, squaring gives -100 %
    assert one_site(obs, 2 * shuffled)["FLV_log"] == pytest.approx(0.0, abs=1e-6)
    assert one_site(obs, shuffled**2)["FLV_log"] == pytest.approx(-100.0, rel=1e-6)
    # no high-flow volume at all (all-zero top) or no low-flow volume -> undefined, not infinite
    assert math.isnan(one_site(np.r_[np.zeros(40), obs[:10]], obs)["FLV"])


def reference_site(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """An independent, loop-per-site implementation (hydroDL style; scipy for the correlation)."""
    keep = ~np.isnan(x) & ~np.isnan(y)
    s, o = x[keep], y[keep]
    n = len(o)
    r = stats.pearsonr(s, o)[0]
    so, ss = np.sort(o), np.sort(s)
    lo, hi = round(0.3 * n), round(0.98 * n)
    log_o = np.log(np.maximum(so[:lo], 1e-6))
    log_s = np.log(np.maximum(ss[:lo], 1e-6))
    qol, qsl = np.sum(log_o - log_o.min()), np.sum(log_s - log_s.min())
    fdc_index = (np.arange(100) / 100 * n).astype(int)
    return {
        "RMSE": np.sqrt(np.mean((s - o) ** 2)),
        "ubRMSE": np.sqrt(np.mean(((s - s.mean()) - (o - o.mean())) ** 2)),
        "MAE": np.mean(np.abs(s - o)),
        "Corr": r, "R2": r**2,
        "NSE": 1 - np.sum((o - s) ** 2) / np.sum((o - o.mean()) ** 2),
        "KGE": 1 - np.sqrt((r - 1) ** 2 + (s.std() / o.std() - 1) ** 2 + (s.mean() / o.mean() - 1) ** 2),
        "PBIAS": np.sum(s - o) / np.sum(o) * 100,
        "FLV": np.sum(ss[:lo] - so[:lo]) / np.sum(so[:lo]) * 100,
        "FHV": np.sum(ss[hi:] - so[hi:]) / np.sum(so[hi:]) * 100,
        "FLV_log": -(qsl - qol) / (qol + 1e-6) * 100,
        "RMSE_FDC": np.sqrt(np.mean((ss[::-1][fdc_index] - so[::-1][fdc_index]) ** 2)),
    }


def test_random_series_match_an_independent_loop_reference():
    rng = np.random.default_rng(42)
    n_sites, n_time = 40, 733  # odd lengths and ragged gaps exercise the rounding of the FDC indices
    obs = rng.gamma(1.5, 2.0, (n_sites, n_time))
    sim = 0.8 * obs + rng.gamma(1.0, 1.0, obs.shape) - 0.3
    obs[rng.random(obs.shape) < 0.15] = np.nan
    sim[rng.random(sim.shape) < 0.05] = np.nan
    obs[3, 100:] = np.nan  # a site with a long gap
    obs[4, :] = np.r_[rng.gamma(1.5, 2.0, 100), np.full(n_time - 100, np.nan)]  # n = 100: floor(0.29 * 100) = 28
    sim[4, :100] = 0.9 * obs[4, :100] + 0.2
    ours = site_metrics(obs, sim, min_valid=2)
    for k in range(n_sites):
        expected = reference_site(sim[k], obs[k])
        for name in METRICS:
            assert ours[name][k] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (name, k)
    # and the identity RMSE^2 = ubRMSE^2 + bias^2 holds site by site
    bias = np.nanmean(np.where(np.isnan(obs), np.nan, sim) - obs, axis=1)
    np.testing.assert_allclose(ours["RMSE"] ** 2, ours["ubRMSE"] ** 2 + bias**2, rtol=1e-9)


def test_summary_is_median_mean_std_over_scored_sites():
    values = np.array([0.2, np.nan, 0.9, 0.5, np.nan, 0.4])
    summary = summarise({"NSE": values})["NSE"]
    assert summary == pytest.approx({"median": 0.45, "mean": 0.5, "std": np.std([0.2, 0.9, 0.5, 0.4]),
                                     "n_scored": 4, "n_skipped": 2})


def test_pooled_metrics_for_a_static_target_use_the_squared_pearson_correlation():
    rng = np.random.default_rng(3)
    obs = rng.uniform(5, 60, 300)
    sim = obs + rng.normal(0, 15, 300)
    sim[:7] = np.nan
    pooled = pooled_metrics(obs, sim)
    r = stats.pearsonr(sim[7:], obs[7:])[0]
    assert pooled["Corr"] == pytest.approx(r, rel=1e-10)
    assert pooled["R2"] == pytest.approx(r**2, rel=1e-10)
    assert pooled["RMSE"] == pytest.approx(np.sqrt(np.mean((sim[7:] - obs[7:]) ** 2)), rel=1e-10)
    assert pooled["n"] == 293


def test_unknown_metric_and_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        site_metrics(np.ones((1, 3)), np.ones((1, 3)), metrics=["NSE", "XYZ"])
    with pytest.raises(ValueError, match="same shape"):
        site_metrics(np.ones((2, 3)), np.ones((2, 4)))


# -- the registry: one entry per metric, read by the report, its plots and the model card ----------

def test_the_registry_holds_what_the_report_plots_and_card_show():
    from stefaland.metrics import card_metrics, pooled_metric_names
    from stefaland.report.tasks import TASKS

    assert [m.name for m in card_metrics()] == ["NSE", "KGE", "Corr", "RMSE", "FHV", "FLV"]
    assert pooled_metric_names() == ["Corr", "R2", "RMSE", "ubRMSE", "MAE", "NSE", "PBIAS"]
    assert {name for name, m in METRICS.items() if m.bounded} == {"NSE", "KGE", "Corr", "R2"}
    assert {name for name, m in METRICS.items() if m.decimals == 1} == {"PBIAS", "FLV", "FHV", "FLV_log"}
    assert [METRICS[n].arrow for n in ("NSE", "RMSE", "FLV")] == ["↑", "↓", "→0"]
    assert METRICS["R2"].heading == "R²" and METRICS["RMSE_FDC"].heading == "RMSE_FDC"
    for task in TASKS.values():  # every metric a task's table or plots name is registered
        assert set(task.table_metrics) | {task.plot_metric} <= set(METRICS), task.name


@pytest.fixture()
def registered() -> Iterator[list[str]]:
    """Names registered by a test, removed afterwards so the rest of the suite sees the built-ins."""
    names: list[str] = []
    yield names
    for name in names:
        METRICS.pop(name, None)


def test_a_registered_metric_is_scored_with_the_same_guards_as_the_built_ins(registered):
    from stefaland.metrics import Metric, register_metric

    mean_error = Metric(name="ME", direction="zero", fn=lambda b: b.error.sum(axis=1) / b.n_safe)
    register_metric(mean_error)
    registered.append("ME")
    register_metric(mean_error)  # the same metric again is harmless
    obs = np.array([[1.0, 2.0, np.nan, 4.0], [1.0, np.nan, np.nan, np.nan], [0.0, 0.0, 0.0, 0.0]])
    sim = np.array([[2.0, 2.0, 9.0, 5.0], [3.0, 3.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    scores = site_metrics(obs, sim, min_valid=2)  # every registered metric, the new one last
    assert list(scores)[-1] == "ME"
    np.testing.assert_allclose(scores["ME"], [2 / 3, np.nan, 1.0])  # site 1: one paired step, skipped
    with pytest.raises(ValueError, match="'ME' is already registered"):
        register_metric(Metric(name="ME", direction="lower", fn=mean_error.fn))

    register_metric(Metric(name="Inf", direction="lower", fn=lambda b: np.full(b.n.shape, np.inf)))
    registered.append("Inf")
    assert np.isnan(site_metrics(obs, sim, metrics=["Inf"], min_valid=2)["Inf"]).all()  # never ±inf
    register_metric(Metric(name="Scalar", direction="lower", fn=lambda b: 1.0))
    registered.append("Scalar")
    with pytest.raises(ValueError, match="one value per site"):
        site_metrics(obs, sim, metrics=["Scalar"])
    with pytest.raises(ValueError, match="direction 'up'"):
        Metric(name="X", direction="up", fn=mean_error.fn)  # type: ignore[arg-type]
