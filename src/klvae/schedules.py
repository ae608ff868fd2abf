"""The weight of the KL term over training, step by step.

Every schedule gives a fraction s(t) in [0, 1] of ``beta``; the loss is
``-(recon - beta * s(t) * KL)``. Capacity control (Burgess et al. 2018) instead pulls the KL
towards a target C(t) that grows linearly: ``-(recon - beta * |KL - C(t)|)``, with ``beta`` in the
role of their gamma.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SIGMOID_STEEPNESS = 10.0  # the sigmoid ramp spans 10 logistic units: from 0.7% to 99.3% of its rise


@dataclass(frozen=True)
class KLSchedule:
    """``kind``: constant | linear | sigmoid | cyclical | capacity; see :func:`weight` and
    :func:`capacity` for what the other fields mean to each."""

    kind: str = "constant"
    beta: float = 1.0
    start: float = 0.0  # fraction of beta at step 0 (linear, sigmoid, cyclical)
    steps: int = 10_000  # ramp length (linear, sigmoid), all cycles (cyclical), C's growth (capacity)
    cycles: int = 4
    ratio: float = 0.5
    target: float = 25.0  # capacity: C at and after ``steps``, in nats

    @classmethod
    def from_config(cls, config) -> "KLSchedule":
        return cls(config.kl_schedule, config.beta, config.kl_start, config.kl_steps, config.kl_cycles,
                   config.kl_ratio, config.capacity)

    def fraction(self, step: int) -> float:
        """s(t): the share of beta that weighs the KL at optimisation step ``step`` (0-based)."""
        t = min(max(step, 0) / self.steps, 1.0)
        if self.kind in ("constant", "capacity"):
            return 1.0
        if self.kind == "linear":
            ramp = t
        elif self.kind == "sigmoid":
            lo, hi = _logistic(-SIGMOID_STEEPNESS / 2), _logistic(SIGMOID_STEEPNESS / 2)
            ramp = (_logistic(SIGMOID_STEEPNESS * (t - 0.5)) - lo) / (hi - lo)
        elif self.kind == "cyclical":  # Fu et al. 2019: M cycles, each rising for a fraction R, then flat
            if step >= self.steps:
                return 1.0
            period = self.steps / self.cycles
            tau = (step % period) / period
            ramp = min(tau / self.ratio, 1.0)
        else:
            raise ValueError(f"unknown KL schedule {self.kind!r}")
        return self.start + (1.0 - self.start) * ramp

    def weight(self, step: int) -> float:
        """beta * s(t), the KL weight at ``step`` (for capacity: gamma = beta)."""
        return self.beta * self.fraction(step)

    def settled(self, step: int) -> bool:
        """True once the KL has its full weight (and capacity its target): from then on a small
        KL is the model's doing, not the schedule's."""
        return self.fraction(step) == 1.0 and (self.kind != "capacity" or step >= self.steps)

    def capacity(self, step: int) -> float | None:
        """C(t) in nats for capacity control, growing linearly from 0 to ``target`` over ``steps``;
        None for the other schedules."""
        if self.kind != "capacity":
            return None
        return self.target * min(max(step, 0) / self.steps, 1.0)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
