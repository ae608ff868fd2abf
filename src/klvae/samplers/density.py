"""A density over a trained VAE's latent codes, fitted after training and used in place of the
prior to draw z (ex-post priors: Ghosh et al. 2020, Dai & Wipf 2019, Wehenkel & Louppe 2021).

A :class:`CodeDensity` standardises the codes it is fitted to (per dimension) and fits its
model to the standardised codes u = (z - shift) / scale; ``log_prob`` and ``sample`` work in z,
with the Jacobian of the standardisation. Subclasses fill in ``_fit``, ``_log_prob`` and ``_sample``
and declare their options as a :class:`SamplerConfig` subclass. Its state is tensors only (saved as
safetensors, rebuilt from its config's JSON: no pickle).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from klvae import checks
from klvae.checks import doc
from klvae.errors import KlvaeError

MIN_SCALE = 1e-6  # floor of a code dimension's standard deviation (a dead unit has none)


@dataclass
class SamplerConfig:
    """Options every fitted sampler shares."""

    codes: str = field(default="mean", metadata=doc(
        "what is fitted: the posterior means of the training set, or one draw of q(z|x) each",
        choices=("mean", "sample")))
    seed: int = field(default=0, metadata=doc("seed of the fit (initial weights, minibatches, k-means start)"))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise KlvaeError(f"seed must be an integer; got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class CodeDensity(nn.Module):
    """A density over codes z: (N, D). ``fit(z)`` estimates it, ``log_prob(z)`` gives log p(z)
    (nats, (N,); a lower bound where the model has no exact density: the diffusion's ELBO),
    ``sample(n)`` draws (n, D)."""

    config_class = SamplerConfig
    exact = True  # log_prob is the exact log-density (False: a lower bound)
    sample_options: tuple[str, ...] = ()  # keyword options of ``sample`` (e.g. a diffusion's steps)

    def __init__(self, dim: int, config: SamplerConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise KlvaeError(f"{type(self).__name__} takes a {self.config_class.__name__}; got {type(config).__name__}")
        self.dim, self.config = dim, config
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, z: torch.Tensor) -> dict:
        """Fit to codes z: (N, D) (seeded with ``config.seed``; torch's global random state is left
        as it was); returns what the fit reports (``seconds``, and the model's own figures)."""
        z = self._codes(z)
        if len(z) < 2:
            raise KlvaeError(f"a sampler needs at least 2 codes to fit; got {len(z)}")
        start = time.perf_counter()
        self.shift.copy_(z.mean(0))
        self.scale.copy_(z.std(0).clamp_min(MIN_SCALE))
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(self.config.seed)
            report = self._fit(self.standardise(z)) or {}
        self.eval()
        return {**report, "seconds": time.perf_counter() - start}

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.shift) / self.scale

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats: (N,)."""
        z = self._codes(z)
        return self._log_prob(self.standardise(z)) - self.scale.log().sum()

    @torch.no_grad()
    def sample(self, n: int, **options) -> torch.Tensor:
        """n codes (n, D) from torch's current random state; ``options``: the model's sampling
        options (e.g. the diffusion's ``steps``)."""
        unknown = sorted(set(options) - set(self.sample_options))
        if unknown:
            raise KlvaeError(f"{type(self).__name__} takes no sampling option {', '.join(unknown)}"
                             + (f"; its options: {', '.join(self.sample_options)}" if self.sample_options else ""))
        return self._sample(n, **options) * self.scale + self.shift

    def distribution(self, **options) -> "CodeDistribution":
        """The density as a torch Distribution over R^D (what generation draws z from)."""
        return CodeDistribution(self, options)

    def _codes(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.dim:
            raise KlvaeError(f"codes must be a tensor (N, {self.dim}); got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if not torch.isfinite(z).all():
            raise KlvaeError("the codes hold NaN or Inf; check the run (klvae evaluate) before fitting a sampler")
        return z.float().to(self.shift.device)

    # what a subclass fills in: u are standardised codes (N, D)
    def _fit(self, u: torch.Tensor) -> dict | None:
        raise NotImplementedError

    def _log_prob(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample(self, n: int, **options) -> torch.Tensor:
        raise NotImplementedError


class CodeDistribution(Distribution):
    """A fitted :class:`CodeDensity` seen as a Distribution: batch_shape (), event_shape (D,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, density: CodeDensity, options: dict | None = None):
        self.density, self.options = density, dict(options or {})
        super().__init__(torch.Size(), torch.Size([density.dim]), validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        n = max(shape.numel(), 1)
        return self.density.sample(n, **self.options).reshape(*shape, self.density.dim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        flat = value.reshape(-1, self.density.dim)
        return self.density.log_prob(flat).reshape(value.shape[:-1])


def reset(module: nn.Module) -> None:
    """Draw the initial weights of every layer of ``module`` afresh (from torch's random state)."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def finite(t: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(t).all():
        raise KlvaeError(f"the fitted {what} gives NaN or Inf; refit it with a lower --lr")
    return t


def adam_fit(module: nn.Module, u: torch.Tensor, config, loss_of, what: str, cosine: bool = False) -> float:
    """Adam on ``loss_of(batch)`` (a scalar) over minibatches of u: (N, D) for ``config.epochs``
    passes (order from torch's random state; ``cosine``: the learning rate decays to 0 along a
    cosine, step by step); returns the last pass's mean loss. A non-finite loss is a KlvaeError."""
    module.train()
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=config.lr)
    steps = config.epochs * -(-len(u) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    for epoch in range(config.epochs):
        total = 0.0
        for rows in torch.randperm(len(u), device=u.device).split(config.batch_size):
            loss = loss_of(u[rows])
            if not torch.isfinite(loss):
                raise KlvaeError(f"the {what}'s loss became {loss.item()} in epoch {epoch + 1}; refit with a lower "
                                 f"--lr (now {config.lr:g})")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(rows)
    return total / len(u)
