"""Do directional latents recover the angles that generated the data? Train each latent family on
the generated pendulum (one angle) and two-link arm (two angles) images and report, per true
angle, the circular correlation with the best latent angle, and the test IWAE NLL.

    python benchmarks/bench_angles.py [--epochs E] [--seeds S] [--data pendulum arm]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import klvae
from klvae.run import atomic_write

# (data, latent, latent_dim): spherical latents on S^1 for one angle; von Mises gets one angle per joint
CASES = [
    ("pendulum", "gaussian", 2), ("pendulum", "vmf", 2), ("pendulum", "power-spherical", 2),
    ("pendulum", "von-mises", 1),
    ("arm", "gaussian", 4), ("arm", "vmf", 4), ("arm", "von-mises", 2),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iwae-k", type=int, default=200)
    ap.add_argument("--data", nargs="+", default=["pendulum", "arm"], help="run only these data sets")
    ap.add_argument("--out", default="runs/bench/angles.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # small nets; see bench_latents.py
    rows = []
    print(f"{args.epochs} epochs, MLP 784-256-128, {args.seeds} seeds (median); circular correlation per true angle")
    print(f"{'data':9s} {'latent':16s} {'d':>2s} {'circular corr.':>16s} {'NLL':>8s}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for data, latent, dim in [c for c in CASES if c[0] in args.data]:
            runs = []
            for seed in range(args.seeds):
                run = klvae.fit({"data": data, "latent": latent, "latent_dim": dim, "net": "mlp", "hidden": [256, 128],
                                 "epochs": args.epochs, "seed": seed, "progress": False,
                                 "out": str(Path(tmp) / f"{data}-{latent}-{seed}")})
                runs.append(klvae.evaluate(run, iwae_k=args.iwae_k))
            corr = [statistics.median(r["circular_correlation"][k] for r in runs)
                    for k in range(len(runs[0]["circular_correlation"]))]
            nll = statistics.median(r["nll_iwae"] for r in runs)
            rows.append({"data": data, "latent": latent, "dim": dim, "circular_correlation": corr, "nll_iwae": nll,
                         "per_seed": [r["circular_correlation"] for r in runs]})
            print(f"{data:9s} {latent:16s} {dim:2d} {' '.join(f'{c:.3f}' for c in corr):>16s} {nll:8.2f}", flush=True)
    atomic_write(args.out, json.dumps({"config": vars(args), "rows": rows}, indent=2))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
