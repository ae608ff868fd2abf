"""The ``klvae`` command: parses, calls the library, prints. User errors exit with code 2 and one
line on stderr; ``--debug`` shows the traceback instead."""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import warnings

from klvae.cli_parsers import (
    evaluate_parser, fit_sampler_parser, picture_parsers, plugin_option, run_parsers, sample_parser, score_parser,
    train_parser,
)
from klvae.errors import KlvaeError, KlvaeWarning



class Formatter(argparse.HelpFormatter):
    """argparse's, without breaking lines inside hyphenated names (power-spherical, kl-schedule)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=Formatter, **kwargs)

    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"klvae: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    parser = Parser(prog="klvae", description="Variational autoencoders with the KL term in view.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train_parser(sub)

    evaluate_parser(sub)
    score_parser(sub)
    sample_parser(sub)
    fit_sampler_parser(sub)
    picture_parsers(sub)
    run_parsers(sub)
    sub.add_parser("datasets", help="the datasets klvae can load")
    sub.add_parser("models", help="every registered component: models, latent families, priors, likelihoods, "
                                  "network bodies, decoders, objectives, KL schedules")
    for command in sub.choices.values():
        if not any("--plugin" in a.option_strings for a in command._actions):
            plugin_option(command)
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from klvae.api import fit, is_primary_process, train_config
    from klvae.config import flat_keys
    from klvae.run import RunDir

    given = {key: getattr(args, key) for key in flat_keys() if hasattr(args, key)}
    config = train_config(args.config, **given)
    run_dir = fit(config, overwrite=args.overwrite)
    if not is_primary_process():  # DDP ranks > 0 re-run this command; only one reports
        return

    run = RunDir(run_dir)
    rows = run.metrics()
    last = rows[-1] if rows else {}
    best = max((r["val_elbo"] for r in rows), default=float("nan"))
    print(f"trained {config.model.name} on {config.data.name} into {run_dir}: {len(rows)} epochs, best val ELBO "
          f"{best:.3f} nats, val KL {last.get('val_kl', float('nan')):.3f} nats, active units "
          f"{int(last.get('active_units', 0))}/{run.spec().latent_dim}")  # the model's, sized from the data


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
    if "bits_per_dim" in r:  # 8-bit pixels under a discrete likelihood
        print(f"  bits per dim    {r['bits_per_dim']:10.4f} (IWAE; {r['elbo_bits_per_dim']:.4f} by the ELBO)")
    print(f"  active units    {r['active_units']:10d}"
          + (f" ({'+'.join(map(str, r['active_units_per_layer']))}, layers bottom to top; KL per layer "
             f"{', '.join(f'{k:.2f}' for k in r['kl_per_layer'])})" if "active_units_per_layer" in r else ""))
    if "ppl" in r:  # token rows: perplexity per token, <eos> included
        print(f"  perplexity      {r['ppl']:10.2f} (IWAE; {r['ppl_elbo']:.2f} by the ELBO), "
              f"{r['tokens_per_row']:.2f} tokens per row")
        print(f"  I(x; z)         {r['mutual_information']:10.3f} nats")
        print(f"  token accuracy  {r['token_accuracy']:10.3f} (greedy reconstruction)")
    if "note" in r:
        print(f"  note: {r['note']}")
    if "baseline" in r:
        b = r["baseline"]
        figures = f"NLL {b['nll_iwae']:.3f} ± {b['nll_iwae_se']:.3f}" + (
            f", perplexity {b['ppl']:.2f}" if "ppl" in b else "")
        print(f"  baseline        {figures} ({args.run}/baseline: the model's baseline, e.g. the decoder without z)")


def cmd_score(args: argparse.Namespace) -> None:
    from klvae.evaluation.anomaly import score
    from klvae.files import atomic_write

    report = score(args.run, args.data, args.split, args.score, args.iwae_k, args.batch_size, args.seed,
                   args.anomalous_labels, args.ood_data, args.ood_split, args.data_dir,
                   reference_size=args.reference_size, llr_k=args.llr_k)
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


def show(run: str, rows, out: str | None, write_png) -> str | None:
    """A command's output: the texts of a text run (printed, or written to ``out``), else the
    pictures ``write_png(out)`` saves (``out`` then required). Returns the file written."""
    from klvae.api import texts
    from klvae.files import atomic_write
    from klvae.run import RunDir

    if RunDir.open(run).vocabulary() is None:
        if out is None:
            raise KlvaeError("--out PNG is needed: this run's outputs are pictures")
        return str(write_png(out))
    lines = texts(run, rows)
    if out is None:
        print("\n".join(lines))
        return None
    return str(atomic_write(out, "\n".join(lines) + "\n"))


def cmd_fit_sampler(args: argparse.Namespace) -> None:
    from klvae.api import fit_sampler
    from klvae.samplers import sampler_options

    options = {k: getattr(args, k) for k in sampler_options() if hasattr(args, k)}
    r = fit_sampler(args.run, args.sampler, args.name, args.data_dir, **options)
    if args.json:
        print(json.dumps(r))
        return
    bound = "" if r["exact"] else " (a bound)"
    print(f"{args.run}: fitted {r['sampler']} to {r['n_train']} {r['codes']} codes in {r['fit_seconds']:.1f} s, "
          f"kept as samplers/{r['name']}; 10,000 draws take {r['sample_seconds_10k']:.2f} s")
    print(f"  NLL of the test codes{bound}  {r['nll_test']:9.3f} nats (the prior's: {r['prior_nll_test']:.3f}); train "
          f"{r['nll_train']:.3f}")
    if "kl_aggregate" in r:
        print(f"  KL(q(z) || sampler){bound}  {r['kl_aggregate']:9.3f} nats (the prior's: {r['prior_kl_aggregate']:.3f})")
    elif "prior_kl_aggregate" in r:
        print(f"  KL(q(z) || prior)  {r['prior_kl_aggregate']:9.3f} nats (a sampler's own needs --codes sample)")


def cmd_sample(args: argparse.Namespace) -> None:
    from klvae.api import sample
    from klvae.report.plots import save_grid
    from klvae.run import RunDir

    run = RunDir.open(args.run)
    if args.out is None and not args.quality and run.vocabulary() is None:
        raise KlvaeError("sample needs --out PNG to write the grid, --quality to score the samples, or both")
    config = run.config()
    if args.quality:
        from klvae.evaluation.sample_quality import classifier_data

        classifier_data(config.data.name)  # data without a classifier: the error comes before any work
    options = {k: getattr(args, k) for k in ("steps", "method") if hasattr(args, k)}
    x = sample(args.run, args.n, args.seed, args.source, args.label, args.data_dir, decoding=args.decoding,
               sampler_options=options)
    out = show(args.run, x, args.out, lambda path: save_grid(path, x)) if args.out or not args.quality else None
    if not args.quality:
        if out:
            print(f"wrote {out}")
        return
    from klvae.evaluation.sample_quality import sample_quality

    q = sample_quality(x, config.data.name, args.data_dir or config.data.data_dir, args.cache_dir)
    if args.json:
        print(json.dumps({**q.to_dict(), "source": args.source, "class": args.label, "out": out}))
        return
    print(f"{q.n} samples from the {args.source}{'' if args.label is None else f' of class {args.label}'}, "
          f"against {q.n_real} {q.classifier} test images:")
    print(f"  Fréchet distance {q.frechet:10.3f} (features of klvae's {q.classifier} classifier; not Inception FID)")
    print(f"  precision        {q.precision:10.3f} (share of the samples on the test images' manifold, k = 3)")
    print(f"  recall           {q.recall:10.3f} (share of the test images on the samples' manifold)")
    print(f"  class coverage   {q.coverage:10.2f} (classes with >= {q.min_share:.0%} of the samples)")
    print("  classes          " + " ".join(f"{c}:{h:.2f}" for c, h in enumerate(q.classes)))
    if out:
        print(f"wrote {out}")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from klvae.api import interpolate
    from klvae.report.plots import save_grid

    path = interpolate(args.run, args.a, args.b, args.steps, args.slerp, args.split, args.data_dir,
                       decoding=args.decoding)
    out = show(args.run, path, args.out, lambda p: save_grid(p, path, rows=1))
    if out:
        print(f"wrote {out}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from klvae.api import reconstruct
    from klvae.report.plots import save_grid

    x, recon = reconstruct(args.run, args.n, args.split, args.data_dir, decoding=args.decoding)
    rows = torch.stack([x, recon], 1).flatten(0, 1) if not x.is_floating_point() else None  # text: input, then its reconstruction
    out = show(args.run, rows, args.out, lambda p: save_grid(p, torch.cat([x, recon]), rows=2))
    if out:
        print(f"wrote {out}")


def cmd_traverse(args: argparse.Namespace) -> None:
    from klvae.api import traverse
    from klvae.report.plots import save_grid

    images, order = traverse(args.run, args.index, args.steps, args.span, args.split, args.data_dir)
    print(f"wrote {save_grid(args.out, images, rows=len(order))} (rows: dimensions {', '.join(map(str, order))})")


def cmd_disentanglement(args: argparse.Namespace) -> None:
    from klvae.api import disentanglement

    result = disentanglement(args.run, args.data, args.seed, args.data_dir)
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


def cmd_molecules(args: argparse.Namespace) -> None:
    from klvae.api import molecules

    r = molecules(args.run, args.n, args.seed, args.source, args.reference_size, args.jobs, args.data_dir,
                  label=args.label)
    if args.json:
        print(json.dumps(r))
        return
    sizes = ", ".join(f"{k} {v}" for k, v in r["reference_size"].items())
    of_class = f" of class {r['class']}" if r["class"] is not None else ""
    print(f"{args.run}: MOSES metrics of {r['n']} SMILES{of_class} from the {r['source']} (references: {sizes})")
    for key, value in r.items():
        if key not in ("n", "source", "seed", "class", "reference_size"):
            print(f"  {key:14s} {value:8.4f}")


def cmd_report(args: argparse.Namespace) -> None:
    from klvae.api import report

    print(f"wrote {report(args.run)}")


def cmd_compare(args: argparse.Namespace) -> None:
    from klvae.api import compare
    from klvae.report.compare import format_table

    summaries, plot = compare(args.runs, args.out)
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
    print(f"{'PATH':16s} your own texts: a .txt file (one per line), a .csv with a text, sentence or smiles column, "
          "or a folder with ptb.train.txt / ptb.valid.txt / ptb.test.txt")
    print(f"{'PATH':16s} your own images: a folder of PNG / JPEG / WebP files (sub-folders as classes) or in "
          "CelebA's layout: --data ~/photos --image-size 64")


def cmd_models(args: argparse.Namespace) -> None:
    from klvae.plugins import REGISTRIES

    for registry in REGISTRIES.values():
        if registry.option == "--data":
            continue  # `klvae datasets` lists them
        for entry in registry.entries():
            print(f"{registry.option + ' ' + entry.name:28s} {entry.description}")


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """klvae's own warnings (posterior collapse, data left out) as one line on stderr; others as Python
    shows them."""
    if issubclass(category, KlvaeWarning):
        print(f"klvae: warning: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def _plugin_names(argv: list[str]) -> list[str]:
    """The modules named by --plugin MODULE / --plugin=MODULE anywhere on the command line."""
    names = [a.split("=", 1)[1] for a in argv if a.startswith("--plugin=")]
    return names + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--plugin"]


def load_plugins(modules: list[str]) -> None:
    from klvae.plugins import load_plugins as load

    load(modules)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        load_plugins(_plugin_names(argv))  # before parsing: a plugin's components are choices
        args = build_parser().parse_args(argv)
        globals()[f"cmd_{args.command.replace('-', '_')}"](args)
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
