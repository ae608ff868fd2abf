"""The Watson-DFT perceptual distance of Czolbe, Krause, Cox and Igel, "A Loss Function for
Generative Neural Networks Based on Watson's Perceptual Model" (NeurIPS 2020).

Watson's model, as the paper uses it, compares two images block by block in frequency space: each
8x8 block's coefficients are divided by a visibility threshold ``s`` (in just-noticeable
differences, JND) that grows with the block's brightness (luminance masking) and with the
coefficient's own amplitude in the reference (contrast masking); the weighted differences are
pooled by a Minkowski sum. The paper's DFT variant applies the model to the amplitudes of each
block's 2-D DFT and adds a weighted phase term, so that a small translation, which mostly moves
phases, costs less than under a pixel-wise distance:

    D(x, x') = (sum_{k,u,v} |(A_kuv - A'_kuv) / s_kuv|^p)^(1/p) + sum_{k,u,v} w_phase |angle(X_kuv, X'_kuv)|
    t^L_kuv  = t_uv (A_k00 / mean_k A_k00)^alpha                       (luminance masking)
    s_kuv    = smax(t^L_kuv, A_kuv^w (t^L_kuv)^(1 - w))                 (contrast masking)

with x the reference (the data) and x' the distorted image (the reconstruction): the masking
thresholds come from the reference alone, so D is not symmetric, as in the paper.

Parameters. The paper tunes every parameter on human judgements (the 2AFC data of Zhang et al.
2018); those tuned values are not used here (no downloaded weights). We use the values of Watson's
model as the paper presents it (Watson 1993): ``alpha = 0.649``, ``w = 0.7``, ``p = 4`` and
Watson's 8x8 DCT sensitivity table ``t`` (grey levels, orthonormal DCT); the same values start the
Watson-DCT of the paper's released code, whose Watson-DFT starts instead from a uniform table,
alpha = 0.1, w = 0.2 and p = 1 on its own units. Choices of ours where the paper learns a value or
leaves it open:

- units: pixels in [0, 1] are taken as 8-bit grey levels (x 255) and the block DFT is orthonormal,
  so the DC coefficient (8 x the block mean) and the amplitudes are on the scale of Watson's DCT
  coefficients; a bin with a conjugate partner carries half a grating's energy, so its amplitude is
  multiplied by sqrt(2) (the one-sided amplitude), which makes a grating's amplitude its DCT value;
- the DFT table: the bin of f cycles per block (|u| folded at 4) takes the DCT entry of the same
  frequency, index 2f (the DCT's index k is k/2 cycles per block), and 7 for f = 4;
- bins: the 8 x 5 half-plane of the real DFT, less the 6 bins mirrored inside its first and last
  columns; the 4 real bins (DC and Nyquist) have a sign but no phase, so they enter the amplitude
  term with their sign (|X - X'|) and get no phase weight;
- the phase term: ``w_phase = (64 * 34)^(-3/4) = 0.0031`` on every bin (the paper learns a weight
  per bin; its code starts them at e^-2 with p = 1): then one radian on each of the 64 x 34 bins of
  a 64x64 channel (the size of the paper's 2AFC patches) weighs what one JND on each bin weighs
  after the p = 4 pooling, N w = N^(1/4); and it counts only bins visible in the reference
  (amplitude above t^L), since the phase of an invisible component is invisible; without this,
  noise under one grey level scrambles the phases of near-empty bins and outweighs the masked
  amplitude term (a textured image would then hide noise worse than a flat one). A phase is also
  taken as unchanged where an amplitude is below 1e-3 (there it is undefined);
- smax(a, b) = (a e^a + b e^b) / (e^a + e^b), the paper's smooth maximum (for differentiability);
- the mean DC term is the reference image's own, per channel; DC terms are floored by one grey level
  (``DC_FLOOR``, 8 in DC units) so a black block's threshold stays finite;
- colour: RGB images are converted to YCbCr (JPEG, full range) and each channel gets its own Watson
  distance with the same starting parameters, summed with equal weights 1/3 (the paper's colour
  extension, with its learned channel weights at their equal starting values); other channel counts
  are compared per channel with weights 1/C;
- the block grid is fixed (the paper shifts it at random while training); a side that is not a
  multiple of 8 is padded at its end by repeating the last row or column.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLOCK = 8
ALPHA = 0.649  # luminance masking exponent (Watson 1993)
W = 0.7  # contrast masking exponent (Watson 1993)
P = 4.0  # Minkowski pooling exponent (Watson 1993)
PHASE_WEIGHT = (64 * 34) ** -0.75  # ours (the paper learns it), 0.0031: see the module docstring
GREY_LEVELS = 255.0  # pixels in [0, 1] -> 8-bit grey levels, the units of Watson's table
DC_FLOOR = BLOCK * 1.0  # ours: one grey level, in DC units (8 x the block mean)
PHASE_FLOOR = 1e-3  # ours: amplitudes below this have no defined phase
YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))  # JPEG; + (0, .5, .5)

# Watson (1993), the DCT sensitivity table (thresholds in grey levels, orthonormal 8x8 DCT), row u, column v
WATSON_DCT_TABLE = (
    (1.40, 1.01, 1.16, 1.66, 2.40, 3.43, 4.79, 6.56),
    (1.01, 1.45, 1.32, 1.52, 2.00, 2.71, 3.67, 4.93),
    (1.16, 1.32, 2.24, 2.59, 2.98, 3.64, 4.60, 5.88),
    (1.66, 1.52, 2.59, 3.77, 4.55, 5.30, 6.28, 7.60),
    (2.40, 2.00, 2.98, 4.55, 6.15, 7.46, 8.71, 10.17),
    (3.43, 2.71, 3.64, 5.30, 7.46, 9.62, 11.58, 13.51),
    (4.79, 3.67, 4.60, 6.28, 8.71, 11.58, 14.50, 17.29),
    (6.56, 4.93, 5.88, 7.60, 10.17, 13.51, 17.29, 21.15),
)


def dft_table() -> torch.Tensor:
    """The sensitivity table of the DFT bins, (8, 5) in grey levels: bin (u, v) of f = (min(u, 8 - u), v)
    cycles per block takes the DCT entry (2 f_u, 2 f_v), capped at index 7."""
    index = [min(2 * min(f, BLOCK - f), BLOCK - 1) for f in range(BLOCK)]
    table = torch.tensor(WATSON_DCT_TABLE)
    return table[index][:, index[: BLOCK // 2 + 1]]


def bin_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, real), (8, 5) bool: the bins counted (the half-plane less its 6 mirrored bins) and the
    4 real ones (DC and Nyquist)."""
    u = torch.arange(BLOCK)[:, None]
    v = torch.arange(BLOCK // 2 + 1)[None, :]
    edge_column = (v == 0) | (v == BLOCK // 2)
    real = edge_column & ((u == 0) | (u == BLOCK // 2))
    kept = ~(edge_column & (u > BLOCK // 2))
    return kept, real


def pad_to_blocks(x: torch.Tensor) -> torch.Tensor:
    """x: (N, C, H, W) -> (N, C, H', W') with H', W' the next multiples of 8, by repeating the last
    row and column."""
    pad_h, pad_w = -x.shape[-2] % BLOCK, -x.shape[-1] % BLOCK
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def block_dft(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal 2-D DFT of each 8x8 block: x (N, C, H, W), H and W multiples of 8 ->
    (N, C, H/8, W/8, 8, 5) complex, the half-plane ``numpy.fft.rfft2(block, norm="ortho")``."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(3, 4)
    return torch.fft.rfft2(blocks, norm="ortho")


def amplitudes(coef: torch.Tensor) -> torch.Tensor:
    """One-sided amplitudes of block DFT coefficients (..., 8, 5): |X|, times sqrt(2) where the bin
    has a conjugate partner (all but the 4 real bins)."""
    _, real = bin_masks()
    gain = torch.where(real, 1.0, math.sqrt(2.0)).to(coef.real)
    return coef.abs() * gain


def luminance_thresholds(dc: torch.Tensor, table: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """t^L, luminance masking: dc (N, C, By, Bx) DC terms of the reference's blocks, table (8, 5) ->
    (N, C, By, Bx, 8, 5) = table ((dc + f) / (mean dc + f))^alpha, f = DC_FLOOR, the mean per image
    and channel."""
    mean = dc.mean(dim=(-2, -1), keepdim=True)
    ratio = (dc + DC_FLOOR) / (mean + DC_FLOOR)
    return table * ratio[..., None, None] ** alpha


def smooth_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a e^a + b e^b) / (e^a + e^b), elementwise, without overflow."""
    weights = torch.softmax(torch.stack([a, b]), dim=0)
    return weights[0] * a + weights[1] * b


def thresholds(amp: torch.Tensor, t_lum: torch.Tensor, w: float = W) -> torch.Tensor:
    """s, contrast masking: smax(t^L, A^w (t^L)^(1 - w)), from the reference's amplitudes amp and t^L,
    both (..., 8, 5), in grey levels."""
    return smooth_max(t_lum, amp.clamp_min(1e-6) ** w * t_lum ** (1 - w))


def phase_angles(ref: torch.Tensor, dist: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """|phase(ref) - phase(dist)| wrapped to [0, pi], i.e. arccos(cos(dPhi)), for complex (...);
    0 where ``visible`` (bool, (...)) is False or an amplitude is below PHASE_FLOOR. Computed as the
    angle of ref * conj(dist) so its gradient stays finite."""
    z = ref * dist.conj()
    defined = visible & (ref.abs() > PHASE_FLOOR) & (dist.abs() > PHASE_FLOOR)
    z = torch.where(defined, z, torch.ones_like(z))
    return torch.where(defined, torch.atan2(z.imag.abs(), z.real), torch.zeros_like(z.real))


def watson_per_channel(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """Watson-DFT distance of each channel, in grey levels: (N, C, H, W) twice, H and W multiples
    of 8 -> (N, C) in JND."""
    kept, real = (m.to(reference.device) for m in bin_masks())
    ref, dist = block_dft(reference), block_dft(distorted)  # (N, C, By, Bx, 8, 5)
    ref_amp, dist_amp = amplitudes(ref), amplitudes(dist)
    t_lum = luminance_thresholds(ref[..., 0, 0].real, dft_table().to(ref_amp))
    s = thresholds(ref_amp, t_lum)
    diff = torch.where(real, ref.real - dist.real, ref_amp - dist_amp)
    error = torch.where(kept, diff / s, torch.zeros_like(diff)).flatten(2)  # (N, C, By * Bx * 40)
    amplitude_term = torch.linalg.vector_norm(error, ord=P, dim=2)
    phase_weight = torch.where(kept & ~real, PHASE_WEIGHT, 0.0).to(ref_amp)
    phase_term = (phase_angles(ref, dist, ref_amp > t_lum) * phase_weight).flatten(2).sum(2)
    return amplitude_term + phase_term


def to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] -> YCbCr (N, 3, H, W) in [0, 1] (JPEG, full range)."""
    matrix = torch.tensor(YCBCR, dtype=x.dtype, device=x.device)
    offset = torch.tensor([0.0, 0.5, 0.5], dtype=x.dtype, device=x.device)
    return torch.einsum("dc,nchw->ndhw", matrix, x) + offset[:, None, None]


def watson_distance(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """The Watson-DFT distance D(reference, distorted): (N, C, H, W) twice, in [0, 1] -> (N,) in JND.

    Not symmetric: the masking thresholds come from ``reference`` (the data). RGB (C = 3) is
    compared in YCbCr; each channel's distance is weighted 1/C."""
    if reference.shape != distorted.shape or reference.dim() != 4:
        raise ValueError(f"watson_distance needs two (N, C, H, W) images of one shape; got "
                         f"{tuple(reference.shape)} and {tuple(distorted.shape)}")
    if reference.shape[1] == 3:
        reference, distorted = to_ycbcr(reference), to_ycbcr(distorted)
    reference = pad_to_blocks(reference * GREY_LEVELS)
    distorted = pad_to_blocks(distorted * GREY_LEVELS)
    return watson_per_channel(reference, distorted).mean(dim=1)
