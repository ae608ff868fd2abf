"""Anomaly detection with a VAE's scores (klvae.evaluation.anomaly) on dynamically binarised MNIST.

(a) Leave one digit out: for each digit d, an MLP VAE (784-H-H | 16 Gaussian latents, Bernoulli
    logits) is trained on the nine other digits (`exclude_labels: [d]`), the whole MNIST test set is
    scored and the test images of digit d are the anomalies: AUROC per digit and per score, and the
    mean over digits.
(b) Fashion-MNIST as out-of-distribution data for an MNIST model, and MNIST for a Fashion-MNIST
    model: the in-distribution test set is normal, the other test set anomalous. An AUROC below 0.5
    means the score ranks the OOD data as *more* normal — for ``iwae`` / ``elbo``, the likelihood
    then calls OOD data more likely (Nalisnick et al. 2019); ``typicality`` and ``complexity`` are
    the two corrections.

Scores are nats per image, higher = more anomalous; IWAE with K importance samples. ``--config``
trains a recipe instead of the MLP VAE (its data, exclusions, epochs and output replaced), e.g. a
hierarchy (configs/deep-hvae-mnist.yaml), whose scores then include the KL of each layer and the
likelihood ratios LLR^{>k} of Havtorn et al. 2021 (``--llr-k``).

    python benchmarks/bench_anomaly.py [--data-dir DIR] [--epochs E] [--digits 0 1 ...] [--iwae-k K]
        [--config YAML] [--set KEY=VALUE ...] [--llr-k K ...] [--skip-loo] [--skip-ood] [--out runs/bench/anomaly.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

import klvae
from klvae.evaluation.anomaly import score
from klvae.run import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def train(data: str, exclude: list[int], args, out: Path) -> Path:
    base = yaml.safe_load(Path(args.config).read_text()) if args.config else {
        "net": "mlp", "hidden": args.hidden, "latent_dim": args.latent_dim, "batch_size": 100, "lr": 1e-3}
    base.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    config = {**base, "data": data, "data_dir": args.data_dir, "epochs": args.epochs, "seed": 0,
              "exclude_labels": exclude, "progress": False, "accelerator": args.accelerator, "out": str(out)}
    config.pop("lr_schedule", None)  # a recipe's long learning-rate stages do not fit a short run
    return klvae.fit(config, overwrite=True)


def scored(run: Path, args, **which):
    return score(run, iwae_k=args.iwae_k, data_dir=args.data_dir, device=args.device, reference_size=args.reference_size,
                 batch_size=args.batch_size, llr_k=args.llr_k, **which)


def leave_one_out(args, tmp: Path) -> dict:
    rows, names = {}, None
    print(f"(a) leave one digit out: AUROC per held-out digit (test set, n=10000)", flush=True)
    for d in args.digits:
        start = time.perf_counter()
        run = train("mnist", [d], args, tmp / f"loo-{d}")
        report = scored(run, args, anomalous_labels=[d])
        if names is None:
            names = list(report.metrics)
            print(f"{'digit':>5s} " + " ".join(f"{n:>10s}" for n in names) + f" {'seconds':>8s}", flush=True)
        rows[d] = {n: m["auroc"] for n, m in report.metrics.items()} | {
            "auprc": {n: m["auprc"] for n, m in report.metrics.items()}, "seconds": time.perf_counter() - start}
        print(f"{d:5d} " + " ".join(f"{rows[d][n]:10.3f}" for n in names) + f" {rows[d]['seconds']:8.1f}", flush=True)
    mean = {n: sum(r[n] for r in rows.values()) / len(rows) for n in names}
    print(f"{'mean':>5s} " + " ".join(f"{mean[n]:10.3f}" for n in names), flush=True)
    return {"per_digit": rows, "mean_auroc": mean}


def ood(args, tmp: Path) -> dict:
    results = {}
    print(f"(b) OOD data sets (AUROC / AUPRC; < 0.5 AUROC: the OOD data is ranked more normal)", flush=True)
    for normal, other in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        start = time.perf_counter()
        run = train(normal, [], args, tmp / f"ood-{normal}")
        report = scored(run, args, ood_data=other)
        means = [s["mean"] for s in report.summary()["sets"]]
        key = f"{normal} model, {other} as OOD"
        results[key] = {"metrics": report.metrics, "mean_in": means[0], "mean_ood": means[1],
                        "seconds": time.perf_counter() - start}
        print(f"  {key} ({results[key]['seconds']:.0f} s); mean score in-distribution -> OOD:", flush=True)
        for n, m in report.metrics.items():
            flag = "  OOD ranked more normal" if m["auroc"] < 0.5 else ""
            print(f"    {n:11s} AUROC {m['auroc']:.3f}  AUPRC {m['auprc']:.3f}  "
                  f"({means[0][n]:8.2f} -> {means[1][n]:8.2f} nats){flag}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA") or str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--iwae-k", type=int, default=100)
    ap.add_argument("--config", default=None, help="a recipe (YAML) to train instead of the MLP VAE")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="options of the recipe to change, "
                    "e.g. kl_steps=1000")
    ap.add_argument("--llr-k", type=int, nargs="+", default=None, help="a hierarchy's levels k of LLR^{>k} "
                    "(default: 1 .. L-1)")
    ap.add_argument("--reference-size", type=int, default=2000, help="training points centring typicality")
    ap.add_argument("--batch-size", type=int, default=None, help="scoring batch (default: evaluation's 100)")
    ap.add_argument("--skip-loo", action="store_true", help="skip (a) leave one digit out")
    ap.add_argument("--skip-ood", action="store_true", help="skip (b) Fashion-MNIST <-> MNIST")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="runs/bench/anomaly.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = "cuda" if torch.cuda.is_available() and args.accelerator in ("auto", "gpu", "cuda") else "cpu"
    start = time.perf_counter()
    model = args.config or f"MLP 784-{'-'.join(map(str, args.hidden))}-{args.latent_dim}"
    print(f"MNIST / Fashion-MNIST (dynamic binarisation), {model}, {args.epochs} epochs, IWAE K={args.iwae_k}, "
          f"device {args.device}; nats per image", flush=True)
    result = {"epochs": args.epochs, "model": model, "iwae_k": args.iwae_k, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_loo:
            result["leave_one_out"] = leave_one_out(args, Path(tmp))
        if not args.skip_ood:
            result["ood"] = ood(args, Path(tmp))
    result["seconds"] = time.perf_counter() - start
    print(f"total {result['seconds']:.0f} s; wrote {atomic_write(args.out, json.dumps(result, indent=2))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
