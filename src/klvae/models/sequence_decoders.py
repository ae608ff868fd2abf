"""Autoregressive decoders of token sequences: p(x|z) = prod_t p(x_t | x_<t, z), as a
Distribution over padded rows of token ids (each row: the tokens, then <eos>, then <pad>).

A decoder starts from z (its initial state, and with ``z_every_step`` an input at every step) and
exposes two things: the teacher-forced log-likelihood of whole rows, and one step of generation
(``start`` / ``step``), from which ancestral sampling, greedy decoding and beam search are built
once for every decoder. Word dropout (Bowman et al. 2016) replaces decoder inputs by <unk> with
probability ``word_dropout`` while training. Recurrent decoders run on packed sequences and the
Transformer on the batch's longest row with a padding mask: no compute on padding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution
from torch.nn.utils.rnn import pack_padded_sequence

from klvae.data.text import BOS, EOS, PAD, UNK
from klvae.errors import KlvaeError

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def lengths_of(x: torch.Tensor) -> torch.Tensor:
    """Tokens per row, <eos> included: (B,) int64 (rows are left-aligned, padded with <pad>)."""
    return (x != PAD).sum(-1)


def decoder_inputs(x: torch.Tensor, word_dropout: float, training: bool) -> torch.Tensor:
    """<bos> then x shifted right; in training each word input becomes <unk> with probability
    ``word_dropout`` (never <bos>)."""
    inputs = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)
    if training and word_dropout > 0:
        drop = torch.rand(inputs.shape, device=x.device) < word_dropout
        drop[:, 0] = False
        inputs = torch.where(drop & (inputs != PAD), torch.full_like(inputs, UNK), inputs)
    return inputs


def emittable(logits: torch.Tensor) -> torch.Tensor:
    """Logits with <pad> and <bos> ruled out: a row never emits them, so p(x|z) spreads over the
    tokens it can emit (log_prob and generation read the same distribution)."""
    return logits.index_fill(-1, torch.tensor([PAD, BOS], device=logits.device), -math.inf)


class StartState(nn.Linear):
    """A dense layer of z; with no z (a language model's 0 features) a learned constant."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(max(in_features, 1), out_features)
        self.empty = in_features == 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(h), -1) if self.empty else super().forward(h)


class SequenceDecoder(nn.Module):
    """Shared by the decoders: the output layer, the distribution, and generation."""

    max_length: int
    vocab_size: int

    def forward(self, h: torch.Tensor) -> "TokenSequences":
        return TokenSequences(self, h)

    def log_likelihood(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|h) per row, (B,), for h (B, F) and x (B, L) token ids."""
        raise NotImplementedError

    def start(self, h: torch.Tensor):
        """The generation state before the first token, for h (B, F)."""
        raise NotImplementedError

    def step(self, state, tokens: torch.Tensor):
        """(log-probabilities of the next token (B, V), new state) after feeding ``tokens`` (B,)."""
        raise NotImplementedError

    def reorder(self, state, index: torch.Tensor):
        """The state of the rows ``index`` (beam search keeps the best continuations)."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, h: torch.Tensor, method: str = "sample", temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Token rows (B, max_length) from h (B, F): ``sample`` draws each token (ancestral
        sampling), ``greedy`` takes the most likely one; each row ends with <eos> then <pad>."""
        state = self.start(h)
        tokens = torch.full((len(h),), BOS, dtype=torch.long, device=h.device)
        out = torch.full((len(h), self.max_length), PAD, dtype=torch.long, device=h.device)
        done = torch.zeros(len(h), dtype=torch.bool, device=h.device)
        for t in range(self.max_length):
            logp, state = self.step(state, tokens)
            if t == self.max_length - 1:
                tokens = torch.full_like(tokens, EOS)
            elif method == "greedy":
                tokens = logp.argmax(-1)
            else:
                probs = F.softmax(logp / temperature, -1)
                tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            out[:, t] = torch.where(done, torch.full_like(tokens, PAD), tokens)
            done |= tokens == EOS
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def beam(self, h: torch.Tensor, width: int = 5) -> torch.Tensor:
        """The most likely rows (B, max_length) a beam of ``width`` finds (scores: summed log
        probabilities; a finished row keeps its score)."""
        b, w, v = len(h), width, self.vocab_size
        state = self.reorder(self.start(h), torch.arange(b, device=h.device).repeat_interleave(w))
        score = torch.full((b, w), -math.inf, device=h.device)
        score[:, 0] = 0.0
        rows = torch.full((b * w, self.max_length), PAD, dtype=torch.long, device=h.device)
        tokens = torch.full((b * w,), BOS, dtype=torch.long, device=h.device)
        done = torch.zeros(b * w, dtype=torch.bool, device=h.device)
        for t in range(self.max_length):
            logp, state = self.step(state, tokens)
            if t == self.max_length - 1:  # the row must end: only <eos>, at its own probability
                logp[:, :EOS] = logp[:, EOS + 1:] = -math.inf
            logp[done] = -math.inf
            logp[done, PAD] = 0.0  # a finished row extends with padding at no cost
            total = (score.view(-1, 1) + logp).view(b, w * v)
            score, best = total.topk(w, -1)
            source = (best // v + torch.arange(b, device=h.device).view(-1, 1) * w).view(-1)
            tokens = (best % v).view(-1)
            rows, done, state = rows[source], done[source], self.reorder(state, source)
            rows[:, t] = tokens
            done = done | (tokens == EOS)
            if bool(done.all()):
                break
        return rows.view(b, w, -1)[:, 0]


class RecurrentDecoder(SequenceDecoder):
    """An LSTM or GRU language model whose initial state is a dense function of z (Bowman et al.);
    with ``z_every_step`` z's features also join every input."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, layers: int, cell: str, in_features: int,
                 max_length: int, word_dropout: float = 0.0, z_every_step: bool = False):
        super().__init__()
        self.vocab_size, self.max_length, self.word_dropout = vocab_size, max_length, word_dropout
        self.cell, self.layers, self.hidden, self.z_every_step = cell, layers, hidden, z_every_step
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.init = StartState(in_features, layers * hidden * (2 if cell == "lstm" else 1))
        self.rnn = CELLS[cell](embedding_dim + (in_features if z_every_step else 0), hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def _state(self, h: torch.Tensor):
        s = torch.tanh(self.init(h)).view(len(h), -1, self.layers, self.hidden).permute(1, 2, 0, 3).contiguous()
        return (s[0], s[1]) if self.cell == "lstm" else s[0]

    def _inputs(self, tokens: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        e = self.embed(tokens)
        return torch.cat([e, h.unsqueeze(1).expand(-1, e.shape[1], -1)], -1) if self.z_every_step else e

    def log_likelihood(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lengths = lengths_of(x).clamp_min(1).cpu()
        inputs = self._inputs(decoder_inputs(x, self.word_dropout, self.training), h)
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed, self._state(h))
        rows = torch.arange(len(x), device=x.device).unsqueeze(1).expand_as(x)
        order = pack_padded_sequence(rows, lengths, batch_first=True, enforce_sorted=False).data
        target = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False).data
        token_logp = -F.cross_entropy(emittable(self.out(out.data)), target, reduction="none")
        return torch.zeros(len(x), dtype=token_logp.dtype, device=x.device).index_add(0, order, token_logp)

    def start(self, h: torch.Tensor):
        return self._state(h), h

    def step(self, state, tokens: torch.Tensor):
        rnn_state, h = state
        out, rnn_state = self.rnn(self._inputs(tokens.unsqueeze(1), h), rnn_state)
        return F.log_softmax(emittable(self.out(out[:, -1])), -1), (rnn_state, h)

    def reorder(self, state, index: torch.Tensor):
        rnn_state, h = state
        pick = (lambda s: s[:, index]) if self.cell == "gru" else (lambda s: (s[0][:, index], s[1][:, index]))
        return pick(rnn_state), h[index]


class TransformerDecoder(SequenceDecoder):
    """A causal Transformer over token and position embeddings, z's projection added to every
    position; runs on the batch's longest row with a padding mask."""

    def __init__(self, vocab_size: int, embedding_dim: int, layers: int, heads: int, in_features: int,
                 max_length: int, word_dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.max_length, self.word_dropout = vocab_size, max_length, word_dropout
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.position = nn.Embedding(max_length, embedding_dim)
        self.from_z = StartState(in_features, embedding_dim)
        block = nn.TransformerEncoderLayer(embedding_dim, heads, 4 * embedding_dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.out = nn.Linear(embedding_dim, vocab_size)

    def _logits(self, tokens: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        e = self.embed(tokens) + self.position.weight[:n] + self.from_z(h).unsqueeze(1)
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=tokens.device, dtype=e.dtype)
        return emittable(self.out(self.body(e, mask=causal, is_causal=True)))

    def log_likelihood(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        longest = int(lengths_of(x).max().clamp_min(1))
        x = x[:, :longest]
        inputs = decoder_inputs(x, self.word_dropout, self.training)
        logits = self._logits(inputs, h)  # causal: a padded position never reaches a real one
        token_logp = -F.cross_entropy(logits.transpose(1, 2), x, reduction="none", ignore_index=PAD)
        return token_logp.sum(-1)

    def start(self, h: torch.Tensor):
        return h, torch.zeros(len(h), 0, dtype=torch.long, device=h.device)

    def step(self, state, tokens: torch.Tensor):
        h, prefix = state
        prefix = torch.cat([prefix, tokens.unsqueeze(1)], 1)
        return F.log_softmax(self._logits(prefix, h)[:, -1], -1), (h, prefix)

    def reorder(self, state, index: torch.Tensor):
        h, prefix = state
        return h[index], prefix[index]


class TokenSequences(Distribution):
    """p(x|z) over rows of token ids: batch_shape (*S) of the decoder input h (*S, F), event (L,).
    ``log_prob(x)`` takes rows whose batch is a suffix of (*S) (e.g. x (N, L) for z (K, N, D))."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, decoder: SequenceDecoder, h: torch.Tensor):
        self.decoder, self.h = decoder, h
        super().__init__(h.shape[:-1], torch.Size([decoder.max_length]), validate_args=False)

    def _flat_h(self) -> torch.Tensor:  # (B, F); F may be 0 (a language model)
        return self.h.reshape(self.batch_shape.numel(), self.h.shape[-1])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        lead = self.batch_shape
        x = x.expand(*lead, x.shape[-1]).reshape(lead.numel(), x.shape[-1])
        return self.decoder.log_likelihood(self._flat_h(), x).view(lead)

    def sample(self, sample_shape=torch.Size(), method: str = "sample") -> torch.Tensor:
        h = self.h.expand(*sample_shape, *self.h.shape)
        h = h.reshape(h.shape[:-1].numel(), h.shape[-1])
        return self.decoder.generate(h, method).view(*sample_shape, *self.batch_shape, -1)

    @property
    def mean(self) -> torch.Tensor:
        """Greedy decoding: the deterministic read-out that pictures and texts of a run use (the
        mean and the mode of a sequence distribution are intractable; :meth:`decode_as` offers
        beam search and ancestral sampling)."""
        return self.sample(method="greedy")

    mode = mean

    def decode_as(self, method: str, beam_width: int = 5) -> torch.Tensor:
        """Rows (*S, L) by ``greedy`` decoding, ancestral ``sample``-ing or ``beam`` search."""
        if method == "beam":
            return self.decoder.beam(self._flat_h(), beam_width).view(*self.batch_shape, -1)
        if method not in DECODINGS:
            raise KlvaeError(f"decoding must be one of {', '.join(DECODINGS)}; got {method!r}")
        return self.sample(method=method)


DECODINGS = {"greedy": "the most likely token at each step", "sample": "each token drawn (ancestral sampling)",
             "beam": "beam search over whole rows (--beam-width)"}
