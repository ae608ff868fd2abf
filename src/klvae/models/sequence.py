"""The sequence VAE of Bowman et al. (2016, "Generating Sentences from a Continuous Space"): a
bidirectional recurrent encoder to q(z|x), any latent family and prior of the VAE, and an
autoregressive decoder (LSTM, GRU or a small Transformer, :mod:`klvae.models.sequence_decoders`)
that is itself p(x|z). Data are rows of token ids (the tokens, <eos>, then <pad>), e.g. sentences
or SMILES strings (:mod:`klvae.data.text`).

With ``condition="label"`` the encoder, the decoder (and with ``conditional_prior`` the prior) see
the one-hot label: controlled generation, e.g. a sentence of a chosen part of speech.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from klvae import checks
from klvae.checks import doc
from klvae.data.text import PAD
from klvae.errors import KlvaeError
from klvae.latents import LATENTS, make_latent
from klvae.models.conditional import CONDITIONS, ClassGaussianPrior, check_condition
from klvae.models.sequence_decoders import CELLS, RecurrentDecoder, TransformerDecoder, lengths_of
from klvae.models.vae import VAE
from klvae.priors import PRIORS, check_prior

DECODER_CELLS = {"lstm": "an LSTM (Bowman et al.)", "gru": "a GRU",
                 "transformer": "a causal Transformer, z added to every position"}


@dataclass
class SeqVAEConfig:
    """The architecture of a sequence VAE (``model.json``); ``event_shape`` ([max tokens]),
    ``vocab_size`` and ``num_classes`` come from the data."""

    event_shape: list[int] | None = field(default=None, metadata=doc("[max tokens] (from the data)", internal=True))
    vocab_size: int = field(default=0, metadata=doc("tokens in the vocabulary (from the data)", internal=True))
    latent_dim: int = field(default=32, metadata=doc("latent dimensions D; a sequence model with 0 is its decoder "
                                                     "alone, a language model"))
    hidden: list[int] = field(default_factory=lambda: [512], metadata=doc(
        "recurrent layers of encoder and decoder, one width per layer (all equal), e.g. 512"))
    embedding_dim: int = field(default=256, metadata=doc("sequence models: token embedding size"))
    encoder_cell: str = field(default="gru", metadata=doc(
        "sequence models: the bidirectional encoder's cell", choices=tuple(CELLS)))
    decoder_cell: str = field(default="lstm", metadata=doc("sequence models: the decoder", choices=tuple(DECODER_CELLS)))
    heads: int = field(default=4, metadata=doc("transformer decoder: attention heads"))
    word_dropout: float = field(default=0.0, metadata=doc(
        "sequence models: share of decoder inputs replaced by <unk> in training (Bowman et al.)"))
    z_every_step: bool = field(default=False, metadata=doc(
        "recurrent decoders: z joins every input, not only the initial state"))
    min_scale: float = field(default=1e-4, metadata=doc(
        "floor added to softplus scales; keeps log q finite as a scale goes to 0"))
    latent: str = field(default="gaussian", metadata=doc("latent family of q(z|x) and its prior", registry=LATENTS))
    prior: str = field(default="standard", metadata=doc("p(z): the family's own, or a learned one", registry=PRIORS))
    prior_components: int = field(default=10, metadata=doc("mog: mixture components; vamp: pseudo-inputs"))
    sparsity: float = field(default=0.5, metadata=doc("spike-slab prior: probability that a latent dimension is on"))
    condition: str = field(default="none", metadata=doc("label: encoder and decoder see the one-hot label",
                                                        choices=tuple(CONDITIONS)))
    num_classes: int = field(default=0, metadata=doc("classes of the condition (from the data)", internal=True))
    conditional_prior: bool = field(default=False, metadata=doc("with --condition label: a learned p(z|y) per class"))
    name: str = field(default="seqvae", metadata=doc("the model", internal=True))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        checks.positive_int(self, "embedding_dim", "heads", "prior_components")
        checks.non_negative_int(self, "latent_dim")
        if self.latent_dim == 0 and (self.latent != "gaussian" or self.prior != "standard" or self.condition != "none"):
            raise KlvaeError("latent_dim 0 is a language model (no z): it takes --latent gaussian, --prior standard and "
                             "--condition none")
        checks.non_negative_int(self, "vocab_size", "num_classes")
        checks.int_list(self, "hidden", "positive layer widths like [512]")
        checks.declared_choices(self)
        checks.within(self, "word_dropout", 0, 1, "[)")
        checks.within(self, "min_scale", 0, 1)
        checks.within(self, "sparsity", 0, 1)
        checks.boolean(self, "z_every_step", "conditional_prior")
        if len(set(self.hidden)) != 1:
            raise KlvaeError(f"hidden must give one width for every recurrent layer (e.g. [512, 512]); got {self.hidden}")
        if self.decoder_cell == "transformer" and self.embedding_dim % self.heads:
            raise KlvaeError(f"embedding_dim ({self.embedding_dim}) must be a multiple of heads ({self.heads}) for the "
                             "transformer decoder; change --embedding-dim or --heads")
        check_prior(self.prior, self.latent)
        if PRIORS[self.prior].get("init_from_data"):
            raise KlvaeError(f"prior {self.prior} learns pseudo-inputs in data space, which token ids are not; use "
                             "--prior standard or mog")
        check_condition(self.condition, self.conditional_prior, self.latent, self.prior, self.num_classes or None)
        if self.event_shape is not None:
            self.event_shape = [int(n) for n in self.event_shape]
            if len(self.event_shape) != 1 or self.vocab_size < 5:
                raise KlvaeError(f"model seqvae reads rows of token ids (a text or SMILES data set); got data of shape "
                                 f"{self.event_shape}; pick such a data set or --model vae")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def options(cls) -> list:
        return [f for f in fields(cls) if not f.metadata.get("internal")]


class RecurrentEncoder(nn.Module):
    """Token ids (N, L) -> (N, params): a bidirectional GRU/LSTM over the packed rows, its last
    layer's final states of both directions (and the one-hot label) through a dense layer."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden: int, layers: int, cell: str, params: int,
                 num_classes: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.rnn = CELLS[cell](embedding_dim, hidden, layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden + num_classes, params)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        lengths = lengths_of(x).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.embed(x), lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        final = state[0] if isinstance(state, tuple) else state  # (layers * 2, N, hidden)
        h = torch.cat([final[-2], final[-1]], -1)
        return self.head(h if y is None else torch.cat([h, y], -1))


class NoEncoder(nn.Module):
    """The encoder of a language model (latent_dim 0): q(z|x) over an empty z."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(len(x), 0, device=x.device)


class SeqVAE(VAE):
    """A VAE over token sequences: ``encode``, ``decode`` (a :class:`TokenSequences`) and
    ``prior`` as :class:`~klvae.models.vae.VAE`'s, so every objective, bound and diagnostic works
    on it unchanged. With ``latent_dim`` 0 it is the decoder alone, a language model: its z is
    empty, its KL 0 and its bounds log p(x) itself."""

    def __init__(self, spec: SeqVAEConfig):
        nn.Module.__init__(self)
        self.spec = spec
        self.event_shape = tuple(spec.event_shape)
        self.latent_dim = spec.latent_dim
        self.num_classes = spec.num_classes if spec.condition != "none" else 0
        self.family = make_latent(spec)
        width, layers = spec.hidden[0], len(spec.hidden)
        self.encoder = (RecurrentEncoder(spec.vocab_size, spec.embedding_dim, width, layers, spec.encoder_cell,
                                         self.family.params, self.num_classes) if spec.latent_dim else NoEncoder())
        features = self.family.decoder_dim + self.num_classes
        if spec.decoder_cell == "transformer":
            self.decoder = TransformerDecoder(spec.vocab_size, spec.embedding_dim, layers, spec.heads, features,
                                              self.event_shape[0], spec.word_dropout)
        else:
            self.decoder = RecurrentDecoder(spec.vocab_size, spec.embedding_dim, width, layers, spec.decoder_cell,
                                            features, self.event_shape[0], spec.word_dropout, spec.z_every_step)
        self.likelihood, self.out_shape = None, self.event_shape
        self.learned_prior = (ClassGaussianPrior(self.num_classes, spec.latent_dim) if spec.conditional_prior
                              else PRIORS.build(spec.prior, spec, self))

    def output_elements(self, x: torch.Tensor) -> int:
        """Decoder outputs per sample of rows x (their mean tokens x the vocabulary; padding is
        never computed): what sizes the evaluation's batches."""
        return max(1, int(lengths_of(x).float().mean().ceil())) * self.spec.vocab_size
