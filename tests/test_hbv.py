"""HBV 1.1p: physics (mass balance, snow, recession), parameter scaling, routing and gradients."""

from __future__ import annotations

import pytest
import torch

from stefaland.errors import StefaLandError
from stefaland.hbv import (
    PARAMETER_NAMES,
    PARAMETER_RANGES,
    ROUTING_RANGES,
    HBV11p,
    HBVStates,
    gamma_unit_hydrograph,
    n_outputs,
    raw_from_physical,
    route,
    scale_parameters,
)

TYPICAL = {
    "BETA": 2.0, "FC": 200.0, "K0": 0.3, "K1": 0.1, "K2": 0.02, "LP": 0.6, "PERC": 2.0,
    "UZL": 20.0, "TT": 0.0, "CFMAX": 3.0, "CFR": 0.05, "CWH": 0.1, "BETAET": 1.5, "C": 0.2,
}
ROUTE = {"route_a": 1.5, "route_b": 2.0}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: extra intra-op threads only fight the other jobs on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_forcing(n_time: int, n_basin: int, seed: int, dtype=torch.float64):
    """Rain on ~half the days, temperatures crossing 0 degC so snow and melt both occur."""
    g = torch.Generator().manual_seed(seed)
    wet = torch.rand(n_time, n_basin, generator=g, dtype=dtype) < 0.5
    precipitation = torch.where(wet, torch.rand(n_time, n_basin, generator=g, dtype=dtype) * 20, 0)
    days = torch.arange(n_time, dtype=dtype).unsqueeze(-1)
    seasonal = -12 * torch.cos(2 * torch.pi * days / 365)  # winters well below freezing
    temperature = 5 + seasonal + 3 * torch.randn(n_time, n_basin, generator=g, dtype=dtype)
    pet = torch.clamp(1.5 + 0.15 * temperature, min=0.0)
    return precipitation, temperature, pet


def random_raw(n_time: int, n_basin: int, nmul: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_time, n_basin, n_outputs(nmul), generator=g, dtype=dtype)


def test_scaling_maps_network_outputs_into_the_published_ranges():
    nmul = 3
    raw = torch.cat([torch.full((1, 2, n_outputs(nmul)), v) for v in (-30.0, 0.0, 30.0)]).double()
    params = scale_parameters(raw, nmul, dynamic=PARAMETER_NAMES)
    for name, (low, high) in PARAMETER_RANGES.items():
        values = params.physical[name]
        assert values.shape == (3, 2, nmul)
        assert torch.allclose(values[0], torch.tensor(low, dtype=torch.float64), atol=1e-9)
        assert torch.allclose(values[1], torch.tensor((low + high) / 2, dtype=torch.float64))
        assert torch.allclose(values[2], torch.tensor(high, dtype=torch.float64), atol=1e-9)
    # the published ranges, spot-checked against HBV 1.1p's reference (MHPI's hydrodl2)
    assert PARAMETER_RANGES["FC"] == (50.0, 1000.0) and PARAMETER_RANGES["K2"] == (0.001, 0.2)
    assert PARAMETER_RANGES["BETAET"] == (0.3, 5.0) and ROUTING_RANGES["route_b"] == (0.0, 6.5)
    assert len(PARAMETER_NAMES) == 14 and n_outputs(16) == 14 * 16 + 2
    # routing parameters come from the last day
    assert torch.allclose(params.routing["route_a"], torch.tensor(2.9, dtype=torch.float64))


def test_output_layout_is_parameter_major_then_component():
    nmul, n_time = 4, 5
    raw = torch.zeros(n_time, 1, n_outputs(nmul), dtype=torch.float64)
    fc_index = PARAMETER_NAMES.index("FC")
    raw[:, 0, fc_index * nmul + 2] = 30.0  # component 2 of FC -> top of its range
    raw[:, 0, PARAMETER_NAMES.index("BETA") * nmul + 1] = torch.linspace(-3, 3, n_time)
    params = scale_parameters(raw, nmul, dynamic=("parBETA",))  # hydroDL-style name accepted
    fc = params.physical["FC"][0, 0]
    assert fc[2] == pytest.approx(1000.0) and fc[0] == pytest.approx(525.0)
    beta = params.physical["BETA"][:, 0, 1]
    assert torch.all(beta.diff() > 0), "a dynamic parameter varies per day"
    tt = params.physical["TT"]
    assert torch.equal(tt[0], tt[-1]), "a static parameter is the same every day"


def test_static_parameters_take_the_last_days_output():
    nmul = 2
    raw = random_raw(6, 3, nmul, seed=1)
    params = scale_parameters(raw, nmul, dynamic=())
    expected = scale_parameters(raw[-1:], nmul, dynamic=PARAMETER_NAMES).physical["K1"][0]
    assert torch.allclose(params.physical["K1"][0], expected)
    assert not torch.allclose(
        params.physical["K1"][0], scale_parameters(raw[:1], nmul, dynamic=()).physical["K1"][0]
    )


def test_raw_from_physical_round_trips():
    raw = raw_from_physical(TYPICAL, ROUTE, n_time=3, n_basin=2, nmul=4, dtype=torch.float64)
    params = scale_parameters(raw, 4)
    for name, value in TYPICAL.items():
        assert torch.allclose(params.physical[name], torch.tensor(value, dtype=torch.float64))
    assert torch.allclose(params.routing["route_b"], torch.tensor(2.0, dtype=torch.float64))


def test_bad_shapes_and_names_are_one_line_errors():
    # shapes are built by StefaLand itself (a bug: ValueError); parameter names come from the config
    with pytest.raises(ValueError, match=r"\(time, basin, 58\) for nmul=4"):
        scale_parameters(torch.zeros(3, 2, 57), nmul=4)
    with pytest.raises(StefaLandError, match="unknown HBV parameter 'parFOO'"):
        HBV11p(dynamic_parameters=("parFOO",))
    model = HBV11p(nmul=2, warmup_days=0)
    p, t, e = random_forcing(10, 2, seed=0)
    with pytest.raises(ValueError, match="temperature has shape"):
        model(p, t[:, :1], e, random_raw(10, 2, 2, seed=0))
    with pytest.raises(ValueError, match="more than the 365 warm-up days"):
        HBV11p(nmul=2)(p, t, e, random_raw(10, 2, 2, seed=0))


def test_water_balance_closes_and_routing_only_delays_water():
    n_time, n_basin, nmul, warmup = 500, 3, 4, 60
    p, t, e = random_forcing(n_time, n_basin, seed=2)
    raw = random_raw(n_time, n_basin, nmul, seed=3)
    out = HBV11p(nmul=nmul, warmup_days=warmup)(p, t, e, raw)
    assert out.streamflow.shape == (n_time - warmup, n_basin)
    # buckets: P - ET - Q - dS = 0 per basin (exact up to float64 rounding)
    inflow = p[warmup:].sum(0)
    outflow = out.et.sum(0) + out.streamflow_unrouted.sum(0)
    storage_change = out.final_states.total() - out.initial_states.total()
    assert torch.allclose(inflow - outflow - storage_change, torch.zeros_like(inflow), atol=1e-8)
    # the last day's stores in the series are the final states
    assert torch.allclose(out.sm[-1], out.final_states.sm.mean(-1))
    assert out.snow.sum() > 0 and out.melt.sum() > 0 and out.capillary.sum() > 0
    # routing: what is missing at the end is exactly what is still in transit
    weights = gamma_unit_hydrograph(out.parameters.routing["route_a"],
                                    out.parameters.routing["route_b"], 15)
    days_left = torch.arange(n_time - warmup - 1, -1, -1).clamp(max=14)
    released = torch.cumsum(weights, dim=-1).T[days_left]          # (time, basin)
    in_transit = (out.streamflow_unrouted * (1 - released)).sum(0)
    assert torch.all(in_transit > 0)
    assert torch.allclose(out.streamflow.sum(0) + in_transit, out.streamflow_unrouted.sum(0))
    assert torch.allclose(out.q0_routed + out.q1_routed + out.q2_routed, out.streamflow)


def test_snow_accumulates_below_tt_and_melts_above():
    nmul, n_cold, n_warm = 3, 30, 40
    precipitation = torch.full((n_cold + n_warm, 1), 5.0, dtype=torch.float64)
    precipitation[n_cold:] = 0.0
    temperature = torch.full_like(precipitation, -5.0)
    temperature[n_cold:] = 8.0
    pet = torch.full_like(precipitation, 1.0)
    raw = random_raw(n_cold + n_warm, 1, nmul, seed=4)  # TT in (-2.5, 2.5): -5 is snow, 8 melts
    out = HBV11p(nmul=nmul, warmup_days=0)(precipitation, temperature, pet, raw)
    cold, warm = slice(0, n_cold), slice(n_cold, None)
    assert torch.allclose(out.snow[cold], precipitation[cold]) and out.rain[cold].sum() == 0
    assert torch.allclose(out.snowpack[n_cold - 1], torch.tensor(0.001 + 5.0 * n_cold, dtype=torch.float64),
                          rtol=0.02), "all snow (minus refreezing-neutral melt=0) stays in the pack"
    assert out.melt[cold].sum() == 0
    assert torch.all(out.snowpack[warm].diff(dim=0) <= 0)
    assert out.snowpack[-1].item() < 1e-9, "eight degrees above TT for 40 days melts the pack"
    assert out.tosoil[warm].sum() > 0.9 * 5.0 * n_cold


def test_no_precipitation_gives_a_recession():
    n_warm, n_dry, nmul = 200, 120, 4
    precipitation = torch.zeros(n_warm + n_dry, 2, dtype=torch.float64)
    precipitation[:n_warm] = 8.0
    temperature = torch.full_like(precipitation, 15.0)
    pet = torch.full_like(precipitation, 2.0)
    raw = random_raw(n_warm + n_dry, 2, nmul, seed=5)
    out = HBV11p(nmul=nmul, warmup_days=n_warm)(precipitation, temperature, pet, raw)
    unrouted = out.streamflow_unrouted
    assert unrouted[0].min() > 0.05, "the wet warm-up leaves water to drain"
    assert torch.all(unrouted.diff(dim=0) <= 1e-12)
    assert torch.all(unrouted[-1] < 0.7 * unrouted[0])
    # routed flow starts from an empty channel (no warm-up routing) and recedes after 15 days
    assert torch.all(out.streamflow[15:].diff(dim=0) <= 1e-12)


def test_dynamic_parameter_constant_in_time_equals_static_path():
    n_time, n_basin, nmul = 60, 2, 3
    p, t, e = random_forcing(n_time, n_basin, seed=6)
    constant = random_raw(1, n_basin, nmul, seed=7).expand(n_time, -1, -1)
    dynamic = HBV11p(nmul=nmul, warmup_days=20)(p, t, e, constant)
    static = HBV11p(nmul=nmul, warmup_days=20, dynamic_parameters=())(p, t, e, constant)
    assert torch.allclose(dynamic.streamflow, static.streamflow, rtol=1e-12, atol=1e-12)
    varying = random_raw(n_time, n_basin, nmul, seed=8)
    dyn = HBV11p(nmul=nmul, warmup_days=20)(p, t, e, varying)
    sta = HBV11p(nmul=nmul, warmup_days=20, dynamic_parameters=())(p, t, e, varying)
    assert not torch.allclose(dyn.streamflow, sta.streamflow), "varying parameters must matter"


def test_warm_up_sets_states_without_gradients():
    n_time, warmup, nmul = 80, 50, 2
    p, t, e = random_forcing(n_time, 2, seed=9, dtype=torch.float32)
    raw = random_raw(n_time, 2, nmul, seed=10, dtype=torch.float32).requires_grad_()
    out = HBV11p(nmul=nmul, warmup_days=warmup)(p, t, e, raw)
    assert out.streamflow.dtype == torch.float32
    assert not out.initial_states.sm.requires_grad
    assert torch.all(out.initial_states.total() > 1.0), "warm-up filled the stores from 0.001"
    out.streamflow.sum().backward()
    assert torch.all(raw.grad[:warmup] == 0)
    assert raw.grad[warmup:].abs().sum() > 0


def test_unit_pulse_is_routed_causally_and_conserved():
    route_a = torch.tensor([0.5, 2.0, 2.9], dtype=torch.float64)
    route_b = torch.tensor([0.0, 3.0, 6.5], dtype=torch.float64)
    weights = gamma_unit_hydrograph(route_a, route_b, 15)
    assert torch.allclose(weights.sum(-1), torch.ones(3, dtype=torch.float64))
    pulse = torch.zeros(40, 3, dtype=torch.float64)
    pulse[5] = 1.0
    routed = route(pulse, weights)
    assert torch.all(routed[:5] == 0), "no water before it falls"
    assert torch.allclose(routed.sum(0), torch.ones(3, dtype=torch.float64))
    peaks = routed.argmax(0)
    assert peaks[0] < peaks[1] <= peaks[2], "larger shape/scale delays the peak"


def test_gradients_match_finite_differences():
    """Float64 gradcheck of streamflow w.r.t. forcings and raw static/dynamic parameters."""
    n_time, n_basin, nmul = 20, 2, 2
    model = HBV11p(nmul=nmul, warmup_days=0, dynamic_parameters=("BETA", "K0"), route_days=5)
    p, t, e = random_forcing(n_time, n_basin, seed=11)
    p, e = p + 0.5, e + 0.5  # away from P = 0 and PET = 0, where ET/recharge have a kink
    base = random_raw(1, n_basin, nmul, seed=12)  # static raw values, broadcast over days
    n_phys = len(PARAMETER_NAMES) * nmul
    beta = PARAMETER_NAMES.index("BETA") * nmul
    dyn = random_raw(n_time, n_basin, 1, seed=13)[..., :nmul]  # daily BETA raw values

    # start from wet stores: at the 1e-5 floor ET/capillary switch branches (a true kink)
    start = HBVStates(*(torch.full((n_basin, nmul), v, dtype=torch.float64)
                        for v in (20.0, 1.0, 80.0, 15.0, 30.0)))

    def run(p, t, e, static_raw, dynamic_beta):
        raw = static_raw.expand(n_time, -1, -1)
        raw = torch.cat([raw[..., :beta], dynamic_beta, raw[..., beta + nmul:]], dim=-1)
        out = model(p, t, e, raw, initial_states=start)
        return out.streamflow, out.sm

    assert base.shape[-1] == n_phys + 2
    forcings = tuple(x.clone().requires_grad_() for x in (p, t, e))
    params = tuple(x.clone().requires_grad_() for x in (base, dyn))
    # every parameter entry perturbed one at a time (full Jacobian) ...
    assert torch.autograd.gradcheck(lambda b, d: run(p, t, e, b, d)[0], params,
                                    eps=1e-6, atol=1e-6, rtol=1e-4)
    # ... and the forcings along random directions (fast mode), streamflow and soil moisture
    assert torch.autograd.gradcheck(lambda p_, t_, e_: run(p_, t_, e_, base, dyn), forcings,
                                    eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_like_on_cpu():
    p, t, e = random_forcing(60, 3, seed=14, dtype=torch.float32)
    raw = random_raw(60, 3, 4, seed=15, dtype=torch.float32)
    model = HBV11p(nmul=4, warmup_days=20)
    cpu = model(p, t, e, raw)
    gpu = model(p.cuda(), t.cuda(), e.cuda(), raw.cuda())
    assert gpu.streamflow.device.type == "cuda"
    assert torch.allclose(gpu.streamflow.cpu(), cpu.streamflow, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~45 s of CPU: run with `pytest -m slow`
def test_known_parameters_are_recovered_from_the_streamflow_they_generated(virtual_world) -> None:
    """Differentiable HBV as the hybrids use it: streamflow generated on virtual-world forcings with
    known parameters is reproduced by fitting the raw parameters from a wrong start by gradient."""
    import numpy as np
    import pandas as pd

    files = sorted(virtual_world.parent.glob("basin_mean_forcing/synthetic/*/*_forcing_leap.txt"))[:2]
    frames = [pd.read_csv(f, sep=r"\s+", skiprows=3).iloc[:300] for f in files]

    def as_tensor(column: str) -> torch.Tensor:
        return torch.tensor(np.stack([f[column].to_numpy() for f in frames], axis=1), dtype=torch.float32)

    precipitation, pet = as_tensor("prcp(mm/day)"), as_tensor("pet(mm/day)")
    temperature = (as_tensor("tmax(C)") + as_tensor("tmin(C)")) / 2
    n_time, n_basin = precipitation.shape
    truth = {"BETA": 2.5, "FC": 250.0, "K0": 0.3, "K1": 0.08, "K2": 0.02, "LP": 0.6, "PERC": 2.0, "UZL": 20.0,
             "TT": 0.0, "CFMAX": 3.0, "CFR": 0.05, "CWH": 0.1, "BETAET": 1.5, "C": 0.1}
    model = HBV11p(nmul=1, dynamic_parameters=(), warmup_days=60, routing=True)
    raw_truth = raw_from_physical(truth, {"route_a": 1.0, "route_b": 2.0}, n_time, n_basin, nmul=1)
    observed = model(precipitation, temperature, pet, raw_truth).streamflow.detach()

    raw = torch.zeros(1, n_basin, raw_truth.shape[-1], requires_grad=True)  # mid-range start
    optimiser = torch.optim.Adam([raw], lr=0.15)

    def nse(sim: torch.Tensor) -> torch.Tensor:
        return 1 - ((sim - observed) ** 2).sum(0) / ((observed - observed.mean(0)) ** 2).sum(0)

    start = float(nse(model(precipitation, temperature, pet, raw.expand(n_time, -1, -1)).streamflow).min())
    for _ in range(80):
        optimiser.zero_grad()
        simulated = model(precipitation, temperature, pet, raw.expand(n_time, -1, -1)).streamflow
        loss = ((simulated - observed) ** 2).mean()
        loss.backward()
        optimiser.step()
    fitted = float(nse(model(precipitation, temperature, pet, raw.expand(n_time, -1, -1)).streamflow.detach()).min())
    assert fitted > 0.9 and fitted > start + 0.3, (start, fitted)
