"""Images in colour and 8-bit pixels: likelihoods, perceptual losses and the image reader.

(a) ``nll``: test NLL in bits per dimension (IWAE, K samples) of the discretised logistic and its
    mixture beside the Gaussian with a learned scale, on the faces at hand: Frey Face (28x20) and
    scikit-image's 100 LFW faces (25x25), MLP VAEs (200 epochs at batch 50 on Frey Face's 1,592
    training images; 1,000 at batch 10 on LFW's 81). The Gaussian's
    density is over [0, 1]: its bits per dimension are -log2 p(x) / D + 8 (the density of one of 256
    bins of width 1/256), an approximation, not a bound, on undequantised data.
(b) ``losses``: one conv VAE on the generated colour shapes (32x32 RGB) trained ``--epochs`` with
    the Gaussian, the discretised logistic and its mixture, SSIM and the Watson-DFT loss: bits per
    dimension where there is a likelihood; the Fréchet distance of 2,000 samples and of the test
    reconstructions to the test images in the features of klvae's colour-shapes classifier (not
    Inception's); the reconstructions' mean squared error and their sharpness (the mean squared
    Laplacian of the reconstructions over that of the real images: 1 is as sharp as the data); and
    pictures (samples and reconstructions) into ``--pictures``.
(c) ``reader``: images per second of a folder of JPEGs (CelebA's 178x218, written from the colour
    shapes) read into 64x64 batches of 128: from memory (decoded once) against from disk with 0, 1
    and 2 worker processes, and the time to decode the folder into memory.

    python benchmarks/bench_images.py [--parts nll losses reader] [--epochs E] [--iwae-k K]
        [--nll-sets frey-face lfw-faces] [--losses gaussian ...] [--loss-scale-times F] [--pictures docs/images] [--out runs/bench/images.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import klvae
from klvae.data import load_dataset
from klvae.data.images import ImageOptions
from klvae.evaluation.likelihood import evaluate
from klvae.evaluation.sample_quality import frechet_distance, reference_classifier, reference_data
from klvae.generation import reconstruct, sample
from klvae.loaders import loader
from klvae.report.plots import save_grid
from klvae.run import atomic_write

NLL_SETS = {"frey-face": (200, 50), "lfw-faces": (1000, 10)}  # (epochs, batch): ~6,000-9,000 steps each
LIKELIHOODS = ("gaussian", "logistic", "logistic-mixture")
LOSSES = ("gaussian", "logistic", "logistic-mixture", "ssim", "watson")


def train(data: str, likelihood: str, net: str, hidden: list[int], epochs: int, out: Path, **extra) -> Path:
    config = {"data": data, "likelihood": likelihood, "net": net, "hidden": hidden, "latent_dim": 32,
              "batch_size": 100, "lr": 1e-3, "epochs": epochs, "seed": 0, "progress": False, "out": str(out),
              "mixture_components": 5, **extra}
    return klvae.fit(config, overwrite=True)


def bits(result: dict, likelihood: str, d: int) -> float:
    """Test NLL in bits per dimension: the discrete likelihoods' own, the Gaussian's converted."""
    if "bits_per_dim" in result:
        return result["bits_per_dim"]
    return result["nll_iwae"] / (d * math.log(2)) + 8


def part_nll(args, root: Path) -> dict:
    table = {}
    for data in args.nll_sets:
        for likelihood in LIKELIHOODS:
            start = time.perf_counter()
            epochs, batch = NLL_SETS[data]
            run = train(data, likelihood, "mlp", [512, 256], epochs, root / f"{data}-{likelihood}", batch_size=batch)
            result = evaluate(run, "test", args.iwae_k)
            d = math.prod(json.loads((run / "model.json").read_text())["event_shape"])
            table[f"{data}/{likelihood}"] = {"bits_per_dim": bits(result, likelihood, d), "nll_nats": result["nll_iwae"],
                                             "kl": result["kl"], "seconds": time.perf_counter() - start}
            print(data, likelihood, table[f"{data}/{likelihood}"], flush=True)
    return table


def loss_scale(loss: str, times: float) -> float | None:
    """``times`` the default weight of a loss on 32x32 RGB images (None for a likelihood)."""
    from types import SimpleNamespace

    from klvae.likelihoods import LIKELIHOODS

    if LIKELIHOODS[loss].get("bound", True):
        return None
    return times * LIKELIHOODS.build(loss, (3, 32, 32), SimpleNamespace(loss_scale=None)).scale


def laplacian_energy(x: torch.Tensor) -> float:
    """Mean squared discrete Laplacian of images x: (N, C, H, W) per channel (interior pixels)."""
    lap = (x[..., 1:-1, :-2] + x[..., 1:-1, 2:] + x[..., :-2, 1:-1] + x[..., 2:, 1:-1] - 4 * x[..., 1:-1, 1:-1])
    return lap.pow(2).mean().item()


def part_losses(args, root: Path) -> dict:
    data = reference_data("colour-shapes")
    classifier, _ = reference_classifier(data)
    real = data.test[:2000]
    real_features = classifier.features(real)
    pictures = Path(args.pictures)
    pictures.mkdir(parents=True, exist_ok=True)
    table = {}
    for loss in args.losses:
        start = time.perf_counter()
        scale = {"loss_scale": loss_scale(loss, args.loss_scale_times)} if args.loss_scale_times != 1 else {}
        run = train("colour-shapes", loss, "conv", [256], args.epochs, root / f"shapes-{loss}", **scale)
        model = klvae.load(run)
        with torch.no_grad():
            fake = torch.cat([sample(model, 500, seed=i) for i in range(4)]).clamp(0, 1)
            recon = torch.cat([reconstruct(model, real[i:i + 500]) for i in range(0, len(real), 500)]).clamp(0, 1)
        result = evaluate(run, "test", args.iwae_k)
        row = {"frechet_samples": frechet_distance(classifier.features(fake), real_features),
               "frechet_reconstructions": frechet_distance(classifier.features(recon), real_features),
               "mse": (recon - real).pow(2).mean().item(),
               "sharpness": laplacian_energy(recon) / laplacian_energy(real),
               "bits_per_dim": bits(result, loss, 3 * 32 * 32) if result.get("bound", True) else None,
               "kl": result["kl"], "seconds": time.perf_counter() - start}
        name = loss if not scale else f"{loss}-x{args.loss_scale_times:g}"
        save_grid(pictures / f"shapes-{name}-samples.png", fake[:32], rows=4)
        save_grid(pictures / f"shapes-{name}-reconstructions.png", torch.cat([real[:16], recon[:16]]), rows=2)
        table[name] = {**row, **scale}
        print(name, row, flush=True)
    return table


def write_folder(folder: Path, n: int) -> None:
    """n JPEGs of 178x218 (CelebA's aligned size): colour shapes, upscaled."""
    from PIL import Image

    x = load_dataset("colour-shapes").train[:n]
    for i, img in enumerate((x * 255).round().byte().permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img).resize((178, 218), Image.Resampling.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def images_per_second(x, workers: int, batch: int = 128, epochs: int = 2) -> float:
    batches = loader(x, batch, True, workers=workers)
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for b in batches:
            seen += len(b)
    return seen / (time.perf_counter() - start)


def part_reader(args, root: Path) -> dict:
    folder = root / "jpegs"
    folder.mkdir(exist_ok=True)
    write_folder(folder, args.reader_images)
    start = time.perf_counter()
    memory = load_dataset(folder, val_fraction=0.01, image_options=ImageOptions(64, "rgb", "memory")).train
    decode = time.perf_counter() - start
    disk = load_dataset(folder, val_fraction=0.01, image_options=ImageOptions(64, "rgb", "disk")).train
    table = {"images": len(memory), "decode_into_memory_s": decode,
             "memory_images_per_s": images_per_second(memory, 0)}
    for workers in (0, 1, 2):
        table[f"disk_{workers}_workers_images_per_s"] = images_per_second(disk, workers, epochs=1)
    print(table, flush=True)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["nll", "losses", "reader"], choices=("nll", "losses", "reader"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--loss-scale-times", type=float, default=1.0,
                   help="the losses (ssim, watson) weighted this many times their default --loss-scale")
    p.add_argument("--nll-sets", nargs="+", default=list(NLL_SETS), choices=list(NLL_SETS))
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    p.add_argument("--iwae-k", type=int, default=100)
    p.add_argument("--reader-images", type=int, default=3000)
    p.add_argument("--pictures", default="runs/bench/images")
    p.add_argument("--out", default="runs/bench/images.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    np.random.seed(0)
    results = {"epochs": args.epochs, "iwae_k": args.iwae_k}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            results[part] = {"nll": part_nll, "losses": part_losses, "reader": part_reader}[part](args, Path(tmp))
    atomic_write(args.out, json.dumps(results, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
