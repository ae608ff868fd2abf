"""The training configuration: one typed dataclass, validated once, read from YAML or flags."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from klvae.errors import KlvaeError
from klvae.latents import LATENTS, PRIORS, check_combination
from klvae.models.conditional import check_condition

VQ_OPTIONS = ("codes", "positions", "commitment", "quantizer", "temperature", "temperature_steps")
CHOICES = {
    "model": ("vae", "hvae", "vqvae"),
    "quantizer": ("vq-ema", "vq", "gumbel"),
    "net": ("auto", "mlp", "conv"),
    "likelihood": ("auto", "bernoulli", "gaussian"),
    "binarize": ("auto", "dynamic", "static", "none"),
    "activation": ("relu", "tanh", "elu", "gelu"),
    "kl_estimator": ("auto", "analytic", "mc"),
    "accelerator": ("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "precision": ("32-true", "bf16-mixed", "16-mixed"),
    "latent": tuple(LATENTS),
    "prior": tuple(PRIORS),
    "decoder": ("factorised", "autoregressive"),
    "kl_schedule": ("constant", "linear", "sigmoid", "cyclical", "capacity"),
    "on_collapse": ("warn", "stop", "free-bits"),
    "objective": ("elbo", "iwae", "tcvae", "factorvae"),
    "lr_schedule": ("constant", "iwae-stages"),
}


@dataclass
class TrainConfig:
    """Everything a training run needs; ``config.yaml`` in a run directory holds one of these.

    Units: ``beta`` weighs the KL (nats); ``lr`` is Adam's step size; ``epochs`` are full passes.
    """

    # data
    data: str = "digits"
    data_dir: str | None = None  # None: $KLVAE_DATA, else ./data
    binarize: str = "auto"  # auto: the dataset's default (dynamic for MNIST-likes)
    val_fraction: float = 0.1
    download: bool = False
    exclude_labels: list[int] = field(default_factory=list)  # classes left out of train and val (anomaly detection)
    # model
    model: str = "vae"
    # hvae: latent layer sizes bottom to top, e.g. [100, 50]; latent_dim becomes their sum (z_1..z_L concatenated)
    latent_dims: list[int] = field(default_factory=list)
    residual: bool = False  # hvae: q(z_l|x,z_l+1) as offsets of p(z_l|z_l+1) (NVAE), not the precision-weighted merge
    kl_balance: bool = False  # hvae: while the KL weight is below 1, weigh each layer's KL by its share (NVAE)
    codes: int = 512  # vqvae: codebook size K; the code dimension is latent_dim
    positions: int = 16  # vqvae: codes per data point (the encoder outputs positions x latent_dim values)
    commitment: float = 0.25  # vqvae: weight of the commitment loss (van den Oord et al.'s beta; --beta weighs the KL)
    quantizer: str = "vq-ema"  # vqvae: vq-ema (EMA codebook) | vq (codebook loss) | gumbel (relaxed, hardening into VQ)
    temperature: float = 1.0  # vqvae gumbel: the starting temperature, annealed exponentially to 0.1 ...
    temperature_steps: int = 10_000  # ... over these training steps; then hard straight-through samples
    latent_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    net: str = "auto"  # auto: conv for 28x28 / 64x64 images, else MLP
    activation: str = "relu"
    likelihood: str = "auto"  # auto: bernoulli for binary/binarised data, else gaussian
    decoder_scale: float | None = None  # Gaussian likelihood: fixed scale, None = learned per pixel
    min_scale: float = 1e-4  # floor added to softplus scales; keeps log q finite when sigma -> 0
    latent: str = "gaussian"  # gaussian | vmf | power-spherical | von-mises | spike-slab
    prior: str = "standard"  # standard (the family's own) | mog | vamp (Gaussian latents)
    prior_components: int = 10  # mixture components (mog) or pseudo-inputs (vamp)
    sparsity: float = 0.5  # spike-slab prior: probability that a latent dimension is on
    decoder: str = "factorised"  # factorised: pixels independent given z | autoregressive: a GRU over image rows
    # conditional VAE: none | label (encoder, decoder and prior given the one-hot class label of labelled data)
    condition: str = "none"
    conditional_prior: bool = False  # condition label: a learned Gaussian p(z|y) per class instead of the standard p(z)
    # objective
    # elbo (beta-ELBO) | iwae (the K-sample bound of Burda et al. 2015) | tcvae (beta-TCVAE, Chen et al.
    # 2018) | factorvae (Kim & Mnih 2018); for tcvae and factorvae, beta weighs the total correlation
    objective: str = "elbo"
    k: int = 1  # samples of z per data point in training: importance samples (iwae), or averaged (elbo)
    dreg: bool = False  # iwae: the encoder's gradient by DReG (Tucker et al. 2018)
    beta: float = 1.0
    kl_estimator: str = "auto"
    kl_samples: int = 1
    # the KL weight over training (see klvae.schedules); beta scales every schedule (capacity: gamma)
    kl_schedule: str = "constant"  # constant | linear | sigmoid | cyclical | capacity
    kl_start: float = 0.0  # weight at step 0 as a fraction of beta (linear, sigmoid, cyclical)
    kl_steps: int = 10_000  # steps of the ramp (linear, sigmoid), of all cycles (cyclical), of C's growth (capacity)
    kl_cycles: int = 4  # cyclical: number of cycles M
    kl_ratio: float = 0.5  # cyclical: fraction R of each cycle spent increasing
    capacity: float = 25.0  # capacity: target KL C in nats (Burgess et al. 2018)
    free_bits: float = 0.0  # KL floor lambda in nats per group of latent dimensions (Kingma et al. 2016); 0 = off
    free_bits_group: int = 1  # latent dimensions per free-bits group
    # collapse detection after each validation epoch
    collapse_kl: float = 0.1  # collapsed when the validation KL (nats) falls below this ...
    collapse_units: int = 1  # ... or fewer latent dimensions than this are active
    collapse_patience: int = 3  # ... for this many epochs in a row at full KL weight; then:
    on_collapse: str = "warn"  # warn | stop | free-bits (turn free bits on for the rest of the run)
    # optimisation
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | iwae-stages (Burda et al. 2015: 8 stages of 3^(i-1) epochs, lr x 10^(-(i-1)/7))
    adam_eps: float = 1e-8
    seed: int = 0
    patience: int = 0  # early stopping on validation ELBO after this many flat epochs; 0 = off
    max_bad_steps: int = 20  # consecutive non-finite steps tolerated before the run stops
    # engineering (Lightning)
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"  # Lightning's; "bf16-mixed" runs the matrix products in bfloat16
    progress: bool = True
    # outputs
    out: str = "runs/default"
    resume: bool = False
    iwae_k: int = 1000  # importance samples used by evaluation after training

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise KlvaeError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        _positive_int(self, "latent_dim", "epochs", "batch_size", "kl_samples", "num_nodes",
                      "iwae_k", "max_bad_steps", "prior_components", "kl_steps", "kl_cycles", "free_bits_group",
                      "collapse_patience", "k")
        check_combination(self.latent, self.prior)
        self._validate_model()
        if not isinstance(self.exclude_labels, list) or any(
            not isinstance(c, int) or isinstance(c, bool) for c in self.exclude_labels
        ):
            raise KlvaeError(f"exclude_labels must be a list of class labels like [3]; got {self.exclude_labels!r}")
        if not isinstance(self.hidden, list) or not self.hidden or any(
            not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in self.hidden
        ):
            raise KlvaeError(f"hidden must be a list of positive layer widths like [256, 256]; got {self.hidden!r}")
        for name in ("beta", "lr", "adam_eps", "min_scale", "val_fraction", "sparsity", "kl_start", "kl_ratio", "capacity",
                     "free_bits", "collapse_kl"):
            _number(self, name)
        if not 0 <= self.kl_start <= 1:
            raise KlvaeError(f"kl_start must be in [0, 1] (a fraction of beta); got {self.kl_start}")
        if not 0 < self.kl_ratio <= 1:
            raise KlvaeError(f"kl_ratio must be in (0, 1]; got {self.kl_ratio}")
        for name in ("capacity", "free_bits", "collapse_kl"):
            if getattr(self, name) < 0:
                raise KlvaeError(f"{name} must be >= 0 nats; got {getattr(self, name)}")
        if self.objective == "iwae" and (self.beta != 1 or self.kl_schedule != "constant" or self.free_bits):
            raise KlvaeError("objective iwae trains the bound itself, without a KL weight; drop --beta, "
                             "--kl-schedule and --free-bits, or use --objective elbo")
        if self.objective in ("tcvae", "factorvae") and (self.kl_schedule != "constant" or self.free_bits):
            raise KlvaeError(f"objective {self.objective} weighs the total correlation by beta, without a KL schedule; "
                             "drop --kl-schedule and --free-bits, or use --objective elbo")
        if self.objective in ("tcvae", "factorvae") and self.latent != "gaussian":
            raise KlvaeError(f"objective {self.objective} needs --latent gaussian (a factorised posterior); got {self.latent}")
        if self.dreg and self.objective != "iwae":
            raise KlvaeError("dreg is a gradient of the iwae objective; add --objective iwae or drop --dreg")
        if not isinstance(self.collapse_units, int) or isinstance(self.collapse_units, bool) or self.collapse_units < 0:
            raise KlvaeError(f"collapse_units must be a non-negative integer; got {self.collapse_units!r}")
        if not 0 < self.sparsity < 1:
            raise KlvaeError(f"sparsity must be in (0, 1); got {self.sparsity}")
        if self.beta < 0:
            raise KlvaeError(f"beta must be >= 0; got {self.beta}")
        if not 0 < self.adam_eps < 1:
            raise KlvaeError(f"adam_eps must be in (0, 1); got {self.adam_eps}")
        if not 0 < self.lr < 10:
            raise KlvaeError(f"lr must be in (0, 10); got {self.lr}")
        if not 0 < self.min_scale < 1:
            raise KlvaeError(f"min_scale must be in (0, 1); got {self.min_scale}")
        if not 0 < self.val_fraction <= 0.5:
            raise KlvaeError(f"val_fraction must be in (0, 0.5]; got {self.val_fraction}")
        if self.decoder_scale is not None:
            _number(self, "decoder_scale")
            if self.decoder_scale <= 0:
                raise KlvaeError(f"decoder_scale must be > 0 (or null for a learned scale); got {self.decoder_scale}")
        for name in ("seed", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise KlvaeError(f"{name} must be a non-negative integer; got {getattr(self, name)!r}")
        if self.devices != "auto" and not (str(self.devices).isdigit() and int(self.devices) > 0):
            raise KlvaeError(f"devices must be 'auto' or a positive integer; got {self.devices!r}")
        self.devices = str(self.devices)
        self._check_condition()

    def _check_condition(self) -> None:
        """The conditional VAE's options (the data's labels are checked when it is loaded)."""
        if not isinstance(self.conditional_prior, bool):
            raise KlvaeError(f"conditional_prior must be true or false; got {self.conditional_prior!r}")
        check_condition(self.condition, self.conditional_prior, self.latent, self.prior)
        if self.condition != "none" and (self.model != "vae" or self.objective != "elbo"):
            raise KlvaeError(f"condition {self.condition} trains model vae with objective elbo; got model {self.model!r}, "
                             f"objective {self.objective!r}; use --model vae --objective elbo or --condition none")

    def _validate_model(self) -> None:
        """The options of --model hvae and --model vqvae: each only with its model, and consistent."""
        defaults = {f.name: f.default for f in fields(self) if f.name in VQ_OPTIONS}
        options = {"hvae": [n for n in ("latent_dims", "residual", "kl_balance") if getattr(self, n)],
                   "vqvae": [n for n in VQ_OPTIONS if getattr(self, n) != defaults[n]]}
        for model, used in options.items():
            if used and self.model != model:
                raise KlvaeError(f"{', '.join(used)} {'are options' if len(used) > 1 else 'is an option'} of "
                                 f"--model {model}; add --model {model} or drop them")
        if self.model == "hvae":
            self._validate_hvae()
        elif self.model == "vqvae":
            self._validate_vqvae()

    def _validate_hvae(self) -> None:
        from klvae.models.hierarchical import check_hierarchical

        check_hierarchical(self)
        if self.objective not in ("elbo", "iwae") or self.dreg:
            raise KlvaeError(f"model hvae trains with --objective elbo or iwae (without --dreg); got objective "
                             f"{self.objective!r}{', dreg' if self.dreg else ''}")
        if self.kl_balance and self.objective != "elbo":
            raise KlvaeError("kl_balance weighs the layers' KL terms of --objective elbo; drop --kl-balance or use it")
        self.latent_dim = sum(self.latent_dims)

    def _validate_vqvae(self) -> None:
        from klvae.models.vqvae import check_vqvae

        for name in ("commitment", "temperature"):
            _number(self, name)
        check_vqvae(self)
        if self.objective != "elbo" or self.free_bits or self.kl_schedule == "capacity":
            raise KlvaeError("model vqvae trains with --objective elbo, without --free-bits or --kl-schedule capacity; "
                             f"got objective {self.objective!r}, free_bits {self.free_bits}, kl_schedule {self.kl_schedule!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KlvaeError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        try:
            return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})
        except TypeError as err:  # pragma: no cover - guarded by _coerce
            raise KlvaeError(f"bad config: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise KlvaeError(f"config file {path} not found; pass an existing YAML file to --config")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise KlvaeError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]}); fix its syntax") from None
        if not isinstance(values, dict):
            raise KlvaeError(f"config file {path} must hold a mapping of option: value; got {type(values).__name__}")
        values.update(overrides)
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn YAML/flag strings into the field's type; a wrong type is a one-line error."""
    default = next(f for f in fields(cls) if f.name == name)
    kind = default.type
    if value is None:
        if "None" not in kind:
            raise KlvaeError(f"{name} must be of type {kind}; got null")
        return None
    try:
        if kind == "int" and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind in ("float", "float | None") and not isinstance(value, bool):
            return float(value)
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1"):
                    return True
                if value.lower() in ("false", "no", "0"):
                    return False
                raise ValueError
            return bool(value)
        if kind == "list[int]":
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            return [int(v) for v in value]
        if kind == "str" or kind == "str | None":
            return str(value)
    except (TypeError, ValueError):
        raise KlvaeError(f"{name} must be of type {kind}; got {value!r}") from None
    return value


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KlvaeError(f"{name} must be a positive integer; got {value!r}")


def _number(cfg: TrainConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
        float("inf"), float("-inf")
    ):
        raise KlvaeError(f"{name} must be a finite number; got {value!r}")
