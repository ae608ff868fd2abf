"""Uniform distributions on the hypersphere S^{d-1} and on the circle: the standard priors of
directional latents."""
from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints


def log_sphere_area(dim: int) -> float:
    """log |S^{dim-1}| = log(2 pi^{dim/2} / Gamma(dim/2)), the surface area of the unit sphere in R^dim."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


class HypersphericalUniform(Distribution):
    """Uniform on the unit sphere S^{dim-1} in R^dim: event_shape (dim,), batch_shape as given.

    Density w.r.t. the surface measure: 1 / |S^{dim-1}|.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector  # points with unit norm
    has_rsample = False

    def __init__(self, dim: int, batch_shape: torch.Size = torch.Size(), dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, validate_args: bool | None = None):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2; got {dim!r}")
        self.dim, self.dtype, self.device = dim, dtype, torch.device(device or "cpu")
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return HypersphericalUniform(self.dim, torch.Size(batch_shape), self.dtype, self.device, self._validate_args)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        x = torch.randn(shape, dtype=self.dtype, device=self.device)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(self.dtype).tiny)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -log_sphere_area(self.dim), dtype=value.dtype, device=value.device)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, log_sphere_area(self.dim), dtype=self.dtype, device=self.device)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self._extended_shape(), dtype=self.dtype, device=self.device)


class CircularUniform(Distribution):
    """Uniform on angles [-pi, pi): density 1 / (2 pi); batch_shape as given, scalar events."""

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, batch_shape: torch.Size = torch.Size(), dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, validate_args: bool | None = None):
        self.dtype, self.device = dtype, torch.device(device or "cpu")
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return CircularUniform(torch.Size(batch_shape), self.dtype, self.device, self._validate_args)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        u = torch.rand(self._extended_shape(sample_shape), dtype=self.dtype, device=self.device)
        return (2 * u - 1) * math.pi

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        return torch.full(shape, -math.log(2 * math.pi), dtype=value.dtype, device=value.device)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, math.log(2 * math.pi), dtype=self.dtype, device=self.device)
