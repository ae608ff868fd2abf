"""Epoch figures as torchmetrics metrics: sums kept on the device across steps, reduced across
processes by torchmetrics when computed (no hand ``all_gather``), reset each epoch."""
from __future__ import annotations

import torch
from torchmetrics import Metric


class Mean(Metric):
    """The mean over data points of per-point values (N, *shape) -> (*shape), summed in float64.

    ``weights`` (N,) count each row that many times (e.g. batch means weighted by batch sizes); a
    row of weight 0 counts for nothing even when it is NaN (a skipped training step's). The sum takes the values' trailing shape on the first
    update (a scalar state that broadcasts), so one class serves (N,) and (N, D) alike."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        if weights is None:
            total = values.detach().sum(0, dtype=torch.float64)
            count = values.new_tensor(float(values.shape[0]), dtype=torch.float64)
        else:
            w = weights.to(torch.float64).reshape(-1, *[1] * (values.dim() - 1))
            total = torch.where(w > 0, values.detach().double() * w, 0.0).sum(0)
            count = weights.to(torch.float64).sum()
        self.total = self.total + total
        self.count = self.count + count

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1.0)


class ColumnMeans(Mean):
    """:class:`Mean` of named columns: ``update`` takes (N, C) values, one column per name;
    :meth:`row` gives {name: mean} as floats (one host read)."""

    def __init__(self, columns: list[str], **kwargs):
        super().__init__(**kwargs)
        self.columns = list(columns)

    def row(self) -> dict[str, float]:
        if not self.update_called:
            return {}
        return dict(zip(self.columns, self.compute().tolist()))


class Moments(Metric):
    """Mean and unbiased variance over data points of values (N, *shape), from float64 sums of
    the values and their squares: the unit activity Cov_x(E_q[z|x]) of Burda et al. without
    holding every posterior mean."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("total", "squares", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        v = values.detach().to(torch.float64)
        self.total = self.total + v.sum(0)
        self.squares = self.squares + v.square().sum(0)
        self.count = self.count + v.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance with N - 1), each of the values' trailing shape."""
        n = self.count
        mean = self.total / n
        return mean, (self.squares - n * mean.square()) / (n - 1).clamp_min(1.0)
