"""Bowman et al.'s (2016) phenomenon, measured on WordNet's usage sentences: with an LSTM decoder,
does the plain ELBO drive the KL to ~0, and do KL annealing with word dropout, free bits and
cyclical annealing keep z in use, at what cost in NLL against the same decoder without z (a
language model)? One budget for every setting; test figures by IWAE.

    python benchmarks/bench_sentences.py [--data-dir DIR] [--train-limit 20000] [--epochs 3] [--iwae-k 100]
"""
from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-sentences")
    args = parser.parse_args()
    rows = {}
    print(f"wordnet-examples, first {args.train_limit} training sentences, {args.epochs} epochs, seed {args.seed}; "
          f"test set, IWAE K={args.iwae_k}")
    print(f"{'setting':26s} {'NLL':>8s} {'PPL':>8s} {'KL':>7s} {'MI':>6s} {'AU':>4s} {'tok acc':>8s} {'train s':>8s}")
    for name, changes in SETTINGS.items():
        out = Path(args.out) / name.split(" ")[0].replace("/", "")
        t0 = time.perf_counter()
        run = klvae.fit({**BASE, **changes, "data_dir": args.data_dir, "train_limit": args.train_limit,
                         "epochs": args.epochs, "seed": args.seed, "out": str(out)}, overwrite=True)
        seconds = time.perf_counter() - t0
        r = klvae.evaluate(run, iwae_k=args.iwae_k)
        rows[name] = {**{k: r[k] for k in COLUMNS}, "nll_iwae_se": r["nll_iwae_se"], "train_seconds": seconds}
        print(f"{name:26s} {r['nll_iwae']:8.2f} {r['ppl']:8.1f} {r['kl']:7.2f} {r['mutual_information']:6.2f} "
              f"{r['active_units']:4d} {r['token_accuracy']:8.3f} {seconds:8.0f}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_sentences.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
