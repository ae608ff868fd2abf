"""Latent families on dynamically binarised MNIST: Gaussian (N-VAE) vs von Mises-Fisher (S-VAE) vs
Power Spherical, at latent dimensions 2, 5, 10, 20, 40, with the MLP of Davidson et al. 2018
(784-256-128 | 128-256-784, ReLU, Bernoulli logits, Adam 1e-3, batch 64). For each: test IWAE
NLL (nats, K importance samples), test KL, and training samples/s measured over training steps.

As in Davidson et al., a spherical latent of dimension d lives on S^d in R^{d+1} (d degrees of
freedom, like the Gaussian's R^d); `--same-ambient` gives it R^d instead (S^{d-1}, one fewer).

    python benchmarks/bench_latents.py [--data-dir DIR] [--epochs E] [--iwae-k K] [--test-points N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

import klvae
from klvae.evaluation import evaluate_model
from klvae.evaluation.likelihood import split_data
from klvae.run import atomic_write, load_config

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gaussian", "vmf", "power-spherical")
DIMS = (2, 5, 10, 20, 40)


class StepTimer(L.Callback):
    """Seconds spent in training batches (validation and file writing excluded)."""

    def __init__(self):
        self.seconds, self.samples = 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self.t
        self.samples += len(batch)


def run_one(latent: str, dim: int, args, out: Path) -> dict:
    timer = StepTimer()
    ambient = dim + 1 if latent != "gaussian" and not args.same_ambient else dim
    config = {"data": "mnist", "data_dir": args.data_dir, "net": "mlp", "hidden": [256, 128], "latent": latent,
              "latent_dim": ambient, "batch_size": 64, "lr": 1e-3, "epochs": args.epochs, "progress": False,
              "seed": 0, "out": str(out / f"{latent}-{dim}")}
    run = klvae.fit(config, overwrite=True, callbacks=[timer])
    model = klvae.load(run)
    x = split_data(load_config(run), "test")[: args.test_points]
    result = evaluate_model(model, x, iwae_k=args.iwae_k)
    return {"latent": latent, "dim": dim, "nll_iwae": result["nll_iwae"], "kl": result["kl"],
            "elbo": result["elbo"], "samples_per_s": timer.samples / max(timer.seconds, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA") or str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iwae-k", type=int, default=500, help="importance samples (Davidson et al.: 500)")
    ap.add_argument("--test-points", type=int, default=10_000)
    ap.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    ap.add_argument("--out", default="runs/bench/latents.json")
    ap.add_argument("--same-ambient", action="store_true", help="spherical latents in R^d instead of R^(d+1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: these nets are too small to gain from more, and a "
                         "second thread on a busy 2-core machine slows them many times over)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"MNIST (dynamic), MLP 784-256-128, {args.epochs} epochs, batch 64, {args.threads} torch thread(s); "
          f"test IWAE K={args.iwae_k} on {args.test_points} test images; nats per image", flush=True)
    print(f"{'d':>3s} {'latent':16s} {'NLL':>8s} {'KL':>7s} {'samples/s':>10s}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for dim in args.dims:
            for latent in FAMILIES:
                row = run_one(latent, dim, args, Path(tmp))
                rows.append(row)
                print(f"{dim:3d} {latent:16s} {row['nll_iwae']:8.2f} {row['kl']:7.2f} {row['samples_per_s']:10.0f}",
                      flush=True)
    atomic_write(args.out, json.dumps({"config": vars(args), "rows": rows}, indent=2))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
