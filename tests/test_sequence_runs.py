"""Sequence VAE runs end to end on text written by the tests (a tiny grammar): training into a run
directory (Penn Treebank folder layout, a labelled corpus in the WordNet layout, a text file and a
CSV), then `klvae evaluate / sample / interpolate / reconstruct` on them, the --baseline run, and
the one-line errors of bad input. Every model is tiny and trains for a few epochs: quick, yet
enough to learn the grammar's word order.

Seed policy: the runs are seeded (seed 0); the checks on what they learned use wide margins.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import klvae
from klvae.api import sample, texts
from helpers import assert_user_error, cli
from klvae.config import TrainConfig
from klvae.data.text import EOS, PAD, SPECIALS, UNK
from klvae.errors import KlvaeError
from klvae.evaluation.likelihood import split_data
from klvae.generation import readout
from klvae.models.sequence_decoders import TokenSequences
from klvae.run import RunDir, load_config

pytestmark = pytest.mark.filterwarnings("ignore::klvae.diagnostics.CollapseWarning")  # tiny runs collapse, by design

MAX_LENGTH = 12
PPL, PPL_ELBO = "ppl", "ppl_elbo"  # evaluate's perplexity keys (per token, by IWAE / by the ELBO)
TINY = {"model": "seqvae", "latent_dim": 4, "hidden": [16], "embedding_dim": 8, "epochs": 6, "batch_size": 16,
        "lr": 0.01, "progress": False, "max_length": MAX_LENGTH, "seed": 0}
SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the old man"]
VERBS = {"sees": "see", "likes": "like", "chases": "chase", "finds": "find"}
OBJECTS = ["the ball", "a tree", "the house", "some food", "<unk>"]


def grammar(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (sentence, label) pairs: statements "S V O ." and questions "does S v O ?" in turn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        verb = rng.choice(list(VERBS))
        subject, obj = rng.choice(SUBJECTS), rng.choice(OBJECTS)
        if i % 2:
            out.append((f"does {subject} {VERBS[verb]} {obj} ?", "question"))
        else:
            out.append((f"{subject} {verb} {obj} .", "statement"))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """The same grammar written four ways: PTB files, a WordNet-like labelled folder, .txt, .csv."""
    root = tmp_path_factory.mktemp("corpus")
    pairs = grammar(400)
    parts = {"train": pairs[:300], "valid": pairs[300:350], "test": pairs[350:]}
    ptb = root / "ptb"
    ptb.mkdir()
    for split, rows in parts.items():
        (ptb / f"ptb.{split}.txt").write_text("\n".join(s for s, _ in rows) + "\n")
    wordnet = root / "data" / "wordnet"
    wordnet.mkdir(parents=True)
    for split, rows in parts.items():
        lines = [f"{label}\t{s.replace('<unk>', 'a cup')}" for s, label in rows]
        (wordnet / f"examples.{split}.tsv").write_text("pos\ttext\n" + "\n".join(lines) + "\n")
    clean = [(s.replace("<unk>", "a cup"), label) for s, label in pairs]
    (root / "sentences.txt").write_text("\n".join(s for s, _ in clean) + "\n")
    (root / "sentences.csv").write_text("text,label\n" + "\n".join(f"{s},{label}" for s, label in clean) + "\n")
    return {"ptb": ptb, "data_dir": root / "data", "txt": root / "sentences.txt", "csv": root / "sentences.csv",
            "root": root}


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    """A seqvae trained on the PTB layout with --baseline."""
    out = tmp_path_factory.mktemp("runs") / "ptb"
    return klvae.fit({**TINY, "data": str(corpus["ptb"]), "out": str(out), "baseline": True})


@pytest.fixture(scope="module")
def evaluated(run) -> dict:
    result = cli("evaluate", run, "--iwae-k", 5, "--json")
    assert result.rc == 0, result.err
    return json.loads(result.out)


@pytest.fixture(scope="module")
def conditional_run(corpus, tmp_path_factory) -> Path:
    """A seqvae conditioned on the label (question / statement) of a WordNet-layout corpus."""
    out = tmp_path_factory.mktemp("runs") / "conditional"
    return klvae.fit({**TINY, "data": "wordnet-examples", "data_dir": str(corpus["data_dir"]), "out": str(out),
                      "condition": "label", "decoder_cell": "gru", "epochs": 4})


def lines(result) -> list[str]:
    """The printed texts, one per line (an empty text is an empty line)."""
    assert result.rc == 0, result.err
    assert "Traceback" not in result.err and result.out.endswith("\n"), result.out
    return result.out[:-1].split("\n")


# --- the data ------------------------------------------------------------------------------------


def test_ptb_folder_loads_as_padded_token_rows_with_a_train_vocabulary(corpus):
    data = TrainConfig(data=str(corpus["ptb"]), model="seqvae", max_length=MAX_LENGTH).data.load(0)
    assert (len(data.train), len(data.val), len(data.test)) == (300, 50, 50)
    assert data.train.dtype == torch.int64 and data.train.shape == (300, MAX_LENGTH + 1)
    vocab = data.codec.vocabulary
    assert vocab.tokens[:4] == SPECIALS and vocab.tokens.count("<unk>") == 1
    assert data.codec.tokenizer == "whitespace"
    for split, first in ((data.train, grammar(400)[0][0]), (data.test, grammar(400)[350][0])):
        lengths = (split != PAD).sum(1)
        assert (split[torch.arange(len(split)), lengths - 1] == EOS).all()  # tokens, EOS, then PAD only
        assert ((split == EOS).sum(1) == 1).all()
        words = first.split()
        assert split[0].tolist() == vocab.encode(words) + [EOS] + [PAD] * (MAX_LENGTH - len(words))
    assert (data.train == UNK).any()  # PTB's <unk> is the vocabulary's UNK


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_a_text_file_loads_with_train_val_and_test_splits(corpus, kind):
    options = {"label_column": "label"} if kind == "csv" else {}
    data = TrainConfig(data=str(corpus[kind]), model="seqvae", max_length=MAX_LENGTH, **options).data.load(0)
    assert len(data.train) + len(data.val) + len(data.test) == 400
    assert min(len(data.train), len(data.val), len(data.test)) > 0
    if kind == "csv":
        assert data.codec.label_names == ["question", "statement"] and data.test_labels is not None


# --- a run on the Penn Treebank layout, and its baseline ----------------------------------------


def test_a_text_run_stores_its_vocabulary_and_a_baseline_language_model(run):
    stored = json.loads((Path(run) / "vocab.json").read_text())
    assert stored["tokenizer"] == "whitespace"
    assert stored["vocabulary"]["tokens"][:4] == list(SPECIALS)
    assert {"cat", "chases", "does", "?", "."} <= set(stored["vocabulary"]["tokens"])
    baseline = Path(run) / "baseline"
    assert (baseline / "model.safetensors").is_file()
    spec = json.loads((baseline / "model.json").read_text())
    assert spec["latent_dim"] == 0 and spec["name"] == "seqvae"
    assert load_config(run).model.latent_dim == 4


def test_evaluate_reports_finite_perplexity_consistent_with_the_nll(evaluated):
    r = evaluated
    assert r["n"] == 50 and r["iwae_k"] == 5
    for key in (PPL, PPL_ELBO, "mutual_information", "token_accuracy", "tokens_per_row"):
        assert math.isfinite(r[key]), key
    tokens = r["tokens_per_row"] * r["n"]
    assert r[PPL] == pytest.approx(math.exp(r["nll_iwae"] * r["n"] / tokens), rel=1e-9)
    assert r[PPL_ELBO] == pytest.approx(math.exp(-r["elbo"] * r["n"] / tokens), rel=1e-9)
    vocabulary = 4 + 25  # specials + the grammar's words and punctuation
    assert r[PPL] < vocabulary / 2  # learned the word order: well below a uniform guess over the words
    assert sum(r["kl_per_dim"]) == pytest.approx(r["kl"], rel=1e-5, abs=1e-6)
    assert 0 <= r["token_accuracy"] <= 1


def test_evaluate_has_a_baseline_entry_equal_to_the_language_models_own_log_likelihood(run, evaluated):
    b = evaluated["baseline"]
    assert b["kl"] == 0 and b["elbo"] == pytest.approx(-b["nll_iwae"], rel=1e-6)
    model = klvae.load(Path(run) / "baseline")
    x = split_data(load_config(run), "test", vocab=RunDir.open(run).vocabulary().vocabulary)
    with torch.no_grad():
        log_px = TokenSequences(model.decoder, torch.zeros(len(x), 0)).log_prob(x)
    assert b["nll_iwae"] == pytest.approx(-float(log_px.mean()), rel=1e-5)
    tokens = float((x != PAD).sum())
    assert b[PPL] == pytest.approx(math.exp(-float(log_px.sum()) / tokens), rel=1e-5)
    table = cli("evaluate", run, "--iwae-k", 5)
    assert "perplexity" in table.out and "baseline" in table.out, table.out


@pytest.mark.parametrize("decoding", ["beam", "sample", "greedy", "mean"])
def test_sample_prints_n_texts_of_the_runs_words(run, decoding):
    out = lines(cli("sample", run, "-n", 3, "--decoding", decoding))
    assert len(out) == 3
    words = set(json.loads((Path(run) / "vocab.json").read_text())["vocabulary"]["tokens"])
    assert all(set(line.split()) <= words for line in out)
    assert all(len(line.split()) <= MAX_LENGTH for line in out)


def test_beam_and_greedy_samples_are_sentences_of_the_grammar_shape(run):
    """After a few epochs the most likely rows end with the grammar's full stop or question mark."""
    for decoding in ("beam", "greedy"):
        out = lines(cli("sample", run, "-n", 4, "--decoding", decoding))
        assert sum(line.split()[-1:] in (["."], ["?"]) for line in out) >= 3, out


def test_ancestral_samples_are_reproducible_from_the_seed(run):
    a = cli("sample", run, "-n", 5, "--decoding", "sample", "--seed", 3)
    b = cli("sample", run, "-n", 5, "--decoding", "sample", "--seed", 3)
    c = cli("sample", run, "-n", 5, "--decoding", "sample", "--seed", 4)
    assert lines(a) == lines(b) and lines(a) != lines(c)


def test_sample_writes_texts_to_out(run, tmp_path):
    result = cli("sample", run, "-n", 3, "--out", tmp_path / "s.txt")
    assert result.rc == 0, result.err
    assert len((tmp_path / "s.txt").read_text().rstrip("\n").split("\n")) == 3


def test_interpolate_between_a_text_and_a_test_row_prints_steps_lines(run):
    out = lines(cli("interpolate", run, "--a", "the cat sees a tree .", "--b", 0, "--steps", 4))
    assert len(out) == 4
    out = lines(cli("interpolate", run, "--a", 1, "--b", 0, "--steps", 3, "--decoding", "beam"))
    assert len(out) == 3


def test_reconstruct_prints_each_input_then_its_reconstruction(run):
    out = lines(cli("reconstruct", run, "-n", 2))
    assert len(out) == 4
    test_texts = [s for s, _ in grammar(400)[350:352]]
    assert [out[0], out[2]] == test_texts  # whitespace tokens: the inputs read back as written


def test_python_api_texts_decode_sample_rows(run):
    rows = sample(run, n=2, decoding="greedy")
    assert rows.shape == (2, MAX_LENGTH + 1) and rows.dtype == torch.int64
    assert len(texts(run, rows)) == 2


# --- a conditional run --------------------------------------------------------------------------


def test_conditional_run_samples_a_named_class(conditional_run):
    for name in ("question", "statement"):
        out = lines(cli("sample", conditional_run, "-n", 3, "--class", name, "--decoding", "sample"))
        assert len(out) == 3
    assert len(lines(cli("sample", conditional_run, "-n", 2, "--class", 0))) == 2


def test_conditional_run_evaluates_the_bound_given_the_label(conditional_run):
    result = cli("evaluate", conditional_run, "--iwae-k", 3, "--json")
    assert result.rc == 0, result.err
    r = json.loads(result.out)
    assert r["condition"] == "label" and math.isfinite(r[PPL])


def test_conditional_run_refuses_an_unknown_class_name(conditional_run):
    line = assert_user_error(cli("sample", conditional_run, "-n", 2, "--class", "noun"), "noun")
    assert "question" in line and "statement" in line


def test_a_conditional_run_on_a_labelled_csv_samples_a_named_class(corpus, tmp_path):
    run = klvae.fit({**TINY, "epochs": 1, "data": str(corpus["csv"]), "label_column": "label", "condition": "label",
                     "out": str(tmp_path / "csv")})
    assert len(lines(cli("sample", run, "-n", 3, "--class", "question"))) == 3


def test_a_run_on_a_text_file_trains_and_samples(corpus, tmp_path):
    run = klvae.fit({**TINY, "epochs": 1, "data": str(corpus["txt"]), "out": str(tmp_path / "txt")})
    assert (Path(run) / "vocab.json").is_file()
    assert len(lines(cli("sample", run, "-n", 3, "--decoding", "beam"))) == 3


# --- bad input: one-line errors ------------------------------------------------------------------


def test_a_text_too_long_for_the_model_is_a_one_line_error(run):
    long_text = " ".join(["the cat sees a tree ."] * 4)
    assert_user_error(cli("interpolate", run, "--a", long_text, "--b", 0, "--steps", 3), "24 tokens",
                      f"at most {MAX_LENGTH}")


def test_class_of_an_unconditional_text_run_is_a_one_line_error(run):
    assert_user_error(cli("sample", run, "-n", 2, "--class", "question"), "question")


def test_index_out_of_range_for_interpolate_is_a_one_line_error(run):
    assert_user_error(cli("interpolate", run, "--a", 500, "--b", 0, "--steps", 3), "--a 500", "out of range")


def test_model_vae_on_text_data_is_a_one_line_error(corpus, tmp_path):
    out = tmp_path / "vae"
    result = cli("train", "--data", corpus["ptb"], "--model", "vae", "--epochs", 1, "--out", out, "--no-progress")
    assert_user_error(result, "reads arrays", "seqvae")
    assert not out.exists()  # refused before the run directory was touched


def test_model_seqvae_on_array_data_is_a_one_line_error(tmp_path):
    images = tmp_path / "images.npy"
    np.save(images, (np.random.default_rng(0).random((40, 28, 28)) > 0.5).astype(np.float32))
    out = tmp_path / "seq"
    result = cli("train", "--data", images, "--model", "seqvae", "--epochs", 1, "--out", out, "--no-progress")
    assert_user_error(result, "reads tokens", "--model vae")
    assert not out.exists()


def test_a_token_decoding_of_an_array_model_is_refused_by_name():
    with pytest.raises(KlvaeError, match="decoding 'beam'"):
        readout(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), "beam")
