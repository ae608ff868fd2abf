"""Text corpora as lists of strings: WordNet sentences, MOSES SMILES, the Penn Treebank, and a
user's text or CSV file. Readers only read; tokenising is :mod:`klvae.data.text`'s job.

>>> splits = read_wordnet("/data", "definitions")  # doctest: +SKIP
>>> len(splits.train), splits.train_labels[0]  # doctest: +SKIP
(106083, 'noun')
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from klvae.data.text import SPECIALS, UNK
from klvae.errors import KlvaeError

WORDNET_PARTS = ("definitions", "examples")
WORDNET_HEADER = ["pos", "text"]
TEXT_COLUMNS = ("text", "sentence", "smiles")  # read_csv's choice when no column is named
PTB_FILES = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}
PTB_UNK = "<unk>"
DATA_FIX = "pass --data-dir or set KLVAE_DATA"


@dataclass
class TextSplits:
    """A corpus's texts. A split that is None is not shipped (the caller carves it from train);
    labels, when present, align with their texts; ``extra`` holds further named test sets."""

    source: str
    train: list[str]
    val: list[str] | None = None
    test: list[str] | None = None
    train_labels: list[str] | None = None
    val_labels: list[str] | None = None
    test_labels: list[str] | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)


def read_wordnet(data_dir: str | Path, part: str = "definitions") -> TextSplits:
    """``data_dir/wordnet/{part}.{train,valid,test}.tsv`` (header ``pos<TAB>text``); labels are
    the part of speech (noun, verb, adj, adv)."""
    if part not in WORDNET_PARTS:
        raise KlvaeError(f"part must be one of {', '.join(WORDNET_PARTS)}; got {part!r}")
    folder = Path(data_dir) / "wordnet"
    train, train_labels = _read_tsv(folder / f"{part}.train.tsv")
    val, val_labels = _read_tsv(folder / f"{part}.valid.tsv")
    test, test_labels = _read_tsv(folder / f"{part}.test.tsv")
    return TextSplits(f"wordnet-{part}", train, val, test, train_labels, val_labels, test_labels)


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    lines = _lines(path, DATA_FIX)
    if lines[0].split("\t") != WORDNET_HEADER:
        raise KlvaeError(f"{path} has the header {lines[0][:80]!r}; expected 'pos<TAB>text' "
                         "(replace the file with the data set's own copy)")
    texts, labels = [], []
    for n, line in enumerate(lines[1:], 2):
        label, tab, text = line.partition("\t")
        if not tab:
            raise KlvaeError(f"{path} line {n} has no tab; each line is pos<TAB>text")
        labels.append(label)
        texts.append(text)
    if not texts:
        raise KlvaeError(f"{path} has a header but no rows; replace it with the data set's own copy")
    return texts, labels


def read_moses(data_dir: str | Path, limit: int | None = None) -> TextSplits:
    """``data_dir/moses/{train,test,test_scaffolds}.csv.gz`` (header ``SMILES``); ``limit``
    keeps the first ``limit`` train rows. val is None; the scaffold test set is
    ``extra["test_scaffolds"]``."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise KlvaeError(f"limit must be a positive integer or None; got {limit!r}")
    folder = Path(data_dir) / "moses"
    train = _read_smiles_gz(folder / "train.csv.gz", limit)
    test = _read_smiles_gz(folder / "test.csv.gz")
    scaffolds = _read_smiles_gz(folder / "test_scaffolds.csv.gz")
    return TextSplits("moses", train, None, test, extra={"test_scaffolds": scaffolds})


def _read_smiles_gz(path: Path, limit: int | None = None) -> list[str]:
    _check_file(path, DATA_FIX)
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh, strict=True)
            header = next(rows, None)
            if header is None:
                raise KlvaeError(f"{path} is empty; replace it with the MOSES package's own copy")
            if [h.strip().lower() for h in header] != ["smiles"]:
                raise KlvaeError(f"{path} has the header {','.join(header)[:80]!r}; expected 'SMILES' "
                                 "(one column)")
            smiles = [row[0] for row in itertools.islice(rows, limit) if row]
    except UnicodeDecodeError:
        with gzip.open(path, "rb") as raw:
            raise KlvaeError(_not_utf8(path, raw)) from None
    except csv.Error as e:
        raise KlvaeError(f"cannot parse {path} as CSV ({e}); replace it with the MOSES package's own copy") from None
    except (OSError, EOFError, zlib.error) as e:
        raise KlvaeError(f"cannot read {path} as gzip ({e}); replace it with the MOSES package's "
                         "own copy") from None
    if not smiles:
        raise KlvaeError(f"{path} has a header but no rows; replace it with the MOSES package's own copy")
    return smiles


def read_lines(path: str | Path) -> TextSplits:
    """A UTF-8 text file, one text per line (surrounding spaces stripped, blank lines skipped);
    every text goes to train."""
    path = Path(path).expanduser()
    texts = [t for t in (line.strip() for line in _lines(path, "check the path")) if t]
    return TextSplits(str(path), texts)


def read_csv(path: str | Path, column: str | None = None, label_column: str | None = None) -> TextSplits:
    """A UTF-8 CSV with a header. ``column`` None picks the column named text, sentence or smiles
    (any case), or the only column. Every row goes to train; texts are stripped (an empty one is
    kept, so labels stay aligned)."""
    path = Path(path).expanduser()
    (_, header), *rows = _csv_records(path)
    i = _column(path, header, column, "column")
    j = None if label_column is None else _column(path, header, label_column, "label_column")
    if not rows:
        raise KlvaeError(f"{path} has a header but no rows; add one text per row")
    for n, row in rows:
        if len(row) != len(header):
            raise KlvaeError(f"{path} line {n} has {len(row)} fields, the header {len(header)}; "
                             "quote fields that contain commas")
    rows = [row for _, row in rows]
    return TextSplits(str(path), [r[i].strip() for r in rows],
                      train_labels=None if j is None else [r[j].strip() for r in rows])


def _csv_records(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank records of a CSV file, each with the line it ends on."""
    reader = csv.reader(io.StringIO(_text(path, "check the path"), newline=""), strict=True)
    try:
        return [(reader.line_num, row) for row in reader if row]
    except csv.Error as e:
        raise KlvaeError(f"cannot parse {path} as CSV at line {reader.line_num} ({e}); "
                         "save it as comma-separated text") from None


def _column(path: Path, header: list[str], name: str | None, option: str) -> int:
    """The index of column ``name`` (exact, else any case), or of the default text column."""
    names = [h.strip() for h in header]
    lower = [h.lower() for h in names]
    if name is not None:
        if name in names:
            return names.index(name)
        if name.lower() in lower:
            return lower.index(name.lower())
    else:
        for wanted in TEXT_COLUMNS:
            if wanted in lower:
                return lower.index(wanted)
        if len(names) == 1:
            return 0
    got = "no column named " + repr(name) if name is not None else "no column named text, sentence or smiles"
    raise KlvaeError(f"{path} has {got}; its columns are {', '.join(map(repr, names))}; "
                     f"pass {option}=NAME")


def read_ptb(folder: str | Path) -> TextSplits:
    """The Penn Treebank of Mikolov et al.: ``ptb.{train,valid,test}.txt`` in ``folder``, one
    tokenised sentence per line; PTB's ``<unk>`` becomes the vocabulary's <unk> token."""
    folder = Path(folder).expanduser()
    fix = "put Mikolov's ptb.train.txt, ptb.valid.txt and ptb.test.txt in one folder and pass it"
    splits = {}
    for split, name in PTB_FILES.items():
        path = folder / name
        splits[split] = [" ".join(SPECIALS[UNK] if t == PTB_UNK else t for t in line.split())
                         for line in _lines(path, fix) if line.strip()]
    return TextSplits(str(folder), **splits)


def _check_file(path: Path, fix: str) -> None:
    if not path.exists():
        raise KlvaeError(f"file not found: {path}; {fix}")
    if not path.is_file():
        raise KlvaeError(f"{path} is not a file; {fix}")


def _text(path: Path, fix: str) -> str:
    """A UTF-8 text file's content (a leading byte-order mark dropped); one-line errors for a
    missing, empty or non-UTF-8 file."""
    _check_file(path, fix)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KlvaeError(_not_utf8(path, io.BytesIO(data))) from None
    if not text.strip():
        raise KlvaeError(f"{path} is empty; {fix}")
    return text


def _lines(path: Path, fix: str) -> list[str]:
    """The lines of a UTF-8 text file (split at \\n only; a trailing \\r dropped)."""
    lines = _text(path, fix).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _not_utf8(path: Path, fh: io.BufferedIOBase) -> str:
    """The message for a file that is not UTF-8, naming the first bad line and byte."""
    for n, raw in enumerate(fh, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return (f"{path} line {n} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "save the file as UTF-8")
    return f"{path} is not UTF-8 text; save the file as UTF-8"
