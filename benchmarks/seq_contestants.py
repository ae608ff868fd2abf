"""Sequence contestants of bench_train.py: the sentence VAE (seqvae: bidirectional GRU encoder,
LSTM decoder, 256 units, vocabulary 10,000, batch 64) on WordNet's usage sentences, trained by
klvae.fit and by a plain PyTorch loop of the very same model, data order (length buckets) and
fused Adam. Each returns training tokens per second (<eos> counted) over n steps after warm-up."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

import klvae
from klvae.api import model_spec
from klvae.bounds import elbo
from klvae.loaders import loader
from klvae.models import build_model

SEQ = {"data": "wordnet-examples", "model": "seqvae", "vocab_size": 10_000, "max_length": 40, "latent_dim": 32,
       "hidden": [256], "embedding_dim": 128, "decoder_cell": "lstm", "batch_size": 64, "lr": 1e-3,
       "progress": False, "epochs": 1}


class TokenTimer(L.Callback):
    """Tokens per second over steps warmup .. warmup + n (Lightning's batches hold several steps)."""

    def __init__(self, warmup: int, n: int):
        self.warmup, self.n, self.start, self.tokens, self.rate = warmup, n, None, 0, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.start is None:
            if step >= self.warmup:
                self.start, self.t0 = step, time.perf_counter()
            return
        self.tokens += int((batch != 0).sum())
        if step - self.start >= self.n:
            self.rate = self.tokens / (time.perf_counter() - self.t0)
            trainer.should_stop = True


def klvae_seq(data_dir: str, warmup: int, n: int, out: Path, seed: int) -> float:
    timer = TokenTimer(warmup, n)
    klvae.fit({**SEQ, "data_dir": data_dir, "seed": seed, "out": str(out / "klvae-seq")}, overwrite=True,
              callbacks=[timer])
    return timer.rate


def plain_seq(data_dir: str, warmup: int, n: int, out: Path, seed: int) -> float:
    config = klvae.TrainConfig(**SEQ, data_dir=data_dir, seed=seed)
    torch.manual_seed(seed)
    data = config.data.load(seed)
    model = build_model(model_spec(config.model, data, {})).train()
    opt = torch.optim.Adam(model.parameters(), lr=SEQ["lr"], fused=True)
    tokens, t0 = 0, None
    for i, x in enumerate(loader(data.train, SEQ["batch_size"], True)):
        if i == warmup:
            t0 = time.perf_counter()
        if i >= warmup:
            tokens += int((x != 0).sum())
        opt.zero_grad(set_to_none=True)
        (-elbo(model, x).elbo.mean()).backward()
        opt.step()
        if i == warmup + n - 1:
            break
    return tokens / (time.perf_counter() - t0)
