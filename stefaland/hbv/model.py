"""Differentiable HBV 1.1p: a bucket model whose parameters a network learns per basin and day.

Why this shape:

* Every operation is a torch operation on whole ``(basin, nmul)`` tensors, so gradients flow from
  the streamflow loss back into the network that produced the parameters; the day loop is the
  only Python loop (a bucket model is sequential in time by nature).
* ``nmul`` parallel components per basin (each with its own parameters) stand in for
  within-basin heterogeneity; the basin's runoff is their mean.
* The soil floor and the lower-zone floor are the near-zero threshold (1e-5 mm): ET and capillary
  rise never draw a store below it (rather than clamping the store back up afterwards), so the
  model conserves water exactly — the mass-balance test relies on this.
* A warm-up period runs first without gradients, with static parameters and without routing,
  only to bring the stores from their 0.001 mm start to a realistic state.

Process order within a day (HBV-light / Beck et al. 2020 with the 1.1p changes):
snow (rain/snow split at TT, degree-day melt, refreezing, liquid water held up to CWH * pack) →
soil (recharge (SM/FC)^BETA, excess above FC, ET = PET * min(1, (SM/(LP*FC))^BETAET)) →
capillary rise from the lower zone min(SLZ, C*SLZ*(1 - min(SM/FC, 1))) →
upper zone (percolation up to PERC, Q0 = K0*max(SUZ-UZL, 0), Q1 = K1*SUZ) →
lower zone (Q2 = K2*SLZ).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch

from .parameters import (
    DEFAULT_DYNAMIC,
    PARAMETER_NAMES,
    HBVParameters,
    canonical_names,
    n_outputs,
    scale_parameters,
)
from .routing import DEFAULT_ROUTE_DAYS, gamma_unit_hydrograph, route

NEAR_ZERO = 1e-5
INITIAL_STORAGE = 0.001

#: Names of the per-day series a step returns after the five states, in order.
STEP_FLUXES: tuple[str, ...] = (
    "rain", "snow", "melt", "refreezing", "tosoil", "recharge", "excess", "et", "capillary",
    "percolation", "q0", "q1", "q2",
)


@dataclass
class HBVStates:
    """The five stores (mm), each ``(basin, nmul)``: everything a run needs to continue later."""

    snowpack: torch.Tensor
    meltwater: torch.Tensor
    sm: torch.Tensor
    suz: torch.Tensor
    slz: torch.Tensor

    @classmethod
    def initial(cls, n_basin: int, nmul: int, dtype: torch.dtype, device: torch.device,
                value: float = INITIAL_STORAGE) -> HBVStates:
        return cls(*(torch.full((n_basin, nmul), value, dtype=dtype, device=device)
                     for _ in range(5)))

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return (self.snowpack, self.meltwater, self.sm, self.suz, self.slz)

    def total(self) -> torch.Tensor:
        """Water held in all stores, mean over components (basin,): the Δstorage of a balance."""
        return (self.snowpack + self.meltwater + self.sm + self.suz + self.slz).mean(-1)

    def detach(self) -> HBVStates:
        return HBVStates(*(s.detach() for s in self.as_tuple()))


@dataclass
class HBVOutput:
    """Everything one run produces; series are ``(time, basin)`` means over the components (mm/day
    for fluxes, mm for stores at the end of each day). ``streamflow`` is routed when routing is on.
    """

    streamflow: torch.Tensor
    streamflow_unrouted: torch.Tensor
    q0: torch.Tensor
    q1: torch.Tensor
    q2: torch.Tensor
    et: torch.Tensor
    pet: torch.Tensor
    rain: torch.Tensor
    snow: torch.Tensor
    melt: torch.Tensor
    refreezing: torch.Tensor
    tosoil: torch.Tensor
    recharge: torch.Tensor
    excess: torch.Tensor
    capillary: torch.Tensor
    percolation: torch.Tensor
    snowpack: torch.Tensor
    meltwater: torch.Tensor
    sm: torch.Tensor
    suz: torch.Tensor
    slz: torch.Tensor
    q0_routed: torch.Tensor | None
    q1_routed: torch.Tensor | None
    q2_routed: torch.Tensor | None
    initial_states: HBVStates = field(repr=False)
    final_states: HBVStates = field(repr=False)
    parameters: HBVParameters = field(repr=False)

    def series(self) -> dict[str, torch.Tensor]:
        """The (time, basin) series by name, e.g. for ``predict`` to write into a store."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }


def hbv_step(
    p: torch.Tensor, t: torch.Tensor, pet: torch.Tensor,
    snowpack: torch.Tensor, meltwater: torch.Tensor, sm: torch.Tensor, suz: torch.Tensor,
    slz: torch.Tensor,
    beta: torch.Tensor, fc: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
    lp: torch.Tensor, perc: torch.Tensor, uzl: torch.Tensor, tt: torch.Tensor,
    cfmax: torch.Tensor, cfr: torch.Tensor, cwh: torch.Tensor, betaet: torch.Tensor,
    c: torch.Tensor, near_zero: float,
) -> tuple[torch.Tensor, ...]:
    """One day for all basins and components; forcings are (basin, 1), the rest (basin, nmul).

    A pure function of tensors (no module state) so it can be handed to ``torch.compile``.
    Returns the five new states followed by the fluxes named in :data:`STEP_FLUXES`.
    """
    zero = torch.zeros_like(snowpack)
    # Snow: precipitation falls as snow below TT; melt and refreezing by degree-days.
    rain = torch.where(t >= tt, p, zero)
    snow = torch.where(t >= tt, zero, p)
    snowpack = snowpack + snow
    melt = torch.minimum(torch.clamp(cfmax * (t - tt), min=0.0), snowpack)
    meltwater = meltwater + melt
    snowpack = snowpack - melt
    refreezing = torch.minimum(torch.clamp(cfr * cfmax * (tt - t), min=0.0), meltwater)
    snowpack = snowpack + refreezing
    meltwater = meltwater - refreezing
    tosoil = torch.clamp(meltwater - cwh * snowpack, min=0.0)
    meltwater = meltwater - tosoil

    # Soil: the wetter the soil, the larger the share of input that recharges the upper zone.
    # (floored so that a caller's all-zero initial store cannot give 0 ** beta a NaN gradient)
    wetness = torch.clamp((torch.clamp(sm, min=near_zero) / fc) ** beta, min=0.0, max=1.0)
    recharge = (rain + tosoil) * wetness
    sm = sm + rain + tosoil - recharge
    excess = torch.clamp(sm - fc, min=0.0)
    sm = sm - excess
    evap_factor = torch.clamp((torch.clamp(sm, min=near_zero) / (lp * fc)) ** betaet, min=0.0, max=1.0)
    et = torch.clamp(torch.minimum(pet * evap_factor, sm - near_zero), min=0.0)
    sm = sm - et

    # Capillary rise (the 1.1p addition): the drier the soil, the more the lower zone feeds it.
    capillary = torch.clamp(
        torch.minimum(slz - near_zero, c * slz * (1.0 - torch.clamp(sm / fc, max=1.0))), min=0.0
    )
    sm = sm + capillary
    slz = slz - capillary

    # Upper and lower groundwater zones.
    suz = suz + recharge + excess
    percolation = torch.minimum(suz, perc)
    suz = suz - percolation
    q0 = k0 * torch.clamp(suz - uzl, min=0.0)
    suz = suz - q0
    q1 = k1 * suz
    suz = suz - q1
    slz = slz + percolation
    q2 = k2 * slz
    slz = slz - q2
    return (snowpack, meltwater, sm, suz, slz,
            rain, snow, melt, refreezing, tosoil, recharge, excess, et, capillary,
            percolation, q0, q1, q2)


StepFunction = Callable[..., tuple[torch.Tensor, ...]]


def _per_day(values: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """Index a (time, basin, nmul) parameter by day, without indexing at all when it is static."""
    if values.shape[0] == 1 or values.stride(0) == 0:
        fixed = values[0]
        return lambda _day: fixed
    return lambda day: values[day]


def simulate(
    precipitation: torch.Tensor,
    temperature: torch.Tensor,
    pet: torch.Tensor,
    physical: dict[str, torch.Tensor],
    states: HBVStates,
    near_zero: float = NEAR_ZERO,
    record: bool = True,
    step: StepFunction = hbv_step,
) -> tuple[dict[str, torch.Tensor], HBVStates]:
    """Run the buckets over (time, basin) forcings with physical parameters (time, basin, nmul).

    Returns per-day series (time, basin, nmul) by name (empty when ``record`` is false, as in the
    warm-up) and the final states. No routing here: routing acts on the basin mean afterwards.
    """
    n_time = precipitation.shape[0]
    getters = [_per_day(physical[name]) for name in PARAMETER_NAMES]
    current = states.as_tuple()
    recorded: list[tuple[torch.Tensor, ...]] = []
    p_all, t_all, pet_all = (x.unsqueeze(-1) for x in (precipitation, temperature, pet))
    for day in range(n_time):
        out = step(p_all[day], t_all[day], pet_all[day], *current,
                   *(get(day) for get in getters), near_zero)
        current = out[:5]
        if record:
            recorded.append(out)
    series: dict[str, torch.Tensor] = {}
    if record and recorded:
        names = ("snowpack", "meltwater", "sm", "suz", "slz") + STEP_FLUXES
        for index, name in enumerate(names):
            series[name] = torch.stack([out[index] for out in recorded])
    return series, HBVStates(*current)


class HBV11p(torch.nn.Module):
    """HBV 1.1p driven by raw network outputs; no trainable weights of its own.

    ``forward(precipitation, temperature, pet, raw)`` takes forcings (time, basin) in mm/day,
    degC, mm/day and raw outputs (time, basin, 14*nmul+2) laid out as documented in
    :mod:`stefaland.hbv.parameters`. The first ``warmup_days`` days only spin up the stores; the
    output covers the remaining days.

    * Warm-up uses static parameters taken from the last warm-up day's output (what the network
      produced having seen the warm-up window), no routing and no gradients; the main window
      uses its own last day for static parameters and per-day values for the dynamic ones.
    * Routing starts from an empty channel at the end of the warm-up, so the first
      ``route_days`` routed values miss the water still in transit from the warm-up (as in
      hydroDL2); leave them out of a loss or give the warm-up enough margin.
    * ``initial_states`` continues a previous run (e.g. ``previous.final_states``) instead of
      starting every store at 0.001 mm.
    """

    def __init__(
        self,
        nmul: int = 16,
        dynamic_parameters: Sequence[str] = DEFAULT_DYNAMIC,
        warmup_days: int = 365,
        routing: bool = True,
        route_days: int = DEFAULT_ROUTE_DAYS,
        near_zero: float = NEAR_ZERO,
        dynamic_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if nmul < 1:
            raise ValueError(f"HBV nmul must be at least 1, got {nmul}")
        if warmup_days < 0:
            raise ValueError(f"HBV warm-up must be >= 0 days, got {warmup_days}")
        self.nmul = nmul
        self.dynamic_parameters = canonical_names(dynamic_parameters)
        self.warmup_days = warmup_days
        self.routing = routing
        self.route_days = route_days
        self.near_zero = near_zero
        self.dynamic_dropout = dynamic_dropout
        self.step: StepFunction = hbv_step  # swap in torch.compile(hbv_step) for speed

    @property
    def n_outputs(self) -> int:
        """Width of the network output this model expects: 14 * nmul + 2."""
        return n_outputs(self.nmul)

    def forward(
        self,
        precipitation: torch.Tensor,
        temperature: torch.Tensor,
        pet: torch.Tensor,
        raw: torch.Tensor,
        initial_states: HBVStates | None = None,
    ) -> HBVOutput:
        self._check_inputs(precipitation, temperature, pet, raw)
        n_time, n_basin = precipitation.shape
        states = initial_states
        if states is None:
            states = HBVStates.initial(n_basin, self.nmul, precipitation.dtype, precipitation.device)
        warmup = self.warmup_days
        if warmup > 0:
            with torch.no_grad():
                warm_params = scale_parameters(raw[:warmup], self.nmul, dynamic=())
                _, states = simulate(
                    precipitation[:warmup], temperature[:warmup], pet[:warmup],
                    warm_params.physical, states, self.near_zero, record=False, step=self.step,
                )
            states = states.detach()
        params = scale_parameters(
            raw[warmup:], self.nmul, self.dynamic_parameters,
            self.dynamic_dropout if self.training else 0.0,
        )
        p, t, e = precipitation[warmup:], temperature[warmup:], pet[warmup:]
        series, final = simulate(p, t, e, params.physical, states, self.near_zero, step=self.step)
        means = {name: values.mean(-1) for name, values in series.items()}
        runoff = means["q0"] + means["q1"] + means["q2"]
        routed: dict[str, torch.Tensor | None] = dict.fromkeys(("q0", "q1", "q2"))
        streamflow = runoff
        if self.routing:
            weights = gamma_unit_hydrograph(
                params.routing["route_a"], params.routing["route_b"], self.route_days
            )
            routed = {name: route(means[name], weights) for name in ("q0", "q1", "q2")}
            streamflow = route(runoff, weights)
        return HBVOutput(
            streamflow=streamflow,
            streamflow_unrouted=runoff,
            pet=e,
            q0_routed=routed["q0"], q1_routed=routed["q1"], q2_routed=routed["q2"],
            initial_states=states, final_states=final, parameters=params,
            **means,
        )

    def _check_inputs(self, precipitation: torch.Tensor, temperature: torch.Tensor,
                      pet: torch.Tensor, raw: torch.Tensor) -> None:
        """Shape errors here name the argument; deep inside the loop they would not.

        ValueError, not StefaLandError: the finetuning models build these tensors, so a mismatch is
        a bug in StefaLand (or in a caller of this API), not something in a user's config.
        """
        if precipitation.dim() != 2:
            raise ValueError(
                f"HBV precipitation must be (time, basin), got shape {tuple(precipitation.shape)}"
            )
        for name, value in (("temperature", temperature), ("pet", pet)):
            if value.shape != precipitation.shape:
                raise ValueError(
                    f"HBV {name} has shape {tuple(value.shape)}, precipitation "
                    f"{tuple(precipitation.shape)}; they must match (time, basin)"
                )
        if raw.shape[:2] != precipitation.shape:
            raise ValueError(
                f"HBV raw parameters have (time, basin) = {tuple(raw.shape[:2])}, forcings "
                f"{tuple(precipitation.shape)}; they must match"
            )
        if precipitation.shape[0] <= self.warmup_days:
            raise ValueError(
                f"HBV needs more than the {self.warmup_days} warm-up days, got "
                f"{precipitation.shape[0]} days"
            )
