"""Bowman et al.'s (2016) phenomenon, measured on WordNet's usage sentences: with an LSTM decoder,
does the plain ELBO drive the KL to ~0, and do KL annealing with word dropout, free bits and
cyclical annealing keep z in use, at what cost in NLL against the same decoder without z (a
language model)? One budget for every setting; test figures by IWAE.

    python benchmarks/bench_sentences.py [--data-dir DIR] [--train-limit 20000] [--epochs 3] [--iwae-k 100] [--seeds 3]

Each setting is trained with seeds 0 .. S-1; the table gives the mean and the standard deviation
over seeds (and the mean standard error of the NLL over the test sentences).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import klvae

BASE = {"data": "wordnet-examples", "model": "seqvae", "vocab_size": 10_000, "max_length": 40, "latent_dim": 32,
        "hidden": [256], "embedding_dim": 128, "decoder_cell": "lstm", "batch_size": 64, "lr": 1e-3,
        "progress": False}
SETTINGS = {
    "plain ELBO": {},
    "annealing + word dropout": {"kl_schedule": "sigmoid", "kl_steps": 2000, "word_dropout": 0.25},
    "free bits 0.1 / dim": {"free_bits": 0.1},
    "cyclical annealing": {"kl_schedule": "cyclical", "kl_steps": 2000, "kl_cycles": 4},
    "language model (no z)": {"latent_dim": 0},
}
COLUMNS = ("nll_iwae", "ppl", "kl", "mutual_information", "active_units", "token_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA", "../shared/data"))
    parser.add_argument("--train-limit", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. S-1 per setting")
    parser.add_argument("--out", default="runs/bench-sentences")
    args = parser.parse_args()
    rows = {}
    print(f"wordnet-examples, first {args.train_limit} training sentences, {args.epochs} epochs, "
          f"{args.seeds} seed(s); test set, IWAE K={args.iwae_k}; mean (sd over seeds)")
    for name, changes in SETTINGS.items():
        runs = []
        for seed in range(args.seeds):
            out = Path(args.out) / f"{name.split(' ')[0].replace('/', '')}-seed{seed}"
            done = out / "eval_test.json"
            if done.is_file() and json.loads(done.read_text()).get("iwae_k") == args.iwae_k:  # a finished run: reuse
                runs.append({**{k: json.loads(done.read_text())[k] for k in (*COLUMNS, "nll_iwae_se")},
                             "train_seconds": None})
                continue
            t0 = time.perf_counter()
            run = klvae.fit({**BASE, **changes, "data_dir": args.data_dir, "train_limit": args.train_limit,
                             "epochs": args.epochs, "seed": seed, "out": str(out)}, overwrite=True)
            seconds = time.perf_counter() - t0
            r = klvae.evaluate(run, iwae_k=args.iwae_k)
            runs.append({**{k: r[k] for k in COLUMNS}, "nll_iwae_se": r["nll_iwae_se"], "train_seconds": seconds})
        rows[name] = {"seeds": runs, **{k: summary([run[k] for run in runs]) for k in (*COLUMNS, "nll_iwae_se")}}
        print(f"{name:26s} " + "  ".join(f"{k} {fmt(rows[name][k])}" for k in COLUMNS), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_sentences.json").write_text(json.dumps(rows, indent=2))


def summary(values: list[float]) -> dict:
    """Mean and standard deviation over seeds (0 for one seed)."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.3g} ({stat['sd']:.2g})"


if __name__ == "__main__":
    main()
