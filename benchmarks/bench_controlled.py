"""Controlled generation, measured: a sentence VAE conditioned on WordNet's part of speech
(--condition label --conditional-prior) samples sentences of each class, and a classifier trained
on the real training sentences (TF-IDF words and bigrams, logistic regression; scikit-learn) says
which class each sample reads as. Chance is the share of the largest class.

    python benchmarks/bench_controlled.py [--data-dir DIR] [--train-limit 20000] [--epochs 3] [-n 200]
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import klvae
from klvae.api import sample, texts

CONFIG = {"data": "wordnet-examples", "model": "seqvae", "vocab_size": 10_000, "max_length": 40, "latent_dim": 32,
          "hidden": [256], "embedding_dim": 128, "decoder_cell": "lstm", "batch_size": 64, "lr": 1e-3,
          "kl_schedule": "sigmoid", "kl_steps": 2000, "word_dropout": 0.25, "condition": "label",
          "conditional_prior": True, "progress": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA", "../shared/data"))
    parser.add_argument("--train-limit", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("-n", type=int, default=200, help="samples per class")
    parser.add_argument("--out", default="runs/bench-controlled")
    args = parser.parse_args()
    config = klvae.TrainConfig(**CONFIG, data_dir=args.data_dir, train_limit=args.train_limit, epochs=args.epochs,
                               out=args.out)
    data = config.data.load(0)
    names = data.codec.label_names
    classifier = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2), LogisticRegression(max_iter=2000))
    classifier.fit(data.texts["train"], [names[i] for i in data.train_labels.tolist()])
    truth = np.array([names[i] for i in data.test_labels.tolist()])
    guess = classifier.predict(data.texts["test"])
    real = float((guess == truth).mean())
    recall = {n: float((guess[truth == n] == n).mean()) for n in names}
    chance = max(Counter(data.test_labels.tolist()).values()) / len(data.test_labels)
    run = klvae.fit(config, overwrite=True)
    rows = {}
    print(f"classifier on real test sentences: accuracy {real:.3f} (chance {chance:.3f})")
    for name in names:
        generated = texts(run, sample(run, args.n, seed=1, label=name, decoding="sample"))
        predicted = classifier.predict(generated)
        rows[name] = float((predicted == name).mean())
        print(f"  samples of class {name:5s}: read as {name} {rows[name]:.3f} (real {name} test sentences: "
              f"{recall[name]:.3f}); e.g. {generated[0]!r}")
    result = {"classifier_test_accuracy": real, "chance": chance, "samples_read_as_their_class": rows,
              "real_read_as_their_class": recall,
              "mean": sum(rows.values()) / len(rows)}
    print(f"mean over classes {result['mean']:.3f} (chance {1 / len(names):.3f} for a uniform guess)")
    (Path(args.out) / "bench_controlled.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
