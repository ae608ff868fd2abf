"""Speed benchmark on MNIST: training samples/s of klvae.fit against a plain PyTorch loop of the
same VAE and pythae (when installed), and IWAE (K=1000) points/s of klvae's evaluate_model against
pythae's get_nll. Contestants run in interleaved rounds; each figure is the median over rounds.

    python benchmarks/bench_train.py [--data-dir DIR] [--quick] [--out runs/bench/bench.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pythae's trainer always draws a progress bar

import torch  # noqa: E402

import klvae  # noqa: E402
from klvae.data import load_dataset  # noqa: E402
from klvae.errors import KlvaeError  # noqa: E402
from klvae.evaluation import evaluate_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contestants import BATCH, PYTHAE, klvae_bf16_train, klvae_train, plain_train, pythae_model, pythae_nll, pythae_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IWAE_K = 1000
# rounds, warm-up batches, timed batches per round, IWAE test points, IWAE rounds
SIZES = {"normal": (5, 10, 100, 200, 3), "quick": (3, 5, 30, 50, 2)}


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores that other processes kept busy over ``seconds``, from /proc/stat (None elsewhere)."""
    try:
        ticks = []
        for wait in (seconds, 0):
            with open("/proc/stat") as fh:
                ticks.append([int(v) for v in fh.readline().split()[1:8]])
            time.sleep(wait)
    except OSError:
        return None
    d = [b - a for a, b in zip(*ticks)]
    return (os.cpu_count() or 1) * (1 - (d[3] + d[4]) / max(sum(d), 1))  # 3, 4: idle, iowait


def rate(count: int, fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return count / (time.perf_counter() - t)


def interleaved(fns: dict, rounds: int, unit: str, run) -> dict[str, list[float]]:
    """rates[name][round] = run(fn); the order flips every round to cancel drift."""
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            rates[name].append(round(run(fns[name], r), 2))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()) + f" {unit}", flush=True)
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="klvae speed benchmark: training and IWAE throughput on MNIST")
    ap.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA") or str(ROOT.parent / "shared" / "data"),
                    help="folder holding mnist/ (default: $KLVAE_DATA, else ../shared/data)")
    ap.add_argument("--quick", action="store_true", help="a short run: fewer batches and test points")
    ap.add_argument("--out", default="runs/bench/bench.json", help="JSON results file (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        data = load_dataset("mnist", args.data_dir, binarize="dynamic", val_fraction=0.1, seed=0)
    except KlvaeError as err:
        print(f"bench: no MNIST in {args.data_dir} ({str(err).split(';')[0]}); pass --data-dir DIR or set KLVAE_DATA",
              file=sys.stderr)
        return 2
    rounds, warmup, n, n_eval, eval_rounds = SIZES["quick" if args.quick else "normal"]
    busy = busy_cores()  # other work on the machine makes every figure noisy
    note = "" if busy is None else f"; {busy:.1f} cores busy before the start" + (" (noisy figures)" * (busy > 0.3))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"pythae {PYTHAE or 'absent'}{note}")
    print(f"training: {rounds} rounds x {n} timed batches of {BATCH} (+{warmup} warm-up) per contestant", flush=True)
    trainers = {"klvae": klvae_train, "klvae-bf16": klvae_bf16_train, "plain": plain_train,
                **({"pythae": pythae_train} if PYTHAE else {})}
    with tempfile.TemporaryDirectory() as tmp:
        train = interleaved(trainers, rounds, "samples/s",
                            lambda fn, r: n * BATCH / fn(data, args.data_dir, warmup, n, Path(tmp), r))
        model = klvae.load(Path(tmp) / "klvae")

    x = data.test[:n_eval]
    print(f"IWAE K={IWAE_K}: {eval_rounds} rounds over the first {n_eval} test points (klvae's trained nets)",
          flush=True)
    evals = {"klvae": lambda xs: evaluate_model(model, xs, iwae_k=IWAE_K)}
    if PYTHAE:
        twin = pythae_model(model)
        evals["pythae"] = lambda xs: pythae_nll(twin, xs, IWAE_K)
    for fn in evals.values():
        fn(x[:2])  # warm-up
    iwae = interleaved(evals, eval_rounds, "points/s", lambda fn, r: rate(n_eval, fn, x))

    med = {"train_samples_per_s": {k: round(statistics.median(v), 1) for k, v in train.items()},
            "iwae_points_per_s": {k: round(statistics.median(v), 2) for k, v in iwae.items()}}
    tr, ev = med["train_samples_per_s"], med["iwae_points_per_s"]
    results = {
        "quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "pythae": PYTHAE, "busy_cores_before": busy and round(busy, 2), "batch_size": BATCH,
        "timed_samples_per_round": n * BATCH, "iwae_k": IWAE_K, "iwae_points": n_eval, **med,
        "rounds": {"train": train, "iwae": iwae},
        "ratios": {"train_klvae_over_plain": round(tr["klvae"] / tr["plain"], 3),
                   "train_klvae_over_pythae": round(tr["klvae"] / tr["pythae"], 3) if PYTHAE else None,
                   "train_klvae_bf16_over_pythae": round(tr["klvae-bf16"] / tr["pythae"], 3) if PYTHAE else None,
                   "train_klvae_bf16_over_plain": round(tr["klvae-bf16"] / tr["plain"], 3),
                   "iwae_klvae_over_pythae": round(ev["klvae"] / ev["pythae"], 3) if PYTHAE else None},
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
    names = ("klvae", "klvae-bf16", "plain", "pythae")
    print(f"\n{'median of rounds':28s}" + "".join(f"{k:>12s}" for k in names))
    for label, key in (("train samples/s", "train_samples_per_s"), (f"IWAE K={IWAE_K} points/s", "iwae_points_per_s")):
        cells = (f"{res[key][k]:12.1f}" if k in res[key] else f"{'-':>12s}" for k in names)
        print(f"{label:28s}" + "".join(cells))
    r = res["ratios"]
    print(f"\ntraining  klvae/plain        {r['train_klvae_over_plain']:.2f}x")
    print(f"training  klvae-bf16/plain   {r['train_klvae_bf16_over_plain']:.2f}x")
    if res["pythae"]:
        print(f"training  klvae/pythae       {r['train_klvae_over_pythae']:.2f}x   (target >= 1.5x)")
        print(f"training  klvae-bf16/pythae  {r['train_klvae_bf16_over_pythae']:.2f}x   (bfloat16 matrix products)")
        print(f"IWAE      klvae/pythae       {r['iwae_klvae_over_pythae']:.2f}x   (target >= 2x)")
    else:
        print("pythae: not installed (pip install pythae to compare)")


if __name__ == "__main__":
    sys.exit(main())
