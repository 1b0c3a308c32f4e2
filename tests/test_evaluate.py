"""Evaluation: baselines against hand counts, model scoring against a plain forward,
and the whole `evaluate` on a tiny checkpoint and cache."""

import dataclasses
import json
import math
from dataclasses import asdict
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import midi_bytes, tiny_cache

from musicgen.checkpoint import save_weights
from musicgen.evaluate import (
    EVENT_TYPES,
    bigram_counts,
    bigram_table,
    choose_bigram_k,
    evaluate,
    evaluate_model,
    format_report,
    open_split,
    score_model,
    score_repeat_previous,
    score_table,
    sliding_windows,
    unigram_table,
    windowing,
)
from musicgen.events import VOCAB
from musicgen.model import LSTMConfig, TransformerConfig, build_model

BOS, EOS = VOCAB.bos, VOCAB.eos
A, B, C = (int(VOCAB["note_on"].token(p)) for p in (60, 62, 64))
EVENTS = VOCAB.size - 3  # 388 performance events share the smoothing mass

TINY = {
    "lstm": LSTMConfig(embed_dim=16, hidden_size=32, num_layers=2, dropout=0.0),
    "transformer": TransformerConfig(d_model=32, n_layers=2, n_heads=4, d_ff=64, context=16,
                                     dropout=0.0),
}


def mean_nll(scores):
    return -sum(s.log_probs.sum() for s in scores) / sum(len(s.targets) for s in scores)


def accuracy(scores):
    return sum(s.correct.sum() for s in scores) / sum(len(s.targets) for s in scores)


def nll_of(probabilities):
    """Mean -ln p of exact fractions, computed independently of the code under test."""
    return -sum(math.log(p) for p in probabilities) / len(probabilities)


# --------------------------------------------------------------------------- baselines

TRAIN = [np.array([BOS, A, B, A, B, EOS]), np.array([BOS, A, A, EOS])]
TEST = [np.array([BOS, A, A, B, EOS])]


def test_unigram_add_one_by_hand():
    # Train targets: A x4, B x2 (N = 6); add-1 over 388 events: (count + 1) / (6 + 388).
    expected = nll_of([Fraction(5, 394), Fraction(5, 394), Fraction(3, 394)])
    scores = score_table(unigram_table(TRAIN), TEST)
    assert mean_nll(scores) == pytest.approx(expected, abs=1e-9)
    assert accuracy(scores) == pytest.approx(2 / 3)  # always predicts A


def test_bigram_add_k_by_hand():
    # Pairs: BOS->A x2, A->B x2, B->A x1, A->A x1; so c(BOS) = 2, c(A) = 3.
    # p(x | y) = (c(y, x) + k) / (c(y) + 388 k), with k = 1/2.
    k = Fraction(1, 2)
    p_a_bos = (2 + k) / (2 + EVENTS * k)
    p_a_a = (1 + k) / (3 + EVENTS * k)
    p_b_a = (2 + k) / (3 + EVENTS * k)
    expected = nll_of([p_a_bos, p_a_a, p_b_a])
    scores = score_table(bigram_table(bigram_counts(TRAIN), 0.5), TEST)
    assert mean_nll(scores) == pytest.approx(expected, abs=1e-9)
    # Top choices: A after BOS (right), B after A (wrong, then right).
    assert accuracy(scores) == pytest.approx(2 / 3)


def test_unseen_context_is_uniform():
    table = bigram_table(bigram_counts(TRAIN), 0.3)
    assert np.exp(table[C, 3:]) == pytest.approx(np.full(EVENTS, 1 / EVENTS))
    assert np.exp(table[A, 3:]).sum() == pytest.approx(1.0)


def test_repeat_previous_by_hand():
    # Targets A, A, B after BOS, A, A: only the second A repeats its predecessor.
    scores = score_repeat_previous(TEST)
    assert scores[0].log_probs is None
    assert accuracy(scores) == pytest.approx(1 / 3)


def test_bigram_k_is_chosen_on_validation():
    counts = bigram_counts(TRAIN)
    k, by_k = choose_bigram_k(counts, TRAIN)  # the fitted data itself: least smoothing wins
    assert k == 0.01 and set(by_k) == {"0.01", "0.03", "0.1", "0.3", "1.0"}
    k, _ = choose_bigram_k(counts, [np.array([BOS, C, C, B, B, EOS])])  # all unseen pairs
    assert k == 1.0


# --------------------------------------------------------------------------- model scoring


def direct_log_probs(model, piece, controls=None):
    """log p of every event target from one forward over the whole piece."""
    given = {} if controls is None else {"controls": torch.as_tensor(controls[None])}
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(piece[None, :-1]), **given)
    log_probs = torch.log_softmax(logits[0].double(), -1)
    targets = torch.as_tensor(piece[1:])
    keep = targets >= 3
    return log_probs[torch.arange(len(targets)), targets][keep].numpy()


def random_pieces(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate(([BOS], rng.integers(3, VOCAB.size, n), [EOS])) for n in lengths]


def test_lstm_state_is_carried_across_chunks():
    torch.manual_seed(0)
    model = build_model(TINY["lstm"]).eval()
    pieces = random_pieces([50, 37, 12, 3])
    # Window 8 and two pieces per batch: many chunks, and rows leave the batch early.
    scores = score_model(model, pieces, window=8, batch_size=2)
    for piece, score in zip(pieces, scores, strict=True):
        assert len(score.targets) == len(piece) - 2
        assert score.log_probs == pytest.approx(direct_log_probs(model, piece), abs=1e-5)


@pytest.mark.parametrize("kind", TINY)
def test_a_controlled_model_is_told_what_comes_after_each_token_or_plays_free(kind):
    from musicgen.controls import future_controls
    from musicgen.serving import ServingModel, session_for
    from musicgen.serving_graph import serving_graph

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY[kind], control_input=True)).eval()
    torch.nn.init.normal_(model.control.weight, std=0.5)  # as if trained
    pieces = random_pieces([14, 9, 5])  # one window (chunk) each
    given = score_model(model, pieces, window=16, batch_size=2)
    free = score_model(model, pieces, window=16, batch_size=2, conditioned=False)
    for piece, conditioned, unconditioned in zip(pieces, given, free, strict=True):
        # Each input told what comes after it in the piece, as training tells it.
        expected = direct_log_probs(model, piece, future_controls(piece)[:-1])
        assert conditioned.log_probs == pytest.approx(expected, abs=1e-5)
        assert unconditioned.log_probs == pytest.approx(direct_log_probs(model, piece), abs=1e-5)
        assert not np.allclose(conditioned.log_probs, unconditioned.log_probs, atol=1e-3)
    # The serving form, chunk by chunk (the LSTM told each chunk's own), scores as torch does.
    weights = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    served = ServingModel(model.config, session_for(
        serving_graph(weights, model.config, quantized=False).SerializeToString()))
    long = random_pieces([40, 23], seed=1)
    for fast, reference in zip(score_model(served, long, window=8, batch_size=2),
                               score_model(model, long, window=8, batch_size=2), strict=True):
        assert fast.log_probs == pytest.approx(reference.log_probs, abs=1e-4)
    if kind == "lstm":  # chunks of 8 carry the state: the whole piece's controls, not a chunk's
        for piece, score in zip(long, score_model(model, long, window=8, batch_size=2),
                                strict=True):
            expected = direct_log_probs(model, piece, future_controls(piece)[:-1])
            assert score.log_probs == pytest.approx(expected, abs=1e-5)


def test_transformer_piece_inside_context_equals_forward():
    torch.manual_seed(0)
    model = build_model(TINY["transformer"]).eval()
    pieces = random_pieces([14, 9, 5])  # 15, 10, 6 positions: all fit in context 16
    scores = score_model(model, pieces, batch_size=2)
    for piece, score in zip(pieces, scores, strict=True):
        assert score.log_probs == pytest.approx(direct_log_probs(model, piece), abs=1e-5)


def test_transformer_windows_score_each_position_once_with_context():
    torch.manual_seed(0)
    model = build_model(TINY["transformer"]).eval()
    piece = random_pieces([60])[0]
    score = score_model(model, [piece])[0]
    for begin, end, score_from in sliding_windows(len(piece) - 1, 16):
        # Each kept prediction equals a forward over its own window alone.
        with torch.no_grad():
            logits, _ = model(torch.as_tensor(piece[None, begin:end]))
        log_probs = torch.log_softmax(logits[0].double(), -1)
        targets = torch.as_tensor(piece[begin + 1:end + 1])
        wanted = log_probs[torch.arange(end - begin), targets][score_from - begin:]
        # Position i predicts piece[i + 1]; the last one predicts EOS, which is not scored.
        wanted = wanted[targets[score_from - begin:] >= 3].numpy()
        assert score.log_probs[score_from:score_from + len(wanted)] == pytest.approx(
            wanted, abs=1e-5)
    assert "sliding windows of 16" in windowing(model)


@pytest.mark.parametrize("length", [1, 5, 16, 17, 40, 100])
def test_sliding_windows_cover_every_position_once(length):
    window = 16
    seen = []
    for begin, end, score_from in sliding_windows(length, window):
        assert end - begin <= window
        # At least window // 2 tokens of context for each position, or all there is.
        assert begin == 0 or score_from - begin >= window // 2
        seen += range(score_from, end)
    assert seen == list(range(length))


class LookupModel(torch.nn.Module):
    """Certain of the next token: logits with a huge value at NEXT[previous token]."""

    context = None  # recurrent, as far as scoring goes: the whole piece in one pass

    def __init__(self, next_token: dict[int, int]):
        super().__init__()
        self.next_token = torch.zeros(VOCAB.size, dtype=torch.long)
        for previous, following in next_token.items():
            self.next_token[previous] = following

    def forward(self, tokens, state=None):
        logits = torch.zeros(*tokens.shape, VOCAB.size)
        logits.scatter_(-1, self.next_token[tokens][..., None], 100.0)
        return logits, state


def test_a_certain_model_scores_zero_nll_and_full_accuracy():
    on, off = VOCAB["note_on"].token(60), VOCAB["note_off"].token(60)
    shift, velocity = VOCAB["time_shift"].token(50), VOCAB["velocity"].token(20)
    cycle = [velocity, on, shift, off, shift]
    following = {BOS: cycle[0], velocity: on, on: shift, shift: off, off: velocity}
    model = LookupModel(following)
    # A deterministic corpus: each event follows from the one before, in the lookup's order.
    pieces = []
    for length in (7, 12, 23, 31):
        events, token = [], BOS
        for _ in range(length):
            token = following[token]
            events.append(token)
        pieces.append(np.array([BOS, *events, EOS]))
    train = [pieces[0], pieces[1]]
    result = evaluate_model(model, pieces, train=train, validation=[pieces[2]], bootstrap=200)
    row = result["model"]
    assert row["nll"] == pytest.approx(0.0, abs=1e-6)
    assert row["accuracy"] == 1.0
    assert set(row["accuracy_by_type"]) == set(EVENT_TYPES)
    assert all(value == 1.0 for value in row["accuracy_by_type"].values())
    assert row["ci"]["nll"][0] <= row["nll"] <= row["ci"]["nll"][1]
    assert row["events"] == 7 + 12 + 23 + 31 and row["pieces"] == 4
    # Seconds come from the time shifts: 0.5 s each.
    assert result["music_seconds"] == pytest.approx(
        sum(0.5 * int((p == shift).sum()) for p in pieces))
    assert row["ratio_to_bigram"] == pytest.approx(0.0, abs=1e-6)
    # This corpus is a bigram's dream too, and "repeat previous" never repeats.
    assert result["baselines"]["bigram"]["accuracy"] == 1.0
    assert result["baselines"]["repeat_previous"]["accuracy"] == 0.0
    assert result["baselines"]["repeat_previous"]["nll"] is None


def test_bootstrap_interval_contains_the_estimate():
    torch.manual_seed(0)
    model = build_model(TINY["lstm"])
    pieces = random_pieces([20, 40, 60, 80, 100], seed=1)
    result = evaluate_model(model, pieces, train=random_pieces([50, 50], seed=2), bootstrap=300)
    for row in (result["model"], *result["baselines"].values()):
        for name, (low, high) in row["ci"].items():
            point = row[name] if name in row else row["ratio_to_bigram"]
            assert low <= point <= high, name
    assert result["model"]["ci"]["nll"][0] < result["model"]["ci"]["nll"][1]


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("kind", TINY)
def test_evaluate_end_to_end(tmp_path, kind):
    torch.manual_seed(0)
    model = build_model(TINY[kind])
    checkpoint = save_weights(tmp_path / "ckpt", model, {"config": asdict(TINY[kind]),
                                                         "name": "tiny"})
    cache = tiny_cache(tmp_path / "cache", pieces=6, events=150)
    result = evaluate(checkpoint, cache, split="test", bootstrap=50)
    assert {"checkpoint", "name", "architecture", "weights_sha256", "split", "data", "pieces",
            "events", "windowing", "model", "baselines", "seconds"} <= set(result)
    assert result["name"] == "tiny" and len(result["weights_sha256"]) == 64
    assert set(result["baselines"]) == {"unigram", "bigram", "repeat_previous"}
    assert result["baselines"]["bigram"]["k"] in (0.01, 0.03, 0.1, 0.3, 1.0)
    # An untrained model is near uniform over 391 tokens.
    assert result["model"]["nll"] == pytest.approx(math.log(VOCAB.size), abs=0.3)
    assert result["model"]["bits_per_note"] > 0 and result["model"]["bits_per_second"] > 0
    json.dumps(result, allow_nan=False)  # JSON-ready, no NaN
    report = format_report(result)
    for row in ("model", "unigram (add-1)", "bigram (add-", "repeat previous", "note_on"):
        assert row in report


def test_open_split_of_a_midi_folder_prepares_a_cache(tmp_path, monkeypatch):
    folder = tmp_path / "songs"
    folder.mkdir()
    for i in range(3):
        notes = [(60 + i, 80, 0.0, 0.5), (64 + i, 70, 0.5, 1.0)]
        (folder / f"song{i}.mid").write_bytes(midi_bytes(notes))
    monkeypatch.chdir(tmp_path)
    found = []
    for split in ("train", "validation", "test"):
        try:
            pieces, seconds = open_split(folder, split)
        except ValueError:
            continue
        found += pieces
        assert all(s == pytest.approx(1.0, abs=0.01) for s in seconds)
    assert (tmp_path / "cache" / "songs" / "index.json").is_file()
    assert len(found) == 3
    assert all(p.dtype == np.int64 and p[0] == BOS and p[-1] == EOS for p in found)


def test_evaluate_serving_scores_the_int8_form_and_keeps_it_apart_in_the_card(tmp_path, capsys):
    from conftest import tiny_checkpoint

    from musicgen import cli
    from musicgen.checkpoint import read_card

    cache, checkpoint = tiny_cache(tmp_path / "cache"), tiny_checkpoint(tmp_path / "ckpt")
    for extra in ([], ["--serving"]):
        assert cli.main(["evaluate", str(checkpoint), "--data", str(cache), "--bootstrap", "0",
                         "--write-card", "--json", *extra]) == 0
        capsys.readouterr()
    evaluation = read_card(checkpoint)["evaluation"]
    float32, int8 = evaluation["test"], evaluation["test_int8"]
    assert (float32["weights"], int8["weights"]) == ("float32", "int8 serving form")
    assert float32["events"] == int8["events"]
    assert abs(int8["model"]["nll"] - float32["model"]["nll"]) <= 0.01
    assert json.dumps(int8)  # JSON-ready, as the card is
