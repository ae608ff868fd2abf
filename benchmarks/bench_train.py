"""Speed benchmark on MNIST: training samples/s of klvae.fit against a plain PyTorch loop of the
same VAE and pythae (when installed), IWAE (K=1000) points/s of klvae's evaluate_model against
pythae's get_nll, and the end-to-end time of whole epochs (validation and files included) of
Burda et al.'s 1-layer model by klvae.fit, a bare loop and pythae. Contestants run in interleaved
rounds; each figure is the median over rounds.

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
from e2e import bare_e2e, klvae_e2e, pythae_e2e  # noqa: E402
from seq_contestants import klvae_seq, plain_seq  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IWAE_K = 1000
# rounds, warm-up batches, timed batches per round, IWAE test points, IWAE rounds
SIZES = {"normal": (5, 10, 100, 200, 3), "quick": (3, 5, 30, 50, 2)}
E2E_SIZES = {"normal": (3, 3), "quick": (1, 1)}  # end to end: rounds, epochs per run


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
    ap = argparse.ArgumentParser(description="klvae speed benchmark: training and IWAE throughput on MNIST, and "
                                 "whole epochs of Burda et al.'s 1-layer model end to end")
    ap.add_argument("--data-dir", default=os.environ.get("KLVAE_DATA") or str(ROOT.parent / "shared" / "data"),
                    help="folder holding mnist/ (default: $KLVAE_DATA, else ../shared/data)")
    ap.add_argument("--quick", action="store_true", help="a short run: fewer batches, test points and epochs")
    ap.add_argument("--out", default="runs/bench/bench.json", help="JSON results file (default: %(default)s)")
    ap.add_argument("--sentences-only", action="store_true", help="only the sentence VAE's tokens/s against a plain loop")
    args = ap.parse_args(argv)
    if args.sentences_only:
        with tempfile.TemporaryDirectory() as tmp:
            seq = sequence_throughput(args.data_dir, Path(tmp), SIZES["quick" if args.quick else "normal"])
        med = {k: statistics.median(v) for k, v in seq.items()}
        print(f"sentences klvae/plain {med['klvae'] / med['plain']:.2f}x (tokens/s: {med['klvae']:.0f} against "
              f"{med['plain']:.0f}, medians of {len(seq['klvae'])} rounds)")
        return 0
    try:
        data = load_dataset("mnist", args.data_dir, binarize="dynamic", val_fraction=0.1, seed=0)
    except KlvaeError as err:
        print(f"bench: no MNIST in {args.data_dir} ({str(err).split(';')[0]}); pass --data-dir DIR or set KLVAE_DATA",
              file=sys.stderr)
        return 2
    size = "quick" if args.quick else "normal"
    busy = busy_cores()  # other work on the machine makes every figure noisy
    note = "" if busy is None else f"; {busy:.1f} cores busy before the start" + (" (noisy figures)" * (busy > 0.3))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"pythae {PYTHAE or 'absent'}{note}")
    with tempfile.TemporaryDirectory() as tmp:
        train, model = throughput(data, args.data_dir, Path(tmp), SIZES[size])
        iwae = iwae_throughput(model, data.test, SIZES[size])
        e2e = end_to_end(args.data_dir, Path(tmp), *E2E_SIZES[size])
        seq = sequence_throughput(args.data_dir, Path(tmp), SIZES[size])
    results = summarise(args.quick, busy, SIZES[size], train, iwae, e2e, seq)
    report(results)
    write_json(Path(args.out), results)
    return 0


def throughput(data, data_dir: str, tmp: Path, sizes: tuple) -> tuple[dict, torch.nn.Module]:
    """Training samples/s of the 784-512-512-32 model per round, and klvae's trained model."""
    rounds, warmup, n, _, _ = sizes
    print(f"training: {rounds} rounds x {n} timed batches of {BATCH} (+{warmup} warm-up) per contestant", flush=True)
    trainers = {"klvae": klvae_train, "klvae-bf16": klvae_bf16_train, "plain": plain_train,
                **({"pythae": pythae_train} if PYTHAE else {})}
    train = interleaved(trainers, rounds, "samples/s", lambda fn, r: n * BATCH / fn(data, data_dir, warmup, n, tmp, r))
    return train, klvae.load(tmp / "klvae")


def iwae_throughput(model, test: torch.Tensor, sizes: tuple) -> dict:
    """IWAE (K = IWAE_K) points/s of klvae's evaluate_model and pythae's get_nll, same nets."""
    _, _, _, n_eval, eval_rounds = sizes
    x = test[:n_eval]
    print(f"IWAE K={IWAE_K}: {eval_rounds} rounds over the first {n_eval} test points (klvae's trained nets)",
          flush=True)
    evals = {"klvae": lambda xs: evaluate_model(model, xs, iwae_k=IWAE_K)}
    if PYTHAE:
        twin = pythae_model(model)
        evals["pythae"] = lambda xs: pythae_nll(twin, xs, IWAE_K)
    for fn in evals.values():
        fn(x[:2])  # warm-up
    return interleaved(evals, eval_rounds, "points/s", lambda fn, r: rate(n_eval, fn, x))


def sequence_throughput(data_dir: str, tmp: Path, sizes: tuple) -> dict:
    """Training tokens/s of the sentence VAE on WordNet: klvae.fit against a plain loop (seq_contestants.py)."""
    rounds, warmup, n, _, _ = sizes
    print(f"sentences: seqvae (GRU 256 encoder, LSTM 256 decoder, vocab 10k, batch 64) on wordnet-examples, {rounds} "
          f"rounds x {n} timed steps (+{warmup} warm-up)", flush=True)
    fns = {"klvae": klvae_seq, "plain": plain_seq}
    return interleaved(fns, rounds, "tokens/s", lambda fn, r: fn(data_dir, warmup, n, tmp, r))


def end_to_end(data_dir: str, tmp: Path, rounds: int, epochs: int) -> dict[str, list[dict]]:
    """Per contestant and round: the seconds of the whole run and of each epoch (see e2e.py)."""
    print(f"end to end: Burda 784-200-200-50 tanh, batch {BATCH}, {rounds} rounds x {epochs} epochs "
          "(validation and files included)", flush=True)
    fns = {"klvae": klvae_e2e, "bare": bare_e2e, **({"pythae": pythae_e2e} if PYTHAE else {})}
    runs: dict[str, list[dict]] = {k: [] for k in fns}
    for r in range(rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            runs[name].append(fns[name](data_dir, epochs, tmp, r))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]['total']:.1f} s" for k, v in runs.items()), flush=True)
    return runs


def summarise(quick: bool, busy: float | None, sizes: tuple, train: dict, iwae: dict, e2e: dict, seq: dict) -> dict:
    """Medians over rounds and the ratios to report."""
    rounds, warmup, n, n_eval, _ = sizes
    med = {"train_samples_per_s": {k: round(statistics.median(v), 1) for k, v in train.items()},
           "iwae_points_per_s": {k: round(statistics.median(v), 2) for k, v in iwae.items()},
           "e2e_total_s": {k: round(statistics.median(r["total"] for r in v), 2) for k, v in e2e.items()},
           "e2e_epoch_s": {k: round(statistics.median(s for r in v for s in r["epochs"]), 3) for k, v in e2e.items()},
           "seq_tokens_per_s": {k: round(statistics.median(v), 1) for k, v in seq.items()}}
    tr, ev, tot, ep = (med[k] for k in ("train_samples_per_s", "iwae_points_per_s", "e2e_total_s", "e2e_epoch_s"))
    over = (lambda d, a, b: round(d[a] / d[b], 3) if b in d else None)
    return {
        "quick": quick, "torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "pythae": PYTHAE, "busy_cores_before": busy and round(busy, 2), "batch_size": BATCH,
        "timed_samples_per_round": n * BATCH, "iwae_k": IWAE_K, "iwae_points": n_eval, **med,
        "rounds": {"train": train, "iwae": iwae, "e2e": e2e, "seq": seq},
        "ratios": {"train_klvae_over_plain": over(tr, "klvae", "plain"),
                   "train_klvae_over_pythae": over(tr, "klvae", "pythae"),
                   "train_klvae_bf16_over_pythae": over(tr, "klvae-bf16", "pythae"),
                   "train_klvae_bf16_over_plain": over(tr, "klvae-bf16", "plain"),
                   "iwae_klvae_over_pythae": over(ev, "klvae", "pythae"),
                   # end to end: time ratios (> 1: klvae takes longer)
                   "e2e_total_klvae_over_bare": over(tot, "klvae", "bare"),
                   "e2e_epoch_klvae_over_bare": over(ep, "klvae", "bare"),
                   "e2e_total_klvae_over_pythae": over(tot, "klvae", "pythae"),
                   "e2e_epoch_klvae_over_pythae": over(ep, "klvae", "pythae"),
                   "seq_klvae_over_plain": over(med["seq_tokens_per_s"], "klvae", "plain")},
    }


def write_json(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"results written to {out}")


def report(res: dict) -> None:
    names = ("klvae", "klvae-bf16", "plain", "bare", "pythae")
    print(f"\n{'median of rounds':28s}" + "".join(f"{k:>12s}" for k in names))
    for label, key, fmt in (("train samples/s", "train_samples_per_s", "12.1f"),
                            (f"IWAE K={IWAE_K} points/s", "iwae_points_per_s", "12.1f"),
                            ("Burda e2e run s", "e2e_total_s", "12.2f"), ("Burda e2e epoch s", "e2e_epoch_s", "12.3f")):
        cells = (format(res[key][k], fmt) if k in res[key] else f"{'-':>12s}" for k in names)
        print(f"{label:28s}" + "".join(cells))
    r = res["ratios"]
    print(f"\ntraining  klvae/plain        {r['train_klvae_over_plain']:.2f}x   (samples/s)")
    print(f"training  klvae-bf16/plain   {r['train_klvae_bf16_over_plain']:.2f}x")
    print(f"Burda e2e klvae/bare         {r['e2e_total_klvae_over_bare']:.2f}x run, "
          f"{r['e2e_epoch_klvae_over_bare']:.2f}x epoch   (time: > 1 is klvae slower)")
    print(f"sentences klvae/plain        {r['seq_klvae_over_plain']:.2f}x   (tokens/s: {res['seq_tokens_per_s']['klvae']:.0f} "
          f"against {res['seq_tokens_per_s']['plain']:.0f})")
    if res["pythae"]:
        print(f"training  klvae/pythae       {r['train_klvae_over_pythae']:.2f}x   (target >= 1.5x)")
        print(f"training  klvae-bf16/pythae  {r['train_klvae_bf16_over_pythae']:.2f}x   (bfloat16 matrix products)")
        print(f"IWAE      klvae/pythae       {r['iwae_klvae_over_pythae']:.2f}x   (target >= 2x)")
        print(f"Burda e2e klvae/pythae       {r['e2e_total_klvae_over_pythae']:.2f}x run, "
              f"{r['e2e_epoch_klvae_over_pythae']:.2f}x epoch   (time: < 1 is klvae faster)")
    else:
        print("pythae: not installed (pip install pythae to compare)")


if __name__ == "__main__":
    sys.exit(main())
