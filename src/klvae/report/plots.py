"""Image grids and training curves, written atomically as PNG."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from klvae.errors import KlvaeError  # noqa: E402
from klvae.run import atomic_save  # noqa: E402


def drawable(event_shape: tuple[int, ...]) -> bool:
    """True for (H, W), (1|3, H, W) and flat square (side*side,) data points."""
    shape = tuple(event_shape)
    if len(shape) == 1:
        return math.isqrt(shape[0]) ** 2 == shape[0]
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


def as_images(x: torch.Tensor) -> np.ndarray:
    """(N, *event) -> (N, H, W) or (N, H, W, 3) in [0, 1]; flat data of a square size is reshaped."""
    if not drawable(x.shape[1:]):
        raise KlvaeError(
            f"pictures need image data (N, H, W), (N, 1|3, H, W) or (N, side*side); got {tuple(x.shape)}"
        )
    x = x.detach().float().cpu()
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        x = x.view(-1, 1, side, side)
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    x = x.clamp(0, 1).numpy()
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def image_grid(x: torch.Tensor, rows: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, *event) images into one array, ``rows`` rows (default: square-ish)."""
    imgs = as_images(x)
    n, h, w = imgs.shape[:3]
    rows = rows or max(1, math.isqrt(n))
    cols = math.ceil(n / rows)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad, *imgs.shape[3:])
    grid = np.ones(shape, dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def save_grid(path: str | Path, x: torch.Tensor, rows: int | None = None) -> Path:
    grid = image_grid(x, rows)
    scale = max(1, 600 // max(grid.shape[:2]))  # small images (8x8 digits) are blown up to be seen
    big = np.kron(grid, np.ones((scale, scale) + (1,) * (grid.ndim - 2), dtype=grid.dtype))
    return atomic_save(path, lambda buf: plt.imsave(buf, big, cmap="gray", vmin=0, vmax=1, format="png"))


def save_curves(path: str | Path, rows: list[dict[str, float]]) -> Path:
    """ELBO (train/val) and KL per epoch, the two panels a user watches first."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("train_elbo", "val_elbo"):
        ax1.plot(epochs, [r.get(key, np.nan) for r in rows], label=key)
    for key in ("train_kl", "val_kl"):
        ax2.plot(epochs, [r.get(key, np.nan) for r in rows], label=key)
    ax1.set(xlabel="epoch", ylabel="nats per data point", title="ELBO")
    ax2.set(xlabel="epoch", ylabel="nats per data point", title="KL(q(z|x) || p(z))")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return atomic_save(path, lambda buf: fig.savefig(buf, format="png", dpi=100))
    finally:
        plt.close(fig)
