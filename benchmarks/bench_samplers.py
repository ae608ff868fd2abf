"""Ex-post samplers side by side: for a VAE of MNIST and one of Fashion-MNIST, draw z from the
prior and from each density fitted to the training set's codes (`klvae fit-sampler`), decode
10,000 samples and score them in the features of klvae's own classifier (Fréchet distance, improved
precision and recall, class coverage), beside the test codes' NLL, KL(q(z) || sampler) and the
seconds to fit and to draw.

    python benchmarks/bench_samplers.py [--data mnist fashion-mnist] [--epochs 20] [--n 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import klvae
from klvae.api import fit_sampler, sample
from klvae.evaluation.sample_quality import sample_quality

MODEL = {"latent_dim": 16, "hidden": [512, 256], "batch_size": 100, "lr": 1e-3, "progress": False}
SAMPLERS = ("gmm", "two-stage", "flow", "diffusion")


def VARIANTS(samplers):  # noqa: N802
    """(label, sampler, sampling options): each sampler as fitted, and the diffusion also by DDIM."""
    for name in samplers:
        yield name, name, {}
        if name == "diffusion":
            yield "diffusion-ddim50", name, {"method": "ddim", "steps": 50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["mnist", "fashion-mnist"])
    parser.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=10_000, help="samples scored per sampler")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--codes", default="mean", choices=("mean", "sample"),
                        help="what the samplers are fitted to (sample: the KL to q(z) is reported too)")
    parser.add_argument("--no-quality", action="store_true", help="the densities' figures only: no samples scored")
    parser.add_argument("--out", default="runs/bench-samplers")
    args = parser.parse_args()
    table = {}
    for data in args.data:
        run = Path(args.out) / data
        if not (run / "model.safetensors").is_file():
            t0 = time.perf_counter()
            klvae.fit({**MODEL, "data": data, "data_dir": args.data_dir, "epochs": args.epochs, "out": str(run)},
                      overwrite=True)
            print(f"{data}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = {}
        for label, name, options in [("prior", "prior", {}), *VARIANTS(args.samplers)]:
            if name == "prior":
                fit = {}
            elif not options:  # a variant reuses the sampler fitted just before
                fit = fit_sampler(run, name, name=f"{name}-{args.codes}", data_dir=args.data_dir, codes=args.codes)
            if args.no_quality:
                if name != "prior" and not options:
                    rows[label] = fit
                    print(f"{data:14s} {label:16s} " + "  ".join(f"{k} {v:.3f}" for k, v in fit.items()
                                                                if isinstance(v, float)), flush=True)
                continue
            t0 = time.perf_counter()
            source = name if name == "prior" else f"{name}-{args.codes}"
            x = sample(run, args.n, seed=1, source=source, data_dir=args.data_dir, sampler_options=options)
            seconds = time.perf_counter() - t0  # draw 10,000 codes and decode them
            q = sample_quality(x, data, args.data_dir).to_dict()
            rows[label] = {**{k: fit.get(k) for k in ("nll_test", "prior_nll_test", "kl_aggregate",
                                                     "prior_kl_aggregate", "fit_seconds", "sample_seconds_10k",
                                                     "exact")},
                          "decode_seconds": seconds, **{k: q[k] for k in ("frechet", "precision", "recall",
                                                                           "coverage") if k in q}}
            r = rows[label]
            print(f"{data:14s} {label:16s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()
                                                        if isinstance(v, float)), flush=True)
        table[data] = rows
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"bench_samplers_{args.codes}.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
