"""An autoregressive decoder over image rows: a strong p(x|z) that can model the data without z.

    p(x|z) = prod_r prod_c Bernoulli(x_rc | x_<r, z)

A GRU runs down the rows of a (C, H, W) image. Its initial state is tanh(A z); its input at row r
is the previous row (zeros for r = 0; the C channels of a row flattened to C * W values) joined to
a projection relu(B z); a linear layer maps its output at row r to the C * W logits of row r. So
the pixels of one row are independent given the rows above and z, and the rows are not: with
enough width the decoder fits the data on its own, and the plain ELBO pays no KL for a z it does
not need — posterior collapse (Bowman et al. 2016; Chen et al. 2017, "Variational Lossy
Autoencoder").

``RowGRUDecoder`` is the network; called on the decoder input of z it returns a
``RowAutoregressive`` distribution, whose log_prob uses teacher forcing (one GRU pass over all rows,
every sequence of the batch at once) and whose sample draws row after row.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution, constraints


class RowGRUDecoder(nn.Module):
    """z: (*S, D) -> RowAutoregressive with batch_shape (*S) over (C, H, W) images.

    ``width`` is the GRU's state size (VAE uses hidden[0], the factorised decoder's last layer).
    """

    def __init__(self, event_shape: tuple[int, ...], width: int, latent_dim: int):
        super().__init__()
        self.event_shape = tuple(event_shape)
        channels, self.rows, cols = self.event_shape
        self.row_size = channels * cols
        self.width = width
        self.initial = nn.Linear(latent_dim, width)  # z -> h_0 (after tanh)
        self.context = nn.Linear(latent_dim, width)  # z -> the part of every row's input that is z
        self.gru = nn.GRU(self.row_size + width, width, batch_first=True)
        self.out = nn.Linear(width, self.row_size)

    def forward(self, z: torch.Tensor) -> "RowAutoregressive":
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        h0 = torch.tanh(self.initial(flat)).view(*lead, self.width)
        ctx = F.relu(self.context(flat)).view(*lead, self.width)
        return RowAutoregressive(self, h0, ctx)

    def row_logits(self, prev_rows: torch.Tensor, h0: torch.Tensor, ctx: torch.Tensor):
        """prev_rows: (B, L, C*W) inputs, h0 and ctx: (B, width) -> logits (B, L, C*W), state (1, B, width)."""
        inputs = torch.cat([prev_rows, ctx[:, None, :].expand(-1, prev_rows.shape[1], -1)], dim=-1)
        out, h = self.gru(inputs, h0[None].contiguous())
        return self.out(out), h

    def to_rows(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, H, C*W): row r holds the C channels of image row r."""
        return x.transpose(-3, -2).flatten(-2)

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """rows: (B, H, C*W) -> (B, C, H, W)."""
        channels, _, cols = self.event_shape
        return rows.unflatten(-1, (channels, cols)).transpose(-3, -2)

    def run_rows(self, h0: torch.Tensor, ctx: torch.Tensor, next_row) -> torch.Tensor:
        """Row after row: ``next_row(logits)`` (B, C*W) gives the row fed to the next step.
        h0, ctx: (B, width) -> the rows produced, (B, C, H, W)."""
        prev = h0.new_zeros(h0.shape[0], 1, self.row_size)
        h, rows = h0, []
        for _ in range(self.rows):
            logits, state = self.row_logits(prev, h, ctx)
            row = next_row(logits[:, 0])
            rows.append(row)
            prev, h = row[:, None, :], state[0]
        return self.from_rows(torch.stack(rows, dim=1))


class RowAutoregressive(Distribution):
    """p(x|z) = prod_r prod_c Bernoulli(x_rc | x_<r, z) over (C, H, W) images.

    batch_shape (*S) = z's leading dims; event_shape (C, H, W). ``h0``, ``ctx``: (*S, width), what
    the network made of z. ``mean`` is an approximation (the exact one sums over every earlier row):
    the row-by-row pass that feeds each row's probabilities, not a sampled row, to the next step —
    deterministic, and what the pictures of klvae.generation show.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 3)
    has_rsample = False

    def __init__(self, net: RowGRUDecoder, h0: torch.Tensor, ctx: torch.Tensor, validate_args: bool | None = False):
        if h0.shape != ctx.shape or h0.shape[-1] != net.width:
            raise ValueError(f"h0 and ctx must both have shape (*S, {net.width}); got {tuple(h0.shape)}, {tuple(ctx.shape)}")
        self.net, self.h0, self.ctx = net, h0, ctx
        super().__init__(h0.shape[:-1], net.event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + (self.net.width,)
        return RowAutoregressive(self.net, self.h0.expand(shape), self.ctx.expand(shape),
                                 validate_args=self._validate_args)

    def _flat_context(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """h0 and ctx broadcast to (*shape, width) and flattened to (B, width), B = prod(shape)."""
        full = shape + (self.net.width,)
        return self.h0.expand(full).reshape(-1, self.net.width), self.ctx.expand(full).reshape(-1, self.net.width)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats by teacher forcing; value: (*T, C, H, W) broadcastable with the batch
        -> (broadcast of *T and *S)."""
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(self.batch_shape, value.shape[:-3])
        x = value.expand(shape + self.event_shape).reshape(-1, *self.event_shape)
        h0, ctx = self._flat_context(shape)
        rows = self.net.to_rows(x.to(h0.dtype))  # (B, H, C*W)
        prev = F.pad(rows[:, :-1], (0, 0, 1, 0))  # row r sees row r - 1; row 0 sees zeros
        logits, _ = self.net.row_logits(prev, h0, ctx)
        nll = F.binary_cross_entropy_with_logits(logits, rows, reduction="none")
        return -nll.sum((-2, -1)).view(shape)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Ancestral sampling, row after row: (*sample_shape, *S, C, H, W) in {0, 1}."""
        shape = torch.Size(sample_shape) + self.batch_shape
        h0, ctx = self._flat_context(shape)
        x = self.net.run_rows(h0, ctx, lambda logits: torch.bernoulli(torch.sigmoid(logits)))
        return x.view(shape + self.event_shape)

    @property
    def mean(self) -> torch.Tensor:
        """Approximate E[x|z], (*S, C, H, W): each row's probabilities fed to the next step."""
        h0, ctx = self._flat_context(self.batch_shape)
        x = self.net.run_rows(h0, ctx, torch.sigmoid)
        return x.view(self.batch_shape + self.event_shape)

    def __repr__(self) -> str:
        return (f"RowAutoregressive(batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)}, "
                f"width={self.net.width}, rows={self.net.rows})")

