"""The commands that read a trained run, as functions: what ``klvae sample / interpolate /
reconstruct / traverse / disentanglement / report / compare`` do, for Python users (re-exported by
klvae.api). Each takes the run directory and, optionally, its model already loaded (a run trained
with parts passed from Python: ``klvae.load(run, encoder=...)``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from klvae.data.text import TOKENIZERS
from klvae.errors import KlvaeError
from klvae.evaluation.likelihood import split_with_labels
from klvae.generation import interpolate as interpolate_model
from klvae.generation import reconstruct as reconstruct_model
from klvae.generation import sample as sample_model
from klvae.generation import traverse as traverse_model
from klvae.kl import kl
from klvae.models.conditional import condition_of
from klvae.run import RunDir
from klvae.samplers import SAMPLERS, FittedSampler, sampler_config
from klvae.samplers.fitting import fit_densities

TRAVERSE_POINTS = 1000  # points whose mean KL per dimension orders the traversal's rows


def _model(run: RunDir, model):
    return run.load_model() if model is None else model.eval()


def run_data(run_dir: str | Path, split: str = "test", data_dir: str | None = None, model=None):
    """(model, x, condition) of a run: its model, one split of its data (N, *event), and the
    split's labels when the model is conditional (else None)."""
    run = RunDir.open(run_dir)
    model = _model(run, model)
    x, labels = split_with_labels(run.config(), split, data_dir, _vocabulary(run))
    return model, x, condition_of(model, labels)


def _vocabulary(run: RunDir):
    codec = run.vocabulary()
    return codec.vocabulary if codec else None


def texts(run_dir: str | Path, rows: torch.Tensor) -> list[str]:
    """Token rows of a text run (what sample, reconstruct and interpolate give) as texts."""
    codec = RunDir.open(run_dir).vocabulary()
    if codec is None:
        raise KlvaeError(f"{run_dir} was not trained on text; its outputs are arrays (pictures)")
    return codec.decode(rows)


def check_class(model, run_dir, label: int | None) -> None:
    """A class label needs a conditional run and one of its classes."""
    classes = getattr(model, "num_classes", 0)
    if label is not None and not classes:
        raise KlvaeError(f"--class needs a conditional run (trained with --condition label); {run_dir} has no condition")
    if label is not None and not 0 <= label < classes:
        raise KlvaeError(f"--class {label} is out of range; {run_dir} knows classes 0..{classes - 1}")


def sample(run_dir: str | Path, n: int = 64, seed: int = 0, source: str = "prior", label: int | str | None = None,
           data_dir: str | None = None, model=None, decoding: str = "mean", sampler_options: dict | None = None
           ) -> torch.Tensor:
    """Decoder means of n draws of z from ``source``: the prior, or a sampler fitted to the run's
    codes (``klvae fit-sampler``; of class ``label`` for a conditional run; ``sampler_options``:
    its sampling options, e.g. a diffusion's steps): (n, *event). A text run: token rows by
    ``decoding`` (greedy, sample or beam; mean is greedy), ``label`` a class index or name (e.g.
    noun); :func:`texts` reads them."""
    run = RunDir.open(run_dir)
    model = _model(run, model)
    label = _class_index(run, label)
    check_class(model, run_dir, label)
    latent = None
    if source not in SAMPLERS or SAMPLERS[source].fitted:
        latent = fitted_sampler(run, source).density(label).distribution(**(sampler_options or {}))
    elif sampler_options:
        raise KlvaeError(f"sampling options ({', '.join(sampler_options)}) are a fitted sampler's; --from {source} "
                         "takes none")
    return sample_model(model, n, seed, condition=label, latent=latent, decoding=decoding)


def _class_index(run: RunDir, label: int | str | None) -> int | None:
    """A class given as an index (an int or a string of digits) or, for a text run, by name."""
    label = _index_or_text(label) if label is not None else None
    if not isinstance(label, str):
        return label
    codec = run.vocabulary()
    if codec is None:
        raise KlvaeError(f"--class must be a class index for a run on arrays; got {label!r}")
    return codec.label(label)


def fitted_sampler(run: RunDir, name: str):
    """The sampler ``name`` fitted to the run; a one-line error saying how to fit it when absent."""
    fitted = run.sampler(name)
    if fitted is not None:
        return fitted
    if name in SAMPLERS:
        raise KlvaeError(f"{run.path} has no fitted {name} sampler; fit one first: klvae fit-sampler {run.path} "
                         f"--sampler {name}")
    stored = tuple(n for n in run.sampler_names() if n not in SAMPLERS)
    raise KlvaeError(SAMPLERS.unknown(name, stored).split(" (a sampler")[0] + " (or a name given to `klvae fit-sampler "
                     "--name`; a sampler from a plugin needs --plugin MODULE)")


def fit_sampler(run_dir: str | Path, sampler: str = "gmm", name: str | None = None, data_dir: str | None = None,
                model=None, **options) -> dict:
    """Fit the sampler ``sampler`` (a fitted ``SAMPLERS`` entry; ``options``: its config's fields)
    to the codes of the run's training set — one density per class for a conditional run — and
    keep it in RUN/samplers/<name> (default: the sampler's name). Returns (and stores) its report:
    fit and draw seconds, the NLL of the first 10,000 test codes and of the first 5,000 training
    codes (nats per code; a bound where the density has none exact) and, for an unconditional run,
    KL(q(z) || sampler) to the test set's aggregated posterior, each beside the prior's."""
    run = RunDir.open(run_dir)
    model = _model(run, model)
    entry = SAMPLERS[sampler]
    if not entry.fitted:
        raise KlvaeError(f"--sampler {sampler} is the model's own; nothing to fit (choices: "
                         f"{', '.join(SAMPLERS.where(lambda e: e.fitted))})")
    config = sampler_config(entry, options)
    name = name or sampler
    train, test = (split_with_labels(run.config(), k, data_dir, _vocabulary(run)) for k in ("train", "test"))
    densities, report = fit_densities(model, entry, config, train, test)
    run.save_sampler(FittedSampler(name, sampler, densities, report))
    return {"name": name, **report}


def interpolate(run_dir: str | Path, a: int | str, b: int | str, steps: int = 10, spherical: bool = False,
                split: str = "test", data_dir: str | None = None, model=None, decoding: str = "mean") -> torch.Tensor:
    """Decoder means along the latent path from data point a to b of a split: (steps, *event).
    A text run also takes a and b as texts (the homotopy between two sentences of Bowman et al.)."""
    model, x, y = run_data(run_dir, split, data_dir, model)
    a, b = _index_or_text(a), _index_or_text(b)
    if y is not None and not (isinstance(a, int) and isinstance(b, int)):
        raise KlvaeError("a conditional run interpolates between data points (--a, --b as indices): texts carry no label")
    ends = []
    for name, i in (("a", a), ("b", b)):
        if isinstance(i, str):
            codec = RunDir.open(run_dir).vocabulary()
            if codec is None:
                raise KlvaeError(f"--{name} must be a data point's index in a run on arrays; got {i!r}")
            ends.append(codec.encode([i], x.shape[1])[0])
        elif not 0 <= i < len(x):
            raise KlvaeError(f"--{name} {i} is out of range; the {split} split has {len(x)} points (0..{len(x) - 1})")
        else:
            ends.append(x[i])
    labels = y[[a, b]] if y is not None else None
    return interpolate_model(model, ends[0], ends[1], steps, spherical=spherical, condition=labels, decoding=decoding)


def reconstruct(run_dir: str | Path, n: int = 16, split: str = "test", data_dir: str | None = None,
                model=None, decoding: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, reconstructions) of the first n points of a split, each (n, *event)."""
    if n < 1:
        raise KlvaeError(f"-n must be a positive integer; got {n}")
    model, x, y = run_data(run_dir, split, data_dir, model)
    x, y = x[:n], (y[:n] if y is not None else None)
    return x, reconstruct_model(model, x, y, decoding)


def traverse(run_dir: str | Path, index: int = 0, steps: int = 10, span: float = 3.0, split: str = "test",
             data_dir: str | None = None, model=None) -> tuple[torch.Tensor, list[int]]:
    """Latent traversals from data point ``index``: (images (D * steps, *event), the dimensions of
    the rows), rows sorted by the dimension's mean KL over up to 1,000 points of the split."""
    if RunDir.open(run_dir).vocabulary() is not None:
        raise KlvaeError(f"traverse draws a grid of pictures; {run_dir} is a text run: use `klvae interpolate` or "
                         "`klvae sample`")
    model, x, y = run_data(run_dir, split, data_dir, model)
    if not 0 <= index < len(x):
        raise KlvaeError(f"--index {index} is out of range; the {split} split has {len(x)} points (0..{len(x) - 1})")
    c = {} if y is None else {"condition": y[:TRAVERSE_POINTS]}
    with torch.no_grad():
        per_dim = kl(model.encode(x[:TRAVERSE_POINTS], **c), model.prior(**c)).per_dim
    order = per_dim.mean(0).argsort(descending=True).tolist() if per_dim is not None else list(range(model.latent_dim))
    images = traverse_model(model, x[index], order, steps, span, None if y is None else y[index])
    return images, order


def disentanglement(run_dir: str | Path, data: str = "dsprites-generated", seed: int = 0,
                    data_dir: str | None = None, model=None) -> dict:
    """BetaVAE, FactorVAE, MIG, DCI and SAP scores; also written to disentanglement.json."""
    from klvae.evaluation.disentanglement import disentanglement_report

    run = RunDir.open(run_dir)
    result = disentanglement_report(_model(run, model), data, seed, data_dir)
    run.save_result("disentanglement", result)
    return result


def report(run_dir: str | Path) -> Path:
    """Write report.html of a run; its path."""
    from klvae.report.html import write_report

    return write_report(run_dir)


def compare(runs: list[str | Path], out: str | Path = "compare.png") -> tuple[list[dict], Path]:
    """(one summary per run, the plot of their val KL and KL weight written to ``out``)."""
    from klvae.report.compare import compare_runs, save_compare_plot

    return compare_runs(runs), save_compare_plot(out, runs)


def _index_or_text(value: int | str) -> int | str:
    """A data point's index given as an int or a string of digits, else the text itself."""
    return int(value) if isinstance(value, int) or str(value).lstrip("-").isdigit() else value


def molecules(run_dir: str | Path, n: int = 30_000, seed: int = 0, source: str = "prior", reference_size: int = 10_000,
              n_jobs: int = 1, data_dir: str | None = None, model=None, label: int | str | None = None) -> dict:
    """The MOSES metrics of ``n`` SMILES sampled (ancestral decoding) from a run trained on SMILES,
    against its test split and, when the data set has one, its scaffold test split (each
    subsampled to ``reference_size``, seeded; 0: whole); novelty against the run's training
    SMILES. ``label``: a conditional run's class (e.g. logp-q3); when the classes are bins of a
    property, the result adds the property's mean over the valid samples and the share of them
    in the class's bin. Written to molecules.json in the run (molecules_from-<sampler>_class<C>.json
    for another sampler and a class)."""
    from klvae.data.properties import property_values
    from klvae.evaluation.molecules import moses_metrics

    run = RunDir.open(run_dir)
    codec = run.vocabulary()
    if codec is None or not TOKENIZERS[codec.tokenizer].get("molecules"):
        raise KlvaeError(f"{run_dir} was not trained on SMILES (--tokenizer smiles, e.g. --data moses); the MOSES "
                         "metrics score molecules")
    if n < 2 or reference_size < 0:
        raise KlvaeError(f"-n must be at least 2 and --reference-size at least 0; got {n}, {reference_size}")
    wanted = _class_index(run, label)
    config = run.config()
    data = config.data.load(config.trainer.seed, data_dir, codec.vocabulary)
    rows = sample(run_dir, n, seed, source, label=wanted, model=model, data_dir=data_dir, decoding="sample")
    refs = {name: _subsample(data.texts[name], reference_size, seed) for name in ("test", "test_scaffolds")
            if name in data.texts}
    smiles = codec.decode(rows)
    metrics = moses_metrics(smiles, set(data.texts["train"]), refs["test"],
                            refs.get("test_scaffolds", refs["test"]), n_jobs)
    if "test_scaffolds" not in refs:  # no scaffold split: the /TestSF columns would repeat /Test
        metrics = {k: v for k, v in metrics.items() if not k.endswith("/TestSF")}
    if codec.bins is not None:
        values = property_values(codec.bins.name, smiles)
        valid = values[np.isfinite(values)]
        metrics[f"{codec.bins.name}_mean"] = float(valid.mean()) if len(valid) else float("nan")
        if wanted is not None:
            metrics["in_class"] = float((codec.bins.classes(valid) == wanted).mean()) if len(valid) else float("nan")
    result = {"n": n, "source": source, "seed": seed,
              "class": None if wanted is None else (codec.label_names[wanted] if codec.label_names else wanted),
              "reference_size": {k: len(v) for k, v in refs.items()}, **metrics}
    run.save_result("molecules" + ("" if source == "prior" else f"_from-{source}")
                    + ("" if wanted is None else f"_class{wanted}"), result)
    return result


def _subsample(texts: list[str], size: int, seed: int) -> list[str]:
    if not size or size >= len(texts):
        return texts
    keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return [texts[i] for i in keep.tolist()]
