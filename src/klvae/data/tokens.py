"""Text and SMILES data sets as rows of token ids: the registered corpora (WordNet, MOSES), a
user's text file, CSV or Penn Treebank folder, tokenised, with the vocabulary built on train.

A :class:`TokenDataset` is a :class:`~klvae.data.dataset.Dataset` whose splits are int64 rows
(N, max_length): the tokens, <eos>, then <pad>; labels (a text's class, e.g. its part of speech)
are class indices into the codec's ``label_names``. Its codec (:class:`Vocab`: the tokenizer,
the vocabulary, the label names) goes into the run directory as vocab.json.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from klvae.data import corpora
from klvae.data.dataset import Dataset
from klvae.data.properties import PropertyBins, property_values
from klvae.data.splits import TEST_SEED, holdout, split_count
from klvae.data.text import EOS, TOKENIZERS, Vocabulary, encode_texts
from klvae.errors import KlvaeError, KlvaeWarning
from klvae.registry import did_you_mean


TEST_FRACTION = 0.1  # of a user's texts, held out as test with TEST_SEED (as for arrays)


@dataclass(frozen=True)
class TextOptions:
    """How texts become token rows: the tokenizer (auto: the corpus's own), the vocabulary cap,
    the longest text kept (in tokens; its row adds <eos>), a cap on the training texts (0: all), for a CSV
    its text and label columns, and for molecules a property (``PROPERTIES``) whose quantile bins
    become the labels."""

    tokenizer: str = "auto"
    vocab_size: int = 10_000
    max_length: int = 50
    train_limit: int = 0
    text_column: str | None = None
    label_column: str | None = None
    label_from: str = "none"
    label_bins: int = 3


@dataclass(frozen=True)
class TextSource:
    """A registered corpus: ``read(data_dir, options)`` gives its TextSplits; ``tokenizer`` is
    the default one; ``checked``: its SMILES are known to be valid (a user's file is checked with
    RDKit when it is installed)."""

    name: str
    description: str
    read: object
    tokenizer: str
    checked: bool = False


@dataclass(frozen=True)
class Vocab:
    """A text run's vocabulary with its tokenizer and label names (and, when the labels are bins
    of a property, the bins): texts to rows and back."""

    vocabulary: Vocabulary
    tokenizer: str
    label_names: list[str]
    bins: PropertyBins | None = None

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
                             f"{name!r}{did_you_mean(name, self.label_names)}")
        return self.label_names.index(name)


@dataclass(repr=False)
class TokenDataset(Dataset):
    """A Dataset of token rows with the codec that reads and writes them."""

    codec: Vocab | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)  # the kept texts of each split (and extra ones)
    dropped: int = 0  # texts longer than max_length (or empty), left out


SOURCES = {
    "wordnet-definitions": TextSource("wordnet-definitions", "WordNet 3.0 definitions (106k / 5.7k / 5.8k), labelled by part of speech",
                          lambda d, o: corpora.read_wordnet(d, "definitions"), "word"),
    "wordnet-examples": TextSource("wordnet-examples", "WordNet 3.0 usage sentences (43.7k / 2.3k / 2.4k), labelled "
                                   "by part of speech", lambda d, o: corpora.read_wordnet(d, "examples"), "word"),
    "moses": TextSource("moses", "the MOSES benchmark's SMILES (1.58M train, 176k test, 176k scaffold test)",
                        lambda d, o: corpora.read_moses(d, o.train_limit or None), "smiles", checked=True),
}


def file_source(path: str) -> TextSource | None:
    """The reader of a user's text data at ``path``: a .txt file (one text per line), a .csv with
    a text column, or a folder holding ptb.train.txt; None when ``path`` is none of these."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "ptb.train.txt").is_file():
        return TextSource(str(p), "Penn Treebank files", lambda d, o: corpora.read_ptb(p), "whitespace")
    if p.suffix.lower() == ".txt":
        return TextSource(str(p), "text file", lambda d, o: corpora.read_lines(p), "word")
    columns = _text_columns(p) if p.suffix.lower() == ".csv" else set()
    if columns:
        return TextSource(str(p), "CSV of texts", lambda d, o: corpora.read_csv(p, o.text_column, o.label_column),
                          "smiles" if columns == {"smiles"} else "word")
    return None


def _text_columns(path: Path) -> set[str]:
    """The columns of a CSV named text, sentence or smiles (a SMILES column alone: molecules)."""
    try:
        with path.open(encoding="utf-8") as fh:
            header = fh.readline().strip().lower().split(",")
    except (OSError, UnicodeDecodeError):
        return set()
    return {c.strip().strip('"') for c in header} & {"text", "sentence", "smiles"}


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
    if TOKENIZERS[tokenizer].get("molecules") and not source.checked:
        texts, labels = _valid_molecules(texts, labels, source.name)
    if texts["test"] is None:  # a user's file: a fixed test split, as for arrays (never the run's seed)
        texts, labels = _carve(texts, labels, "test", TEST_FRACTION, TEST_SEED)
    if texts["val"] is None:
        texts, labels = _carve(texts, labels, "val", val_fraction, seed)
    bins = None
    if options.label_from != "none":
        labels, bins = _property_labels(texts, options, tokenizer, source.name)
    vocab = vocab or Vocabulary.build(_accepted(split, texts["train"]), max_size=options.vocab_size)
    names = bins.names if bins else sorted({lab for part in labels.values() if part for lab in part})
    rows, kept_labels, kept_texts, dropped, refusal = {}, {}, {}, 0, None
    for k in ("train", "val", "test"):
        enc = encode_texts(texts[k], TOKENIZERS[tokenizer].builder, vocab, options.max_length)
        refusal = refusal or enc.refusal
        if len(enc.kept) == 0:
            why = (f"the {tokenizer} tokenizer refused them ({enc.refusal}); pick another --tokenizer" if enc.refusal
                   else f"none fits max_length {options.max_length}; raise --max-length" if texts[k]
                   else "it holds none (see the warnings above); check the data")
            raise KlvaeError(f"no {k} text of {source.name} is left: {why}")
        rows[k] = _pad(enc.ids, options.max_length + 1)  # the tokens and <eos>
        kept = enc.kept.tolist()
        kept_texts[k] = [texts[k][i] for i in kept]
        kept_labels[k] = (torch.tensor([names.index(labels[k][i]) for i in kept]) if labels[k] else None)
        dropped += enc.dropped
    if dropped:
        total = sum(len(t) for t in texts.values())
        first = f"; the first refused: {refusal}" if refusal else ""
        warnings.warn(f"{source.name}: left out {dropped} of {total} texts (empty, longer than max_length "
                      f"{options.max_length} tokens, or refused by the {tokenizer} tokenizer){first}", KlvaeWarning,
                      stacklevel=2)
    extra = {name: list(v) for name, v in splits.extra.items()}
    return TokenDataset(name=source.name, train=rows["train"], val=rows["val"], test=rows["test"],
                        train_labels=kept_labels["train"], val_labels=kept_labels["val"],
                        test_labels=kept_labels["test"], binarize="none", binary=False,
                        codec=Vocab(vocab, tokenizer, names, bins), texts={**kept_texts, **extra}, dropped=dropped)


def _valid_molecules(texts: dict, labels: dict, name: str) -> tuple[dict, dict]:
    """The SMILES that RDKit parses (all of them when RDKit is not installed); the others are left
    out with one warning saying how many."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        return texts, labels
    RDLogger.DisableLog("rdApp.*")
    bad = 0
    for k, part in texts.items():
        if part is None:
            continue
        ok = [Chem.MolFromSmiles(t) is not None for t in part]
        bad += ok.count(False)
        texts = {**texts, k: [t for t, good in zip(part, ok) if good]}
        if labels[k]:
            labels = {**labels, k: [lab for lab, good in zip(labels[k], ok) if good]}
    if bad:
        warnings.warn(f"{name}: left out {bad} SMILES that RDKit cannot parse", KlvaeWarning, stacklevel=3)
    return texts, labels


def _property_labels(texts: dict, options: TextOptions, tokenizer: str, name: str) -> tuple[dict, PropertyBins]:
    """Each molecule's class: the quantile bin (on train) of its property ``options.label_from``."""
    if not TOKENIZERS[tokenizer].get("molecules"):
        raise KlvaeError(f"--label-from {options.label_from} computes a property of molecules; {name} is read with "
                         f"the {tokenizer} tokenizer (use --tokenizer smiles, or --label-column for a CSV's labels)")
    if options.label_column:
        raise KlvaeError("--label-from and --label-column both give the labels; keep one")
    values = {k: property_values(options.label_from, part) for k, part in texts.items()}
    bins = PropertyBins.fit(options.label_from, values["train"], options.label_bins)
    classes = {k: bins.classes(v) for k, v in values.items()}
    bad = sum(int((c < 0).sum()) for c in classes.values())
    if bad:
        raise KlvaeError(f"RDKit cannot parse {bad} SMILES of {name}, so they have no {options.label_from}; "
                         "check the file")
    return {k: [bins.names[i] for i in c.tolist()] for k, c in classes.items()}, bins


def _accepted(split, texts: list[str]):
    """The token lists of the texts the tokenizer accepts (the others are counted when encoded)."""
    for text in texts:
        try:
            yield split(text)
        except KlvaeError:
            continue


def _head(labels, n):
    return labels[:n] if labels else labels


def _pad(ids: torch.Tensor, length: int) -> torch.Tensor:
    """Rows padded (with <pad> = 0) to ``length`` columns: every split has one width, the model's."""
    out = torch.zeros(len(ids), length, dtype=torch.long)
    out[:, :ids.shape[1]] = ids
    return out


def _carve(texts: dict, labels: dict, split: str, fraction: float, seed: int) -> tuple[dict, dict]:
    """Move ``fraction`` of train (chosen with ``seed``) to ``split``."""
    train, train_labels = texts["train"], labels["train"]
    if len(train) < 3:
        raise KlvaeError(f"a text data set needs at least 3 texts to split into train, val and test; got {len(train)}")
    keep, _, out, _ = holdout(np.arange(len(train)), None, split_count(len(train), fraction), seed)
    pick = (lambda seq, idx: [seq[i] for i in idx] if seq else seq)
    return ({**texts, "train": pick(train, keep), split: pick(train, out)},
            {**labels, "train": pick(train_labels, keep), split: pick(train_labels, out)})
