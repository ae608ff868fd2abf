"""The diffusion sampler: its noise schedules and step posteriors against their closed forms; its
ELBO against the true log-density where the optimal noise predictor is known (N(0, I) codes, the
toy mixture); its samplers with that predictor and after a small fit; determinism; bad options."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from sampler_toys import LOG_2PI, moments_close
from klvae.errors import KlvaeError
from klvae.samplers.diffusion import DiffusionConfig, DiffusionDensity, betas

SMALL = {"timesteps": 200, "width": 32, "layers": 2, "epochs": 150, "batch_size": 512, "lr": 3e-3}  # ~5 s on a core


def abar_of(schedule: str, timesteps: int) -> torch.Tensor:
    return torch.cumprod(1 - betas(schedule, timesteps), 0)


def bayes_posterior(schedule: str, timesteps: int) -> tuple[torch.Tensor, ...]:
    """q(u_{t-1} | u_t, u_0) for t = 1..T by conditioning the joint of (u_{t-1}, u_t) given u_0:
    u_{t-1} = sqrt(abar_{t-1}) u_0 + sqrt(1 - abar_{t-1}) e1, u_t = sqrt(1 - beta_t) u_{t-1} + sqrt(beta_t) e2;
    returns the coefficients of u_0 and u_t in its mean, and its variance."""
    b = betas(schedule, timesteps)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar_of(schedule, timesteps)[:-1]])
    v11 = 1 - prev
    v12 = (1 - b).sqrt() * v11
    v22 = (1 - b) * v11 + b
    k = v12 / v22  # E[u_{t-1} | u_t, u_0] = E[u_{t-1} | u_0] + k (u_t - E[u_t | u_0])
    return prev.sqrt() - k * (1 - b).sqrt() * prev.sqrt(), k, v11 - v12 ** 2 / v22


class GaussianNoise(torch.nn.Module):
    """The optimal noise predictor of N(0, I) codes: E[eps | u_t] = sqrt(1 - abar_t) u_t."""

    def __init__(self, abar: torch.Tensor):
        super().__init__()
        self.scale = (1 - abar).sqrt().float()

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scale[t - 1, None] * u


class MixtureNoise(torch.nn.Module):
    """The optimal noise predictor of a Gaussian mixture q(u_0): -sqrt(1 - abar_t) grad log q_t(u_t),
    q_t the mixture with means sqrt(abar_t) m_k and covariances abar_t S_k + (1 - abar_t) I."""

    def __init__(self, abar, weights, means, covs):
        super().__init__()
        self.abar, self.logw, self.means, self.covs = abar, weights.log(), means, covs

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t - 1][:, None, None]  # (B, 1, 1)
        cov = a[..., None] * self.covs + (1 - a[..., None]) * torch.eye(u.shape[1], dtype=torch.float64)
        diff = u.double()[:, None] - a.sqrt() * self.means  # (B, K, D)
        sol = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)
        resp = (self.logw - 0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(cov)).softmax(1)
        return ((1 - a[:, 0]).sqrt() * (resp[..., None] * sol).sum(1)).float()


def gaussian_density(dim: int, **options) -> DiffusionDensity:
    density = DiffusionDensity(dim, DiffusionConfig(**options))
    density.net = GaussianNoise(abar_of(density.config.schedule, density.config.timesteps))
    return density


def with_clip_range(density: DiffusionDensity, u: torch.Tensor) -> DiffusionDensity:
    density.low.copy_(u.min(0).values)  # as a fit to u sets them
    density.high.copy_(u.max(0).values)
    return density


@pytest.fixture(scope="module")
def reference(toy) -> torch.Tensor:
    """A large draw of the true toy density: moments with little sampling noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        return toy.density.sample((100_000,))


@pytest.fixture(scope="module")
def fitted(toy):
    density = DiffusionDensity(2, DiffusionConfig(**SMALL))
    return density, density.fit(toy.train)


def test_the_linear_schedule_is_ho_et_al_s_and_the_cosine_nichol_and_dhariwal_s():
    torch.testing.assert_close(betas("linear", 1000), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert betas("linear", 250)[[0, -1]].tolist() == pytest.approx([4e-4, 0.08])  # scaled by 1000 / T
    T, s = 1000, 0.008
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    closed = torch.tensor([f[t] / f[0] for t in range(1, T + 1)], dtype=torch.float64)
    abar = abar_of("cosine", T)
    torch.testing.assert_close(abar[:-1], closed[:-1], rtol=1e-9, atol=1e-15)
    b = betas("cosine", T)  # f(T) = 0: only the last beta is clipped, to 0.999
    assert b[-1] == 0.999 and (b[:-1] < 0.999).all() and abar[-1].item() == pytest.approx(closed[-2].item() * 1e-3)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("timesteps", [2, 10, 1000, 4000])
def test_alpha_bar_falls_strictly_inside_0_1(schedule, timesteps):
    abar = abar_of(schedule, timesteps)
    assert (abar > 0).all() and (abar < 1).all() and (abar.diff() < 0).all()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_each_step_s_posterior_is_the_gaussian_conditional_of_the_forward_chain(schedule):
    density = DiffusionDensity(1, DiffusionConfig(timesteps=100, schedule=schedule))
    c0, ct, var = bayes_posterior(schedule, 100)
    for got, want in ((density.c0, c0), (density.ct, ct), (density.post_var, var),
                      (density.sqrt_abar ** 2, abar_of(schedule, 100))):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-9)
    assert density.post_var[0] == 0 and density.c0[0] == 1  # given u_1 and u_0, u_0 is known


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_with_the_optimal_predictor_the_elbo_of_gaussian_codes_is_their_log_density(schedule):
    """With the reverse variance beta_t, the model's chain is the forward chain's exact reverse for
    N(0, I) codes: the ELBO's expectation is log p exactly (T = 1000, D = 32)."""
    torch.manual_seed(0)
    u = torch.randn(2000, 32)
    density = with_clip_range(gaussian_density(32, schedule=schedule), u)
    gap = density.log_prob(u) - (-0.5 * u.square().sum(1) - 16 * LOG_2PI)  # ELBO - log p, per code
    se = gap.std().item() / math.sqrt(len(u))
    assert gap.mean().item() < 3 * se, (gap.mean(), se)  # a lower bound
    assert abs(gap.mean().item()) < 0.02 * 32, (gap.mean(), se)  # a few hundredths of a nat per dimension


def test_with_the_posterior_variance_the_elbo_falls_short_by_the_variance_kls_exact_or_subsampled():
    """Reverse variance beta-tilde_t for N(0, I) codes, whose true reverse step is N(sqrt(alpha_t) u_t,
    beta_t): the ELBO falls short of log p by D sum_{t>=2} KL(N(0, beta_t) || N(0, beta-tilde_t)), all
    999 terms summed or one drawn in each of 37 strata."""
    b, var = betas("cosine", 1000), bayes_posterior("cosine", 1000)[2]
    r = (b / var)[1:]
    short = 16 * (0.5 * (r - 1 - r.log())).sum().item()  # 6.5 nats
    torch.manual_seed(1)
    u = torch.randn(2000, 16)
    for steps in (0, 37):
        density = gaussian_density(16, variance="posterior", elbo_steps=steps)
        gap = density.log_prob(u) - (-0.5 * u.square().sum(1) - 8 * LOG_2PI)
        se = gap.std().item() / math.sqrt(len(u))
        assert abs(gap.mean().item() + short) < 4 * se, (steps, gap.mean(), -short, se)


def test_with_the_toy_s_optimal_predictor_the_elbo_bounds_its_true_nll_closely(toy):
    """The toy's noise predictor in closed form (its density is a mixture): the bound, T = 200,
    is within 0.05 nats per dimension of the true NLL."""
    density = DiffusionDensity(2, DiffusionConfig(timesteps=200))
    density.shift.copy_(toy.train.mean(0))
    density.scale.copy_(toy.train.std(0))
    with_clip_range(density, density.standardise(toy.train))
    comp, s = toy.density.component_distribution, density.scale.double()
    means, covs = (comp.loc.double() - density.shift.double()) / s, comp.covariance_matrix.double() / (s[:, None] * s)
    density.net = MixtureNoise(abar_of("cosine", 200), toy.density.mixture_distribution.probs.double(), means, covs)
    codes = torch.cat([toy.train, toy.test])
    torch.manual_seed(2)
    gap = -density.log_prob(codes) + toy.density.log_prob(codes)  # -ELBO - true NLL, per code
    se = gap.std().item() / math.sqrt(len(codes))
    assert -3 * se < gap.mean().item() < 0.1, (gap.mean(), se)


@pytest.mark.parametrize("steps", [0, 50])
def test_with_the_optimal_predictor_ancestral_sampling_draws_gaussian_codes(steps):
    """The (respaced) chain with variance beta_t keeps N(0, I) at every step; the last step gives its
    mean, of variance 1 - beta_1 (T = 1000; 40,000 values: the variance's error ~0.007)."""
    density = gaussian_density(8)
    torch.manual_seed(3)
    u = density.sample(5000, steps=steps)
    assert abs(u.mean().item()) < 0.02 and abs(u.var().item() - 1) < 0.025, (u.mean(), u.var())


def test_with_the_optimal_predictor_ddim_scales_its_starting_noise_by_the_closed_form():
    """For N(0, I) codes, DDIM (eta = 0) maps u_T to c u_T, c = prod over the steps a -> a' of
    sqrt(a a') + sqrt((1 - a)(1 - a')), with its 25 steps evenly spaced from T down to 1."""
    density = gaussian_density(3, timesteps=500)
    taus = torch.linspace(500, 1, 25, dtype=torch.float64).round().long()
    a = abar_of("cosine", 500)[taus - 1]
    a_prev = torch.cat([a[1:], torch.ones(1, dtype=torch.float64)])
    c = ((a * a_prev).sqrt() + ((1 - a) * (1 - a_prev)).sqrt()).prod().item()
    torch.manual_seed(4)
    u = density.sample(1000, method="ddim", steps=25)
    torch.manual_seed(4)
    torch.testing.assert_close(u, c * torch.randn(1000, 3), rtol=1e-4, atol=1e-5)
    assert 0.9 < c < 0.99  # DDIM's known shrinkage of a Gaussian with few steps


def test_a_small_fitted_diffusion_bounds_the_toy_s_held_out_nll_closely(fitted, toy):
    density, report = fitted
    assert not density.exact and report["epochs"] == 150 and math.isfinite(report["loss"])
    torch.manual_seed(5)
    gap = -density.log_prob(toy.test) + toy.density.log_prob(toy.test)  # -ELBO - true NLL, per code
    se = gap.std().item() / math.sqrt(len(toy.test))
    assert -3 * se < gap.mean().item() < 0.25, (gap.mean(), se)  # measured 0.07


def test_a_small_fitted_diffusion_draws_the_toy_s_moments(fitted, reference):
    density, _ = fitted
    torch.manual_seed(6)
    moments_close(density.sample(8000), reference)  # 8000 draws: the mean's sampling error ~0.03
    # DDIM follows the fitted eps with little or no fresh noise to forget its errors at high noise,
    # and 50 steps shrink the variance ~2.5% (0.17 of the toy's 6.6; see the closed-form test above):
    # over seeds, errors up to 0.13 (mean) and 0.30 (covariance), hence the wider tolerances
    for eta in (0.0, 1.0):
        moments_close(density.sample(4000, method="ddim", eta=eta), reference, mean_tol=0.25, cov_tol=0.5)


def test_the_same_seed_gives_the_same_fit_and_a_saved_state_the_same_draws(toy):
    cfg = DiffusionConfig(timesteps=50, width=16, layers=1, epochs=2, seed=3)
    one, two, other = DiffusionDensity(2, cfg), DiffusionDensity(2, cfg), DiffusionDensity(2, replace(cfg, seed=4))
    for density in (one, two, other):
        density.fit(toy.train[:1000])
    for key, value in one.state_dict().items():
        assert torch.equal(value, two.state_dict()[key]), key
    assert not torch.equal(one.net.inp.weight, other.net.inp.weight)
    fresh = DiffusionDensity(2, cfg)  # rebuilt from its config and tensors alone
    fresh.load_state_dict(one.state_dict())
    for options in ({}, {"method": "ddim", "steps": 10, "eta": 0.5}):
        torch.manual_seed(7)
        a = one.sample(200, **options)
        torch.manual_seed(7)
        assert torch.equal(a, fresh.sample(200, **options)) and torch.isfinite(a).all()
    torch.manual_seed(8)
    elbo = one.log_prob(toy.test[:100])
    torch.manual_seed(8)
    assert torch.equal(elbo, fresh.log_prob(toy.test[:100])) and torch.isfinite(elbo).all()


@pytest.mark.parametrize("options, words", [
    ({"schedule": "quadratic"}, "schedule must be one of cosine, linear"),
    ({"variance": "learned"}, "variance must be one of"),
    ({"sampling": "euler"}, "sampling must be one of"),
    ({"timesteps": 100, "sampling_steps": 101}, r"sampling_steps must be at most timesteps \(100\)"),
    ({"timesteps": 1}, "timesteps must be at least 2"),
    ({"width": 0}, "width must be a positive integer"),
    ({"eta": 1.5}, "eta must be in"),
    ({"lr": 0.0}, "lr must be in"),
])
def test_bad_options_are_one_line_errors(options, words):
    with pytest.raises(KlvaeError, match=words) as error:
        DiffusionConfig(**options)
    assert "\n" not in str(error.value)


def test_bad_sampling_options_are_one_line_errors():
    density = DiffusionDensity(2, DiffusionConfig(timesteps=20, width=8, layers=1))
    for options, words in (({"temperature": 0.5}, "no sampling option temperature"),
                           ({"steps": 21}, r"sampling_steps must be at most timesteps \(20\)"),
                           ({"method": "euler"}, "sampling must be one of"), ({"eta": -1}, "eta must be in")):
        with pytest.raises(KlvaeError, match=words) as error:
            density.sample(5, **options)
        assert "\n" not in str(error.value)
