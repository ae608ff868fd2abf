"""The sequence VAE's maths against independent computations: the teacher-forced log-likelihood of
TokenSequences against the decoders' own ``start`` / ``step``, padding invariance, normalisation by
enumeration over a tiny vocabulary, beam search against brute force, ancestral sampling against
the model's probabilities, word dropout, the bounds of SeqVAE (ELBO <= IWAE <= log p(x) by
quadrature over a 1-D latent), the bucket sampler, perplexity and token accuracy.

Seed policy: every statistical test seeds torch (or its own generator) at its top and checks
with a tolerance of several standard errors or a chi-square p-value above 1e-4, so it neither
flakes nor passes by luck. The exact tests run in float64.

Tiny vocabulary used throughout: the four specials (PAD 0, BOS 1, EOS 2, UNK 3) and two words (4, 5).
The decoder can emit UNK and the words, then EOS (generation never emits PAD or BOS), so the rows it
can produce are the words of ALPHABET followed by EOS.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from scipy.stats import chi2

from klvae.bounds import elbo, iwae_bound
from klvae.data.text import BOS, EOS, PAD, UNK
from klvae.errors import KlvaeError
from klvae.evaluation.likelihood import evaluate_model
from klvae.evaluation.sequences import sequence_figures, token_accuracy
from klvae.loaders import BucketSampler, loader
from klvae.models.sequence import SeqVAE, SeqVAEConfig
from klvae.models.sequence_decoders import TokenSequences, decoder_inputs

V = 6  # 4 specials + 2 words
PPL, PPL_ELBO = "ppl", "ppl_elbo"  # evaluate's perplexity keys (per token, by IWAE / by the ELBO)
ALPHABET = (UNK, 4, 5)  # what a decoder can emit before EOS
CELLS = ("lstm", "gru", "transformer")
DECODERS = [("lstm", False), ("lstm", True), ("gru", False), ("gru", True), ("transformer", False)]


def tiny(cell: str = "lstm", z_every_step: bool = False, latent_dim: int = 2, length: int = 5,
         seed: int = 0, **options) -> SeqVAE:
    """A float64 SeqVAE in eval mode over the 6-token vocabulary, rows of ``length`` columns."""
    torch.manual_seed(seed)
    spec = SeqVAEConfig(event_shape=[length], vocab_size=V, latent_dim=latent_dim, hidden=[8], embedding_dim=8,
                        heads=2, decoder_cell=cell, z_every_step=z_every_step, **options)
    return SeqVAE(spec).double().eval()


def silence_specials(model: SeqVAE) -> SeqVAE:
    """Push the output logits of PAD and BOS to -40: p < 1e-17, as a trained decoder nearly has
    them (no target is ever PAD or BOS); see test_log_prob_is_normalised_over_the_rows_the_decoder_can_emit."""
    with torch.no_grad():
        model.decoder.out.bias[[PAD, BOS]] = -40.0
    return model


def padded(rows: list[list[int]], width: int) -> torch.Tensor:
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


def all_rows(max_tokens: int, width: int, alphabet=ALPHABET) -> torch.Tensor:
    """Every row of at most ``max_tokens`` tokens of ``alphabet`` then EOS, padded to ``width``."""
    rows = [list(p) + [EOS] for n in range(max_tokens + 1) for p in itertools.product(alphabet, repeat=n)]
    return padded(rows, width)


@torch.no_grad()
def log_prob(model: SeqVAE, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """TokenSequences' teacher-forced log p(x|h) of each row of x, one h (1, F) for all rows."""
    return TokenSequences(model.decoder, h.expand(len(x), -1)).log_prob(x)


@torch.no_grad()
def stepwise_log_prob(decoder, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|h) summed step by step from ``decoder.start`` / ``decoder.step`` fed x's tokens,
    stopping at each row's EOS (its last non-PAD token)."""
    state, token = decoder.start(h), torch.full((len(x),), BOS)
    total = torch.zeros(len(x), dtype=torch.float64)
    for t in range(x.shape[1]):
        logp, state = decoder.step(state, token)
        real = x[:, t] != PAD
        total += torch.where(real, logp.gather(1, x[:, t:t + 1]).squeeze(1).double(), torch.zeros_like(total))
        token = torch.where(real, x[:, t], torch.full_like(token, PAD))
    return total


@torch.no_grad()
def prefix_mass(decoder, h: torch.Tensor, steps: int, alphabet=ALPHABET) -> float:
    """P(the first ``steps`` tokens the decoder emits all lie in ``alphabet``), summed over every
    such prefix from step probabilities: the probability of not having ended (nor left alphabet)."""
    prefixes = torch.tensor(list(itertools.product(alphabet, repeat=steps)), dtype=torch.long).view(-1, steps)
    state = decoder.start(h.expand(len(prefixes), -1))
    token, total = torch.full((len(prefixes),), BOS), torch.zeros(len(prefixes), dtype=torch.float64)
    for t in range(steps):
        logp, state = decoder.step(state, token)
        total += logp.gather(1, prefixes[:, t:t + 1]).squeeze(1)
        token = prefixes[:, t]
    return float(total.exp().sum())


# --- 1. teacher forcing equals step-by-step decoding --------------------------------------------


ROWS = [[4, 5, 3, 2], [5, 2], [2], [4, 4, 5, 5, 2], [3, 3, 2]]


@pytest.mark.parametrize("cell,z_every_step", DECODERS)
def test_teacher_forced_log_prob_equals_the_sum_of_step_log_probabilities(cell, z_every_step):
    model = tiny(cell, z_every_step, length=5)
    torch.manual_seed(1)
    h = torch.randn(len(ROWS), model.family.decoder_dim, dtype=torch.float64)
    x = padded(ROWS, 5)
    teacher = TokenSequences(model.decoder, h).log_prob(x)
    assert teacher.dtype == torch.float64 and teacher.shape == (len(ROWS),)
    assert torch.allclose(teacher, stepwise_log_prob(model.decoder, h, x), rtol=0, atol=1e-12)
    assert (teacher < 0).all() and len(set(teacher.tolist())) == len(ROWS)  # real, distinct values


@pytest.mark.parametrize("cell,z_every_step", DECODERS)
def test_decode_log_prob_of_z_samples_broadcasts_rows_over_leading_sample_axes(cell, z_every_step):
    """model.decode(z (K, N, D)).log_prob(x (N, L)) is (K, N): row n scored under each z[k, n]."""
    model = tiny(cell, z_every_step, length=5)
    torch.manual_seed(2)
    z = torch.randn(3, len(ROWS), 2, dtype=torch.float64)
    x = padded(ROWS, 5)
    got = model.decode(z).log_prob(x)
    assert got.shape == (3, len(ROWS))
    for k in range(3):
        h = model.family.decoder_input(z[k])
        assert torch.allclose(got[k], stepwise_log_prob(model.decoder, h, x), rtol=0, atol=1e-12)


def test_z_every_step_feeds_z_to_every_input_of_a_recurrent_decoder():
    """With z_every_step two z sharing the initial state still give different step-2 outputs."""
    model = tiny("gru", True, length=5)
    torch.manual_seed(3)
    h = torch.randn(2, 2, dtype=torch.float64)
    with torch.no_grad():
        model.decoder.init.weight.zero_()  # the initial state no longer depends on z
    logp, _ = model.decoder.step(model.decoder.start(h), torch.full((2,), BOS))
    assert not torch.allclose(logp[0], logp[1])
    plain = tiny("gru", False, length=5)
    with torch.no_grad():
        plain.decoder.init.weight.zero_()
    logp, _ = plain.decoder.step(plain.decoder.start(h), torch.full((2,), BOS))
    assert torch.allclose(logp[0], logp[1], atol=1e-14)  # without it, z only enters through the state


# --- 2. padding never changes a row's log-probability ---------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_padding_width_and_batch_company_do_not_change_a_rows_log_prob(cell):
    width = 8
    model = tiny(cell, length=width)
    rows = [[4, 5, 3, 2], [5, 2], [2], [4, 4, 4, 4, 5, 3, 4, 2]]
    torch.manual_seed(4)
    h = torch.randn(len(rows), 2, dtype=torch.float64)
    alone = []
    for i, r in enumerate(rows):
        values = torch.stack([TokenSequences(model.decoder, h[i:i + 1]).log_prob(padded([r], w))[0]
                              for w in range(len(r), width + 1)])
        assert torch.allclose(values, values[0].expand_as(values), rtol=0, atol=1e-12), values
        alone.append(values[0])
    alone = torch.stack(alone)
    together = TokenSequences(model.decoder, h).log_prob(padded(rows, width))
    assert torch.allclose(together, alone, rtol=0, atol=1e-12)
    order = [3, 1, 0, 2]
    shuffled = TokenSequences(model.decoder, h[order]).log_prob(padded(rows, width)[order])
    assert torch.allclose(shuffled, alone[order], rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_no_gradient_reaches_embeddings_fed_only_in_padding_positions(cell):
    """EOS is a decoder input only after a row's end (the shift right puts it in a padding
    position), PAD only in padding: neither embedding may receive gradient, nor (Transformer)
    a position beyond the batch's longest row."""
    width = 8
    model = tiny(cell, length=width).train()  # word dropout is 0: training changes nothing else
    rows = [[4, 5, 3, 2], [5, 2], [4, 4, 4, 3, 5, 2]]
    h = torch.randn(len(rows), 2, dtype=torch.float64, requires_grad=True)
    TokenSequences(model.decoder, h).log_prob(padded(rows, width)).sum().backward()
    grad = model.decoder.embed.weight.grad.abs().sum(1)
    assert grad[PAD] == 0 and grad[EOS] == 0
    assert (grad[[BOS, UNK, 4, 5]] > 0).all()
    if cell == "transformer":
        position = model.decoder.position.weight.grad.abs().sum(1)
        assert (position[:6] > 0).all() and (position[6:] == 0).all()


def test_rows_of_a_batch_do_not_share_gradients():
    """d log p(row i) / d h_j is zero for j != i: no row leaks into another (e.g. through padding)."""
    model = tiny("transformer", length=6)
    rows = [[4, 5, 3, 2], [5, 2], [4, 4, 4, 3, 5, 2]]
    h = torch.randn(len(rows), 2, dtype=torch.float64, requires_grad=True)
    TokenSequences(model.decoder, h).log_prob(padded(rows, 6))[1].backward()
    assert (h.grad[[0, 2]] == 0).all() and (h.grad[1] != 0).any()


# --- 3. normalisation by enumeration --------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_rows_ending_by_t_plus_not_ended_mass_is_one_and_eos_mass_grows_to_one(cell):
    width = 5
    model = silence_specials(tiny(cell, length=width))
    with torch.no_grad():
        model.decoder.out.bias[EOS] += 2.5  # biased towards ending
    torch.manual_seed(5)
    h = torch.randn(1, 2, dtype=torch.float64)
    ended = []
    for t in range(width):  # rows of at most t tokens then EOS: t + 1 <= width columns
        rows = all_rows(t, width)
        assert len(rows) == sum(3 ** n for n in range(t + 1))
        p_ended = float(log_prob(model, h, rows).exp().sum())
        p_open = prefix_mass(model.decoder, h, t + 1)  # t + 1 tokens emitted, none of them EOS
        assert p_ended + p_open == pytest.approx(1.0, abs=1e-12)
        ended.append(p_ended)
    assert all(0 < a < b <= 1 for a, b in zip(ended, ended[1:])), ended  # P(EOS within t) grows
    assert ended[-1] > 0.99


@pytest.mark.parametrize("cell", ["lstm", "transformer"])
def test_without_an_eos_bias_rows_and_open_prefixes_still_sum_to_one(cell):
    """Without the EOS bias the same identity holds, and P(EOS within t) still increases."""
    model = silence_specials(tiny(cell, length=5, seed=7))
    h = torch.zeros(1, 2, dtype=torch.float64)
    ended = [float(log_prob(model, h, all_rows(t, 5)).exp().sum()) for t in range(5)]
    opened = [prefix_mass(model.decoder, h, t + 1) for t in range(5)]
    assert [a + b for a, b in zip(ended, opened)] == pytest.approx([1.0] * 5, abs=1e-12)
    assert all(a < b for a, b in zip(ended, ended[1:])) and ended[-1] < 0.99


@pytest.mark.parametrize("cell", ["lstm", "transformer"])
def test_log_prob_is_normalised_over_the_rows_the_decoder_can_emit(cell):
    model = tiny(cell, length=5)  # an untrained decoder: PAD and BOS hold ~1/3 of each step's mass
    h = torch.zeros(1, 2, dtype=torch.float64)
    t = 4
    total = float(log_prob(model, h, all_rows(t, 5)).exp().sum()) + prefix_mass(model.decoder, h, t + 1)
    assert total == pytest.approx(1.0, abs=1e-6)


# --- 4. beam search, greedy decoding and ancestral sampling ---------------------------------------


TARGET = {(4, 3): 0.40, (5, 4): 0.35, (5, 5): 0.25}  # the mode starts with 4, greedy takes 5 first


@pytest.fixture(scope="module")
def language_model() -> SeqVAE:
    """A tiny float64 LSTM language model (latent_dim 0) fitted to TARGET, where greedy
    decoding misses the most likely row; PAD and BOS silenced."""
    model = tiny("lstm", latent_dim=0, length=5, seed=11)
    model.train()
    x = padded([list(r) + [EOS] for r in TARGET], 5)
    w = torch.tensor(list(TARGET.values()), dtype=torch.float64)
    h = torch.zeros(len(x), 0, dtype=torch.float64)
    opt = torch.optim.Adam(model.decoder.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = -(w * TokenSequences(model.decoder, h).log_prob(x)).sum()
        loss.backward()
        opt.step()
    return silence_specials(model.eval())


def test_the_language_model_fixture_learned_its_target(language_model):
    h = torch.zeros(1, 0, dtype=torch.float64)
    x = padded([list(r) + [EOS] for r in TARGET], 5)
    p = log_prob(language_model, h, x).exp()
    assert p.tolist() == pytest.approx(list(TARGET.values()), abs=0.02)


def test_beam_covering_every_continuation_finds_the_brute_force_mode_that_greedy_misses(language_model):
    width = 5
    h = torch.zeros(1, 0, dtype=torch.float64)
    rows = all_rows(width - 1, width)
    scores = log_prob(language_model, h, rows)
    mode = rows[scores.argmax()]
    assert mode.tolist() == [4, 3, EOS, PAD, PAD]
    greedy = language_model.decoder.generate(h, "greedy")[0]
    assert greedy.tolist() == [5, 4, EOS, PAD, PAD]  # greedy's first choice (5: 0.60) leads away from the mode
    for beam_width in (2, 3 ** (width - 1), len(rows)):
        found = language_model.decoder.beam(h, beam_width)[0]
        assert found.tolist() == mode.tolist(), beam_width
        assert float(log_prob(language_model, h, found[None])) == pytest.approx(float(scores.max()), abs=1e-12)


@pytest.mark.parametrize("cell,width,scale,eos", [("lstm", 4, 6.0, 0.0), ("gru", 5, 6.0, 1.0),
                                                  ("transformer", 5, 2.0, 1.0)])
def test_beam_finds_the_brute_force_mode_of_random_decoders(cell, width, scale, eos):
    """Over random z of an untrained decoder (z scaled up so the rows differ), a beam covering every
    prefix returns the row of greatest log_prob among all rows that fit max_length. Checked where
    that row is also the mode when the last column's EOS is forced (scored as the prefix alone),
    so the check holds whichever way beam scores a forced EOS."""
    model = silence_specials(tiny(cell, length=width, seed=3))
    with torch.no_grad():
        model.decoder.out.weight.mul_(scale)
        model.decoder.out.bias[EOS] += eos
    rows = all_rows(width - 1, width)
    full = (rows != PAD).sum(1) == width
    torch.manual_seed(6)
    hs = 3 * torch.randn(24, 2, dtype=torch.float64)
    found = model.decoder.beam(hs, 3 ** (width - 1))
    greedy = model.decoder.generate(hs, "greedy")
    checked, not_greedy = 0, 0
    for i, h in enumerate(hs):
        scores = log_prob(model, h[None], rows)
        truncated = scores.clone()
        prefixes = rows[full, :width - 1]  # a full row's tokens without its EOS
        truncated[full] = stepwise_log_prob(model.decoder, h[None].expand(len(prefixes), -1), prefixes)
        if scores.argmax() != truncated.argmax():
            continue
        checked += 1
        assert found[i].tolist() == rows[scores.argmax()].tolist()
        not_greedy += found[i].tolist() != greedy[i].tolist()
    assert checked >= 12
    assert not_greedy > 0  # some cases need the beam: greedy decoding would fail this test


def test_beam_returns_the_row_of_greatest_log_prob():
    width = 5
    model = silence_specials(tiny("lstm", length=width, seed=3))
    with torch.no_grad():
        model.decoder.out.bias[EOS] -= 3.0  # ending is unlikely at every step, the last one included
        model.decoder.out.bias[4] += 3.0
    h = torch.zeros(1, 2, dtype=torch.float64)
    rows = all_rows(width - 1, width)
    scores = log_prob(model, h, rows)
    found = model.decoder.beam(h, len(rows))
    assert float(log_prob(model, h, found)) == pytest.approx(float(scores.max()), abs=1e-9)


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_decoding_equals_a_beam_of_width_one(cell, language_model):
    model = silence_specials(tiny(cell, length=6, seed=4))
    with torch.no_grad():
        model.decoder.out.weight.mul_(3.0)
    torch.manual_seed(8)
    h = 3 * torch.randn(32, 2, dtype=torch.float64)
    greedy = model.decoder.generate(h, "greedy")
    assert torch.equal(greedy, model.decoder.beam(h, 1))
    assert len({tuple(r) for r in greedy.tolist()}) >= 2  # the rows differ: a real comparison
    lm_h = torch.zeros(1, 0, dtype=torch.float64)
    assert torch.equal(language_model.decoder.generate(lm_h, "greedy"), language_model.decoder.beam(lm_h, 1))


def _chi_square_p(draws: torch.Tensor, rows: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of the draws' row counts against ``probs`` of ``rows`` (every other row one bin,
    bins of expected count < 5 merged)."""
    n = len(draws)
    counts = Counter(map(tuple, draws.tolist()))
    observed = [counts.get(tuple(r), 0) for r in rows.tolist()]
    expected = (probs * n).tolist()
    observed.append(n - sum(observed))
    expected.append(n - sum(expected))
    small_o = sum(o for o, e in zip(observed, expected) if e < 5)
    small_e = sum(e for e in expected if e < 5)
    pairs = [(o, e) for o, e in zip(observed, expected) if e >= 5] + ([(small_o, small_e)] if small_e > 0 else [])
    stat = sum((o - e) ** 2 / e for o, e in pairs)
    return float(chi2.sf(stat, len(pairs) - 1))


@pytest.mark.parametrize("cell", CELLS)
def test_sampled_rows_follow_the_models_probabilities(cell):
    """4,000 ancestral samples of one z: every row shorter than max_length appears as often as
    exp(log_prob) says; the rest (rows cut at max_length) take the remaining mass."""
    width = 4
    model = silence_specials(tiny(cell, length=width, seed=5))
    h = torch.full((1, 2), 0.5, dtype=torch.float64)
    short = all_rows(width - 2, width)  # rows that end before the forced EOS
    probs = log_prob(model, h, short).exp()
    draws = model.decoder.generate(h.expand(4000, -1), "sample", generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4000, width)
    assert not torch.isin(draws, torch.tensor([BOS])).any()
    lengths = (draws != PAD).sum(1)
    assert (draws[torch.arange(4000), lengths - 1] == EOS).all()  # each row ends with EOS, then PAD
    assert ((draws == EOS).sum(1) == 1).all()
    assert _chi_square_p(draws, short, probs) > 1e-4
    wrong = probs.roll(1)  # the same frequencies assigned to the wrong rows are rejected
    assert _chi_square_p(draws, short, wrong) < 1e-4


def test_sampled_rows_follow_log_prob_without_silencing_pad_and_bos():
    width = 4
    model = tiny("lstm", length=width, seed=5)
    h = torch.full((1, 2), 0.5, dtype=torch.float64)
    short = all_rows(width - 2, width)
    draws = model.decoder.generate(h.expand(4000, -1), "sample", generator=torch.Generator().manual_seed(0))
    assert _chi_square_p(draws, short, log_prob(model, h, short).exp()) > 1e-4


def test_token_sequences_sample_and_decode_as_shapes_and_methods():
    model = tiny("gru", length=5)
    z = torch.randn(3, 2, dtype=torch.float64)
    p = model.decode(z)
    assert p.batch_shape == (3,) and p.event_shape == (5,)
    assert p.sample((2,)).shape == (2, 3, 5)
    assert torch.equal(p.mean, p.decode_as("greedy"))
    assert p.decode_as("beam", beam_width=1).shape == (3, 5)


# --- 5. word dropout ------------------------------------------------------------------------------


def _fed_inputs(model: SeqVAE, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the token ids the decoder embedded, log p(x|h)) of one teacher-forced pass."""
    seen = []
    handle = model.decoder.embed.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    try:
        lp = TokenSequences(model.decoder, h).log_prob(x)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0], lp


@pytest.mark.parametrize("cell", CELLS)
def test_word_dropout_replaces_the_stated_share_of_word_inputs_by_unk_in_training_only(cell):
    rate, width = 0.3, 10
    model = tiny(cell, length=width, word_dropout=rate)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, width, (400,), generator=gen)
    words = torch.randint(4, V, (400, width), generator=gen)  # no UNK in the data: every UNK input is a dropout
    x = torch.where(torch.arange(width) < lengths[:, None] - 1, words, torch.full_like(words, PAD))
    x[torch.arange(400), lengths - 1] = EOS
    h = torch.randn(400, 2, dtype=torch.float64)
    clean = decoder_inputs(x, 0.0, False)
    assert clean[:, 0].eq(BOS).all() and torch.equal(clean[:, 1:], x[:, :-1])
    if cell == "transformer":  # the transformer reads the batch's longest row only
        clean = clean[:, :int(lengths.max())]

    torch.manual_seed(0)
    model.train()
    fed, lp_train = _fed_inputs(model, x, h)
    assert fed.shape == clean.shape
    assert fed[:, 0].eq(BOS).all()  # never BOS
    assert torch.equal(fed == PAD, clean == PAD)  # never a padding position, and padding stays padding
    changed = fed != clean
    assert fed[changed].eq(UNK).all()  # a dropped input becomes UNK, nothing else
    words_in = (clean != PAD) & (clean != BOS)
    share = float(changed.sum() / words_in.sum())
    se = math.sqrt(rate * (1 - rate) / float(words_in.sum()))
    assert abs(share - rate) < 4 * se, (share, se)

    # the targets are untouched: the training log-likelihood is teacher forcing on the dropped inputs
    model.eval()
    expected = torch.zeros(400, dtype=torch.float64)
    state = model.decoder.start(h)
    for t in range(fed.shape[1]):
        logp, state = model.decoder.step(state, fed[:, t])
        real = x[:, t] != PAD
        expected += torch.where(real, logp.gather(1, x[:, t:t + 1]).squeeze(1), torch.zeros_like(expected))
    assert torch.allclose(lp_train, expected, atol=1e-10)

    fed_eval, lp_eval = _fed_inputs(model, x, h)
    assert torch.equal(fed_eval, clean)  # nothing replaced in eval mode
    assert torch.allclose(lp_eval, stepwise_log_prob(model.decoder, h, x), atol=1e-12)
    assert not torch.allclose(lp_eval, lp_train)


def test_decoder_inputs_without_training_or_rate_are_the_rows_shifted_right():
    x = padded([[4, 5, 2], [2]], 4)
    for rate, training in ((0.9, False), (0.0, True)):
        assert decoder_inputs(x, rate, training).tolist() == [[BOS, 4, 5, 2], [BOS, 2, PAD, PAD]]
    torch.manual_seed(0)
    heavy = decoder_inputs(padded([[4] * 30 + [2]], 31), 0.999, True)
    assert heavy[0, 0] == BOS and heavy[0, 1:].eq(UNK).all()


# --- 6. the SeqVAE's bounds -----------------------------------------------------------------------


SEQ_ROWS = [[4, 5, 2], [5, 5, 4, 2], [2], [4, 3, 2], [5, 2], [4, 4, 4, 5, 2]]


def _rows(width: int = 6) -> torch.Tensor:
    return padded(SEQ_ROWS, width)


def _log_px_by_quadrature(model: SeqVAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) over a 1-D z, by the trapezoid rule on [-9, 9]."""
    z = torch.linspace(-9, 9, 1801, dtype=torch.float64)
    with torch.no_grad():
        log_px_z = model.decode(z.view(-1, 1, 1).expand(-1, len(x), 1)).log_prob(x)  # (G, N)
    log_prior = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    weights = torch.full_like(z, z[1] - z[0])
    weights[[0, -1]] /= 2
    return (log_px_z + log_prior[:, None] + weights.log()[:, None]).logsumexp(0)


def _iwae_repeats(model: SeqVAE, x: torch.Tensor, k: int, repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard error) over ``repeats`` independent K-sample IWAE estimates of each row: (N,), (N,)."""
    draws = iwae_bound(model, x.repeat(repeats, 1), k).view(repeats, len(x))
    return draws.mean(0), draws.std(0) / math.sqrt(repeats)


def _mean_and_se(values: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """The mean over rows of per-row means, and its standard error."""
    mean, se = values
    return float(mean.mean()), float(se.pow(2).sum().sqrt() / len(se))


def test_elbo_below_iwae_below_log_px_and_iwae_tightens_with_k():
    """On a 1-D latent, log p(x) by quadrature: E[ELBO] < IWAE_5 < IWAE_50 <= log p(x), and IWAE_1000
    reaches log p(x); means over the rows of many independent estimates, compared in standard errors."""
    model = tiny("gru", latent_dim=1, length=6, seed=2)
    with torch.no_grad():  # a decoder that depends strongly on z: wide gaps between the bounds
        model.decoder.init.weight.mul_(6.0)
        model.decoder.out.weight.mul_(3.0)
    x = _rows()
    log_px = _log_px_by_quadrature(model, x)
    torch.manual_seed(0)
    bound = float(elbo(model, x, samples=400).elbo.detach().mean())
    iwae5, se5 = _mean_and_se(_iwae_repeats(model, x, 5, 400))
    iwae50, se50 = _mean_and_se(_iwae_repeats(model, x, 50, 100))
    rows1000, se_rows1000 = _iwae_repeats(model, x, 1000, 10)
    exact = float(log_px.mean())
    assert bound < iwae5 - 4 * se5 - 0.1
    assert iwae5 < iwae50 - 4 * math.hypot(se5, se50)
    assert iwae50 < exact + 3 * se50
    assert float(rows1000.mean()) == pytest.approx(exact, abs=0.03)
    assert (rows1000 - log_px).abs().max() < 0.05 + 4 * se_rows1000.max()
    assert exact - bound > 0.5  # a real gap: the comparisons above are not ties


def test_iwae_of_many_samples_matches_log_px_by_quadrature_for_lstm_with_z_every_step():
    model = tiny("lstm", True, latent_dim=1, length=6, seed=4)
    with torch.no_grad():
        model.decoder.out.weight.mul_(3.0)
    x = _rows()
    torch.manual_seed(1)
    log_px = _log_px_by_quadrature(model, x)
    rows, se = _iwae_repeats(model, x, 1000, 10)
    assert float(rows.mean()) == pytest.approx(float(log_px.mean()), abs=0.05)
    assert (rows - log_px).abs().max() < 0.05 + 4 * se.max()
    assert float(log_px.mean()) - float(elbo(model, x, samples=400).elbo.detach().mean()) > 0.1


def test_kl_per_dimension_sums_to_the_kl_and_matches_the_gaussian_closed_form():
    model = tiny("lstm", latent_dim=3, length=6)
    x = _rows()
    terms = elbo(model, x)
    assert terms.kl_method == "analytic" and terms.kl_per_dim.shape == (len(x), 3)
    assert torch.allclose(terms.kl_per_dim.sum(-1), terms.kl, atol=1e-12)
    q = model.encode(x)
    mu, s = q.mean, q.stddev
    closed = (0.5 * (mu**2 + s**2 - 1) - s.log()).sum(-1)
    assert torch.allclose(terms.kl, closed, atol=1e-10)
    assert (terms.kl > 0).all()
    result = evaluate_model(model, x, iwae_k=10, seed=0)
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-9)
    assert result["kl"] == pytest.approx(float(closed.detach().mean()), rel=1e-9)


@pytest.mark.parametrize("cell", CELLS)
def test_a_language_model_has_kl_zero_and_iwae_equal_to_elbo_equal_to_log_px(cell):
    model = tiny(cell, latent_dim=0, length=6)
    x = _rows()
    torch.manual_seed(0)
    terms = elbo(model, x)
    assert torch.equal(terms.kl, torch.zeros(len(x), dtype=terms.kl.dtype))
    direct = TokenSequences(model.decoder, torch.zeros(len(x), 0, dtype=torch.float64)).log_prob(x)
    assert torch.allclose(terms.recon, direct, atol=1e-12) and torch.allclose(terms.elbo, direct, atol=1e-12)
    assert torch.allclose(iwae_bound(model, x, 7), direct, atol=1e-10)
    assert torch.allclose(direct, stepwise_log_prob(model.decoder, torch.zeros(len(x), 0, dtype=torch.float64), x),
                          atol=1e-12)
    assert sum(p.numel() for p in model.encoder.parameters()) == 0


def test_language_model_perplexity_from_evaluate_model_is_exp_of_nll_per_token():
    model = tiny("gru", latent_dim=0, length=6)
    x = _rows()
    direct = TokenSequences(model.decoder, torch.zeros(len(x), 0, dtype=torch.float64)).log_prob(x)
    tokens = sum(len(r) for r in SEQ_ROWS)  # words and EOS
    result = evaluate_model(model, x, iwae_k=3, seed=0)
    direct = direct.detach()
    assert result["kl"] == 0 and result["nll_iwae"] == pytest.approx(-float(direct.mean()), rel=1e-9)
    assert result["tokens_per_row"] == pytest.approx(tokens / len(x))
    assert result[PPL] == pytest.approx(math.exp(-float(direct.sum()) / tokens), rel=1e-9)
    assert result[PPL_ELBO] == pytest.approx(result[PPL], rel=1e-9)


def test_conditional_seqvae_uses_the_label_in_encoder_decoder_and_prior():
    model = tiny("lstm", latent_dim=2, length=6, condition="label", num_classes=3, conditional_prior=True)
    x = _rows()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(0)
    terms = elbo(model, x, condition=y)
    assert terms.elbo.shape == (len(x),) and torch.isfinite(terms.elbo).all()
    assert model.prior(y).batch_shape == (len(x),)
    z = torch.zeros(len(x), 2, dtype=torch.float64)
    a, b = model.decode(z, condition=y).log_prob(x), model.decode(z, condition=(y + 1) % 3).log_prob(x)
    assert not torch.allclose(a, b)  # the decoder sees the label
    q0, q1 = model.encode(x, condition=y), model.encode(x, condition=(y + 1) % 3)
    assert not torch.allclose(q0.mean, q1.mean)  # so does the encoder
    torch.manual_seed(0)
    assert torch.isfinite(iwae_bound(model, x, 10, condition=y)).all()
    rows = model.decode(model.prior(y).sample(), condition=y).decode_as("sample")
    assert rows.shape == (len(x), 6) and (rows == EOS).sum(1).eq(1).all()
    with pytest.raises(KlvaeError, match="condition"):
        model.encode(x)


def test_vmf_latent_seqvae_gives_finite_bounds_with_iwae_above_elbo():
    model = tiny("gru", latent_dim=3, length=6, latent="vmf")
    with torch.no_grad():
        model.decoder.out.weight.mul_(3.0)
    x = _rows()
    torch.manual_seed(0)
    terms = elbo(model, x, samples=100)
    terms.recon, terms.kl = terms.recon.detach(), terms.kl.detach()
    assert torch.isfinite(terms.elbo).all() and (terms.kl >= 0).all()
    iwae = torch.stack([iwae_bound(model, x, 50) for _ in range(5)]).mean(0)
    assert torch.isfinite(iwae).all()
    assert float(iwae.mean()) > float(terms.elbo.mean())
    z = model.encode(x).sample()
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(x), dtype=torch.float64), atol=1e-9)  # on the sphere
    assert model.decode(z).decode_as("greedy").shape == (len(x), 6)


def test_latent_dim_zero_refuses_other_latents():
    with pytest.raises(KlvaeError, match="language model"):
        SeqVAEConfig(event_shape=[5], vocab_size=V, latent_dim=0, latent="vmf")


# --- 7. the bucket sampler ------------------------------------------------------------------------


def _padding_waste(order: list[int], lengths: torch.Tensor, batch: int) -> int:
    waste = 0
    for i in range(0, len(order), batch):
        part = lengths[order[i:i + batch]]
        waste += int(part.max() * len(part) - part.sum())
    return waste


def test_bucket_sampler_yields_each_index_once_in_length_homogeneous_batches():
    torch.manual_seed(0)
    n, batch = 1037, 10
    lengths = torch.randint(1, 40, (n,))
    sampler = BucketSampler(lengths, batch)
    first, second = list(sampler), list(sampler)
    assert len(sampler) == n
    for order in (first, second):
        assert sorted(order) == list(range(n))
        batches = [order[i:i + batch] for i in range(0, n, batch)]
        assert [len(b) for b in batches] == [batch] * (n // batch) + [n % batch]  # full first, the short one last
        spread = torch.tensor([int(lengths[b].max() - lengths[b].min()) for b in batches])
        assert spread.float().mean() < 2  # random batches of 10 lengths in 1..39 spread ~30
        assert all(bool((lengths[b][1:] >= lengths[b][:-1]).all()) for b in batches)  # sorted slices of a pool
    assert first != second  # a new order each epoch
    random_waste = _padding_waste(torch.randperm(n).tolist(), lengths, batch)
    assert _padding_waste(first, lengths, batch) < random_waste / 10


def test_bucket_sampler_batches_are_sorted_runs_aligned_across_pools_with_the_short_one_last():
    """Distinct lengths over two pools and a bit: every run of ``batch`` yielded indices (and the
    final short one) is one sorted slice of a pool, so its lengths ascend; a short batch anywhere but
    last would misalign the runs after it and break this."""
    torch.manual_seed(1)
    batch = 4
    n = BucketSampler.POOL * batch * 2 + 3
    lengths = torch.randperm(n) + 1
    for _ in range(3):
        order = list(BucketSampler(lengths, batch))
        assert sorted(order) == list(range(n))
        runs = [lengths[order[i:i + batch]] for i in range(0, n, batch)]
        assert [len(r) for r in runs] == [batch] * (n // batch) + [3]
        assert all(bool((r[1:] > r[:-1]).all()) for r in runs)
    # a pool of 200 distinct lengths out of ~400 sorted into batches of 4: neighbours are close
    spread = torch.stack([r.max() - r.min() for r in runs[:-1]]).float().mean()
    assert spread < n / 20


def test_loader_of_token_rows_batches_by_length_and_keeps_labels_aligned():
    torch.manual_seed(2)
    n, batch = 300, 16
    lengths = torch.randint(1, 20, (n,))
    x = (torch.arange(20) < lengths[:, None]).long() * 4
    labels = torch.arange(n)
    seen = []
    for xb, yb in loader(x, batch, True, labels, bucket=batch):
        assert torch.equal(xb, x[yb])  # rows and labels stay paired
        seen += yb.tolist()
        counts = (xb != PAD).sum(1)
        if len(xb) == batch:
            assert int(counts.max() - counts.min()) <= 2
    assert sorted(seen) == list(range(n))


# --- 8. perplexity and token accuracy -------------------------------------------------------------


def test_token_accuracy_counts_real_tokens_repeated_in_place():
    rows = padded([[4, 5, 2], [5, 2], [4, 4, 4, 2]], 5)
    decoded = padded([[4, 4, 2], [5, 2, 4, 4], [4, 4, 2]], 5)  # 2/3, 2/2 (extra tokens ignored), 2/4 (shifted EOS)
    assert token_accuracy(rows, decoded) == pytest.approx(6 / 9)
    assert token_accuracy(rows, rows) == 1.0
    assert token_accuracy(rows, torch.zeros_like(rows)) == 0.0  # padding never counts as a match


def test_sequence_figures_perplexity_is_exp_of_nll_times_rows_over_tokens():
    model = tiny("gru", latent_dim=2, length=6)
    x = _rows()
    tokens = sum(len(r) for r in SEQ_ROWS)
    result = {"nll_iwae": 7.25, "elbo": -8.5}
    figures = sequence_figures(model, x, result, seed=0)
    assert figures["tokens_per_row"] == pytest.approx(tokens / len(x))
    assert figures[PPL] == pytest.approx(math.exp(7.25 * len(x) / tokens), rel=1e-12)
    assert figures[PPL_ELBO] == pytest.approx(math.exp(8.5 * len(x) / tokens), rel=1e-12)
    greedy = model.decode(model.family.point(model.encode(x))).mean
    assert figures["token_accuracy"] == pytest.approx(token_accuracy(x, greedy))
    assert 0 <= figures["mutual_information"] <= math.log(len(x)) + 1e-6


@pytest.mark.parametrize("cell", ["lstm", "transformer"])
def test_a_language_model_on_a_one_token_vocabulary_reaches_its_closed_form_nll(cell):
    """Rows 'a', 'a a', 'a a a' equally often: the best model says p(<eos> | a) = 1/3,
    p(<eos> | a a) = 1/2, p(<eos> | a a a) = 1, so every row has probability 1/3 and the mean NLL
    is log 3 exactly; no model goes below it (the entropy of the rows)."""
    torch.manual_seed(0)
    a = UNK + 1
    spec = SeqVAEConfig(event_shape=[4], vocab_size=a + 1, latent_dim=0, hidden=[16], embedding_dim=8,
                        decoder_cell=cell, heads=2)
    model = SeqVAE(spec)
    x = padded([[a, EOS], [a, a, EOS], [a, a, a, EOS]], 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(800):
        opt.zero_grad()
        (-elbo(model, x).elbo.mean()).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        nll = -iwae_bound(model, x, 3)
    assert torch.allclose(nll, torch.full((3,), math.log(3)), atol=0.02), nll
    assert nll.mean() >= math.log(3) - 1e-4
