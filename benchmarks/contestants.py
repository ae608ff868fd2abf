"""The contestants of bench_train.py.

Throughput: an MLP VAE 784-512-512-32 trained by klvae.fit, a plain loop and pythae; each ``*_train``
returns the seconds of n training steps after ``warmup`` steps.

End to end: Burda et al.'s 1-layer model (784-200-200-50, tanh, batch 100) for whole epochs; each
``*_e2e`` returns {"total": seconds of the call, "epochs": seconds of each epoch with its validation
and files}; klvae's and pythae's include everything they write. See ``e2e.py``."""
from __future__ import annotations

import logging
import time
from importlib.metadata import version
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

import klvae

try:
    from pythae.data.datasets import BaseDataset, DatasetOutput
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    PYTHAE: str | None = version("pythae")
    for _name in list(logging.root.manager.loggerDict):  # its trainer logs every step at INFO
        if _name.startswith("pythae"):
            logging.getLogger(_name).setLevel(logging.WARNING)
except ImportError:
    PYTHAE = None
    BaseEncoder = BaseDecoder = BaseDataset = TrainingCallback = object

HIDDEN, LATENT, BATCH, LR, MIN_SCALE = [512, 512], 32, 100, 1e-3, 1e-4  # MIN_SCALE: klvae's default


class BatchTimer(L.Callback):
    """Times optimisation steps warmup .. warmup + n, then stops the run (validation and files come
    after). Lightning's batches hold ``steps_per_execution`` steps each, so the clock reads
    ``global_step`` and scales the seconds to exactly n steps."""

    def __init__(self, warmup: int, n: int):
        self.warmup, self.n, self.seconds, self.start = warmup, n, None, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.start is None and step >= self.warmup:
            self.start, self.t0 = step, time.perf_counter()
        elif self.start is not None and step - self.start >= self.n:
            self.seconds = (time.perf_counter() - self.t0) * self.n / (step - self.start)
            trainer.should_stop = True


def klvae_train(data, data_dir: str, warmup: int, n: int, out: Path, seed: int, precision: str = "32-true") -> float:
    """klvae.fit as a user calls it; the run directory is left in ``out / "klvae"``."""
    timer = BatchTimer(warmup, n)
    config = klvae.TrainConfig(data="mnist", data_dir=data_dir, net="mlp", hidden=HIDDEN, latent_dim=LATENT,
                               batch_size=BATCH, lr=LR, epochs=1, seed=seed, progress=False, out=str(out / "klvae"),
                               precision=precision)
    klvae.fit(config, overwrite=True, callbacks=[timer])
    return timer.seconds


def klvae_bf16_train(data, data_dir: str, warmup: int, n: int, out: Path, seed: int) -> float:
    """klvae.fit with ``precision="bf16-mixed"`` (matrix products in bfloat16); run dir in ``out / "bf16"``."""
    return klvae_train(data, data_dir, warmup, n, out / "bf16", seed, precision="bf16-mixed")


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:  # klvae's MLP body
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1])


def plain_train(data, data_dir: str, warmup: int, n: int, out: Path, seed: int) -> float:
    """A hand-written loop: the same nets, scale softplus + MIN_SCALE, analytic KL, default Adam."""
    torch.manual_seed(seed)
    enc, dec = mlp([784, *HIDDEN, 2 * LATENT]), mlp([LATENT, *HIDDEN[::-1], 784])
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR)
    perm = torch.randperm(len(data.train))  # one epoch's shuffle
    for i in range(warmup + n):
        if i == warmup:
            t0 = time.perf_counter()
        x = torch.bernoulli(data.train[perm[i * BATCH:(i + 1) * BATCH]]).flatten(1)
        loc, raw = enc(x).chunk(2, dim=-1)
        scale = F.softplus(raw) + MIN_SCALE
        z = loc + scale * torch.randn_like(loc)
        recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        kl = (0.5 * (loc.pow(2) + scale.pow(2) - 1) - scale.log()).sum(-1)
        opt.zero_grad(set_to_none=True)
        (recon + kl).mean().backward()
        opt.step()
    return time.perf_counter() - t0


class Encoder(BaseEncoder):
    def __init__(self, hidden: list[int] = HIDDEN, latent: int = LATENT, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = mlp([784, *hidden, 2 * latent], activation)

    def forward(self, x):
        mu, log_var = self.net(x.flatten(1)).chunk(2, dim=-1)
        return ModelOutput(embedding=mu, log_covariance=log_var)


class Decoder(BaseDecoder):
    def __init__(self, hidden: list[int] = HIDDEN, latent: int = LATENT, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = mlp([latent, *hidden[::-1], 784], activation)

    def forward(self, z):  # pythae's "bce" loss takes probabilities
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, 1, 28, 28))


class DynamicBinarized(BaseDataset):
    """Grey images, drawn afresh as binary ones each time they are served."""

    def __getitem__(self, index):
        return DatasetOutput(data=torch.bernoulli(self.data[index]), labels=self.labels[index])


class StepTimer(TrainingCallback):
    def __init__(self, warmup: int, n: int):
        self.warmup, self.n, self.steps, self.seconds = warmup, n, 0, None

    def on_train_step_end(self, training_config, **kwargs):
        self.steps += 1
        if self.steps == self.warmup:
            self.t0 = time.perf_counter()
        elif self.steps == self.warmup + self.n:
            self.seconds = time.perf_counter() - self.t0


def pythae_model(like=None):
    """pythae's VAE on the same nets; with a klvae model ``like``, holding its very weights."""
    enc, dec = Encoder(), Decoder()
    if like is not None:
        enc.net.load_state_dict(like.encoder.net.state_dict())
        dec.net.load_state_dict(like.decoder.net.state_dict())
    return VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"), enc, dec)


def pythae_train(data, data_dir: str, warmup: int, n: int, out: Path, seed: int) -> float:
    """pythae's BaseTrainer for one epoch over exactly (warmup + n) * BATCH random train images."""
    torch.manual_seed(seed)
    x = data.train[torch.randperm(len(data.train))[:(warmup + n) * BATCH]]
    timer = StepTimer(warmup, n)
    config = BaseTrainerConfig(output_dir=str(out / "pythae"), num_epochs=1, learning_rate=LR,
                               per_device_train_batch_size=BATCH, optimizer_cls="Adam", no_cuda=True, seed=seed)
    BaseTrainer(pythae_model(), DynamicBinarized(x, torch.zeros(len(x))), training_config=config,
                callbacks=[timer]).train()
    return timer.seconds


@torch.no_grad()
def pythae_nll(model, x: torch.Tensor, k: int) -> float:
    """pythae's IWAE estimate: one data point at a time, all k samples in one batch."""
    return model.eval().get_nll(x, n_samples=k, batch_size=k)
