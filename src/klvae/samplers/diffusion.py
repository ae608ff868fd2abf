"""A denoising diffusion model over the codes (DDPM: Ho et al. 2020): an MLP predicts the noise of
u_t = sqrt(abar_t) u_0 + sqrt(1 - abar_t) eps, t = 1..T; samples by ancestral sampling or DDIM
(Song et al. 2021); ``log_prob`` is the variational lower bound (ELBO) on log p(u), not log p(u).

The reverse step p(u_{t-1} | u_t) = N(mu_theta, sigma_t^2) has the mean of the posterior
q(u_{t-1} | u_t, u_0) at the predicted u_0 and the variance ``variance``: beta_t (the default: the
true reverse variance of a smooth density at small noise, and exact for N(0, I) codes) or the
posterior's beta-tilde_t (exact for a single point; on continuous codes its first steps cost
0.41 (cosine) and 0.46 (linear) nats of bound per dimension at T = 1000, 0.63 and 0.90 at T = 200).
The decoder p(u_0 | u_1) is N(mu_theta(u_1, 1), beta_1) under both (beta-tilde_1 is 0).

The predicted u_0 is clipped to the training codes' range per dimension, widened at step t by
sqrt(abar_t / (1 - abar_t)) (1 / the noise's scale in u_0's units): the clip binds only at high
noise, where an error in eps is magnified by sqrt((1 - abar_t) / abar_t) (the cosine schedule's
last abar is ~1e-9) and would otherwise throw DDIM's first steps far off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from klvae import checks
from klvae.checks import doc
from klvae.errors import KlvaeError
from klvae.samplers.density import CodeDensity, SamplerConfig, adam_fit, reset

ROWS = 1 << 15  # network rows per chunk of the ELBO
SAMPLE_OPTIONS = {"steps": "sampling_steps", "method": "sampling", "eta": "eta"}  # sample()'s keywords: config fields


@dataclass
class DiffusionConfig(SamplerConfig):
    timesteps: int = field(default=1000, metadata=doc("diffusion steps T"))
    schedule: str = field(default="cosine", metadata=doc(
        "noise schedule: cosine (Nichol & Dhariwal 2021) or linear (Ho et al. 2020, scaled by 1000/T)",
        choices=("cosine", "linear")))
    variance: str = field(default="beta", metadata=doc(
        "variance of each reverse step: beta_t, or the posterior's beta-tilde_t (a looser bound on continuous codes)",
        choices=("beta", "posterior")))
    width: int = field(default=256, metadata=doc("width of the noise predictor's residual blocks"))
    layers: int = field(default=3, metadata=doc("residual blocks of the noise predictor's MLP"))
    # 60,000 codes in batches of 256 are 235 Adam steps an epoch; a step of the default MLP takes
    # ~17 ms of one CPU core (~4 s an epoch; ~2.5 s on 2 cores): 30 epochs (~7,000 steps), 1-2 minutes
    epochs: int = field(default=30, metadata=doc("passes over the codes"))
    batch_size: int = field(default=256, metadata=doc("codes per step"))
    lr: float = field(default=1e-3, metadata=doc("Adam's learning rate, decayed to 0 on a cosine"))
    sampling: str = field(default="ancestral", metadata=doc(
        "how samples are drawn: ancestral (DDPM) or ddim", choices=("ancestral", "ddim")))
    sampling_steps: int = field(default=0, metadata=doc(
        "steps of sampling, evenly spaced over the T (0: T for ancestral, min(50, T) for ddim)"))
    eta: float = field(default=0.0, metadata=doc("DDIM's noise: 0 deterministic, 1 as ancestral"))
    elbo_steps: int = field(default=100, metadata=doc(
        "terms of the ELBO's sum over t = 2..T (0 or at least T - 1: all; N: one t drawn in each of N strata even "
        "in log t, unbiased; 100 costs a tenth of the full sum at T = 1000, at nearly its precision)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.positive_int(self, "timesteps", "width", "layers", "epochs", "batch_size")
        checks.non_negative_int(self, "sampling_steps", "elbo_steps")
        checks.within(self, "lr", 0, 1)
        checks.within(self, "eta", 0, 1, "[]")
        checks.int_at_least(self, 2, "timesteps")
        if self.sampling_steps > self.timesteps:
            raise KlvaeError(f"sampling_steps must be at most timesteps ({self.timesteps}); got {self.sampling_steps}")


def betas(schedule: str, timesteps: int) -> torch.Tensor:
    """beta_t for t = 1..T: (T,) float64, at most 0.999 (which binds for T < 20 if linear)."""
    t = torch.arange(timesteps + 1, dtype=torch.float64)
    if schedule == "linear":  # Ho et al.'s 1e-4..0.02 for T = 1000, scaled by 1000 / T (Nichol & Dhariwal)
        scale = 1000 / timesteps
        return torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64).clamp(max=0.999)
    if schedule == "cosine":  # abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2), s = 0.008
        f = torch.cos((t / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise KlvaeError(f"schedule must be one of cosine, linear; got {schedule!r}")


def steps(abar: torch.Tensor, abar_prev: torch.Tensor) -> dict[str, torch.Tensor]:
    """The steps abar_prev -> abar (each (S,), float64; abar_prev 1 for the first): beta, and the
    posterior q(u_prev | u_t, u_0) = N(c0 u_0 + ct u_t, post_var)."""
    beta = 1 - abar / abar_prev
    return {"beta": beta, "c0": abar_prev.sqrt() * beta / (1 - abar),
            "ct": (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar), "post_var": beta * (1 - abar_prev) / (1 - abar)}


def strata(timesteps: int, count: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` strata of t = 2..T, evenly spaced in log t (the ELBO's terms fall about as 1/t) and
    at least one step wide: edges 0 = e_0 < ... < e_K = T - 1 (t = 2 + e_k ..), and their sizes."""
    k = torch.arange(count + 1, device=device)
    edges = (torch.logspace(0, math.log10(timesteps), count + 1, device=device) - 1).floor().long()
    edges = (edges - k).cummax(0).values + k  # widen the first strata to one step each
    edges[0], edges[-1] = 0, timesteps - 1
    return edges, edges.diff()


class NoisePredictor(nn.Module):
    """eps_theta(u_t, t): u_t (B, D), t (B,) in 1..T -> (B, D); an MLP on [u_t, a sinusoidal
    embedding of t] with residual blocks (LayerNorm, SiLU, Linear, SiLU, Linear)."""

    def __init__(self, dim: int, hidden: int, layers: int, embedding: int = 64):
        super().__init__()
        half = embedding // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000) * torch.arange(half) / half), persistent=False)
        self.inp = nn.Linear(dim + embedding, hidden)
        self.time = nn.ModuleList(nn.Linear(embedding, hidden) for _ in range(layers))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                                  nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angle = t.to(u.dtype)[:, None] * self.freqs
        emb = torch.cat([angle.sin(), angle.cos()], 1)
        h = self.inp(torch.cat([u, emb], 1))
        for time, block in zip(self.time, self.blocks):
            h = h + block(h + time(emb))
        return self.out(h)


class DiffusionDensity(CodeDensity):
    """A DDPM over the standardised codes; ``log_prob`` is its ELBO (a lower bound), drawn from
    torch's current random state like ``sample``."""

    config_class = DiffusionConfig
    exact = False
    sample_options = tuple(SAMPLE_OPTIONS)

    def __init__(self, dim: int, config: DiffusionConfig):
        super().__init__(dim, config)
        self.net = NoisePredictor(dim, config.width, config.layers)
        abar = torch.cumprod(1 - betas(config.schedule, config.timesteps), 0)
        s = steps(abar, torch.cat([abar.new_ones(1), abar[:-1]]))
        var = s["beta"] if config.variance == "beta" else torch.cat([s["beta"][:1], s["post_var"][1:]])
        pv = s["post_var"].clamp_min(1e-300)  # the (t >= 2) KL's constant: variance ratio against q's
        s.update(var=var, sqrt_abar=abar.sqrt(), sqrt_1m_abar=(1 - abar).sqrt(),
                 kl_const=torch.where(s["post_var"] > 0, 0.5 * ((var / pv).log() + pv / var - 1), 0))
        s["margin"] = (abar / (1 - abar)).sqrt()
        for name, value in s.items():  # schedule buffers: (T,), index t - 1, rebuilt from the config
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("low", torch.full((dim,), -math.inf))  # the training codes' range (u units)
        self.register_buffer("high", torch.full((dim,), math.inf))

    def predict_u0(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The predicted u_0 of u_t (B, D) at t (B,), clipped to the training range +- margin_t."""
        i = t - 1
        u0 = (u - self.sqrt_1m_abar[i, None] * self.net(u, t)) / self.sqrt_abar[i, None]
        return torch.clamp(u0, self.low - self.margin[i, None], self.high + self.margin[i, None])

    def _noised(self, u0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn_like(u0)
        return self.sqrt_abar[t - 1, None] * u0 + self.sqrt_1m_abar[t - 1, None] * eps, eps

    def _fit(self, u: torch.Tensor) -> dict:
        cfg = self.config
        self.low.copy_(u.min(0).values)
        self.high.copy_(u.max(0).values)
        reset(self.net)  # initial weights from the fit's seed

        def loss_of(batch: torch.Tensor) -> torch.Tensor:
            t = torch.randint(1, cfg.timesteps + 1, (len(batch),), device=u.device)
            ut, eps = self._noised(batch, t)
            return (self.net(ut, t) - eps).square().mean()

        loss = adam_fit(self.net, u, cfg, loss_of, "diffusion", cosine=True)
        return {"loss": loss, "epochs": cfg.epochs}

    def _log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """ELBO per code (N,): log N(u_0; mu_theta(u_1, 1), beta_1) - sum_{t=2}^T KL(q(u_{t-1}|u_t,u_0)
        || p(u_{t-1}|u_t)) - KL(q(u_T|u_0) || N(0, I)); one draw of u_t per term and code."""
        terms = min(self.config.elbo_steps or self.config.timesteps, self.config.timesteps - 1)
        return torch.cat([self._elbo(c, terms) for c in u.split(max(1, ROWS // terms))])

    def _elbo(self, u0: torch.Tensor, terms: int) -> torch.Tensor:
        (n, d), T = u0.shape, self.config.timesteps
        edges, size = strata(T, terms, u0.device)
        t = 2 + edges[:-1] + (torch.rand(n, terms, device=u0.device) * size).long().clamp(max=size - 1)
        t = t.reshape(-1)
        rows = u0.repeat_interleave(terms, 0)
        ut, _ = self._noised(rows, t)
        gap = self.c0[t - 1, None] * (rows - self.predict_u0(ut, t))
        kl = d * self.kl_const[t - 1] + 0.5 * gap.square().sum(1) / self.var[t - 1]
        kl = (kl.view(n, terms) * size).sum(1)
        one = torch.ones(n, dtype=torch.long, device=u0.device)
        u1, _ = self._noised(u0, one)
        decoder = -0.5 * ((u0 - self.predict_u0(u1, one)).square().sum(1) / self.var[0]
                          + d * math.log(2 * math.pi * self.var[0].item()))
        a, s2 = self.sqrt_abar[-1] ** 2, self.sqrt_1m_abar[-1] ** 2
        prior = 0.5 * (a * u0.square() + s2 - 1 - s2.log()).sum(1)
        return decoder - kl - prior

    def _sample(self, n: int, **options) -> torch.Tensor:
        """n draws (n, D) by ancestral sampling or DDIM; ``steps``, ``method``, ``eta`` override the
        config's ``sampling_steps``, ``sampling``, ``eta``."""
        cfg = replace(self.config, **{SAMPLE_OPTIONS[k]: v for k, v in options.items() if v is not None})
        T = cfg.timesteps
        count = cfg.sampling_steps or (T if cfg.sampling == "ancestral" else min(50, T))
        taus = torch.linspace(T, 1, count, dtype=torch.float64).round().long()  # descending, distinct
        abar = torch.cumprod(1 - betas(cfg.schedule, T), 0)[taus - 1]
        prev = torch.cat([abar[1:], abar.new_ones(1)])
        s = steps(abar, prev)
        if cfg.sampling == "ancestral":  # respaced steps (Nichol & Dhariwal); the last gives its mean
            noise = (s["beta"] if cfg.variance == "beta" else s["post_var"]).sqrt()
            a, b = s["c0"], s["ct"]
        else:  # DDIM: u_prev = sqrt(abar_prev) u0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z
            noise = cfg.eta * s["post_var"].sqrt()
            direction = (1 - prev - noise ** 2).clamp_min(0).sqrt() / (1 - abar).sqrt()
            a, b = prev.sqrt() - direction * abar.sqrt(), direction
        noise[-1] = 0
        u = torch.randn(n, self.dim, device=self.shift.device)
        for i, t in enumerate(taus.tolist()):
            u0 = self.predict_u0(u, torch.full((n,), t, dtype=torch.long, device=u.device))
            u = a[i].item() * u0 + b[i].item() * u + noise[i].item() * torch.randn_like(u)
        return u
