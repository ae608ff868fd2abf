"""Speed benchmark: training throughput and IWAE evaluation throughput on MNIST.

Training: an MLP VAE 784-512-512-32 (Gaussian encoder, Bernoulli decoder on logits, dynamic
binarisation, batch 100, Adam lr 1e-3) trained by ``klvae.fit``, by a plain PyTorch loop of the
same model and, when ``import pythae`` works, by pythae's BaseTrainer. Each contestant trains the
same number of timed batches after a warm-up, in interleaved rounds; only training steps are
timed (no validation, no file writing). Evaluation: IWAE with K=1000 on the first test images,
``klvae.evaluation.evaluate_model`` against pythae's ``VAE.get_nll``.

    python benchmarks/bench_train.py [--data-dir DIR] [--quick] [--out runs/bench/bench.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pythae's trainer always draws a progress bar

import lightning as L
import torch

import klvae
from klvae.data import load_dataset
from klvae.errors import KlvaeError
from klvae.evaluation import evaluate_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contestants import PYTHAE, plain_train, pythae_model, pythae_nll, pythae_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, LATENT, BATCH, LR, IWAE_K = [512, 512], 32, 100, 1e-3, 1000
# (rounds, warm-up batches, timed batches per round, IWAE test points)
SIZES = {"normal": (2, 20, 270, 200), "quick": (2, 5, 40, 50)}


class BatchTimer(L.Callback):
    """Times training batches ``warmup`` .. ``warmup + n`` of the first epoch, then stops the run
    (the validation and file writing that follow are outside the timed span)."""

    def __init__(self, warmup: int, n: int):
        self.warmup, self.n, self.seconds = warmup, n, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.warmup - 1:
            self.t0 = time.perf_counter()
        elif batch_idx == self.warmup + self.n - 1:
            self.seconds = time.perf_counter() - self.t0
            trainer.should_stop = True


def klvae_train(data_dir: str, warmup: int, n: int, out: Path) -> float:
    """Seconds for n batches of ``klvae.fit`` (the run directory is left in ``out``)."""
    timer = BatchTimer(warmup, n)
    config = klvae.TrainConfig(data="mnist", data_dir=data_dir, net="mlp", hidden=HIDDEN, latent_dim=LATENT,
                               batch_size=BATCH, lr=LR, epochs=1, progress=False, out=str(out))
    klvae.fit(config, overwrite=True, callbacks=[timer])
    return timer.seconds


def data_dir_default() -> str:
    return os.environ.get("KLVAE_DATA") or str(ROOT.parent / "shared" / "data")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=data_dir_default(), help="folder holding mnist/ (default: $KLVAE_DATA, else ../shared/data)")
    ap.add_argument("--quick", action="store_true", help="a short run (fewer batches and test points)")
    ap.add_argument("--out", default="runs/bench/bench.json", help="JSON results file")
    args = ap.parse_args(argv)
    try:
        data = load_dataset("mnist", args.data_dir, binarize="dynamic", val_fraction=0.1, seed=0)
    except KlvaeError as err:
        print(f"bench: MNIST not found ({err})", file=sys.stderr)
        return 2
    rounds, warmup, n, n_eval = SIZES["quick" if args.quick else "normal"]
    names = ["klvae", "plain"] + (["pythae"] if PYTHAE else [])
    seconds: dict[str, float] = {k: 0.0 for k in names}
    print(f"training: {rounds} rounds x {n} timed batches of {BATCH} (+{warmup} warm-up) per contestant, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "klvae"
        for r in range(rounds):  # alternate the order to cancel drift
            for name in (names if r % 2 == 0 else names[::-1]):
                if name == "klvae":
                    s = klvae_train(args.data_dir, warmup, n, run_dir)
                elif name == "plain":
                    s = plain_train(data.train, HIDDEN, LATENT, LR, BATCH, warmup, n, seed=r)
                else:
                    s = pythae_train(data.train, HIDDEN, LATENT, LR, BATCH, warmup, n, Path(tmp) / "pythae", seed=r)
                seconds[name] += s
                print(f"  round {r + 1} {name:7s} {n * BATCH / s:9.0f} samples/s", flush=True)
        model = klvae.load(run_dir)
    train = {k: rounds * n * BATCH / s for k, s in seconds.items()}

    x = data.test[:n_eval]
    print(f"IWAE K={IWAE_K} on {n_eval} test points (the klvae-trained networks)", flush=True)
    evals = {"klvae": lambda xs: evaluate_model(model, xs, iwae_k=IWAE_K)}
    if PYTHAE:
        other = pythae_model(model, HIDDEN, LATENT)
        evals["pythae"] = lambda xs: pythae_nll(other, xs, IWAE_K)
    points = {}
    for name, fn in evals.items():
        fn(x[:2])  # warm-up
        t = time.perf_counter()
        fn(x)
        points[name] = n_eval / (time.perf_counter() - t)

    ratio = lambda d, a, b: d[a] / d[b] if b in d else None  # noqa: E731
    results = {
        "quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "pythae": PYTHAE, "batch_size": BATCH, "timed_samples": rounds * n * BATCH, "iwae_k": IWAE_K,
        "iwae_points": n_eval, "train_samples_per_s": train, "iwae_points_per_s": points,
        "ratios": {"train_klvae_over_plain": ratio(train, "klvae", "plain"),
                   "train_klvae_over_pythae": ratio(train, "klvae", "pythae"),
                   "iwae_klvae_over_pythae": ratio(points, "klvae", "pythae")},
    }
    report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"results written to {out}")
    return 0


def report(res: dict) -> None:
    """The table on stdout."""
    rows = [("train samples/s", res["train_samples_per_s"]), (f"IWAE K={res['iwae_k']} points/s", res["iwae_points_per_s"])]
    print(f"\n{'':26s}{'klvae':>10s}{'plain':>10s}{'pythae':>10s}")
    for label, vals in rows:
        cells = "".join(f"{vals[k]:10.1f}" if k in vals else f"{'-':>10s}" for k in ("klvae", "plain", "pythae"))
        print(f"{label:26s}{cells}")
    r = res["ratios"]
    fmt = lambda v: f"{v:.2f}x" if v is not None else "n/a"  # noqa: E731
    print(f"\ntraining  klvae/plain  {fmt(r['train_klvae_over_plain'])}")
    if res["pythae"]:
        print(f"training  klvae/pythae {fmt(r['train_klvae_over_pythae'])}   (target >= 1.5x)")
        print(f"IWAE      klvae/pythae {fmt(r['iwae_klvae_over_pythae'])}   (target >= 2x)")
    else:
        print("pythae: not installed (pip install pythae to compare)")


if __name__ == "__main__":
    sys.exit(main())
