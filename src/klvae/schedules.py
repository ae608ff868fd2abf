"""The weight of the KL term over training, step by step.

Every schedule gives a fraction s(t) in [0, 1] of ``beta``; the loss is
``-(recon - beta * s(t) * KL)``. Capacity control (Burgess et al. 2018) instead pulls the KL
towards a target C(t) that grows linearly: ``-(recon - beta * |KL - C(t)|)``, with ``beta`` in the
role of their gamma.

The schedules live in the registry :data:`SCHEDULES`: each entry's builder is the fraction
function ``fraction(schedule, step) -> float``; the capability ``capacity`` marks the entries whose
loss pulls the KL towards C(t). :func:`register_schedule` adds one from a user's own code.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from klvae.registry import Registry

SIGMOID_STEEPNESS = 10.0  # the sigmoid ramp spans 10 logistic units: from 0.7% to 99.3% of its rise

SCHEDULES = Registry("KL schedule", "--kl-schedule")


def register_schedule(name: str, description: str, fraction: Callable[["KLSchedule", int], float], *,
                      capacity: bool = False, replace: bool = False) -> Callable:
    """Add a KL schedule: ``fraction(schedule, step)`` is s(t) in [0, 1] at the 0-based optimisation
    step; ``capacity`` True makes the loss pull the KL towards C(t) (see :meth:`KLSchedule.capacity`)."""
    return SCHEDULES.register(name, description, fraction, replace=replace, capacity=capacity)


@dataclass(frozen=True)
class KLSchedule:
    """``kind``: a name in :data:`SCHEDULES` (constant | linear | sigmoid | cyclical | capacity, or
    a registered one); see :meth:`weight` and :meth:`capacity` for what the other fields mean to each."""

    kind: str = "constant"
    beta: float = 1.0
    start: float = 0.0  # fraction of beta at step 0 (linear, sigmoid, cyclical)
    steps: int = 10_000  # ramp length (linear, sigmoid), all cycles (cyclical), C's growth (capacity)
    cycles: int = 4
    ratio: float = 0.5
    target: float = 25.0  # capacity: C at and after ``steps``, in nats

    def __post_init__(self) -> None:
        SCHEDULES.check(self.kind)

    @classmethod
    def from_config(cls, config) -> "KLSchedule":
        return cls(config.kl_schedule, config.beta, config.kl_start, config.kl_steps, config.kl_cycles,
                   config.kl_ratio, config.capacity)

    @property
    def pulls_to_capacity(self) -> bool:
        return bool(SCHEDULES[self.kind].get("capacity", False))

    def progress(self, step: int) -> float:
        """t = step / steps, clipped to [0, 1]."""
        return min(max(step, 0) / self.steps, 1.0)

    def fraction(self, step: int) -> float:
        """s(t): the share of beta that weighs the KL at optimisation step ``step`` (0-based)."""
        return SCHEDULES[self.kind].builder(self, step)

    def weight(self, step: int) -> float:
        """beta * s(t), the KL weight at ``step`` (for capacity: gamma = beta)."""
        return self.beta * self.fraction(step)

    def settled(self, step: int) -> bool:
        """True once the KL has its full weight (and capacity its target): from then on a small
        KL is the model's doing, not the schedule's."""
        return self.fraction(step) == 1.0 and (not self.pulls_to_capacity or step >= self.steps)

    def capacity(self, step: int) -> float | None:
        """C(t) in nats for capacity control, growing linearly from 0 to ``target`` over ``steps``;
        None for the other schedules."""
        return self.target * self.progress(step) if self.pulls_to_capacity else None


def _ramp(schedule: KLSchedule, ramp: float) -> float:
    """start + (1 - start) * ramp: a ramp in [0, 1] lifted onto [start, 1]."""
    return schedule.start + (1.0 - schedule.start) * ramp


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@SCHEDULES.register("constant", "beta at every step", capacity=False)
def _constant(schedule: KLSchedule, step: int) -> float:
    return 1.0


@SCHEDULES.register("linear", "from start * beta to beta linearly over kl_steps", capacity=False)
def _linear(schedule: KLSchedule, step: int) -> float:
    return _ramp(schedule, schedule.progress(step))


@SCHEDULES.register("sigmoid", "from start * beta to beta along a logistic curve over kl_steps", capacity=False)
def _sigmoid(schedule: KLSchedule, step: int) -> float:
    lo, hi = _logistic(-SIGMOID_STEEPNESS / 2), _logistic(SIGMOID_STEEPNESS / 2)
    return _ramp(schedule, (_logistic(SIGMOID_STEEPNESS * (schedule.progress(step) - 0.5)) - lo) / (hi - lo))


@SCHEDULES.register("cyclical", "kl_cycles ramps over kl_steps, each rising for a fraction kl_ratio "
                    "(Fu et al. 2019), then beta", capacity=False)
def _cyclical(schedule: KLSchedule, step: int) -> float:
    if step >= schedule.steps:
        return 1.0
    period = schedule.steps / schedule.cycles
    tau = (step % period) / period
    return _ramp(schedule, min(tau / schedule.ratio, 1.0))


@SCHEDULES.register("capacity", "beta * |KL - C| with C growing to --capacity nats over kl_steps "
                    "(Burgess et al. 2018)", capacity=True)
def _capacity(schedule: KLSchedule, step: int) -> float:
    return 1.0
