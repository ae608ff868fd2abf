"""The perceptual losses ssim, ms-ssim and watson: values against independent references
(scikit-image's SSIM, pytorch-msssim's MS-SSIM, numpy's FFT, hand computations of Watson's
masking), the properties of Watson's model, shapes, extremes, and training end to end.

Seed policy: every test starts from torch.manual_seed(SEED) and numpy's default_rng(SEED) (the
autouse fixture below); the photographs are scikit-image's, cropped and resized to 64x64.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F

import klvae
from klvae import KlvaeError
from klvae.likelihoods import LIKELIHOODS
from klvae.likelihoods.perceptual import MS_SSIM_WEIGHTS, PerceptualLoss, ms_ssim, ms_ssim_levels, ssim_distance
from klvae.likelihoods.watson import (
    ALPHA, DC_FLOOR, W, WATSON_DCT_TABLE, block_dft, dft_table, luminance_thresholds, phase_angles, watson_distance,
)
from klvae.run import read_metrics

skimage_data = pytest.importorskip("skimage.data")
from skimage.metrics import structural_similarity  # noqa: E402
from skimage.transform import resize  # noqa: E402

SEED = 0
NAMES = ("ssim", "ms-ssim", "watson")
CONFIG = SimpleNamespace(loss_scale=None)


@pytest.fixture(autouse=True)
def rng():
    torch.manual_seed(SEED)
    return np.random.default_rng(SEED)


def photo(name: str, size: int = 64) -> torch.Tensor:
    """A scikit-image photograph (``lfw``: the first face of the LFW subset, 25x25), centre-cropped
    square and resized: (1, C, size, size) float32 in [0, 1]."""
    a = skimage_data.lfw_subset()[0] if name == "lfw" else getattr(skimage_data, name)()
    side = min(a.shape[:2])
    top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
    a = resize(a[top:top + side, left:left + side], (size, size), anti_aliasing=True)
    t = torch.tensor(a, dtype=torch.float32)
    return t.permute(2, 0, 1)[None] if t.dim() == 3 else t[None, None]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (7 taps, edges replicated): (N, C, H, W) -> same."""
    k = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * sigma**2))
    k, c = k / k.sum(), x.shape[1]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1).repeat(c, 1, 1, 1), groups=c)


def distorted(x: torch.Tensor, kind: str) -> torch.Tensor:
    noise = 0.05 * torch.randn_like(x)
    return {"noise": x + noise, "blur": blur(x, 1.0), "both": blur(x, 0.7) + noise}[kind].clamp(0, 1)


def skimage_ssim(x: np.ndarray, y: np.ndarray, k1: float = 0.01) -> float:
    """scikit-image's SSIM of (C, H, W) arrays with SSIM's Gaussian window, in float64."""
    return structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, channel_axis=0, K1=k1)


@pytest.mark.parametrize("name", ["astronaut", "camera", "coffee", "lfw"])
@pytest.mark.parametrize("kind", ["noise", "blur", "both"])
def test_ssim_distance_matches_scikit_image_on_photographs(name, kind):
    x = photo(name)
    y = distorted(x, kind)
    expected = 1 - skimage_ssim(x[0].double().numpy(), y[0].double().numpy())
    assert ssim_distance(x, y).item() == pytest.approx(expected, abs=2e-5)


def test_ms_ssim_at_full_settings_equals_pytorch_msssim_on_a_256_pixel_image():
    x = photo("astronaut", 256)
    y = torch.cat([distorted(x, kind) for kind in ("noise", "blur", "both")])
    x = x.expand_as(y)
    assert ms_ssim_levels(256) == 5
    expected = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(ms_ssim(x, y), expected, rtol=1e-5, atol=1e-6)


def _pooled(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean(axis=(2, 4))


@pytest.mark.parametrize("size, levels", [(32, 2), (64, 3), (128, 4)])
def test_ms_ssim_below_161_pixels_is_the_product_of_scikit_image_terms_at_the_scales_used(size, levels):
    """Reference per channel: contrast-structure at the finer scales (scikit-image's SSIM with K1 = 1e4,
    whose luminance factor is then 1 - O(1e-8)), SSIM at the coarsest, 2x2 means between scales,
    the first ``levels`` weights renormalised."""
    x = photo("astronaut", size)
    y = distorted(x, "both")
    assert ms_ssim_levels(size) == levels
    weights = np.array(MS_SSIM_WEIGHTS[:levels]) / sum(MS_SSIM_WEIGHTS[:levels])
    a, b, value = x[0].double().numpy(), y[0].double().numpy(), np.ones(3)
    for level in range(levels):
        for c in range(3):
            term = skimage_ssim(a[c:c + 1], b[c:c + 1], k1=0.01 if level == levels - 1 else 1e4)
            value[c] *= max(term, 0.0) ** weights[level]
        a, b = _pooled(a), _pooled(b)
    assert ms_ssim(x, y).item() == pytest.approx(value.mean(), abs=5e-5)


def test_ms_ssim_refuses_images_under_21_pixels_naming_ssim_and_takes_21():
    with pytest.raises(KlvaeError, match=r"ms-ssim needs images of at least 21x21 pixels .* got 20x32; "
                                         r"use --likelihood ssim$"):
        LIKELIHOODS.build("ms-ssim", (1, 20, 32), CONFIG)
    lik = LIKELIHOODS.build("ms-ssim", (1, 21, 21), CONFIG)
    assert torch.isfinite(lik(torch.randn(2, 1, 21, 21), 3).log_prob(torch.rand(2, 1, 21, 21))).all()


@pytest.mark.parametrize("name", NAMES)
def test_flat_data_are_a_one_line_error_naming_the_fix(name):
    with pytest.raises(KlvaeError, match=rf"likelihood {name} needs image data \(C, H, W\); got data of shape "
                                         r"\(64,\); use --likelihood gaussian$"):
        LIKELIHOODS.build(name, (64,), CONFIG)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(KlvaeError, match=r"ssim needs images of at least 11x11 pixels .* got 8x8"):
        LIKELIHOODS.build("ssim", (1, 8, 8), CONFIG)


def test_block_dft_is_numpys_orthonormal_rfft2_of_each_8x8_block():
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    coef = block_dft(x)
    assert coef.shape == (2, 3, 2, 3, 8, 5)
    blocks = x.numpy().reshape(2, 3, 2, 8, 3, 8).transpose(0, 1, 2, 4, 3, 5)
    np.testing.assert_allclose(coef.numpy(), np.fft.rfft2(blocks, norm="ortho"), atol=1e-12)


def test_the_dft_table_takes_watsons_dct_entry_of_the_same_frequency():
    t, dct = dft_table(), torch.tensor(WATSON_DCT_TABLE)
    assert t.shape == (8, 5)
    for u in range(8):
        for v in range(5):
            ku, kv = (min(2 * min(f, 8 - f), 7) for f in (u, v))  # f cycles per block = DCT index 2f
            assert t[u, v] == dct[ku, kv]
    assert (t[0, 0], t[1, 1], t[7, 1], t[4, 4]) == (dct[0, 0], dct[2, 2], dct[2, 2], dct[7, 7])


def test_luminance_masking_matches_a_hand_computation():
    """A constant image: every block's DC is 8 x 255 c (orthonormal DFT, grey levels), the ratio to
    the mean is 1 and t^L is the table. Blocks of 0.25 and 0.75: t^L = t ((DC + 8) / (mean DC + 8))^0.649."""
    table = dft_table().double()
    constant = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64) * 255
    dc = block_dft(constant)[..., 0, 0].real
    torch.testing.assert_close(dc, torch.full((1, 1, 2, 2), 8 * 255 * 0.3, dtype=torch.float64))
    torch.testing.assert_close(luminance_thresholds(dc, table), table.expand(1, 1, 2, 2, 8, 5))
    halves = torch.full((1, 1, 16, 16), 0.25 * 255, dtype=torch.float64)
    halves[..., 8:] = 0.75 * 255
    t_lum = luminance_thresholds(block_dft(halves)[..., 0, 0].real, table)
    mean_dc = 8 * 255 * 0.5
    for v, column in ((0.25, 0), (0.75, 1)):
        ratio = (8 * 255 * v + DC_FLOOR) / (mean_dc + DC_FLOOR)
        torch.testing.assert_close(t_lum[0, 0, :, column], (table * ratio**ALPHA).expand(2, 8, 5))
    assert ALPHA == 0.649 and W == 0.7


def test_on_a_constant_grey_image_only_the_dc_term_counts_as_computed_by_hand():
    """D = (B |dDC / s|^4)^(1/4) over B blocks, s = smax(t00, DC^w t00^(1-w)),
    smax(a, b) = (a e^a + b e^b) / (e^a + e^b); the AC terms are 0 and no bin is visible for the phase."""
    x = torch.full((1, 1, 32, 32), 0.4, dtype=torch.float64)
    y = x + 0.02
    dc, t00 = 8 * 255 * 0.4, WATSON_DCT_TABLE[0][0]
    a, b = t00, dc**W * t00 ** (1 - W)
    s = (a * math.exp(a - b) + b) / (math.exp(a - b) + 1)
    expected = 16 ** 0.25 * (8 * 255 * 0.02) / s
    assert watson_distance(x, y).item() == pytest.approx(expected, rel=1e-6)


def test_the_phase_term_is_arccos_cos_of_the_phase_difference_on_the_visible_bins():
    ref, dist = torch.randn(2, 1000, dtype=torch.complex128)
    visible = torch.rand(1000) < 0.7
    expected = np.where(visible.numpy(), np.arccos(np.cos(np.angle(ref.numpy()) - np.angle(dist.numpy()))), 0.0)
    np.testing.assert_allclose(phase_angles(ref, dist, visible).numpy(), expected, atol=1e-7)
    assert phase_angles(ref, torch.zeros_like(dist), torch.ones(1000, dtype=torch.bool)).abs().max() == 0


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_watson_is_zero_for_identical_images(name):
    for x in (photo(name), torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 40, 40), torch.rand(2, 2, 28, 20)):
        assert torch.equal(watson_distance(x, x), torch.zeros(len(x)))


def test_a_side_not_a_multiple_of_8_is_padded_by_repeating_the_last_row_and_column():
    x = photo("camera", 28)
    y = distorted(x, "both")
    padded = [F.pad(t, (0, 4, 0, 4), mode="replicate") for t in (x, y)]
    assert watson_distance(x, y).item() == watson_distance(*padded).item() > 0


def test_watson_is_not_symmetric_the_reference_masks():
    """The thresholds come from the reference: detail a blur removes is judged against the masking of
    the sharp image, and the same detail added back against the blurred image's weaker masking."""
    x = photo("astronaut")
    y = blur(x, 1.5)
    assert watson_distance(y, x).item() > 1.2 * watson_distance(x, y).item()


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_watson_grows_with_the_strength_of_the_noise(name):
    x = 0.1 + 0.8 * photo(name)  # within [0.1, 0.9]: no clipping at these noise levels
    noise = torch.randn_like(x)
    d = [watson_distance(x, x + s * noise).item() for s in (0.002, 0.005, 0.01, 0.02, 0.04, 0.08)]
    assert all(b > a for a, b in zip(d, d[1:])), d


def test_contrast_masking_the_same_noise_costs_less_on_a_textured_image_than_on_a_flat_one():
    textured = 0.2 + 0.6 * photo("camera")
    flat = torch.full_like(textured, textured.mean().item())
    noise = 0.03 * torch.randn_like(textured)
    on_texture, on_flat = watson_distance(textured, textured + noise), watson_distance(flat, flat + noise)
    assert on_texture.item() < 0.8 * on_flat.item()
    assert torch.equal(F.mse_loss(textured + noise, textured), F.mse_loss(flat + noise, flat))


@pytest.mark.parametrize("name", ["astronaut", "camera", "coffee"])
def test_a_one_pixel_translation_costs_watson_under_half_of_noise_of_the_same_mse(name):
    """The paper's argument for the DFT: a shift mostly moves phases. Under MSE the two cost the same
    (ratio 1, by construction); under Watson-DFT the shift costs < 0.5 of the noise (measured 0.25-0.37)."""
    x = photo(name)
    shifted = torch.cat([x[..., :1], x[..., :-1]], dim=-1)  # one pixel right, the first column repeated
    noise = torch.randn_like(x)
    noisy = x + noise * (F.mse_loss(shifted, x) / noise.pow(2).mean()).sqrt()
    assert F.mse_loss(noisy, x).item() == pytest.approx(F.mse_loss(shifted, x).item(), rel=1e-5)
    assert watson_distance(x, shifted).item() < 0.5 * watson_distance(x, noisy).item()


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_broadcasts_importance_samples_against_the_data(name):
    lik = LIKELIHOODS.build(name, (3, 32, 32), CONFIG)
    out = torch.randn(2, 4, 3, 32, 32)  # (K, B, C, H, W)
    x = torch.rand(4, 3, 32, 32)
    p = lik(out, 3)
    assert isinstance(p, PerceptualLoss) and p.batch_shape == (2, 4) and p.event_shape == (3, 32, 32)
    lp = p.log_prob(x)
    assert lp.shape == (2, 4) and (lp < 0).all()
    one = lik(out[1, 2], 3).log_prob(x[2])
    assert one.shape == () and one.item() == pytest.approx(lp[1, 2].item(), rel=1e-5)
    torch.testing.assert_close(p.mean, torch.sigmoid(out))
    assert torch.equal(p.sample(), p.mean) and p.sample((5,)).shape == (5, 2, 4, 3, 32, 32)
    assert p.expand((3, 2, 4)).log_prob(x).shape == (3, 2, 4)
    with pytest.raises(KlvaeError, match=r"log_prob needs images of shape \(\*, 3, 32, 32\); got \(4, 3, 32, 31\)"):
        p.log_prob(x[..., :31])


@pytest.mark.parametrize("name, default", [("ssim", 3 * 64 * 64), ("ms-ssim", 3 * 64 * 64), ("watson", 3 * 64 * 64 // 16)])
def test_the_scale_is_the_loss_scale_or_the_documented_default(name, default):
    entry = LIKELIHOODS[name]
    assert (entry.bound, entry.discrete, entry.params, entry.data_range) == (False, False, 1, (0.0, 1.0))
    assert LIKELIHOODS.build(name, (3, 64, 64), CONFIG).scale == default
    assert LIKELIHOODS.build(name, (3, 64, 64), SimpleNamespace(loss_scale=2.5)).scale == 2.5
    x = torch.rand(2, 3, 64, 64)
    out = torch.logit(x.clamp(0.2, 0.8))
    lp = LIKELIHOODS.build(name, (3, 64, 64), SimpleNamespace(loss_scale=2.5))(out, 3).log_prob(x)
    distance = {"ssim": ssim_distance, "ms-ssim": lambda a, b: 1 - ms_ssim(a, b), "watson": watson_distance}[name]
    torch.testing.assert_close(lp, -2.5 * distance(x, torch.sigmoid(out)))


@pytest.mark.parametrize("name", NAMES)
def test_black_white_and_extreme_outputs_give_finite_log_probs_and_gradients(name):
    lik = LIKELIHOODS.build(name, (3, 32, 32), CONFIG)
    x = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32), torch.rand(3, 32, 32), torch.zeros(3, 32, 32)])
    out = torch.stack([torch.full((3, 32, 32), -1e4), torch.full((3, 32, 32), -1e4),
                       1e4 * torch.randn(3, 32, 32), torch.full((3, 32, 32), 1e4)])
    out = torch.cat([out, torch.logit(x[2:3].clamp(1e-3, 1 - 1e-3))])  # and one nearly identical to its data
    x = torch.cat([x, x[2:3]])
    out.requires_grad_(True)
    lp = lik(out, 3).log_prob(x)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(out.grad).all()
    assert lp[0].item() == 0.0  # black data, black mean


@pytest.mark.parametrize("name", ["ssim", "watson"])
def test_training_end_to_end_with_a_perceptual_loss(tmp_path, name, rng):
    waves = np.sin(np.linspace(0, 3, 32)[:, None] * rng.uniform(1, 4, (40, 3, 1, 1)) + rng.uniform(0, 6, (40, 3, 1, 1)))
    images = (0.5 + 0.4 * waves * np.cos(np.linspace(0, 2, 32))).astype(np.float32)  # (40, 3, 32, 32)
    np.save(tmp_path / "images.npy", images)
    run = klvae.fit({"data": str(tmp_path / "images.npy"), "likelihood": name, "net": "mlp", "hidden": [16],
                     "latent_dim": 2, "epochs": 2, "batch_size": 8, "progress": False, "out": str(tmp_path / "run")})
    rows = read_metrics(run)
    assert len(rows) == 2 and all(math.isfinite(r["train_elbo"]) and r["val_elbo"] <= 0 for r in rows)
    result = klvae.evaluate(run, iwae_k=2)
    assert result["bound"] is False and "not a normalised likelihood" in result["note"]
