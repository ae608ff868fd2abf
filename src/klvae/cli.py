"""The ``klvae`` command: parses, calls the library, prints. User errors exit with code 2 and one
line on stderr; ``--debug`` shows the traceback instead."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from klvae.config import TrainConfig
from klvae.errors import KlvaeError

BOOL_FLAGS = {"resume", "download", "progress", "dreg", "conditional_prior", "residual", "kl_balance"}


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"klvae: error: {message} (see `{self.prog} --help`)\n")


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run directory")
    p.add_argument("--config", help="YAML file of options; flags given here override it")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in BOOL_FLAGS:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        elif f.name == "hidden":
            p.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="WIDTH",
                           help="hidden layer widths, e.g. --hidden 512 512")
        elif f.name == "latent_dims":
            p.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="SIZE",
                           help="hvae: latent layer sizes, bottom to top, e.g. --latent-dims 100 50")
        elif f.name == "exclude_labels":
            p.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="LABEL",
                           help="leave these classes out of train and val, e.g. --exclude-labels 3")
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(),
                           help=f"default: {f.default}")


def _score_parser(sub) -> None:
    p = sub.add_parser("score", help="per-example anomaly scores of a run on any data; AUROC / AUPRC")
    p.add_argument("run")
    p.add_argument("--data", default=None, metavar="NAME|PATH", help="data set or file to score (default: the run's own)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--score", nargs="+", default=None, metavar="NAME",
                   help="elbo kl recon iwae typicality complexity (default: all)")
    p.add_argument("--iwae-k", type=int, default=100, help="importance samples of the iwae-based scores (default: 100)")
    p.add_argument("--anomalous-labels", nargs="+", type=int, default=None, metavar="LABEL",
                   help="the examples of these classes are the anomalies, e.g. --anomalous-labels 3")
    p.add_argument("--ood-data", default=None, metavar="NAME|PATH",
                   help="a second data set, scored as the anomalies (its --ood-split)")
    p.add_argument("--ood-split", default="test", choices=("train", "val", "test"))
    p.add_argument("--reference-size", type=int, default=2000,
                   help="training points whose mean NLL centres the typicality score (default: 2000)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, metavar="CSV", help="write the per-example scores here")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="decoder means of samples from the prior or the aggregated posterior: "
                                      "a grid, and their quality")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="PNG", help="write a grid of the samples here")
    p.add_argument("--from", dest="source", default="prior", choices=("prior", "aggregate"),
                   help="draw z from the prior, or from a Gaussian mixture fitted to the posterior means of the "
                        "training set (default: prior)")
    p.add_argument("--components", type=int, default=10, help="Gaussians of the aggregate mixture (default: 10)")
    p.add_argument("--class", dest="label", type=int, default=None, metavar="C",
                   help="a conditional run (--condition label): draw from p(z|y=C) and decode with y=C")
    p.add_argument("--quality", action="store_true",
                   help="Fréchet distance to the test images in the features of klvae's own classifier (not "
                        "Inception FID) and class coverage; runs on mnist, binarized-mnist, fashion-mnist, digits")
    p.add_argument("--cache-dir", default=None,
                   help="where the quality classifier is kept (default: $KLVAE_CACHE, else ~/.cache/klvae)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> Parser:
    parser = Parser(prog="klvae", description="Variational autoencoders with the KL term in view.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _train_parser(sub)

    p = sub.add_parser("evaluate", help="test ELBO, KL, active units and IWAE NLL of a run")
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--iwae-k", type=int, default=1000, help="importance samples (papers use 5000)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    _score_parser(sub)

    _sample_parser(sub)

    p = sub.add_parser("interpolate", help="morph data point A into B through latent space")
    p.add_argument("run")
    p.add_argument("--a", type=int, required=True)
    p.add_argument("--b", type=int, required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--slerp", action="store_true", help="spherical instead of linear")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True)

    p = sub.add_parser("reconstruct", help="inputs above, reconstructions below")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True)

    p = sub.add_parser("traverse", help="latent traversals: one row per dimension, sorted by KL")
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--index", type=int, default=0, help="the data point whose latent point is swept")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--span", type=float, default=3.0, help="sweep [-span, span] prior standard deviations")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("disentanglement", help="BetaVAE, FactorVAE, MIG, DCI and SAP scores on dSprites")
    p.add_argument("run")
    p.add_argument("--data", default="dsprites-generated", choices=("dsprites-generated", "dsprites-grid", "dsprites"),
                   help="where the factor combinations come from (default: the generator)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("report", help="write report.html of a run")
    p.add_argument("run")

    p = sub.add_parser("compare", help="a table and a plot of the KL of several runs")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", default="compare.png", help="PNG of val KL and KL weight per epoch (default: compare.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("datasets", help="the datasets klvae can load")
    sub.add_parser("models", help="the models klvae can train")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from klvae.api import fit, is_primary_process
    from klvae.run import CONFIG, read_metrics

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.config:
        config = TrainConfig.from_yaml(args.config, **given)
    elif given.get("resume") and (Path(given.get("out", "")) / CONFIG).is_file():
        config = TrainConfig.from_yaml(Path(given["out"]) / CONFIG, **given)  # the stored run; flags override it
    else:
        config = TrainConfig.from_dict(given)
    run_dir = fit(config, overwrite=args.overwrite)
    if not is_primary_process():  # DDP ranks > 0 re-run this command; only one reports
        return

    rows = read_metrics(run_dir)
    last = rows[-1] if rows else {}
    best = max((r["val_elbo"] for r in rows), default=float("nan"))
    print(f"trained {config.model} on {config.data} into {run_dir}: {len(rows)} epochs, best val ELBO "
          f"{best:.3f} nats, val KL {last.get('val_kl', float('nan')):.3f} nats, active units "
          f"{int(last.get('active_units', 0))}/{config.latent_dim}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from klvae.evaluation import evaluate

    r = evaluate(args.run, args.split, args.iwae_k, args.batch_size, args.seed, args.data_dir)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{args.run} on {r['split']} (n={r['n']}), nats per data point:")
    print(f"  ELBO            {r['elbo']:10.3f} ± {r['elbo_se']:.3f} (standard error)")
    print(f"  reconstruction  {r['recon']:10.3f}")
    print(f"  KL              {r['kl']:10.3f}")
    print(f"  NLL (IWAE, K={r['iwae_k']}) {r['nll_iwae']:8.3f} ± {r['nll_iwae_se']:.3f}")
    print(f"  active units    {r['active_units']:10d}")


def cmd_score(args: argparse.Namespace) -> None:
    from klvae.evaluation.anomaly import score
    from klvae.run import atomic_write

    report = score(args.run, args.data, args.split, args.score, args.iwae_k, args.batch_size, args.seed,
                   args.anomalous_labels, args.ood_data, args.ood_split, args.data_dir,
                   reference_size=args.reference_size)
    out = str(atomic_write(args.out, report.to_csv())) if args.out else None
    summary = {**report.summary(), "out": out}
    if args.json:
        print(json.dumps(summary))
        return
    names = list(report.sets[0].scores)
    for s in summary["sets"]:
        marked = "" if s["n_anomalous"] is None else f", {s['n_anomalous']} anomalous"
        print(f"{s['data']} {s['split']} (n={s['n']}{marked}): mean score, nats per data point")
        print("  " + "  ".join(f"{n} {s['mean'][n]:.3f}" for n in names))
    if report.metrics:
        print(f"detection (higher score = more anomalous; IWAE K={report.iwae_k}):")
        print(f"  {'score':12s} {'AUROC':>7s} {'AUPRC':>7s}")
        for n, m in report.metrics.items():
            flag = "  < 0.5: ranks the anomalies as more normal" if m["auroc"] < 0.5 else ""
            print(f"  {n:12s} {m['auroc']:7.3f} {m['auprc']:7.3f}{flag}")
    if out:
        print(f"wrote {out}")


def _run_data(args: argparse.Namespace):
    """The run's model, one split of its data, and the split's labels when the model is conditional."""
    from klvae.evaluation.likelihood import split_with_labels
    from klvae.models.conditional import condition_of
    from klvae.run import load, load_config

    model = load(args.run)
    x, labels = split_with_labels(load_config(args.run), args.split, args.data_dir)
    return model, x, condition_of(model, labels)


def cmd_sample(args: argparse.Namespace) -> None:
    from klvae.generation import sample
    from klvae.report.plots import save_grid
    from klvae.run import load, load_config

    if args.out is None and not args.quality:
        raise KlvaeError("sample needs --out PNG to write the grid, --quality to score the samples, or both")
    model, config = load(args.run), load_config(args.run)
    _check_class(model, args.run, args.label)
    if args.quality:
        from klvae.evaluation.sample_quality import classifier_data

        classifier_data(config.data)  # data without a classifier: the error comes before any work
    latent = _aggregate(model, config, args) if args.source == "aggregate" else None
    x = sample(model, args.n, args.seed, condition=args.label, latent=latent)
    out = str(save_grid(args.out, x)) if args.out else None
    if not args.quality:
        print(f"wrote {out}")
        return
    from klvae.evaluation.sample_quality import sample_quality

    q = sample_quality(x, config.data, args.data_dir or config.data_dir, args.cache_dir)
    if args.json:
        print(json.dumps({**q.to_dict(), "source": args.source, "class": args.label, "out": out}))
        return
    print(f"{q.n} samples from the {args.source}{'' if args.label is None else f' of class {args.label}'}, "
          f"against {q.n_real} {q.classifier} test images:")
    print(f"  Fréchet distance {q.frechet:10.3f} (features of klvae's {q.classifier} classifier; not Inception FID)")
    print(f"  class coverage   {q.coverage:10.2f} (classes with >= {q.min_share:.0%} of the samples)")
    print("  classes          " + " ".join(f"{c}:{h:.2f}" for c, h in enumerate(q.classes)))
    if out:
        print(f"wrote {out}")


def _check_class(model, run: str, label: int | None) -> None:
    """--class needs a conditional run and one of its classes."""
    classes = getattr(model, "num_classes", 0)
    if label is not None and not classes:
        raise KlvaeError(f"--class needs a conditional run (trained with --condition label); {run} has no condition")
    if label is not None and not 0 <= label < classes:
        raise KlvaeError(f"--class {label} is out of range; {run} knows classes 0..{classes - 1}")


def _aggregate(model, config, args: argparse.Namespace):
    """The aggregated posterior of the run's training set (of class --class for a conditional run)."""
    from klvae.evaluation.likelihood import split_with_labels
    from klvae.generation import aggregate_posterior

    if getattr(model, "num_classes", 0) and args.label is None:
        raise KlvaeError("--from aggregate of a conditional run needs --class C: the mixture is fitted to the "
                         "posterior means of one class")
    x, labels = split_with_labels(config, "train", args.data_dir)
    if args.label is not None:
        x, labels = x[labels == args.label], labels[labels == args.label]
    return aggregate_posterior(model, x, labels if args.label is not None else None, args.components, args.seed)


def cmd_interpolate(args: argparse.Namespace) -> None:
    from klvae.generation import interpolate
    from klvae.report.plots import save_grid

    model, x, y = _run_data(args)
    for name in ("a", "b"):
        i = getattr(args, name)
        if not 0 <= i < len(x):
            raise KlvaeError(f"--{name} {i} is out of range; the {args.split} split has {len(x)} points (0..{len(x) - 1})")
    ends = y[[args.a, args.b]] if y is not None else None
    path = interpolate(model, x[args.a], x[args.b], args.steps, spherical=args.slerp, condition=ends)
    print(f"wrote {save_grid(args.out, path, rows=1)}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from klvae.generation import reconstruct
    from klvae.report.plots import save_grid

    if args.n < 1:
        raise KlvaeError(f"-n must be a positive integer; got {args.n}")
    model, x, y = _run_data(args)
    x, y = x[: args.n], (y[: args.n] if y is not None else None)
    print(f"wrote {save_grid(args.out, torch.cat([x, reconstruct(model, x, y)]), rows=2)}")


def cmd_traverse(args: argparse.Namespace) -> None:
    from klvae.generation import traverse
    from klvae.kl import kl
    from klvae.report.plots import save_grid

    model, x, y = _run_data(args)
    if not 0 <= args.index < len(x):
        raise KlvaeError(f"--index {args.index} is out of range; the {args.split} split has {len(x)} points (0..{len(x) - 1})")
    import torch

    c = {} if y is None else {"condition": y[:1000]}
    with torch.no_grad():  # rows sorted by the mean KL of each dimension over (up to) 1,000 points
        per_dim = kl(model.encode(x[:1000], **c), model.prior(**c)).per_dim
    order = per_dim.mean(0).argsort(descending=True).tolist() if per_dim is not None else list(range(model.latent_dim))
    images = traverse(model, x[args.index], order, args.steps, args.span, None if y is None else y[args.index])
    print(f"wrote {save_grid(args.out, images, rows=len(order))} (rows: dimensions {', '.join(map(str, order))})")


def cmd_disentanglement(args: argparse.Namespace) -> None:
    from klvae.evaluation.disentanglement import disentanglement_report
    from klvae.run import atomic_write, check_run_dir, load

    run_dir = check_run_dir(args.run)
    result = disentanglement_report(load(run_dir), args.data, args.seed, args.data_dir)
    atomic_write(run_dir / "disentanglement.json", json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.run} on {args.data}:")
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"  {key:28s} {value:.3f}")
        elif isinstance(value, dict) and key != "seconds":
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, (int, float)) and not isinstance(sub_value, bool):
                    print(f"  {key + '.' + sub_key:28s} {sub_value:.3f}")


def cmd_report(args: argparse.Namespace) -> None:
    from klvae.report.html import write_report

    print(f"wrote {write_report(args.run)}")


def cmd_compare(args: argparse.Namespace) -> None:
    from klvae.report.compare import compare_runs, format_table, save_compare_plot

    summaries = compare_runs(args.runs)
    plot = save_compare_plot(args.out, args.runs)
    if args.json:
        print(json.dumps({"runs": summaries, "plot": str(plot)}))
        return
    print(format_table(summaries))
    print(f"wrote {plot}")


def cmd_datasets(args: argparse.Namespace) -> None:
    from klvae.data import list_datasets

    for name, description in list_datasets():
        print(f"{name:16s} {description}")
    print(f"{'PATH':16s} your own .npy / .npz / .csv file: --data path/to/file.npy")


def cmd_models(args: argparse.Namespace) -> None:
    from klvae.latents import LATENTS, PRIORS
    from klvae.models import MODELS

    for name, description in MODELS.items():
        print(f"{name:16s} {description}")
    for name, description in LATENTS.items():
        print(f"{'--latent ' + name:24s} {description}")
    for name, description in PRIORS.items():
        print(f"{'--prior ' + name:24s} {description}")


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """klvae's own warnings (e.g. posterior collapse) as one line on stderr; others as Python shows them."""
    from klvae.diagnostics import CollapseWarning

    if issubclass(category, CollapseWarning):
        print(f"klvae: warning: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args = build_parser().parse_args(argv)
    try:
        globals()[f"cmd_{args.command}"](args)
    except KlvaeError as err:
        if debug:
            raise
        print(f"klvae: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`klvae models | head`): nothing left to say
        sys.stdout = open(os.devnull, "w")
    return 0


if __name__ == "__main__":
    sys.exit(main())
