"""Text and SMILES data sets as rows of token ids: the registered corpora (WordNet, MOSES), a
user's text file, CSV or Penn Treebank folder, tokenised, with the vocabulary built on train.

A :class:`TokenDataset` is a :class:`~klvae.data.dataset.Dataset` whose splits are int64 rows
(N, max_length): the tokens, <eos>, then <pad>; labels (a text's class, e.g. its part of speech)
are class indices into the codec's ``label_names``. Its codec (:class:`Vocab`: the tokenizer,
the vocabulary, the label names) goes into the run directory as vocab.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from klvae.data import corpora
from klvae.data.dataset import Dataset
from klvae.data.splits import holdout, split_count
from klvae.data.text import EOS, TOKENIZERS, Vocabulary, encode_texts
from klvae.errors import KlvaeError


@dataclass(frozen=True)
class TextOptions:
    """How texts become token rows: the tokenizer (auto: the corpus's own), the vocabulary cap,
    the longest text kept (in tokens; its row adds <eos>), a cap on the training texts (0: all) and, for a CSV,
    its text and label columns."""

    tokenizer: str = "auto"
    vocab_size: int = 10_000
    max_length: int = 50
    train_limit: int = 0
    text_column: str | None = None
    label_column: str | None = None


@dataclass(frozen=True)
class TextSource:
    """A registered corpus: ``read(data_dir, options)`` gives its TextSplits; ``tokenizer`` is
    the default one."""

    name: str
    description: str
    read: object
    tokenizer: str


@dataclass(frozen=True)
class Vocab:
    """A text run's vocabulary with its tokenizer and label names: texts to rows and back."""

    vocabulary: Vocabulary
    tokenizer: str
    label_names: list[str]

    def encode(self, texts: list[str], width: int) -> torch.Tensor:
        """Token rows (N, width) of texts (tokens, <eos>, padding); a text too long for the
        model is a KlvaeError."""
        tokenizer = TOKENIZERS[self.tokenizer].builder
        rows = torch.zeros(len(texts), width, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = self.vocabulary.encode(tokenizer.split(text)) + [EOS]
            if len(ids) > width:
                raise KlvaeError(f"{text[:40]!r} has {len(ids) - 1} tokens; the model reads at most {width - 1}")
            rows[i, :len(ids)] = torch.tensor(ids)
        return rows

    def decode(self, rows: torch.Tensor) -> list[str]:
        join = TOKENIZERS[self.tokenizer].builder.join
        return [join(self.vocabulary.decode(r)) for r in rows.tolist()]

    def label(self, name: str) -> int:
        if name not in self.label_names:
            raise KlvaeError(f"label must be one of {', '.join(self.label_names) or '(none: unlabelled data)'}; got "
                             f"{name!r}")
        return self.label_names.index(name)


@dataclass(repr=False)
class TokenDataset(Dataset):
    """A Dataset of token rows with the codec that reads and writes them."""

    codec: Vocab | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)  # the kept texts of each split (and extra ones)
    dropped: int = 0  # texts longer than max_length (or empty), left out


SOURCES = {
    "wordnet": TextSource("wordnet", "WordNet 3.0 definitions (106k / 5.7k / 5.8k), labelled by part of speech",
                          lambda d, o: corpora.read_wordnet(d, "definitions"), "word"),
    "wordnet-examples": TextSource("wordnet-examples", "WordNet 3.0 usage sentences (43.7k / 2.3k / 2.4k), labelled "
                                   "by part of speech", lambda d, o: corpora.read_wordnet(d, "examples"), "word"),
    "moses": TextSource("moses", "the MOSES benchmark's SMILES (1.58M train, 176k test, 176k scaffold test)",
                        lambda d, o: corpora.read_moses(d, o.train_limit or None), "smiles"),
}


def file_source(path: str) -> TextSource | None:
    """The reader of a user's text data at ``path``: a .txt file (one text per line), a .csv with
    a text column, or a folder holding ptb.train.txt; None when ``path`` is none of these."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "ptb.train.txt").is_file():
        return TextSource(str(p), "Penn Treebank files", lambda d, o: corpora.read_ptb(p), "whitespace")
    if p.suffix.lower() == ".txt":
        return TextSource(str(p), "text file", lambda d, o: corpora.read_lines(p), "word")
    if p.suffix.lower() == ".csv" and _has_text_column(p):
        return TextSource(str(p), "CSV of texts", lambda d, o: corpora.read_csv(p, o.text_column, o.label_column),
                          "word")
    return None


def _has_text_column(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            header = fh.readline().strip().lower().split(",")
    except (OSError, UnicodeDecodeError):
        return False
    return any(c.strip().strip('"') in ("text", "sentence", "smiles") for c in header)


def load_tokens(source: TextSource, data_dir: Path, options: TextOptions, val_fraction: float, seed: int,
                vocab: Vocabulary | None = None) -> TokenDataset:
    """The TokenDataset of ``source``: val carved from train (seeded) when the corpus has none,
    the vocabulary built on train unless ``vocab`` (a trained run's) is given."""
    splits = source.read(data_dir, options)
    tokenizer = source.tokenizer if options.tokenizer == "auto" else options.tokenizer
    split = TOKENIZERS[tokenizer].builder.split
    texts = {"train": splits.train, "val": splits.val, "test": splits.test}
    labels = {"train": splits.train_labels, "val": splits.val_labels, "test": splits.test_labels}
    if options.train_limit and len(texts["train"]) > options.train_limit:
        texts["train"], labels["train"] = texts["train"][:options.train_limit], _head(labels["train"], options.train_limit)
    if texts["val"] is None:
        texts, labels = _carve_val(texts, labels, val_fraction, seed)
    vocab = vocab or Vocabulary.build([split(t) for t in texts["train"]], max_size=options.vocab_size)
    names = sorted({lab for part in labels.values() if part for lab in part})
    rows, kept_labels, kept_texts, dropped = {}, {}, {}, 0
    for k in ("train", "val", "test"):
        enc = encode_texts(texts[k], TOKENIZERS[tokenizer].builder, vocab, options.max_length)
        if len(enc.kept) == 0:
            raise KlvaeError(f"no {k} text of {source.name} fits max_length {options.max_length}; raise --max-length")
        rows[k] = _pad(enc.ids, options.max_length + 1)  # the tokens and <eos>
        kept = enc.kept.tolist()
        kept_texts[k] = [texts[k][i] for i in kept]
        kept_labels[k] = (torch.tensor([names.index(labels[k][i]) for i in kept]) if labels[k] else None)
        dropped += enc.dropped
    extra = {name: list(v) for name, v in getattr(splits, "extra", {}).items()}
    return TokenDataset(name=source.name, train=rows["train"], val=rows["val"], test=rows["test"],
                        train_labels=kept_labels["train"], val_labels=kept_labels["val"],
                        test_labels=kept_labels["test"], binarize="none", binary=False,
                        codec=Vocab(vocab, tokenizer, names), texts={**kept_texts, **extra}, dropped=dropped)


def _head(labels, n):
    return labels[:n] if labels else labels


def _pad(ids: torch.Tensor, length: int) -> torch.Tensor:
    """Rows padded (with <pad> = 0) to ``length`` columns: every split has one width, the model's."""
    out = torch.zeros(len(ids), length, dtype=torch.long)
    out[:, :ids.shape[1]] = ids
    return out


def _carve_val(texts: dict, labels: dict, val_fraction: float, seed: int) -> tuple[dict, dict]:
    train, train_labels = texts["train"], labels["train"]
    index = np.arange(len(train))
    keep, _, out, _ = holdout(index, None, split_count(len(train), val_fraction), seed)
    pick = (lambda seq, idx: [seq[i] for i in idx] if seq else seq)
    return ({**texts, "train": pick(train, keep), "val": pick(train, out)},
            {**labels, "train": pick(train_labels, keep), "val": pick(train_labels, out)})
