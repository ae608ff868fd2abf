"""Corpus readers (klvae.data.corpora): the real WordNet and MOSES files against their README
facts, and small files written here for the PTB, text and CSV readers and every error."""

from __future__ import annotations

import gzip
from collections import Counter

import pytest

from klvae.data import corpora
from klvae.data.corpora import (
    TextSplits,
    read_csv,
    read_lines,
    read_moses,
    read_ptb,
    read_wordnet,
)
from klvae.data.text import TOKENIZERS, UNK, Vocabulary
from klvae.errors import KlvaeError

MOSES_FILES = ("train.csv.gz", "test.csv.gz", "test_scaffolds.csv.gz")
MOSES_FIRST = "CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1"
WORDNET_FILES = tuple(f"{p}.{s}.tsv" for p in ("definitions", "examples") for s in ("train", "valid", "test"))


def one_line_error(call, match: str) -> str:
    """The message of the KlvaeError ``call()`` raises; it must match and be one line."""
    with pytest.raises(KlvaeError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture(scope="module")
def wordnet_root(shared_data):
    return shared_data("wordnet", *WORDNET_FILES)


@pytest.fixture(scope="module")
def moses(shared_data) -> TextSplits:
    return read_moses(shared_data("moses", *MOSES_FILES))  # every row, once for the module


def test_wordnet_definitions_match_the_readme(wordnet_root):
    d = read_wordnet(wordnet_root, "definitions")
    assert (len(d.train), len(d.val), len(d.test)) == (106_083, 5_746, 5_830)
    assert Counter(d.train_labels) == {"noun": 73_956, "verb": 12_394, "adj": 16_453, "adv": 3_280}
    first = "that which is perceived or known or inferred to have its own distinct existence (living or nonliving)"
    assert d.train[:2] == [first, "an entity that has physical existence"]
    assert d.train_labels[:2] == ["noun", "noun"]
    assert [len(lab) for lab in (d.val_labels, d.test_labels)] == [5_746, 5_830]
    assert set(d.val_labels) | set(d.test_labels) == {"noun", "verb", "adj", "adv"}
    assert d.source == "wordnet-definitions" and d.extra == {}


def test_wordnet_examples_match_the_readme(wordnet_root):
    e = read_wordnet(wordnet_root, "examples")
    assert (len(e.train), len(e.val), len(e.test)) == (43_657, 2_288, 2_394)
    assert len(e.train_labels) == 43_657 and all(t.strip() for t in e.train)


def test_moses_matches_the_readme(moses):
    assert len(moses.train) == 1_584_663 and moses.train[0] == MOSES_FIRST
    assert moses.val is None and len(moses.test) == 176_074
    assert list(moses.extra) == ["test_scaffolds"] and len(moses.extra["test_scaffolds"]) == 176_225
    assert moses.train_labels is None and moses.test_labels is None


def test_moses_limit_keeps_the_first_train_rows(moses, shared_data):
    small = read_moses(shared_data("moses", *MOSES_FILES), limit=7)
    assert small.train == moses.train[:7] and small.train[0] == MOSES_FIRST
    assert len(small.test) == 176_074  # the test sets are never cut


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_moses_refuses_a_bad_limit(tmp_path, limit):
    one_line_error(lambda: read_moses(tmp_path, limit), "limit must be a positive integer or None")


def test_wordnet_refuses_an_unknown_part(tmp_path):
    one_line_error(lambda: read_wordnet(tmp_path, "glosses"),
                   "part must be one of definitions, examples; got 'glosses'")


def test_missing_corpus_files_name_the_file_and_the_fix(tmp_path):
    msg = one_line_error(lambda: read_wordnet(tmp_path), "file not found: .*wordnet/definitions.train.tsv; "
                                                         "pass --data-dir or set KLVAE_DATA")
    assert str(tmp_path) in msg
    one_line_error(lambda: read_moses(tmp_path), "file not found: .*moses/train.csv.gz; pass --data-dir")


def write_wordnet(root, train: bytes) -> None:
    folder = root / "wordnet"
    folder.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        (folder / f"definitions.{split}.tsv").write_bytes(b"pos\ttext\nnoun\ta thing\n")
    (folder / "definitions.train.tsv").write_bytes(train)


def test_wordnet_reader_on_a_small_file(tmp_path):
    write_wordnet(tmp_path, b"pos\ttext\r\nverb\tto run; to go\r\nadj\tsaid \"twice\"\twith a tab\r\n")
    d = read_wordnet(tmp_path)
    assert d.train == ["to run; to go", 'said "twice"\twith a tab'] and d.train_labels == ["verb", "adj"]
    assert d.val == d.test == ["a thing"] and d.val_labels == ["noun"]


@pytest.mark.parametrize("content, message", [
    (b"", "definitions.train.tsv is empty; pass --data-dir"),
    (b"label\ttext\nnoun\tx\n", "definitions.train.tsv has the header 'label\\\\ttext'; expected 'pos<TAB>text'"),
    (b"pos\ttext\n", "definitions.train.tsv has a header but no rows"),
    (b"pos\ttext\nnoun\tok\nnoun no tab\n", "definitions.train.tsv line 3 has no tab"),
    (b"pos\ttext\nnoun\tok\nnoun\tcaf\xe9\n", "definitions.train.tsv line 3 is not UTF-8 \\(byte 0xe9 at column 9\\)"),
])
def test_bad_wordnet_files_are_refused(tmp_path, content, message):
    write_wordnet(tmp_path, content)
    one_line_error(lambda: read_wordnet(tmp_path), message)


def write_moses(root, train: bytes, compress: bool = True) -> None:
    folder = root / "moses"
    folder.mkdir(exist_ok=True)
    for name in ("test.csv.gz", "test_scaffolds.csv.gz"):
        (folder / name).write_bytes(gzip.compress(b"SMILES\nCCO\n"))
    (folder / "train.csv.gz").write_bytes(gzip.compress(train) if compress else train)


def test_moses_reader_on_a_small_file(tmp_path):
    write_moses(tmp_path, b"smiles\r\nCCO\r\n\r\nc1ccccc1\r\n")
    m = read_moses(tmp_path)
    assert m.train == ["CCO", "c1ccccc1"] and m.test == ["CCO"] and m.extra == {"test_scaffolds": ["CCO"]}


@pytest.mark.parametrize("content, compress, message", [
    (b"SMILES\nCCO\n", False, "cannot read .*train.csv.gz as gzip"),
    (b"", True, "train.csv.gz is empty"),
    (b"SMILES,name\nCCO,ethanol\n", True, "train.csv.gz has the header 'SMILES,name'; expected 'SMILES'"),
    (b"SMILES\n", True, "train.csv.gz has a header but no rows"),
    (b"SMILES\nCCO\nC\xffC\n", True, "train.csv.gz line 3 is not UTF-8 \\(byte 0xff at column 2\\)"),
])
def test_bad_moses_files_are_refused(tmp_path, content, compress, message):
    write_moses(tmp_path, content, compress)
    one_line_error(lambda: read_moses(tmp_path), message)


def test_truncated_gzip_is_refused(tmp_path):
    write_moses(tmp_path, b"")
    data = gzip.compress(b"SMILES\n" + b"CCO\n" * 5000)
    (tmp_path / "moses" / "train.csv.gz").write_bytes(data[: len(data) // 2])
    one_line_error(lambda: read_moses(tmp_path), "cannot read .*train.csv.gz as gzip .*replace it")


def write_ptb(folder, valid: str = " the n stocks <unk> \n") -> None:
    (folder / "ptb.train.txt").write_text(" no it was n't black monday \n the <unk> fell N points \n\n")
    (folder / "ptb.valid.txt").write_text(valid)
    (folder / "ptb.test.txt").write_text(" mr. <unk> is chairman \n")


def test_ptb_reader_keeps_tokens_and_maps_unk(tmp_path):
    write_ptb(tmp_path)
    p = read_ptb(tmp_path)
    assert p.train == ["no it was n't black monday", "the <unk> fell N points"]
    assert p.val == ["the n stocks <unk>"] and p.test == ["mr. <unk> is chairman"]
    assert p.train_labels is None and p.source == str(tmp_path)
    tok = TOKENIZERS["whitespace"].builder
    vocab = Vocabulary.build(tok.split(t) for t in p.train)
    assert "<unk>" not in vocab.tokens[UNK + 1:]  # PTB's <unk> is the special, not a word
    assert vocab.encode(tok.split(p.test[0]))[1] == UNK
    assert vocab.unk_rate([tok.split(t) for t in p.train]) == pytest.approx(1 / 11)


def test_ptb_unk_follows_the_vocabularys_unk_token(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "SPECIALS", ("<pad>", "<bos>", "<eos>", "<UNK>"))
    write_ptb(tmp_path)
    assert read_ptb(tmp_path).test == ["mr. <UNK> is chairman"]


def test_ptb_reader_errors(tmp_path):
    one_line_error(lambda: read_ptb(tmp_path), "file not found: .*ptb.train.txt; put Mikolov's ptb.train.txt")
    write_ptb(tmp_path, valid="\n  \n")
    one_line_error(lambda: read_ptb(tmp_path), "ptb.valid.txt is empty; put Mikolov's")
    (tmp_path / "ptb.valid.txt").unlink()
    one_line_error(lambda: read_ptb(tmp_path), "file not found: .*ptb.valid.txt")


def test_text_file_reader_strips_and_skips_blank_lines(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes("\ufeffFirst sentence.\r\n\r\n   second one  \n\t\nthird — é\n".encode())
    t = read_lines(path)
    assert t.train == ["First sentence.", "second one", "third — é"]
    assert t.val is None and t.test is None and t.train_labels is None and t.source == str(path)


def test_text_file_reader_errors(tmp_path):
    one_line_error(lambda: read_lines(tmp_path / "none.txt"), "file not found: .*none.txt; check the path")
    one_line_error(lambda: read_lines(tmp_path), "is not a file; check the path")
    (tmp_path / "empty.txt").write_bytes(b"")
    one_line_error(lambda: read_lines(tmp_path / "empty.txt"), "empty.txt is empty")
    (tmp_path / "blank.txt").write_bytes(b" \n\n\t\n")
    one_line_error(lambda: read_lines(tmp_path / "blank.txt"), "blank.txt is empty; check the path")
    (tmp_path / "latin1.txt").write_bytes("ok\nfine\ncafé\n".encode("latin-1"))
    one_line_error(lambda: read_lines(tmp_path / "latin1.txt"),
                   "latin1.txt line 3 is not UTF-8 \\(byte 0xe9 at column 4\\); save the file as UTF-8")


@pytest.mark.parametrize("header, row, column, expected", [
    ("id,Sentence,label", '1,"Hello, world",pos', None, "Hello, world"),
    ("SMILES", "CCO", None, "CCO"),
    ("only", " a text ", None, "a text"),
    ("smiles,text", "CCO,the text", None, "the text"),  # text is preferred to smiles
    ("a,b", "x,y", "b", "y"),
    ("a,Body", "x,y", "body", "y"),
])
def test_csv_reader_picks_the_text_column(tmp_path, header, row, column, expected):
    path = tmp_path / "d.csv"
    path.write_text(f"{header}\n{row}\n\n{row}\n")
    c = read_csv(path, column)
    assert c.train == [expected, expected] and c.train_labels is None and c.val is None


def test_csv_reader_reads_labels_and_keeps_empty_texts(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,kind\n"a line\nover two",x\n,y\nlast,x\n')
    c = read_csv(path, label_column="kind")
    assert c.train == ["a line\nover two", "", "last"] and c.train_labels == ["x", "y", "x"]


@pytest.mark.parametrize("content, kwargs, message", [
    ("a,b\n1,2\n", {}, "has no column named text, sentence or smiles; its columns are 'a', 'b'; pass column=NAME"),
    ("text,b\n1,2\n", {"column": "body"}, "has no column named 'body'; its columns are 'text', 'b'"),
    ("text,b\n1,2\n", {"label_column": "y"}, "no column named 'y'; .*pass label_column=NAME"),
    ("text,b\n", {}, "has a header but no rows"),
    ("text,b\n1,2\n3\n", {}, "line 3 has 1 fields, the header 2; quote fields that contain commas"),
    ('text\n"unclosed\n', {}, "cannot parse .*d.csv as CSV at line 2 \\(unexpected end of data\\)"),
    ('text\n"quoted" after\n', {}, "cannot parse .*d.csv as CSV at line 2 \\(',' expected after"),
    ("", {}, "d.csv is empty; check the path"),
])
def test_csv_reader_errors(tmp_path, content, kwargs, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    one_line_error(lambda: read_csv(path, **kwargs), message)


def test_csv_reader_refuses_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text\nok\n\x93quoted\x94\n")
    one_line_error(lambda: read_csv(path), "d.csv line 3 is not UTF-8 \\(byte 0x93 at column 1\\)")
