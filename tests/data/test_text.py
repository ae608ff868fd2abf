"""Tokenizers, the vocabulary and padded id tensors (klvae.data.text)."""

from __future__ import annotations

import re

import json

import pytest
import torch

from klvae.data.corpora import read_moses
from klvae.data.text import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    TOKENIZERS,
    UNK,
    Vocabulary,
    encode_texts,
    get_tokenizer,
)
from klvae.errors import KlvaeError

SMILES = TOKENIZERS["smiles"].builder
WORD = TOKENIZERS["word"].builder
# Every token of the 1.58M MOSES train SMILES (neutral molecules, no stereo): a test set's
# tokens must come from it.
MOSES_TOKENS = {"#", "(", ")", "-", "1", "2", "3", "4", "5", "6", "=", "Br", "C", "Cl", "F", "N", "O",
                "S", "[H]", "[nH]", "c", "n", "o", "s"}


def test_special_ids_are_their_positions():
    assert SPECIALS == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert [SPECIALS[i] for i in (PAD, BOS, EOS, UNK)] == list(SPECIALS)


def test_every_tokenizer_entry_splits_joins_and_has_a_one_line_description():
    assert {"word", "smiles", "char", "whitespace"} <= set(TOKENIZERS)
    for entry in TOKENIZERS.entries():
        assert entry.description and "\n" not in entry.description
        assert entry.builder.split("CC") and isinstance(entry.builder.join(["a", "b"]), str)


@pytest.mark.parametrize("text, tokens", [
    ("The cat sat.", ["the", "cat", "sat", "."]),
    ("Don't stop, it's John's (big) day;", ["do", "n't", "stop", ",", "it", "'s", "john", "'s", "(", "big",
                                            ")", "day", ";"]),
    ('He said "no" -- twice!', ["he", "said", '"', "no", '"', "-", "-", "twice", "!"]),
    ("a well-known o'clock fee of 3.5 or 1,000", ["a", "well-known", "o'clock", "fee", "of", "3.5", "or",
                                                  "1,000"]),
    ("the boys' toys  can't  <unk>", ["the", "boys", "'", "toys", "ca", "n't", "<unk>"]),
])
def test_word_tokenizer_lowercases_and_splits_punctuation_and_clitics(text, tokens):
    assert WORD.split(text) == tokens
    assert WORD.join(tokens) == " ".join(tokens)


def test_whitespace_and_char_tokenizers():
    ws, char = TOKENIZERS["whitespace"].builder, TOKENIZERS["char"].builder
    assert ws.split("  N  <unk> Mr. x\t") == ["N", "<unk>", "Mr.", "x"]
    assert char.split("né 1") == ["n", "é", " ", "1"] and char.join(char.split("né 1")) == "né 1"


@pytest.mark.parametrize("smiles, tokens", [
    ("CCl", ["C", "Cl"]),
    ("BrCCBr", ["Br", "C", "C", "Br"]),
    ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
    ("N[C@@H](C)C(=O)O", ["N", "[C@@H]", "(", "C", ")", "C", "(", "=", "O", ")", "O"]),
    ("C%10CCCC%10", ["C", "%10", "C", "C", "C", "C", "%10"]),
    ("[O-]C(=O)C.[Na+]", ["[O-]", "C", "(", "=", "O", ")", "C", ".", "[Na+]"]),
    ("[NH3+]CC#N", ["[NH3+]", "C", "C", "#", "N"]),
    ("F/C=C\\F", ["F", "/", "C", "=", "C", "\\", "F"]),
    ("[13CH4]", ["[13CH4]"]),
])
def test_smiles_tokens_keep_atoms_whole(smiles, tokens):
    assert SMILES.split(smiles) == tokens
    assert SMILES.join(tokens) == smiles


def test_smiles_round_trip_on_moses_test_set(shared_data):
    root = shared_data("moses", "train.csv.gz", "test.csv.gz", "test_scaffolds.csv.gz")
    smiles = read_moses(root, limit=1).test[:20_000]
    assert len(smiles) == 20_000
    seen: set[str] = set()
    for s in smiles:
        tokens = SMILES.split(s)
        assert SMILES.join(tokens) == s
        seen.update(tokens)
    assert seen <= MOSES_TOKENS and {"Cl", "Br", "[nH]"} <= seen


@pytest.mark.parametrize("bad, where", [
    ("CCX1", "'X' at position 2"),
    ("C C", "' ' at position 1"),
    ("[nH", "'\\[' at position 0, 'H' at position 2"),
])
def test_smiles_tokenizer_refuses_uncovered_characters(bad, where):
    with pytest.raises(KlvaeError, match=f"SMILES .* covers: {where};.*--tokenizer char") as info:
        SMILES.split(bad)
    assert "\n" not in str(info.value)


def test_get_tokenizer_takes_names_and_objects():
    assert get_tokenizer("char") is TOKENIZERS["char"].builder
    assert get_tokenizer(WORD) is WORD
    with pytest.raises(KlvaeError, match="tokenizer must be one of .*got 'smile' .*did you mean 'smiles'"):
        get_tokenizer("smile")
    with pytest.raises(KlvaeError, match="an object with split and join; got int"):
        get_tokenizer(3)


CORPUS = [["c", "b", "a", "b"], ["a", "b", "e"], ["d", "c"]]  # b 3, a 2, c 2, d 1, e 1; ties seen out of order


def test_vocabulary_orders_by_count_then_alphabet():
    vocab = Vocabulary.build(CORPUS)
    assert vocab.tokens == (*SPECIALS, "b", "a", "c", "d", "e") and len(vocab) == 9
    assert vocab.encode(["a", "b", "e"]) == [5, 4, 8]


def test_vocabulary_cap_counts_specials_and_cut_tokens_map_to_unk():
    vocab = Vocabulary.build(CORPUS, max_size=6)
    assert vocab.tokens == (*SPECIALS, "b", "a")
    assert vocab.encode(["a", "c", "zzz", "b"]) == [5, UNK, UNK, 4]
    assert vocab.unk_rate(CORPUS) == pytest.approx(4 / 9)  # c, c, d, e
    assert Vocabulary.build(CORPUS, min_count=2).tokens == (*SPECIALS, "b", "a", "c")
    assert Vocabulary.build(CORPUS, max_size=4).tokens == SPECIALS


def test_specials_in_text_are_not_counted_and_encode_to_unk():
    vocab = Vocabulary.build([["<unk>", "<unk>", "<eos>", "<pad>", "x"]])
    assert vocab.tokens == (*SPECIALS, "x")
    assert vocab.encode(["<unk>", "<eos>", "<pad>", "<bos>", "x"]) == [UNK, UNK, UNK, UNK, 4]
    assert vocab.unk_rate([["<unk>", "x"], []]) == 0.5 and vocab.unk_rate([]) == 0.0


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    vocab = Vocabulary.build(CORPUS)
    assert vocab.decode([BOS, 4, PAD, 5, UNK, EOS, 6]) == ["b", "a", "<unk>"]
    assert vocab.decode(torch.tensor([8, 7, EOS, PAD])) == ["e", "d"]
    with pytest.raises(KlvaeError, match="id 9 is outside this vocabulary of 9 tokens"):
        vocab.decode([4, 9])


@pytest.mark.parametrize("kwargs, message", [
    ({"max_size": 3}, "max_size must be an integer >= 4 .*got 3"),
    ({"max_size": 10.0}, "max_size must be an integer"),
    ({"min_count": 0}, "min_count must be an integer >= 1; got 0"),
])
def test_vocabulary_build_refuses_bad_options(kwargs, message):
    with pytest.raises(KlvaeError, match=message):
        Vocabulary.build(CORPUS, **kwargs)


def test_vocabulary_json_round_trip():
    vocab = Vocabulary.build(CORPUS + [["é", "漢字", "é"]], max_size=8)  # é 2: after a, c
    back = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert back == vocab and back.tokens[-1] == "é"
    assert back.encode(["e", "é", "b"]) == vocab.encode(["e", "é", "b"]) == [UNK, 7, 4]
    assert back != Vocabulary.build(CORPUS)


@pytest.mark.parametrize("d, message", [
    (["<pad>"], "must be a dict with key 'tokens'; got list"),
    ({}, "exactly the key 'tokens'; got keys \\[\\]"),
    ({"tokens": list(SPECIALS), "size": 4}, "got keys \\['size', 'tokens'\\]"),
    ({"tokens": "<pad><bos>"}, "must be a list of strings; got str"),
    ({"tokens": [*SPECIALS, 7]}, "entry 4 must be a non-empty string; got 7"),
    ({"tokens": [*SPECIALS, ""]}, "entry 4 must be a non-empty string; got ''"),
    ({"tokens": ["<bos>", "<pad>", "<eos>", "<unk>", "a"]}, "must start with <pad>, <bos>, <eos>, <unk>"),
    ({"tokens": [*SPECIALS, "a", "b", "a"]}, "'a' appears twice"),
])
def test_corrupted_vocabulary_dict_is_refused(d, message):
    with pytest.raises(KlvaeError, match=message) as info:
        Vocabulary.from_dict(d)
    assert "\n" not in str(info.value)


def test_encode_texts_pads_counts_and_drops():
    vocab = Vocabulary.build([SMILES.split("CCOc1ccccc1")])  # c 6, C 2, 1 2, O 1
    texts = ["CCO", "", "CCCCCC", "c1ccccc1", "CO", "CCCCC"]
    enc = encode_texts(texts, "smiles", vocab, max_length=5)
    c, C, O = (vocab.encode([t])[0] for t in "cCO")
    assert enc.kept.tolist() == [0, 4, 5] and enc.dropped == 3  # empty, 6 and 8 tokens dropped
    assert enc.lengths.tolist() == [4, 3, 6]
    assert enc.ids.dtype == torch.long and enc.ids.tolist() == [
        [C, C, O, EOS, PAD, PAD], [C, O, EOS, PAD, PAD, PAD], [C, C, C, C, C, EOS]]
    assert [SMILES.join(vocab.decode(row)) for row in enc.ids] == ["CCO", "CO", "CCCCC"]
    assert c not in enc.ids


def test_encode_texts_with_nothing_kept_and_with_a_tokenizer_object():
    vocab = Vocabulary.build([["a"]])
    none = encode_texts(["a a a", ""], WORD, vocab, max_length=2)
    assert none.ids.shape == (0, 0) and none.lengths.shape == (0,) and none.dropped == 2
    one = encode_texts(iter(["A, b"]), WORD, vocab, max_length=3)
    assert one.ids.tolist() == [[4, UNK, UNK, EOS]] and one.kept.tolist() == [0]


@pytest.mark.parametrize("max_length", [0, -1, 2.5, True])
def test_encode_texts_refuses_a_bad_max_length(max_length):
    with pytest.raises(KlvaeError, match="max_length must be a positive integer"):
        encode_texts(["a"], "word", Vocabulary.build([]), max_length)


def test_encode_texts_leaves_out_and_names_the_text_a_tokenizer_refuses():
    enc = encode_texts(["CC", "CZ", "CO"], "smiles", Vocabulary.build([]), 10)
    assert enc.kept.tolist() == [0, 2] and enc.dropped == 1
    assert re.match(r"^text 1: SMILES 'CZ' .*'Z' at position 1", enc.refusal)
