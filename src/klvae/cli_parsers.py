"""The parsers of the ``klvae`` commands: ``train``'s generated from the config's fields and the
registries, the others written out; every option with a one-line help that lists its choices and
its default."""
from __future__ import annotations

import argparse
from typing import Any

SPLITS = ("train", "val", "test")


def _choices(meta: dict) -> str:
    """'; choices: a (what a does), b, ...' of a field, from its registry or its tuple."""
    registry = meta.get("registry")
    if registry is not None:
        listed = [*meta.get("extra", ()), *(f"{e.name} ({e.description})" for e in registry.entries())]
    elif meta.get("datasets"):
        from klvae.data.registry import DATASETS

        listed = [e.name for e in DATASETS.entries()] + ["PATH (.npy / .npz / .csv)"]
    else:
        listed = list(meta.get("choices", ()))
    return f"; choices: {', '.join(listed)}" if listed else ""


def _add_option(group, key: str, f, owner: str = "", default: Any = None) -> None:
    """One flag generated from a config field: its help (after ``owner``, e.g. "[--model hvae] "),
    choices and default (``default``: its text, when not the field's own); a bool becomes
    --flag / --no-flag, a list takes several values."""
    from klvae.config_sections import default_of

    flag, kind = "--" + key.replace("_", "-"), str(f.type)
    shown = default_of(f) if default is None else default
    text = f"{owner}{f.metadata.get('help', '')}{_choices(f.metadata)} (default: {shown})".replace("%", "%%")
    if kind == "bool":
        group.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
    else:
        group.add_argument(flag, dest=key, nargs="+" if kind.startswith("list[") else None, default=argparse.SUPPRESS,
                           metavar=key.upper(), help=text)


def _model_owner(key: str) -> str:
    """"[--model a/b] " when only some models take the option ``key``."""
    from klvae.models import MODELS

    owners = [e.name for e in MODELS.entries() if key in {g.name for g in e.config.options()}]
    return "" if len(owners) in (0, len(MODELS)) else f"[--model {'/'.join(owners)}] "


def train_parser(sub) -> None:
    from klvae.config import flat_keys

    p = sub.add_parser("train", help="train a model into a run directory",
                       description="Train a model into a run directory. Options come from a --config YAML file "
                                   "(flat, or nested by section) and from the flags below, which win over it.")
    p.add_argument("--config", help="YAML file of options; flags given here override it")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    plugin_option(p)
    groups: dict[str, Any] = {}
    for key, (section, f) in flat_keys().items():
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section} options")
        _add_option(groups[section], key, f, _model_owner(key) if section == "model" else "")


def plugin_option(p) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this module first, so the components it registers can be chosen (repeatable)")


def _run(p) -> None:
    p.add_argument("run", help="a run directory (the --out of `klvae train`)")


def _split(p) -> None:
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="the data split to read; choices: train, val, test (default: test)")


def _common(p, seed: bool = True, json: bool = True, batch: bool = False) -> None:
    p.add_argument("--data-dir", default=None, help="data folder (default: the run's, else $KLVAE_DATA, else ./data)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    if batch:
        p.add_argument("--batch-size", type=int, default=None, help="data points per batch (default: planned from "
                                                                   "the size of the data and of K)")
    if json:
        p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test ELBO, KL, active units and IWAE NLL of a run")
    _run(p)
    _split(p)
    p.add_argument("--iwae-k", type=int, default=1000, help="importance samples of the IWAE bound (papers use 5000; "
                                                             "default: 1000)")
    _common(p, batch=True)


def score_parser(sub) -> None:
    from klvae.evaluation.anomaly import SCORES

    p = sub.add_parser("score", help="per-example anomaly scores of a run on any data; AUROC / AUPRC")
    _run(p)
    p.add_argument("--data", default=None, metavar="NAME|PATH", help="data set or file to score (default: the run's "
                                                                     "own; see `klvae datasets`)")
    _split(p)
    p.add_argument("--score", nargs="+", default=None, metavar="NAME",
                   help="scores to compute; choices: " + "; ".join(f"{k}: {v}" for k, v in SCORES.items())
                        + " (default: all)")
    p.add_argument("--iwae-k", type=int, default=100, help="importance samples of the iwae-based scores (default: 100)")
    p.add_argument("--llr-k", nargs="+", type=int, default=None, metavar="K",
                   help="llr: the levels k of LLR^{>k}, each 0 .. L-1 (default: 1 .. L-1)")
    p.add_argument("--anomalous-labels", nargs="+", type=int, default=None, metavar="LABEL",
                   help="the examples of these classes are the anomalies, e.g. --anomalous-labels 3")
    p.add_argument("--ood-data", default=None, metavar="NAME|PATH",
                   help="a second data set, scored as the anomalies (its --ood-split)")
    p.add_argument("--ood-split", default="test", choices=SPLITS, help="split of --ood-data; choices: train, val, "
                                                                       "test (default: test)")
    p.add_argument("--reference-size", type=int, default=2000,
                   help="training points whose mean NLL centres the typicality score (default: 2000)")
    p.add_argument("--out", default=None, metavar="CSV", help="write the per-example scores here")
    _common(p, batch=True)


def sample_parser(sub) -> None:
    from klvae.samplers import SAMPLERS

    p = sub.add_parser("sample", help="decoder means of draws of z: a grid (texts for a text run), and their quality")
    _run(p)
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", default=None, metavar="PNG", help="write a grid of the samples here (a text run: a .txt "
                                                              "file; without --out the texts are printed)")
    p.add_argument("--from", dest="source", default="prior", metavar="SAMPLER",
                   help="where z comes from; choices: " + SAMPLERS.help() + "; each but the prior fitted first "
                        "by `klvae fit-sampler`, or the --name it was kept under (default: prior)")
    p.add_argument("--sampling-steps", dest="steps", type=int, default=argparse.SUPPRESS,
                   help="a diffusion sampler: denoising steps (default: its fit's)")
    p.add_argument("--sampling", dest="method", choices=("ancestral", "ddim"), default=argparse.SUPPRESS,
                   help="a diffusion sampler: how it steps; choices: ancestral (DDPM), ddim (DDIM) (default: its fit's)")
    p.add_argument("--class", dest="label", default=None, metavar="C",
                   help="a conditional run (--condition label): draw from p(z|y=C) and decode with y=C; a class "
                        "index, or its name for a text run (e.g. noun)")
    _decoding(p)
    p.add_argument("--quality", action="store_true",
                   help="Fréchet distance, improved precision and recall against the test images in the features of "
                        "klvae's own classifier (not Inception FID), and class coverage; runs on mnist, binarized-mnist, fashion-mnist, digits")
    p.add_argument("--cache-dir", default=None,
                   help="where the quality classifier is kept (default: $KLVAE_CACHE, else ~/.cache/klvae)")
    _common(p)


def fit_sampler_parser(sub) -> None:
    from klvae.config_sections import default_of
    from klvae.samplers import SAMPLERS, sampler_options

    fitted = SAMPLERS.where(lambda e: e.fitted)
    p = sub.add_parser("fit-sampler", help="fit a density to the codes of a run's training set; sample it with "
                                           "`klvae sample --from NAME`")
    _run(p)
    p.add_argument("--sampler", default="gmm", help="choices: " + "; ".join(
        f"{e.name}: {e.description}" for e in SAMPLERS.entries() if e.fitted) + " (default: gmm)")
    p.add_argument("--name", default=None, help="keep it as RUN/samplers/NAME.* (default: the sampler's name)")
    for key, owners in sampler_options().items():
        owner = "" if len(owners) == len(fitted) else f"[--sampler {'/'.join(owners)}] "
        defaults = {name: default_of(g) for name, g in owners.items()}
        default = None if len(set(map(str, defaults.values()))) == 1 else ", ".join(
            f"{name} {value}" for name, value in defaults.items())  # each sampler's where they differ
        _add_option(p, key, next(iter(owners.values())), owner, default)
    _common(p, seed=False)


def _decoding(p) -> None:
    from klvae.models.sequence_decoders import DECODINGS

    p.add_argument("--decoding", default="mean", choices=["mean", *DECODINGS], help="a text run: how token rows are "
                   "read out; " + "; ".join(f"{k}: {v}" for k, v in DECODINGS.items()) + "; mean: greedy (default)")


def _outputs(p, pictures: str) -> None:
    """The split, --out and --decoding of a command that draws pictures or, for a text run, texts."""
    _split(p)
    p.add_argument("--out", default=None, metavar="PNG", help=f"write {pictures} here (a text run: a .txt file, or "
                                                              "print the texts without --out)")
    _decoding(p)
    _common(p, seed=False, json=False)


def picture_parsers(sub) -> None:
    p = sub.add_parser("interpolate", help="morph data point A into B through latent space")
    _run(p)
    p.add_argument("--a", required=True, help="index of the first data point in the split (a text run: or a text)")
    p.add_argument("--b", required=True, help="index of the last data point in the split (a text run: or a text)")
    p.add_argument("--steps", type=int, default=10, help="pictures along the path, ends included (default: 10)")
    p.add_argument("--slerp", action="store_true", help="spherical instead of linear (a latent's own geometry "
                                                        "decides on the sphere and the torus)")
    _outputs(p, "the row of pictures")

    p = sub.add_parser("reconstruct", help="inputs above, reconstructions below")
    _run(p)
    p.add_argument("-n", type=int, default=16, help="data points from the start of the split (default: 16)")
    _outputs(p, "the grid")

    p = sub.add_parser("traverse", help="latent traversals: one row per dimension, sorted by KL")
    _run(p)
    p.add_argument("--out", required=True, metavar="PNG", help="write the grid here")
    p.add_argument("--index", type=int, default=0, help="the data point whose latent point is swept (default: 0)")
    p.add_argument("--steps", type=int, default=10, help="pictures per row (default: 10)")
    p.add_argument("--span", type=float, default=3.0, help="sweep [-span, span] prior standard deviations (default: 3)")
    _split(p)
    _common(p, seed=False, json=False)


def run_parsers(sub) -> None:
    p = sub.add_parser("disentanglement", help="BetaVAE, FactorVAE, MIG, DCI and SAP scores on dSprites")
    _run(p)
    p.add_argument("--data", default="dsprites-generated", choices=("dsprites-generated", "dsprites-grid", "dsprites"),
                   help="where the factor combinations come from; choices: dsprites-generated (the generator), "
                        "dsprites-grid (the real factorial grid), dsprites (the official file) (default: the generator)")
    _common(p)

    p = sub.add_parser("molecules", help="the MOSES metrics of SMILES sampled from a run trained on SMILES")
    _run(p)
    p.add_argument("-n", type=int, default=30_000, help="molecules to sample (default: 30000, MOSES's protocol)")
    p.add_argument("--from", dest="source", default="prior", metavar="SAMPLER",
                   help="where z comes from (see `klvae sample --help`; default: prior)")
    p.add_argument("--reference-size", type=int, default=10_000,
                   help="test and scaffold-test molecules compared against, drawn with --seed; 0: all (MOSES's "
                        "protocol; ChemNet then takes minutes) (default: 10000)")
    p.add_argument("--jobs", type=int, default=1, help="processes that run RDKit (default: 1)")
    p.add_argument("--class", dest="label", default=None, metavar="C",
                   help="a conditional run: sample molecules of class C (an index or a name such as logp-q3); the "
                        "result adds the share of valid samples whose property lies in C's bin")
    _common(p)

    p = sub.add_parser("report", help="write report.html of a run")
    _run(p)

    p = sub.add_parser("compare", help="a table and a plot of the KL of several runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default="compare.png", help="PNG of val KL and KL weight per epoch (default: compare.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
