"""Image grids and the figures of a run (training curves, KL diagnostics), as PNG.

Figure builders take metrics rows (``klvae.run.read_metrics``: one dict per epoch) and return a
``matplotlib.figure.Figure``; ``png_bytes`` renders one. Every KL, ELBO and MI axis is in nats per
data point."""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from klvae.errors import KlvaeError  # noqa: E402
from klvae.files import atomic_save, atomic_write  # noqa: E402


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


AT_SIZE = 32  # images of this side and above (photos) are drawn at their size, one pixel per pixel


def save_grid(path: str | Path, x: torch.Tensor, rows: int | None = None) -> Path:
    """The images x tiled into a PNG: photos at their size, small images (8x8 digits) blown up."""
    grid = image_grid(x, rows)
    small = min(as_images(x[:1]).shape[1:3]) < AT_SIZE
    scale = max(1, 600 // max(grid.shape[:2])) if small else 1
    big = np.kron(grid, np.ones((scale, scale) + (1,) * (grid.ndim - 2), dtype=grid.dtype))
    return atomic_save(path, lambda buf: plt.imsave(buf, big, cmap="gray", vmin=0, vmax=1, format="png"))


NATS = "nats per data point"


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def has_column(rows: list[dict[str, float]], key: str) -> bool:
    """True when some row holds a finite value of ``key``."""
    return any(isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) for r in rows)


def column(rows: list[dict[str, float]], key: str) -> np.ndarray:
    """(len(rows),) float values of ``key``; NaN where a row lacks it."""
    return np.array([r.get(key, np.nan) for r in rows], dtype=float)


def indexed_columns(rows: list[dict[str, float]], prefix: str) -> list[str]:
    """The columns prefix + i present (i an integer), in order of i."""
    keys = {k for r in rows for k in r if k.startswith(prefix) and k[len(prefix):].isdigit()}
    return sorted(keys, key=lambda k: int(k[len(prefix):]))


def kl_dim_columns(rows: list[dict[str, float]]) -> list[str]:
    """The kl_dim_i columns present, in order of i."""
    return indexed_columns(rows, "kl_dim_")


def dims_by_final_kl(rows: list[dict[str, float]]) -> list[int]:
    """Latent dimensions i, largest KL of the last epoch first (NaN last)."""
    last = {int(k[7:]): rows[-1].get(k, np.nan) for k in kl_dim_columns(rows)}
    return sorted(last, key=lambda i: (0, -last[i], i) if math.isfinite(last[i]) else (1, 0.0, i))


def _lines(ax, rows: list[dict[str, float]], keys: tuple[str, ...], title: str, ylabel: str = NATS) -> None:
    epochs = column(rows, "epoch")
    for key in keys:
        if has_column(rows, key):
            ax.plot(epochs, column(rows, key), marker="o" if len(rows) < 30 else None, ms=3, label=key)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def curves_figure(rows: list[dict[str, float]]) -> Figure:
    """ELBO, reconstruction and KL (train/val) and the KL weight, per epoch; the capacity C of a
    capacity schedule on the weight panel's right axis."""
    fig = Figure(figsize=(10, 6.4), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    _lines(ax1, rows, ("train_elbo", "val_elbo"), "ELBO")
    _lines(ax2, rows, ("train_recon", "val_recon"), "reconstruction  E_q[log p(x|z)]")
    _lines(ax3, rows, ("train_kl", "val_kl"), "KL(q(z|x) || p(z))")
    _lines(ax4, rows, ("beta",), "KL weight at epoch end", ylabel="weight")
    if has_column(rows, "capacity"):
        twin = ax4.twinx()
        twin.plot(column(rows, "epoch"), column(rows, "capacity"), color="tab:red", ls="--", label="capacity C")
        twin.set_ylabel("capacity C (nats)")
        twin.legend(fontsize=8, loc="lower right")
    return fig


def kl_weight_steps_figure(steps: list[dict[str, float]]) -> Figure:
    """The KL weight per optimisation step (steps.csv), with the capacity C when recorded and the
    batch-mean KL when recorded."""
    with_kl = has_column(steps, "kl")
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 2 if with_kl else 1)
    ax = axes[0] if with_kl else axes
    step = column(steps, "step")
    ax.plot(step, column(steps, "kl_weight"), label="KL weight")
    ax.set(xlabel="step", ylabel="weight", title="KL weight per step")
    ax.grid(alpha=0.3)
    if has_column(steps, "capacity"):
        twin = ax.twinx()
        twin.plot(step, column(steps, "capacity"), color="tab:red", ls="--", label="capacity C")
        twin.set_ylabel("capacity C (nats)")
        twin.legend(fontsize=8, loc="lower right")
    if with_kl:
        axes[1].plot(step, column(steps, "kl"), lw=0.8, color="tab:green")
        axes[1].set(xlabel="step", ylabel=NATS, title="KL per step (batch mean)")
        axes[1].grid(alpha=0.3)
    return fig


def kl_heatmap_figure(rows: list[dict[str, float]]) -> Figure:
    """Per-dimension validation KL over epochs: one row per latent dimension, sorted by the last
    epoch's KL (largest on top), one column per epoch; colour in nats."""
    order = dims_by_final_kl(rows)
    return _heatmap(rows, [f"kl_dim_{i}" for i in order], [f"z{i}" for i in order], "dimension, by final KL",
                    "KL per latent dimension (validation)")


def kl_layer_columns(rows: list[dict[str, float]]) -> list[str]:
    """The kl_layer_i columns present (a hierarchy's levels, bottom to top), in order of i."""
    return indexed_columns(rows, "kl_layer_")


def kl_layer_heatmap_figure(rows: list[dict[str, float]]) -> Figure:
    """Per-layer validation KL of a hierarchy over epochs: one row per latent layer, the top layer
    on top, one column per epoch; colour in nats."""
    keys = kl_layer_columns(rows)[::-1]
    return _heatmap(rows, keys, [f"layer {k[9:]}" for k in keys], "latent layer (0: next to x)",
                    "KL per latent layer (validation)")


def _heatmap(rows: list[dict[str, float]], keys: list[str], labels: list[str], ylabel: str, title: str) -> Figure:
    values = np.array([column(rows, k) for k in keys])  # (rows of the map, epochs)
    epochs = column(rows, "epoch")
    fig = Figure(figsize=(10, min(8.0, 2.4 + 0.18 * len(keys))), layout="constrained")
    ax = fig.subplots()
    first, last = (epochs[0], epochs[-1]) if len(epochs) else (0, 0)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis", interpolation="nearest",
                      extent=(first - 0.5, last + 0.5, len(keys) - 0.5, -0.5), vmin=0)
    step = max(1, math.ceil(len(keys) / 32))
    ax.set_yticks(range(0, len(keys), step), [labels[j] for j in range(0, len(keys), step)], fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    fig.colorbar(image, ax=ax, label="KL (nats)")
    return fig


def active_units_figure(rows: list[dict[str, float]], latent_dim: int) -> Figure:
    """Active units per epoch against the ceiling ``latent_dim``."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.subplots()
    _lines(ax, rows, ("active_units",), "active units (Cov_x E_q[z_i] > 0.01)", ylabel="units")
    ax.axhline(latent_dim, color="grey", ls="--", label=f"latent_dim = {latent_dim}")
    ax.set_ylim(-0.2, latent_dim + max(0.5, latent_dim * 0.05))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def information_figure(rows: list[dict[str, float]]) -> Figure:
    """Mutual information I(x;z) and KL(q(z) || p(z)) of the aggregated posterior per epoch, beside
    the validation KL they add up to."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.subplots()
    _lines(ax, rows, ("val_kl", "val_mi", "val_agg_kl"), "E[KL(q(z|x) || p(z))] = I(x;z) + KL(q(z) || p(z))")
    return fig


def compare_figure(curves: dict[str, list[dict[str, float]]]) -> Figure:
    """Validation KL and the KL weight per epoch, one line per run (``curves``: name -> rows)."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for name, rows in curves.items():
        ax1.plot(column(rows, "epoch"), column(rows, "val_kl"), label=name)
        ax2.plot(column(rows, "epoch"), column(rows, "beta"), label=name)
    ax1.set(xlabel="epoch", ylabel=NATS, title="validation KL(q(z|x) || p(z))")
    ax2.set(xlabel="epoch", ylabel="weight", title="KL weight at epoch end")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def save_curves(path: str | Path, rows: list[dict[str, float]]) -> Path:
    """curves.png: ELBO, reconstruction, KL and KL weight per epoch."""
    return atomic_write(path, png_bytes(curves_figure(rows)))
