"""The sampler: reproducible, exact filtering, batched = single, stops on time."""

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint

from musicgen.checkpoint import load_checkpoint
from musicgen.events import MAX_NOTE_SECONDS, VOCAB, decode_events
from musicgen.sample import (
    MAX_RELEASE_SHARE,
    RELEASE_AFTER_STEPS,
    RELEASE_FLOOR,
    filter_logits,
    generate,
    move_within_types,
    paired_keeping_timing,
    raised_to_floor,
    release_floor,
    temper_keeping_timing,
)

SHIFT = VOCAB["time_shift"]
PRIMER = np.array([VOCAB["note_on"].token(60), SHIFT.token(20), VOCAB["note_off"].token(60)])


@pytest.fixture(scope="module", params=["lstm", "transformer"])
def model(request, tmp_path_factory):
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / request.param, request.param)
    return load_checkpoint(path)[0]


def test_same_seed_same_tokens(model):
    a = generate(model, PRIMER, max_tokens=60, seed=7, top_p=0.9)
    b = generate(model, PRIMER, max_tokens=60, seed=7, top_p=0.9)
    c = generate(model, PRIMER, max_tokens=60, seed=8, top_p=0.9)
    assert np.array_equal(a.tokens[0], b.tokens[0])
    assert not np.array_equal(a.tokens[0], c.tokens[0])


def test_temperature_zero_is_argmax(model):
    result = generate(model, PRIMER, max_tokens=30, temperature=0.0, seed=3)
    # Greedy by hand, one step at a time.
    with torch.no_grad():
        logits, state = model(torch.tensor([[VOCAB.bos, *PRIMER]]))
        logits = logits[:, -1]
        expected = []
        for _ in range(30):
            token = int(logits.argmax(-1))
            expected.append(token)
            if token == VOCAB.eos:
                break
            logits, state = model.step(torch.tensor([token]), state)
    assert result.tokens[0].tolist() == expected


def test_top_k_keeps_exactly_the_k_best():
    logits = np.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = np.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log([[0.05, 0.5, 0.3, 0.1, 0.05]])
    kept = lambda p: np.isfinite(filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False, False, False]    # 0.5 alone reaches 0.5
    assert kept(0.6) == [False, True, True, False, False]     # 0.5 + 0.3
    assert kept(0.85) == [False, True, True, True, False]     # 0.5 + 0.3 + 0.1 = 0.9
    assert kept(1.0) == [True] * 5


def test_top_k_and_top_p_combine():
    logits = np.log([[0.05, 0.5, 0.3, 0.1, 0.05]])
    kept = np.isfinite(filter_logits(logits, top_k=3, top_p=0.95))[0].tolist()
    assert kept == [False, True, True, True, False]


def test_min_p_keeps_what_is_at_least_that_share_of_the_likeliest():
    logits = np.log([[0.05, 0.5, 0.3, 0.1, 0.05]])
    kept = lambda m: np.isfinite(filter_logits(logits, min_p=m))[0].tolist()  # noqa: E731
    assert kept(0.0) == [True] * 5
    assert kept(0.1) == [True, True, True, True, True]      # 0.05 >= 0.1 x 0.5
    assert kept(0.15) == [False, True, True, True, False]   # 0.1 >= 0.075; 0.05 is not
    assert kept(0.7) == [False, True, False, False, False]  # 0.3 < 0.35
    # Per row, and after a temperature (the logits come divided by it): at
    # temperature 2 the least likely token is 0.32 times as likely as the likeliest.
    rows = filter_logits(np.concatenate((logits, logits / 2)), min_p=np.array([0.15, 0.15]))
    assert np.isfinite(rows).sum(-1).tolist() == [3, 5]


def test_sampling_follows_the_filtered_distribution():
    from musicgen.sample import TorchUniforms, _choose
    logits = np.log([[0.05, 0.5, 0.3, 0.1, 0.05]])
    generator = TorchUniforms(0)
    draws = [int(_choose(logits, 1.0, 0, 0.85, 0.0, [generator])[0][0]) for _ in range(3000)]
    counts = np.bincount(draws, minlength=5) / len(draws)
    assert counts[0] == counts[4] == 0  # outside the nucleus: never drawn
    np.testing.assert_allclose(counts[1:4], np.array([0.5, 0.3, 0.1]) / 0.9, atol=0.03)


def test_a_draw_past_the_end_takes_the_last_token_that_may_be_chosen():
    from musicgen.sample import _choose

    class Highest:  # u * total rounding up to total: every token's cumulative sum is passed
        def next(self) -> float:
            return 1.0

    logits = np.log([[0.2, 0.3, 0.4, 0.1, 1e-3, 1e-3]])
    banned = np.array([[False, False, True, False, True, True]])
    rows = np.concatenate((logits, logits))
    chosen = _choose(rows, 1.0, 0, 1.0, 0.0, [Highest(), Highest()],
                     np.concatenate((banned, ~banned)))[0]
    assert chosen.tolist() == [3, 5]  # not a banned (zero-probability) token after it


def test_the_default_distribution_in_one_pass_equals_the_two_functions_composed():
    rng = np.random.default_rng(5)
    off = VOCAB["note_off"]
    for scale, banned_share, temperature in ((1, 0.0, 1.0), (3, 0.3, 0.85), (10, 0.5, 0.05),
                                             (3, 0.9, 1.5)):
        logits = rng.normal(0, scale, (4, VOCAB.size))
        banned = rng.random(logits.shape) < banned_share
        banned[1, off.offset:off.stop] = True  # a type with nothing allowed gives up its share
        temperatures = np.full(4, temperature)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        one_pass = paired_keeping_timing(log_probs, np.exp(log_probs), banned, temperatures)
        composed = np.exp(move_within_types(temper_keeping_timing(logits, temperatures), banned))
        np.testing.assert_allclose(one_pass, composed, rtol=1e-9, atol=1e-200)
        assert np.all(one_pass[banned] == 0) and np.allclose(one_pass.sum(-1), 1)


def test_batch_of_four_equals_four_single_runs(model):
    batch = generate(model, PRIMER, max_tokens=40, seed=10, n=4, temperature=1.2)
    for i in range(4):
        single = generate(model, PRIMER, max_tokens=40, seed=10 + i, n=1, temperature=1.2)
        assert np.array_equal(batch.tokens[i], single.tokens[0])
        np.testing.assert_allclose(batch.entropy[i], single.entropy[0], rtol=1e-4, atol=1e-5)


def test_stops_within_one_time_shift_of_the_target(model):
    result = generate(model, PRIMER, seconds=3.0, seed=1, n=3)
    for tokens, reason in zip(result.tokens, result.stop_reasons, strict=True):
        if reason != "seconds":
            continue
        is_shift = (tokens >= SHIFT.offset) & (tokens < SHIFT.stop)
        seconds = sum(SHIFT.value(t) for t in tokens[is_shift]) / 100
        last = tokens[-1]
        assert SHIFT.offset <= last < SHIFT.stop
        last_shift = SHIFT.value(last) / 100
        assert seconds >= 3.0 and seconds - last_shift < 3.0
    assert "seconds" in result.stop_reasons


def test_diagnostics_line_up_with_tokens(model):
    result = generate(model, [], max_tokens=25, seed=0)  # from silence
    assert len(result.entropy[0]) == len(result.chosen_probability[0]) == len(result.tokens[0])
    assert (result.entropy[0] >= 0).all() and (result.entropy[0] <= np.log(VOCAB.size)).all()
    assert ((result.chosen_probability[0] > 0) & (result.chosen_probability[0] <= 1)).all()


def test_progress_is_reported(model):
    seen = []
    generate(model, PRIMER, max_tokens=100, on_progress=seen.append)
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(n=0)])
def test_bad_settings_are_refused(model, bad):
    with pytest.raises(ValueError):
        generate(model, PRIMER, max_tokens=5, **bad)


class AlwaysWaits(torch.nn.Module):
    """Greedy, it only ever waits: a 1 s time shift beats every note."""

    context = None

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.logits = torch.zeros(VOCAB.size)
        self.logits[SHIFT.token(100)] = 10.0
        self.logits[VOCAB["note_on"].token(60)] = 5.0

    def forward(self, tokens, state=None):
        return self.logits.expand(*tokens.shape, VOCAB.size).clone(), state

    def step(self, token, state=None):
        return self.logits.expand(len(token), VOCAB.size).clone(), state


def _note_on_times(tokens) -> list[float]:
    on, t, times = VOCAB["note_on"], 0, []
    for token in tokens:
        if SHIFT.offset <= token < SHIFT.stop:
            t += SHIFT.value(token)
        elif on.offset <= token < on.stop:
            times.append(t / 100)
    return times


def test_max_silence_makes_the_sampler_start_a_note_in_time():
    model = AlwaysWaits()
    idle = generate(model, [], seconds=20, temperature=0).tokens[0]
    assert not _note_on_times(idle)  # without the cap: 20 s of nothing
    capped = generate(model, [], seconds=20, temperature=0, max_silence=2.0).tokens[0]
    times = _note_on_times(capped)
    assert times and times[0] <= 3.0
    assert max(np.diff([0.0, *times, 20.0])) <= 3.0  # a gap ends within one shift of 2 s
    # Counted from the prompt's last note: a prompt that ends in 5 s of rest is over the cap.
    rest = [VOCAB["note_on"].token(60), SHIFT.token(100), VOCAB["note_off"].token(60),
            *[SHIFT.token(100)] * 4]
    assert _note_on_times(generate(model, rest, seconds=3, temperature=0,
                                   max_silence=2.0).tokens[0])[0] == 0.0


class Restrikes(AlwaysWaits):
    """A model that keeps striking pitch 60 and releasing 61, which never sounds."""

    def __init__(self, logits: dict[int, float]):
        super().__init__()
        self.logits = torch.full((VOCAB.size,), -30.0)
        for token, logit in logits.items():
            self.logits[token] = logit


ON, OFF = VOCAB["note_on"], VOCAB["note_off"]


def test_paired_notes_sample_only_note_events_the_decoder_plays_as_written():
    model = Restrikes({ON.token(60): 2.0, OFF.token(60): 1.0, OFF.token(61): 1.0,
                       SHIFT.token(10): 2.0})
    for paired in (False, True):
        generation = generate(model, [], seconds=20, seed=3, paired_notes=paired)
        notes, report = decode_events(generation.tokens[0])
        if paired:
            assert report.restarted_notes == report.ignored_note_offs == 0
            assert report.dropped_empty_notes == 0  # a note lasts at least one step
            assert len(notes) > 20
        else:  # the same model unpaired restarts notes and sends stray NOTE_OFFs
            assert report.restarted_notes > 5 and report.ignored_note_offs > 5


def test_paired_notes_follow_the_decoders_cut_of_a_note_held_too_long():
    # Greedy: strike 60, then wait; the NOTE_OFF never wins, so the decoder
    # cuts the note at MAX_NOTE_SECONDS and the sampler may strike it again.
    model = Restrikes({ON.token(60): 3.0, SHIFT.token(100): 2.0, OFF.token(60): 1.0})
    tokens = generate(model, [], seconds=13, temperature=0, paired_notes=True).tokens[0]
    notes, report = decode_events(tokens)
    assert report.restarted_notes == 0 and report.cut_notes == 2
    assert np.allclose(notes.start, [0.0, 6.0, 12.0])  # the first shift past the 5 s cut
    assert np.allclose(notes.end - notes.start, [MAX_NOTE_SECONDS, MAX_NOTE_SECONDS, 1.0])


def test_paired_notes_keep_the_models_chance_of_releasing_a_key():
    # The model means to release a key often but names 61, which never
    # sounds; 60 is what sounds. Keeping the NOTE_OFF's share releases 60 as
    # often as the model releases anything; dropping the banned 61 outright
    # (the rule of recipes up to version 5) leaves 60 sounding far longer.
    model = Restrikes({ON.token(60): 1.0, OFF.token(61): 2.0, OFF.token(60): -1.0,
                       SHIFT.token(10): 1.0})
    def mean_length(**controls):
        tokens = generate(model, [], seconds=60, seed=2, paired_notes=True, **controls).tokens[0]
        notes, report = decode_events(tokens)
        assert report.restarted_notes == report.ignored_note_offs == 0
        return float(np.mean(notes.end - notes.start))
    kept, spread = mean_length(), mean_length(paired_keeps_types=False)
    assert kept < 0.5 * spread
    # Keeping the timing keeps the mix of types at any temperature, so the
    # release rate stays the model's; plain tempering favours the likelier
    # NOTE_OFF over the time shift and releases sooner.
    assert mean_length(keep_timing=True, temperature=0.5) == pytest.approx(kept, rel=0.05)
    assert mean_length(temperature=0.5) < 0.85 * kept


def test_released_held_keys_end_soon_after_the_age_where_pianists_let_go():
    # Struck, 60 is next to never released: only the decoder's 5 s cut ends it.
    model = Restrikes({ON.token(60): 1.0, SHIFT.token(1): 2.0, OFF.token(60): -12.0})

    def lengths(**controls) -> np.ndarray:
        tokens = generate(model, [], seconds=60, seed=4, paired_notes=True, **controls).tokens[0]
        notes, _ = decode_events(tokens)
        ended = notes.start < 60 - MAX_NOTE_SECONDS  # not closed by the clip's end
        return (notes.end - notes.start)[ended]

    assert np.allclose(lengths(), MAX_NOTE_SECONDS)
    released = lengths(release_held_keys=True)
    # Not before 3 s; after it at 2% a token, with 100 or more tokens a second
    # here (a few reach the cut: with many keys old, each gets less).
    assert np.mean(released >= 3.0) > 0.99 and np.mean(released < MAX_NOTE_SECONDS) > 0.95
    assert released.mean() < 3.6 and len(released) > 100


def test_a_floor_lifts_the_tokens_below_it_and_scales_the_rest():
    probabilities = np.array([[0.5, 0.3, 0.19, 0.01], [0.25, 0.25, 0.25, 0.25]])
    floor = np.array([[0.0, 0.0, 0.0, 0.1], [0.0, 0.0, 0.0, 0.1]])
    raised = raised_to_floor(probabilities, floor)
    np.testing.assert_allclose(raised[0], [0.5 * 0.9 / 0.99, 0.3 * 0.9 / 0.99, 0.19 * 0.9 / 0.99,
                                           0.1])
    np.testing.assert_allclose(raised[1], probabilities[1])  # already above its floor
    np.testing.assert_allclose(raised.sum(-1), 1.0)


def test_only_keys_held_long_enough_get_a_floor_and_many_share_a_capped_one():
    since = np.full((3, 128), -1)
    elapsed = np.array([1000, 1000, 1000])
    since[0, 60] = 1000 - RELEASE_AFTER_STEPS  # old just now
    since[0, 61] = 1000 - RELEASE_AFTER_STEPS + 1  # one step short
    since[1, :40] = 0  # 40 old keys: 40 x RELEASE_FLOOR would pass the cap
    since[2, 60] = 0  # old, but its row does not release held keys
    floor = release_floor(since, elapsed, np.array([True, True, False]))
    assert floor[0, OFF.token(60)] == RELEASE_FLOOR and floor[0].sum() == RELEASE_FLOOR
    np.testing.assert_allclose(floor[1, OFF.token(0):OFF.token(40)], MAX_RELEASE_SHARE / 40)
    assert floor[1].sum() == pytest.approx(MAX_RELEASE_SHARE) and not floor[2].any()
    assert release_floor(since, elapsed, np.array([False, False, False])) is None
    assert release_floor(np.full((1, 128), -1), elapsed[:1], np.array([True])) is None


def test_a_floored_token_just_above_its_floor_keeps_its_odds_against_the_rest():
    probabilities = np.array([[0.5, 0.479, 0.001, 0.02]])
    raised = raised_to_floor(probabilities, np.array([[0.0, 0.0, 0.02, 0.02]]))
    assert raised[0, 2] == 0.02
    # Scaled with the others, not raised: a little under its floor, by their factor.
    np.testing.assert_allclose(raised[0, [0, 1, 3]], probabilities[0, [0, 1, 3]] * 0.98 / 0.999)


def test_moving_within_types_keeps_each_types_share_and_the_allowed_proportions():
    logits = np.random.default_rng(1).normal(0, 2, (2, VOCAB.size))
    banned = np.zeros_like(logits, dtype=bool)
    banned[:, ON.offset:ON.offset + 60] = True        # some keys of a type
    banned[1, OFF.offset:OFF.stop] = True             # row 1: every NOTE_OFF
    model_own = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    moved = move_within_types(logits, banned)
    np.testing.assert_allclose(np.exp(moved).sum(-1), 1.0)
    assert np.isneginf(moved[banned]).all() and np.isfinite(moved[~banned]).all()
    shares, own = _type_shares(moved), _type_shares(model_own)
    np.testing.assert_allclose(shares[0], own[0], atol=1e-12)
    # A type with nothing allowed gives its share to the others in proportion.
    off = [r.name for r in VOCAB.ranges].index("note_off")
    rest = np.delete(own[1], off)
    np.testing.assert_allclose(np.delete(shares[1], off), rest / rest.sum(), atol=1e-12)
    # Within a type the allowed tokens keep the model's proportions.
    allowed = slice(ON.offset + 60, ON.stop)
    np.testing.assert_allclose(moved[:, allowed] - moved[:, allowed][:, :1],
                               model_own[:, allowed] - model_own[:, allowed][:, :1], atol=1e-9)


def test_moving_within_types_at_a_low_temperature_and_with_impossible_tokens():
    # After a temperature near 0 the one legal NOTE_OFF can lie 800 nats below
    # the banned one; it must still get the whole NOTE_OFF share, not underflow
    # to nothing (which would leave the key held). Tokens already impossible
    # (-inf, not banned) stay impossible.
    logits = np.zeros((1, VOCAB.size))
    logits[0, OFF.offset:OFF.stop] = -np.inf
    logits[0, OFF.token(61)], logits[0, OFF.token(60)] = 0.0, -800.0
    banned = np.zeros_like(logits, dtype=bool)
    banned[0, OFF.token(61)] = True
    moved = move_within_types(logits, banned)
    assert not np.isnan(moved).any()
    off_share = np.exp(logits[0, OFF.offset:OFF.stop]).sum() / np.exp(logits).sum()
    assert np.exp(moved[0, OFF.token(60)]) == pytest.approx(off_share, rel=1e-9)
    others = np.ones(OFF.size, bool)
    others[[60 - OFF.min_value, 61 - OFF.min_value]] = False
    assert np.isneginf(moved[0, OFF.offset:OFF.stop][others]).all()


def _type_shares(log_probs: np.ndarray) -> np.ndarray:
    probabilities = np.exp(log_probs)
    return np.array([probabilities[..., r.offset:r.stop].sum(-1) for r in VOCAB.ranges]).T


def test_keeping_the_timing_tempers_pitches_and_velocities_but_not_time_or_the_mix():
    logits = np.random.default_rng(0).normal(0, 2, (3, VOCAB.size))
    logits[2, OFF.offset:OFF.stop] = -np.inf  # nothing sounds: every NOTE_OFF banned
    model_own = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kept = temper_keeping_timing(logits, np.array([0.5, 1.7, 0.8]))
    np.testing.assert_allclose(np.exp(kept).sum(-1), 1.0)
    # How often each type comes next stays the model's, and so do the time shifts.
    np.testing.assert_allclose(_type_shares(kept), _type_shares(model_own), atol=1e-12)
    np.testing.assert_allclose(kept[:, SHIFT.offset:SHIFT.stop],
                               model_own[:, SHIFT.offset:SHIFT.stop])
    assert np.isneginf(kept[2, OFF.offset:OFF.stop]).all()
    # Within a type, temperature 0.5 makes the likeliest NOTE_ON likelier, 1.7 less likely.
    def top_share(row):
        within = np.exp(row[ON.offset:ON.stop])
        return within.max() / within.sum()
    assert top_share(kept[0]) > top_share(model_own[0])
    assert top_share(kept[1]) < top_share(model_own[1])
    # Plain temperature, by contrast, moves probability between the types.
    plain = logits[:1] / 0.5
    plain -= np.log(np.exp(plain).sum(-1, keepdims=True))
    assert np.abs(_type_shares(plain) - _type_shares(model_own[:1])).max() > 0.01
    # At temperature 1 it is the model's own distribution.
    np.testing.assert_allclose(temper_keeping_timing(logits[:2], 1.0), model_own[:2])


def test_keep_timing_samples_the_models_time_shifts_at_any_temperature():
    # A model that likes short shifts: at temperature 0.5 plain sampling takes
    # even more short shifts, so the same number of events spans less time.
    model = Restrikes({SHIFT.token(1): 2.0, SHIFT.token(50): 1.0, ON.token(60): 1.0,
                       OFF.token(60): 1.0})
    def seconds(**controls):
        tokens = generate(model, [], max_tokens=400, seed=1, **controls).tokens[0]
        is_shift = (tokens >= SHIFT.offset) & (tokens < SHIFT.stop)
        return (tokens[is_shift] - SHIFT.offset + SHIFT.min_value).sum() / 100
    model_own = seconds(temperature=1.0)
    assert seconds(temperature=0.5) < 0.8 * model_own
    assert seconds(temperature=0.5, keep_timing=True) == pytest.approx(model_own, rel=0.2)
    # Greedy has no temperature to keep the timing from.
    assert np.array_equal(generate(model, [], max_tokens=50, temperature=0).tokens[0],
                          generate(model, [], max_tokens=50, temperature=0,
                                   keep_timing=True).tokens[0])
