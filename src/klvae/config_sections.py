"""The sections of a training config other than the model's (which lives beside each model):
each a typed dataclass whose fields carry their ``--help`` text, validated on construction."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from klvae import checks
from klvae.checks import doc
from klvae.data import Dataset, load_dataset
from klvae.data.images import CACHES, COLORS, ImageOptions
from klvae.data.properties import PROPERTIES
from klvae.data.text import SPECIALS, TOKENIZERS
from klvae.data.tokens import TextOptions
from klvae.errors import KlvaeError
from klvae.latents import LATENTS, latent_family
from klvae.objectives import OBJECTIVES
from klvae.schedules import SCHEDULES


@dataclass
class DataConfig:
    """Where the data come from and how they are split and binarised."""

    name: str = field(default="digits", metadata=doc(
        "a data set (see `klvae datasets`), a .npy / .npz / .csv file path, or a folder of images", datasets=True))
    data_dir: str | None = field(default=None, metadata=doc("data folder; unset: $KLVAE_DATA, else ./data"))
    binarize: str = field(default="auto", metadata=doc(
        "auto: the data set's default (dynamic for MNIST-likes); dynamic: a fresh draw per batch; static: one draw",
        choices=("auto", "dynamic", "static", "none")))
    val_fraction: float = field(default=0.1, metadata=doc(
        "share of train held out for validation (unless the data set has an official split)"))
    download: bool = field(default=False, metadata=doc("fetch missing MNIST / Fashion-MNIST files"))
    exclude_labels: list[int] = field(default_factory=list, metadata=doc(
        "classes left out of train and val (anomaly detection), e.g. 3"))
    tokenizer: str = field(default="auto", metadata=doc(
        "text data: how texts become tokens; auto: the corpus's own (word for sentences, smiles for molecules)",
        registry=TOKENIZERS, extra=("auto",)))
    vocab_size: int = field(default=10_000, metadata=doc(
        "text data: the vocabulary's cap (specials included); rarer tokens become <unk>"))
    max_length: int = field(default=50, metadata=doc("text data: longest text kept, in tokens; longer ones are left "
                                                     "out and counted"))
    train_limit: int = field(default=0, metadata=doc("text data: keep the first N training texts; 0: all"))
    text_column: str | None = field(default=None, metadata=doc(
        "a CSV of texts: its text column; unset: the one named text, sentence or smiles"))
    label_column: str | None = field(default=None, metadata=doc("a CSV of texts: its label column, if any"))
    label_from: str = field(default="none", metadata=doc(
        "molecules: label each by the quantile bin (on train) of a property computed with RDKit, for --condition "
        "label", registry=PROPERTIES, extra=("none",)))
    label_bins: int = field(default=3, metadata=doc("--label-from: the number of bins of equal share"))
    image_size: int = field(default=64, metadata=doc(
        "image folders and CelebA: the side of the square images (centre-cropped, then resized), e.g. 32, 64, 128"))
    colour: str = field(default="auto", metadata=doc(
        "image folders: rgb or grey pixels; auto: grey when the files are grey, else rgb", choices=COLORS))
    image_cache: str = field(default="auto", metadata=doc(
        "image folders: memory (decode once, hold uint8 pixels) or disk (decode on each read); auto: memory when "
        "they fit", choices=CACHES))
    workers: int | None = field(default=None, metadata=doc(
        "processes that read batches while the model trains; unset: 0 for data in memory, up to 4 for images read "
        "from disk"))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        if not isinstance(self.name, str) or not self.name:
            raise KlvaeError(f"data must name a data set or a file; got {self.name!r}")
        checks.within(self, "val_fraction", 0, 0.5, "(]")
        checks.boolean(self, "download")
        checks.int_list(self, "exclude_labels", "class labels like [3]", allow_empty=True, least=-2**62)
        checks.positive_int(self, "vocab_size", "max_length")
        checks.int_at_least(self, 2, "label_bins")
        checks.non_negative_int(self, "train_limit")
        if self.workers is not None:
            checks.non_negative_int(self, "workers")
        self.image_options()  # its own checks
        if self.vocab_size < len(SPECIALS) + 1:
            raise KlvaeError(f"vocab_size must leave room for a token beside the {len(SPECIALS)} specials; got "
                             f"{self.vocab_size}")

    def load(self, seed: int, data_dir: str | None = None, vocab=None) -> Dataset:
        """The data set these options describe (``data_dir`` overrides theirs; ``vocab``: a trained
        run's vocabulary for text data)."""
        options = TextOptions(self.tokenizer, self.vocab_size, self.max_length, self.train_limit, self.text_column,
                              self.label_column, self.label_from, self.label_bins)
        return load_dataset(self.name, data_dir or self.data_dir, self.binarize, self.val_fraction, seed,
                            download=self.download, text_options=options, vocab=vocab,
                            image_options=self.image_options())

    def image_options(self) -> ImageOptions:
        """How image files become tensors (ImageOptions checks the values)."""
        return ImageOptions(self.image_size, self.colour, self.image_cache)


@dataclass
class ObjectiveConfig:
    """What training maximises and how the KL term is estimated and floored."""

    name: str = field(default="elbo", metadata=doc("what training maximises", registry=OBJECTIVES))
    k: int = field(default=1, metadata=doc(
        "samples of z per data point in training: importance samples (iwae), or averaged (elbo)"))
    dreg: bool = field(default=False, metadata=doc("iwae: the encoder's gradient by DReG (Tucker et al. 2018)"))
    beta: float = field(default=1.0, metadata=doc("weight of the KL term (tcvae, factorvae: of the total correlation)"))
    kl_estimator: str = field(default="auto", metadata=doc(
        "auto: closed form where registered, else Monte Carlo; analytic; mc", choices=("auto", "analytic", "mc")))
    kl_samples: int = field(default=1, metadata=doc("draws of a Monte Carlo KL estimate"))
    free_bits: float = field(default=0.0, metadata=doc(
        "KL floor in nats per group of latent dimensions (Kingma et al. 2016); 0: off"))
    free_bits_group: int = field(default=1, metadata=doc("latent dimensions per free-bits group"))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        checks.positive_int(self, "k", "kl_samples", "free_bits_group")
        checks.boolean(self, "dreg")
        checks.number(self, "beta", "free_bits")
        if self.beta < 0:
            raise KlvaeError(f"beta must be >= 0; got {self.beta}")
        if self.free_bits < 0:
            raise KlvaeError(f"free_bits must be >= 0 nats; got {self.free_bits}")

    def check_with(self, schedule: "ScheduleConfig", model: Any) -> None:
        """What the objective asks of the KL schedule, of --beta and of the model's latent family
        (the capabilities of its registry entry)."""
        entry = OBJECTIVES[self.name]
        weighted = OBJECTIVES.where(lambda e: bool(e.get("kl_weighted")))
        fix = f", or use --objective {weighted[0]}" if weighted else ""
        if not entry.kl_weighted and entry.beta_weighs is None and (
                self.beta != 1 or not schedule.is_constant() or self.free_bits):
            raise KlvaeError(f"objective {self.name} trains the bound itself, without a KL weight; drop --beta, "
                             f"--kl-schedule and --free-bits{fix}")
        if not entry.kl_weighted and (not schedule.is_constant() or self.free_bits):
            raise KlvaeError(f"objective {self.name} weighs the {'total correlation' if entry.beta_weighs == 'tc' else 'KL'}"
                             f" by beta, without a KL schedule; drop --kl-schedule and --free-bits{fix}")
        if entry.needs_factorised_posterior and not latent_family(model.latent).factorised:
            factorised = LATENTS.where(lambda e: e.builder.factorised)
            raise KlvaeError(f"objective {self.name} needs a factorised posterior (--latent {' or '.join(factorised)}); "
                             f"got {model.latent}")
        if self.dreg and not entry.allows_dreg:
            dreg = OBJECTIVES.where(lambda e: bool(e.get("allows_dreg")))
            raise KlvaeError(f"dreg is a gradient of the {' or '.join(dreg)} objective; add --objective {dreg[0]} or "
                             "drop --dreg")


@dataclass
class ScheduleConfig:
    """The KL weight over training (klvae.schedules); beta scales every schedule."""

    kl_schedule: str = field(default="constant", metadata=doc("the KL weight over the steps", registry=SCHEDULES))
    kl_start: float = field(default=0.0, metadata=doc("weight at step 0 as a fraction of beta (linear, sigmoid, "
                                                       "cyclical)"))
    kl_steps: int = field(default=10_000, metadata=doc(
        "steps of the ramp (linear, sigmoid), of all cycles (cyclical), of C's growth (capacity)"))
    kl_cycles: int = field(default=4, metadata=doc("cyclical: number of cycles M"))
    kl_ratio: float = field(default=0.5, metadata=doc("cyclical: fraction R of each cycle spent increasing"))
    capacity: float = field(default=25.0, metadata=doc("capacity: the target KL C in nats"))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        checks.positive_int(self, "kl_steps", "kl_cycles")
        checks.within(self, "kl_start", 0, 1, "[]")
        checks.within(self, "kl_ratio", 0, 1, "(]")
        checks.number(self, "capacity")
        if self.capacity < 0:
            raise KlvaeError(f"capacity must be >= 0 nats; got {self.capacity}")

    def is_constant(self) -> bool:
        """True when no schedule was chosen (the default: the full weight at every step)."""
        return self.kl_schedule == default_of(next(f for f in fields(self) if f.name == "kl_schedule"))

    def is_capacity(self) -> bool:
        """True for a schedule whose loss pulls the KL towards a capacity C(t)."""
        return bool(SCHEDULES[self.kl_schedule].get("capacity"))


@dataclass
class CollapseConfig:
    """Posterior-collapse detection after each validation epoch, and what to do about it."""

    collapse_kl: float = field(default=0.1, metadata=doc("collapsed when the validation KL (nats) falls below this"))
    collapse_units: int = field(default=1, metadata=doc("... or fewer latent dimensions than this are active"))
    collapse_patience: int = field(default=3, metadata=doc(
        "... for this many epochs in a row at full KL weight; then --on-collapse acts"))
    on_collapse: str = field(default="warn", metadata=doc(
        "warn; stop the run; free-bits: turn free bits on for the rest of the run",
        choices=("warn", "stop", "free-bits")))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        checks.number(self, "collapse_kl")
        if self.collapse_kl < 0:
            raise KlvaeError(f"collapse_kl must be >= 0 nats; got {self.collapse_kl}")
        checks.non_negative_int(self, "collapse_units")
        checks.positive_int(self, "collapse_patience")


@dataclass
class TrainerConfig:
    """Optimisation and engineering (Lightning's devices, precision, progress bar)."""

    epochs: int = field(default=50, metadata=doc("full passes over the training set"))
    batch_size: int = field(default=100, metadata=doc("data points per optimisation step"))
    steps_per_execution: int = field(default=8, metadata=doc(
        "optimisation steps per call of the training step: the loader hands over this many batches at once "
        "(as Keras's steps_per_execution), so Lightning's per-batch hooks run once per call; the steps are "
        "the same"))
    lr: float = field(default=1e-3, metadata=doc("Adam's step size"))
    lr_schedule: str = field(default="constant", metadata=doc(
        "constant; iwae-stages: Burda et al.'s 8 stages of 3^(i-1) epochs at lr x 10^(-(i-1)/7)",
        choices=("constant", "iwae-stages")))
    adam_eps: float = field(default=1e-8, metadata=doc("Adam's epsilon"))
    seed: int = field(default=0, metadata=doc("seed of torch, numpy and the data split"))
    patience: int = field(default=0, metadata=doc("early stopping after this many epochs without improvement; 0: off"))
    max_bad_steps: int = field(default=20, metadata=doc(
        "consecutive skipped steps (NaN/Inf, or a gradient norm above --skip-threshold) tolerated before the run stops"))
    skip_threshold: float = field(default=0.0, metadata=doc(
        "skip (and count in skipped_steps) an update whose gradient 2-norm exceeds this (VDVAE's gradient "
        "skipping); 0: off"))
    accelerator: str = field(default="auto", metadata=doc(
        "Lightning's accelerator", choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu")))
    devices: str = field(default="auto", metadata=doc("auto or the number of devices"))
    num_nodes: int = field(default=1, metadata=doc("machines (a cluster launch: torchrun or SLURM)"))
    strategy: str = field(default="auto", metadata=doc("Lightning's strategy, e.g. ddp"))
    precision: str = field(default="32-true", metadata=doc(
        "Lightning's; bf16-mixed runs the matrix products in bfloat16", choices=("32-true", "bf16-mixed", "16-mixed")))
    progress: bool = field(default=True, metadata=doc("show a progress bar"))
    baseline: bool = field(default=False, metadata=doc(
        "also train the model's baseline into RUN/baseline (seqvae: the same decoder without z, a language model), "
        "so `klvae evaluate` shows whether z helps"))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        checks.positive_int(self, "epochs", "batch_size", "steps_per_execution", "max_bad_steps", "num_nodes")
        checks.non_negative_int(self, "seed", "patience")
        checks.within(self, "lr", 0, 10)
        checks.within(self, "adam_eps", 0, 1)
        checks.number(self, "skip_threshold")
        if self.skip_threshold < 0:
            raise KlvaeError(f"skip_threshold must be >= 0 (0: off); got {self.skip_threshold}")
        checks.boolean(self, "progress", "baseline")
        if self.devices != "auto" and not (str(self.devices).isdigit() and int(self.devices) > 0):
            raise KlvaeError(f"devices must be 'auto' or a positive integer; got {self.devices!r}")
        self.devices = str(self.devices)


@dataclass
class OutputConfig:
    """Where the run goes."""

    out: str = field(default="runs/default", metadata=doc("the run directory"))
    resume: bool = field(default=False, metadata=doc("continue the run in --out from its last checkpoint"))
    iwae_k: int = field(default=1000, metadata=doc("importance samples of the evaluation after training"))

    def __post_init__(self) -> None:
        checks.declared_choices(self)
        checks.boolean(self, "resume")
        checks.positive_int(self, "iwae_k")


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def coerce(cls: type, field_name: str, value: Any, key: str | None = None) -> Any:
    """Turn YAML/flag strings into the field's type; a wrong type is a one-line error naming the
    option as the user gives it (``key``, default the field's name)."""
    matches = [f for f in fields(cls) if f.name == field_name]
    if not matches:
        return value
    name, kind = key or field_name, str(matches[0].type)
    if value is None:
        if "None" not in kind:
            raise KlvaeError(f"{name} must be of type {kind}; got null")
        return None
    try:
        if kind in ("int", "int | None") and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind in ("float", "float | None") and not isinstance(value, bool):
            return float(value)
        if kind == "bool":
            return _boolean(value)
        if kind in ("list[int]", "list[int] | None"):
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            return [int(v) for v in value]
        if kind in ("str", "str | None"):
            return str(value)
    except (TypeError, ValueError):
        raise KlvaeError(f"{name} must be of type {kind}; got {value!r}") from None
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "yes", "1"):
            return True
        if value.lower() in ("false", "no", "0"):
            return False
        raise ValueError
    return bool(value)
