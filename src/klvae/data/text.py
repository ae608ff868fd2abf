"""Text for sequence VAEs: tokenizers, a vocabulary, and padded id tensors.

>>> tok = TOKENIZERS["smiles"].builder
>>> tok.split("CC(=O)[O-]")
['C', 'C', '(', '=', 'O', ')', '[O-]']
>>> vocab = Vocabulary.build([tok.split("CCO"), tok.split("CC")])
>>> vocab.tokens[len(SPECIALS):], vocab.encode(["C", "O", "Cl"])
(('C', 'O'), [4, 5, 3])
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from klvae.errors import KlvaeError
from klvae.registry import Registry

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3

TOKENIZERS = Registry("tokenizer", "--tokenizer")


class Tokenizer(Protocol):
    """What a tokenizer entry provides: ``join(split(text))`` gives the text back (up to the
    normalisation the tokenizer documents)."""

    def split(self, text: str) -> list[str]: ...

    def join(self, tokens: Sequence[str]) -> str: ...


_CLITIC = r"'(?:s|re|ve|ll|d|m)"
_WORD_RE = re.compile(rf"""
    <unk>                         # a corpus's unknown-word marker stays one token
  | \d+(?:[.,]\d+)+               # 3.5, 1,000
  | \w+(?=n't\b)                  # "do" of "don't", "ca" of "can't"
  | n't\b | {_CLITIC}\b           # clitics as separate tokens
  | \w+(?:[-']\w+)*               # words, with inner hyphens and apostrophes: well-known, o'clock
  | \S                            # any other character alone: punctuation, quotes, brackets
""", re.VERBOSE)
_CLITIC_END = re.compile(rf"(.+?)({_CLITIC})$")


class WordTokenizer:
    """Penn-Treebank-like words: lower-cased; punctuation, quotes and brackets split off one
    character at a time; the clitics n't 's 're 've 'll 'd 'm split off ("don't" -> do n't,
    "it's" -> it 's); hyphenated words and numbers such as 3.5 or 1,000 kept whole.
    ``join`` puts spaces between tokens (it does not undo the splitting)."""

    def split(self, text: str) -> list[str]:
        tokens = []
        for token in _WORD_RE.findall(text.lower()):
            m = _CLITIC_END.match(token)  # the word pattern keeps "john's" whole: split it here
            tokens.extend(m.groups() if m else (token,))
        return tokens

    def join(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


class WhitespaceTokenizer:
    """Whitespace-separated tokens, case kept: for text already tokenised (the Penn Treebank)."""

    def split(self, text: str) -> list[str]:
        return text.split()

    def join(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


# Schwaller et al. 2019 (Molecular Transformer), the SMILES regex used across the field.
_SMILES_RE = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])"
)


class SmilesTokenizer:
    """SMILES atoms and symbols by the regex of Schwaller et al. 2019: a bracket atom ([nH],
    [C@@H], [O-]) is one token, so are Cl and Br, each bond, branch and ring-closure digit, and %NN.
    ``split`` refuses a string the regex does not cover; ``join(split(s)) == s``."""

    def split(self, text: str) -> list[str]:
        tokens = _SMILES_RE.findall(text)
        if sum(map(len, tokens)) != len(text):
            raise KlvaeError(self._uncovered(text))
        return tokens

    def join(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    @staticmethod
    def _uncovered(text: str) -> str:
        covered = [False] * len(text)
        for m in _SMILES_RE.finditer(text):
            covered[m.start():m.end()] = [True] * (m.end() - m.start())
        bad = [(i, ch) for i, ch in enumerate(text) if not covered[i]]
        where = ", ".join(f"{ch!r} at position {i}" for i, ch in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return (f"SMILES {text[:80]!r} has characters no SMILES token covers: {where}{more}; "
                "fix or drop the string, or use --tokenizer char")


class CharTokenizer:
    """One token per character; ``join`` concatenates."""

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)


TOKENIZERS.register("word", "lower-cased words, punctuation and clitics (n't, 's) split off", WordTokenizer())
TOKENIZERS.register("whitespace", "whitespace-separated tokens, case kept (already tokenised text, e.g. PTB)",
                    WhitespaceTokenizer())
TOKENIZERS.register("smiles", "SMILES atoms, bonds and ring closures (Schwaller et al. 2019 regex)",
                    SmilesTokenizer(), molecules=True)  # molecules: its texts are SMILES (klvae molecules)
TOKENIZERS.register("char", "one token per character", CharTokenizer())


def get_tokenizer(tokenizer: str | Tokenizer) -> Tokenizer:
    """A registered tokenizer by name, or ``tokenizer`` itself when it has split and join."""
    if isinstance(tokenizer, str):
        return TOKENIZERS[tokenizer].builder
    if not (callable(getattr(tokenizer, "split", None)) and callable(getattr(tokenizer, "join", None))):
        raise KlvaeError(f"tokenizer must be a name ({', '.join(TOKENIZERS)}) or an object with "
                         f"split and join; got {type(tokenizer).__name__}")
    return tokenizer


class Vocabulary:
    """Tokens <-> ids: the four SPECIALS at ids 0..3, then the corpus's tokens.

    A token not in the vocabulary, or a special other than <unk> found in a text, encodes to <unk>.
    """

    def __init__(self, tokens: Sequence[str]):
        self.tokens = tuple(_checked_tokens(tokens))
        self._ids = {t: i for i, t in enumerate(self.tokens) if i >= len(SPECIALS)}
        self._ids[SPECIALS[UNK]] = UNK

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int | None = None,
              min_count: int = 1) -> Vocabulary:
        """The specials, then tokens seen at least ``min_count`` times by decreasing count (ties
        alphabetical), cut at ``max_size`` entries in all (specials included)."""
        if max_size is not None and (not isinstance(max_size, int) or max_size < len(SPECIALS)):
            raise KlvaeError(f"max_size must be an integer >= {len(SPECIALS)} (it counts the "
                             f"{len(SPECIALS)} special tokens) or None; got {max_size!r}")
        if not isinstance(min_count, int) or min_count < 1:
            raise KlvaeError(f"min_count must be an integer >= 1; got {min_count!r}")
        counts = Counter(t for tokens in token_lists for t in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                        key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[:max_size - len(SPECIALS)]
        return cls((*SPECIALS, *ranked))

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token strings -> ids (unknown tokens -> UNK)."""
        ids = self._ids
        return [ids.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Ids -> tokens, stopping at EOS and skipping PAD and BOS."""
        out = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == EOS:
                break
            if not 0 <= i < len(self.tokens):
                raise KlvaeError(f"id {i} is outside this vocabulary of {len(self)} tokens; decode "
                                 "ids made with the same vocabulary")
            if i not in (PAD, BOS):
                out.append(self.tokens[i])
        return out

    def unk_rate(self, token_lists: Iterable[Sequence[str]]) -> float:
        """The fraction of tokens in ``token_lists`` that encode to UNK (0.0 when there are none)."""
        total = unknown = 0
        for tokens in token_lists:
            total += len(tokens)
            unknown += sum(1 for t in tokens if self._ids.get(t, UNK) == UNK)
        return unknown / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``Vocabulary.from_dict`` reads it back."""
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: Any) -> Vocabulary:
        """The vocabulary saved by ``to_dict``; a KlvaeError names what is wrong with ``d``."""
        if not isinstance(d, dict):
            raise KlvaeError(f"a saved vocabulary must be a dict with key 'tokens'; got {type(d).__name__}")
        if set(d) != {"tokens"}:
            raise KlvaeError(f"a saved vocabulary has exactly the key 'tokens'; got keys {sorted(map(str, d))}")
        return cls(d["tokens"])


def _checked_tokens(tokens: Any) -> list[str]:
    """``tokens`` if it is a list of distinct non-empty strings starting with SPECIALS."""
    where = "vocabulary tokens"
    if not isinstance(tokens, (list, tuple)):
        raise KlvaeError(f"{where} must be a list of strings; got {type(tokens).__name__}")
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or not t:
            raise KlvaeError(f"{where}: entry {i} must be a non-empty string; got {t!r}")
    if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
        raise KlvaeError(f"{where} must start with {', '.join(SPECIALS)}; got {list(tokens[:len(SPECIALS)])}")
    seen: set[str] = set()
    for t in tokens:
        if t in seen:
            raise KlvaeError(f"{where}: {t!r} appears twice; each token must have one id")
        seen.add(t)
    return list(tokens)


@dataclass
class Encoded:
    """Texts as padded ids. ids: (N, L) int64, each row its tokens then EOS, padded with PAD;
    lengths: (N,) tokens + 1; kept: (N,) indices of the texts kept; dropped: how many were not."""

    ids: torch.Tensor
    lengths: torch.Tensor
    kept: torch.Tensor
    dropped: int
    refusal: str | None = None


def encode_texts(texts: Iterable[str], tokenizer: str | Tokenizer, vocab: Vocabulary,
                 max_length: int) -> Encoded:
    """Tokenise and encode ``texts``; texts with no token, more than ``max_length`` tokens, or
    that the tokenizer refuses are dropped and counted (``refusal``: the first refusal's message).
    L is the longest kept row (0 when none is kept)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise KlvaeError(f"max_length must be a positive integer (tokens per text, EOS not "
                         f"counted); got {max_length!r}")
    tok = get_tokenizer(tokenizer)
    rows, kept, total, refusal = [], [], 0, None
    for i, text in enumerate(texts):
        total += 1
        try:
            tokens = tok.split(text)
        except KlvaeError as e:  # left out and counted, like a text too long
            refusal = refusal or f"text {i}: {e}"
            continue
        if 0 < len(tokens) <= max_length:
            rows.append(vocab.encode(tokens) + [EOS])
            kept.append(i)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if rows else 0
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    if rows:  # scatter the flat ids into their (row, column) places
        row = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        col = torch.arange(len(row)) - (lengths.cumsum(0) - lengths)[row]
        ids[row, col] = torch.tensor([t for r in rows for t in r], dtype=torch.long)
    return Encoded(ids, lengths, torch.tensor(kept, dtype=torch.long), total - len(rows), refusal)
