"""Score a checkpoint on a held-out split, next to simple baselines.

What is scored: every piece is stored as [BOS, e1 .. en, EOS]; the targets
are the performance events e1 .. en, each predicted from everything before it
(starting with BOS). EOS and the other special tokens are never targets, so
the numbers are nats per performance event, the unit of the Performance RNN
and Music Transformer reports.

    model, card = load_checkpoint("checkpoints/best")
    result = evaluate("checkpoints/best", "cache/maestro", split="test")
    print(format_report(result))

The baselines (unigram, bigram, "repeat the previous event") are fit on the
train split of the same data and score the same targets, so a model's number
can be read against what the counts alone already give. Confidence intervals
come from a bootstrap over pieces: pieces, not tokens, are the independent
draws (tokens inside a piece are strongly correlated).

The model's probabilities are normalised over the whole vocabulary (EOS
included) and the count baselines' over the performance events only; the
difference favours the baselines, by the little mass a model puts on EOS.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from musicgen.controls import future_controls
from musicgen.data import TokenCache, open_cache, open_split  # noqa: F401 - re-exported
from musicgen.errors import UserError
from musicgen.events import STEPS_PER_SECOND, VOCAB
from musicgen.serving import LSTMStepper, ServingModel

FIRST_EVENT = VOCAB["note_on"].offset  # tokens below this (PAD, BOS, EOS) are never targets
EVENT_TYPES = ("note_on", "note_off", "time_shift", "velocity")
RECURRENT_WINDOW = 2048  # tokens per model call when carrying a recurrent state
BIGRAM_K_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_BIGRAM_K = 0.1  # used when the data has no validation split to choose k on
UNIGRAM_K = 1.0
LN2 = math.log(2)


@dataclass
class PieceScore:
    """How one predictor did on the targets of one piece.

    Attributes:
        targets: int64 [n], the performance events scored (e1 .. en).
        log_probs: float64 [n], natural log-probability of each target; None
            for a predictor without probabilities (repeat-previous).
        correct: bool [n], whether the predictor's top choice was the target.
    """

    targets: np.ndarray
    log_probs: np.ndarray | None
    correct: np.ndarray


# --------------------------------------------------------------------------- data


def piece_seconds(piece: np.ndarray) -> float:
    """Seconds spanned by a piece's time shifts (for pieces that come without a duration)."""
    shift = VOCAB["time_shift"]
    piece = np.asarray(piece, dtype=np.int64)
    is_shift = (piece >= shift.offset) & (piece < shift.stop)
    return float(shift.value(piece[is_shift]).sum()) / STEPS_PER_SECOND


def _context_and_targets(piece: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous token, target) for every scored position of a piece."""
    piece = np.asarray(piece, dtype=np.int64)
    keep = piece[1:] >= FIRST_EVENT
    return piece[:-1][keep], piece[1:][keep]


# --------------------------------------------------------------------------- model


def windowing(model: torch.nn.Module, window: int | None = None) -> str:
    """One line saying how `score_model` feeds this model (for the report)."""
    context = model.context
    if context is None:
        kind = "LSTM" if getattr(getattr(model, "config", None), "kind", None) == "lstm" else (
            "recurrent")
        return (f"{kind}: whole piece, state carried across "
                f"{window or RECURRENT_WINDOW}-token chunks")
    window = window or context
    return (f"Transformer: sliding windows of {window} tokens, each scoring its last "
            f"{window // 2} with >= {window - window // 2} tokens of context")


def sliding_windows(length: int, window: int) -> list[tuple[int, int, int]]:
    """Chunks that score every position of a sequence once, with context.

    The first chunk scores its whole length (its positions have all the
    context there is); each later chunk scores `window // 2` new positions and
    re-feeds the tokens before them, so every scored position is predicted
    from at least `window - window // 2` tokens before it, or from all there are.

    Args:
        length: Positions in the sequence.
        window: Most tokens fed at once (at least 2).

    Returns:
        (begin, end, score_from) per chunk: feed positions begin..end-1 and
        keep the predictions at score_from..end-1.
    """
    if window < 2:
        raise UserError(f"the window must be at least 2 tokens, not {window}")
    stride = window // 2
    end = min(length, window)
    spans = [(0, end, 0)]
    while end < length:
        new_end = min(end + stride, length)
        spans.append((max(0, new_end - window), new_end, end))
        end = new_end
    return spans


@torch.inference_mode()
def score_model(model: torch.nn.Module, pieces: list[np.ndarray], window: int | None = None,
                batch_size: int = 8, device: str | torch.device = "cpu",
                conditioned: bool = True) -> list[PieceScore]:
    """Per-target log-probabilities and top-1 hits of a model on whole pieces.

    A model with a `context` (the Transformer) is scored with
    `sliding_windows`: a fresh state per chunk, since its attention reaches
    only `context` tokens back anyway. Any other model (the LSTM) reads each
    piece from the start in chunks of `window` tokens with its state carried
    across chunks, so every event is conditioned on the whole piece before it.

    Args:
        model: `logits, state = model(tokens[B, T], state)`; it is put in
            eval mode, float32, on `device`.
        pieces: Token arrays, each [BOS, events..., EOS].
        window: Tokens per call: the recurrent chunk (default 2048) or the
            Transformer's window (default, and at most, its context).
        batch_size: Sequences (recurrent) or windows (Transformer) per call.
        device: Where to run.
        conditioned: For a model with a control input, tell each token the key,
            register and density of the real music in the 10 s after it
            (`musicgen.controls.future_controls` of the whole piece); False
            scores it free.

    Returns:
        One PieceScore per piece, in the order of `pieces`.
    """
    if not isinstance(model, ServingModel):
        model.float().to(device).eval()
    context = model.context
    # Each input told what follows it in the whole piece (not only in its window).
    controls = ([future_controls(np.asarray(p, np.int64))[:-1] for p in pieces]
                if conditioned and takes_controls(model) else None)
    if context is None:
        rows = _score_recurrent(model, pieces, window or RECURRENT_WINDOW, batch_size, device,
                                controls)
    else:
        window = window or context
        if window > context:
            raise UserError(f"a window of {window} tokens is longer than the model's context "
                            f"({context}); give at most {context}")
        rows = _score_windows(model, pieces, window, batch_size, device, controls)
    scores = []
    for piece, (log_probs, top) in zip(pieces, rows, strict=True):
        piece = np.asarray(piece, dtype=np.int64)
        keep = piece[1:] >= FIRST_EVENT
        targets = piece[1:][keep]
        scores.append(PieceScore(targets, log_probs[keep], top[keep] == targets))
    return scores




def takes_controls(model) -> bool:
    """Whether a model (torch or serving) has a control input."""
    return bool(getattr(getattr(model, "config", None), "control_input", False))


def _predict(model, inputs: np.ndarray, targets: np.ndarray, device, state=None,
             controls: np.ndarray | None = None):
    """One model call: (log p(target) [B, T], argmax [B, T], new state).

    `controls` [B, T, CONTROL_FEATURES]: what each input is told comes after it.
    """
    if isinstance(model, ServingModel):
        logits, state = _serving_call(model, inputs, state, controls)
    else:
        given = {} if controls is None else {"controls": torch.as_tensor(controls, device=device)}
        logits, state = model(torch.as_tensor(inputs, device=device), state, **given)
    logits = logits.float()
    wanted = torch.as_tensor(targets, device=device)[..., None]
    log_probs = (logits.gather(-1, wanted)[..., 0] - logits.logsumexp(-1))
    return log_probs.double().cpu().numpy(), logits.argmax(-1).cpu().numpy(), state


def _serving_call(model: ServingModel, inputs: np.ndarray, state,
                  controls: np.ndarray | None = None):
    """`model(tokens, state)` for a serving model; its state is the LSTM's stepper."""
    if state is None:
        state = model.stepper()
        logits = state.sequence_logits(inputs, controls)
    else:  # the LSTM's next chunk, told its own controls
        logits = state.sequence_logits(inputs, controls, carry=True)
    return torch.from_numpy(logits), state


def _padded(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Rows padded on the right with PAD: a causal model's earlier outputs ignore it."""
    out = np.full((len(rows), width), VOCAB.pad, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _first_rows(state, rows: int):
    """Keep the first `rows` sequences of an nn.LSTM-style state ((h, c), batch on dim 1)."""
    if state is None:
        return None
    if isinstance(state, LSTMStepper):
        return state.rows(np.arange(rows))
    if isinstance(state, torch.Tensor):
        return state[:, :rows]
    return type(state)(_first_rows(part, rows) for part in state)


def _padded_controls(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Per-input controls [B, width, CONTROL_FEATURES], zero (free) where padded."""
    out = np.zeros((len(rows), width, rows[0].shape[-1]), np.float32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _score_recurrent(model, pieces, window: int, batch_size: int, device,
                     controls: list[np.ndarray] | None = None):
    """(log-probs, argmax) over every position of each piece, state carried across chunks."""
    results: list = [None] * len(pieces)
    # Longest first, so that the pieces of a batch are of similar length and
    # the ones that end early are the last rows, dropped from the state.
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        sequences = [np.asarray(pieces[i], dtype=np.int64) for i in group]
        lengths = [len(s) - 1 for s in sequences]  # positions that predict something
        inputs = _padded([s[:-1] for s in sequences], lengths[0])
        targets = _padded([s[1:] for s in sequences], lengths[0])
        told = None if controls is None else _padded_controls([controls[i] for i in group],
                                                              lengths[0])
        log_probs = np.zeros(inputs.shape)
        top = np.zeros(inputs.shape, dtype=np.int64)
        state = None
        for begin in range(0, lengths[0], window):
            active = sum(length > begin for length in lengths)
            state = _first_rows(state, active)
            end = begin + window
            log_probs[:active, begin:end], top[:active, begin:end], state = _predict(
                model, inputs[:active, begin:end], targets[:active, begin:end], device, state,
                None if told is None else told[:active, begin:end])
        for row, (i, length) in enumerate(zip(group, lengths, strict=True)):
            results[i] = (log_probs[row, :length], top[row, :length])
    return results


def _score_windows(model, pieces, window: int, batch_size: int, device,
                   controls: list[np.ndarray] | None = None):
    """(log-probs, argmax) over every position of each piece, by sliding windows."""
    sequences = [np.asarray(p, dtype=np.int64) for p in pieces]
    results = [(np.zeros(len(s) - 1), np.zeros(len(s) - 1, dtype=np.int64)) for s in sequences]
    chunks = [(i, *span) for i, s in enumerate(sequences) if len(s) > 1
              for span in sliding_windows(len(s) - 1, window)]
    chunks.sort(key=lambda chunk: chunk[2] - chunk[1])  # similar lengths share a batch
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size]
        width = max(end - begin for _, begin, end, _ in batch)
        inputs = _padded([sequences[i][begin:end] for i, begin, end, _ in batch], width)
        targets = _padded([sequences[i][begin + 1:end + 1] for i, begin, end, _ in batch], width)
        told = None if controls is None else _padded_controls(
            [controls[i][begin:end] for i, begin, end, _ in batch], width)
        log_probs, top, _ = _predict(model, inputs, targets, device, controls=told)
        for row, (i, begin, end, score_from) in enumerate(batch):
            kept = slice(score_from - begin, end - begin)
            results[i][0][score_from:end] = log_probs[row, kept]
            results[i][1][score_from:end] = top[row, kept]
    return results


# --------------------------------------------------------------------------- baselines


def unigram_table(train: list[np.ndarray], k: float = UNIGRAM_K) -> np.ndarray:
    """log p(event) with add-k smoothing over the performance events.

    Returns:
        float64 [V]; -inf for the special tokens, which are never targets.
    """
    targets = np.concatenate([_context_and_targets(p)[1] for p in train])
    counts = np.bincount(targets, minlength=VOCAB.size).astype(np.float64)
    table = np.full(VOCAB.size, -np.inf)
    events = counts[FIRST_EVENT:]
    table[FIRST_EVENT:] = np.log((events + k) / (events.sum() + k * len(events)))
    return table


def bigram_counts(train: list[np.ndarray]) -> np.ndarray:
    """Counts [V, V] of (previous token, target event) pairs; BOS counts as a context."""
    pairs = [_context_and_targets(p) for p in train]
    keys = np.concatenate([previous * VOCAB.size + target for previous, target in pairs])
    return np.bincount(keys, minlength=VOCAB.size ** 2).reshape(VOCAB.size, VOCAB.size)


def bigram_table(counts: np.ndarray, k: float) -> np.ndarray:
    """log p(event | previous token) with add-k smoothing over the performance events.

    A context never seen in training gets the uniform distribution.

    Returns:
        float64 [V, V] indexed [previous, target]; -inf for special targets.
    """
    events = counts[:, FIRST_EVENT:].astype(np.float64)
    table = np.full(counts.shape, -np.inf)
    table[:, FIRST_EVENT:] = np.log(
        (events + k) / (events.sum(axis=1, keepdims=True) + k * events.shape[1]))
    return table


def score_table(table: np.ndarray, pieces: list[np.ndarray]) -> list[PieceScore]:
    """Score pieces with a unigram [V] or bigram [V, V] log-probability table."""
    best = table.argmax(axis=-1)  # the top choice (per context, for a bigram)
    scores = []
    for piece in pieces:
        previous, targets = _context_and_targets(piece)
        if table.ndim == 1:
            log_probs, top = table[targets], np.full(len(targets), best)
        else:
            log_probs, top = table[previous, targets], best[previous]
        scores.append(PieceScore(targets, log_probs, top == targets))
    return scores


def score_repeat_previous(pieces: list[np.ndarray]) -> list[PieceScore]:
    """Predict that each event repeats the token before it (accuracy only)."""
    scores = []
    for piece in pieces:
        previous, targets = _context_and_targets(piece)
        scores.append(PieceScore(targets, None, previous == targets))
    return scores


def choose_bigram_k(counts: np.ndarray, validation: list[np.ndarray],
                    grid: tuple[float, ...] = BIGRAM_K_GRID) -> tuple[float, dict[str, float]]:
    """The smoothing k of `grid` with the lowest validation NLL.

    Returns:
        (best k, {str(k): validation nats per event}).
    """
    nll = {}
    for k in grid:
        scores = score_table(bigram_table(counts, k), validation)
        nll[str(k)] = -sum(s.log_probs.sum() for s in scores) / sum(len(s.targets) for s in scores)
    best = min(grid, key=lambda k: nll[str(k)])
    return best, nll


# --------------------------------------------------------------------------- metrics


def _piece_totals(scores: list[PieceScore], seconds: list[float]) -> dict[str, np.ndarray]:
    """Per-piece sums that every metric is a ratio of (so the bootstrap only reweights them)."""
    types = VOCAB.event_types()
    names = [r.name for r in VOCAB.ranges]
    totals = {
        "events": np.array([len(s.targets) for s in scores], dtype=np.float64),
        "correct": np.array([s.correct.sum() for s in scores], dtype=np.float64),
        "seconds": np.asarray(seconds, dtype=np.float64),
    }
    if all(s.log_probs is not None for s in scores):
        totals["nats"] = np.array([-s.log_probs.sum() for s in scores])
    for name in EVENT_TYPES:
        of_type = [types[s.targets] == names.index(name) for s in scores]
        totals[f"{name}_events"] = np.array([m.sum() for m in of_type], dtype=np.float64)
        totals[f"{name}_correct"] = np.array(
            [s.correct[m].sum() for s, m in zip(scores, of_type, strict=True)], dtype=np.float64)
    return totals


def _ratios(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metrics from (possibly resampled) sums; works on scalars and on [R] vectors alike."""
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics = {"accuracy": sums["correct"] / sums["events"]}
        if "nats" in sums:
            bits = sums["nats"] / LN2
            metrics["nll"] = sums["nats"] / sums["events"]
            metrics["bits_per_note"] = bits / sums["note_on_events"]
            metrics["bits_per_second"] = bits / sums["seconds"]
        for name in EVENT_TYPES:
            metrics[f"{name}_accuracy"] = sums[f"{name}_correct"] / sums[f"{name}_events"]
    return metrics


def _number(value) -> float | None:
    """A JSON-safe float: NaN and infinities (e.g. no notes to divide by) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(totals: dict[str, np.ndarray], resamples: np.ndarray | None = None) -> dict:
    """Metrics of one predictor, with 95% bootstrap intervals over pieces.

    Args:
        totals: Per-piece sums from `_piece_totals`.
        resamples: [R, pieces] counts of how often each piece is drawn in each
            bootstrap resample (shared by every predictor, so their intervals
            are paired); None for no intervals.

    Returns:
        JSON-ready metrics (nll, perplexity, bits_per_note, bits_per_second,
        accuracy, accuracy_by_type, events, pieces, ci).
    """
    point = _ratios({name: values.sum() for name, values in totals.items()})
    nll = point.get("nll")
    result = {
        "nll": None if nll is None else _number(nll),
        "perplexity": None if nll is None else _number(np.exp(nll)),
        "bits_per_note": None if nll is None else _number(point["bits_per_note"]),
        "bits_per_second": None if nll is None else _number(point["bits_per_second"]),
        "accuracy": _number(point["accuracy"]),
        "accuracy_by_type": {name: _number(point[f"{name}_accuracy"]) for name in EVENT_TYPES},
        "events": int(totals["events"].sum()),
        "pieces": len(totals["events"]),
    }
    if resamples is not None:
        drawn = _ratios({name: resamples @ values for name, values in totals.items()})
        result["ci"] = {name: _interval(drawn[name])
                        for name in ("nll", "accuracy", "bits_per_note", "bits_per_second")
                        if name in drawn}
    return result


def _interval(values: np.ndarray) -> list[float | None]:
    """The central 95% of bootstrap values (resamples with nothing to divide by are left out)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return [None, None]
    return [_number(v) for v in np.percentile(values, [2.5, 97.5])]


# --------------------------------------------------------------------------- entry points


def evaluate_model(model: torch.nn.Module, pieces: list[np.ndarray],
                   seconds: list[float] | None = None,
                   train: list[np.ndarray] | None = None,
                   validation: list[np.ndarray] | None = None,
                   window: int | None = None, bootstrap: int = 1000, seed: int = 0,
                   batch_size: int = 8, device: str | torch.device = "cpu",
                   conditioned: bool = True) -> dict:
    """Score an in-memory model and the count baselines on the same pieces.

    Args:
        model: Any model with the `logits, state = model(tokens, state)` interface.
        pieces: The pieces to score, each [BOS, events..., EOS].
        seconds: Duration of each piece; None measures it from the time shifts.
        train: Pieces to fit the baselines on; None skips the baselines.
        validation: Pieces to choose the bigram's k on; None or empty uses 0.1.
        window: See `score_model`.
        bootstrap: Resamples for the confidence intervals (0 for none).
        seed: Seed of the resampling.
        batch_size: See `score_model`.
        device: Where to run the model.
        conditioned: See `score_model`.

    Returns:
        JSON-ready dict: pieces, events, music_seconds, windowing, controls
        ("given", "free" or "none": the model has no control input), model
        (metrics, ci, ratio_to_bigram) and baselines.
    """
    if seconds is None:
        seconds = [piece_seconds(p) for p in pieces]
    resamples = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        # Drawing pieces with replacement == multinomial counts per piece.
        resamples = rng.multinomial(len(pieces), np.full(len(pieces), 1 / len(pieces)),
                                    size=bootstrap).astype(np.float64)
    model_totals = _piece_totals(score_model(model, pieces, window, batch_size, device,
                                             conditioned), seconds)
    result = {
        "pieces": len(pieces),
        "events": int(model_totals["events"].sum()),
        "music_seconds": float(sum(seconds)),
        "windowing": windowing(model, window),
        "controls": ("none" if not takes_controls(model)
                     else "given" if conditioned else "free"),
        "model": summarise(model_totals, resamples),
        "baselines": {},
    }
    if train is None:
        return result

    counts = bigram_counts(train)
    if validation:
        k, validation_nll = choose_bigram_k(counts, validation)
    else:
        k, validation_nll = DEFAULT_BIGRAM_K, {}
    bigram_totals = _piece_totals(score_table(bigram_table(counts, k), pieces), seconds)
    result["baselines"] = {
        "unigram": {**summarise(_piece_totals(score_table(unigram_table(train), pieces), seconds),
                                resamples), "k": UNIGRAM_K},
        "bigram": {**summarise(bigram_totals, resamples), "k": k,
                   "validation_nll_by_k": validation_nll},
        "repeat_previous": summarise(_piece_totals(score_repeat_previous(pieces), seconds),
                                     resamples),
    }
    model_nll, bigram_nll = result["model"]["nll"], result["baselines"]["bigram"]["nll"]
    result["model"]["ratio_to_bigram"] = _number(model_nll / bigram_nll)
    if resamples is not None:
        # Paired: both NLLs of a resample come from the same drawn pieces.
        ratio = ((resamples @ model_totals["nats"]) / (resamples @ bigram_totals["nats"]))
        result["model"]["ci"]["ratio_to_bigram"] = _interval(ratio)
    return result


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "test",
             window: int | None = None, bootstrap: int = 1000, seed: int = 0,
             device: str | torch.device = "cpu", batch_size: int = 8,
             serving: bool = False, conditioned: bool = True) -> dict:
    """Score a checkpoint on one split of a cache or MIDI folder, with baselines.

    Args:
        checkpoint: Checkpoint folder or its model.safetensors.
        data: Token cache or MIDI folder (see `open_cache`).
        split: The split to score.
        window: See `score_model`.
        bootstrap: Resamples for the 95% confidence intervals (0 for none).
        seed: Seed of the resampling.
        device: Where to run the model.
        batch_size: See `score_model`.
        serving: Score the serving form that sampling runs (int8 weights,
            `musicgen.serving`) instead of the float weights in torch.
        conditioned: See `score_model`.

    Returns:
        JSON-ready dict: checkpoint, name, architecture, weights_sha256, split,
        card_entry (where the card keeps it: the split, "_int8" added for the
        serving form, "_given" for a model with controls scored with those of the
        real music: the plain entry is the free score, comparable with every model), data,
        pieces, events, music_seconds, windowing, controls, model, baselines,
        seconds (wall time of the evaluation).
    """
    from musicgen.checkpoint import load_checkpoint
    from musicgen.model import describe

    began = time.perf_counter()
    if serving:
        from musicgen.serving import load_serving

        model, card = load_serving(checkpoint)
    else:
        model, card = load_checkpoint(checkpoint, device=device)
    cache = open_cache(data)  # once: a MIDI folder is encoded (or checked) only here
    pieces, seconds = open_split(cache, split)
    train, _ = open_split(cache, "train")
    try:
        validation, _ = open_split(cache, "validation")
    except ValueError:  # a corpus without a validation split: k defaults to 0.1
        validation = []
    scored = evaluate_model(model, pieces, seconds, train, validation, window=window,
                            bootstrap=bootstrap, seed=seed, batch_size=batch_size, device=device,
                            conditioned=conditioned)
    return {
        "checkpoint": str(checkpoint),
        "name": card.get("name"),
        "architecture": describe(model.config),
        "weights_sha256": card.get("weights_sha256"),
        "weights": "int8 serving form" if serving else "float32",
        "split": split,
        "card_entry": split + ("_int8" if serving else "") + (
            "_given" if scored["controls"] == "given" else ""),
        "data": str(data),
        **scored,
        "seconds": round(time.perf_counter() - began, 2),
    }


def format_report(result: dict) -> str:
    """A plain-text table of an `evaluate` result: the model and each baseline as a row."""
    lines = []
    if "checkpoint" in result:
        lines.append(f"checkpoint  {result['checkpoint']}  ({result.get('name') or 'unnamed'}: "
                     f"{result.get('architecture')})")
        lines.append(f"data        {result['data']}, split {result['split']}")
    lines.append(f"scored      {result['pieces']} pieces, {result['events']:,} events, "
                 f"{result['music_seconds'] / 3600:.2f} h of music")
    lines.append(f"windowing   {result['windowing']}")
    if result.get("controls", "none") != "none":
        given = result["controls"] == "given"
        lines.append(f"controls    {result['controls']}: key, register and density "
                     + ("of the real music each window predicts" if given else "all free"))
    lines.append("")

    header = (f"{'':<16} {'nats/event [95% CI]':<26} {'ppl':>7} {'bits/note':>9} {'bits/s':>7} "
              f"{'acc':>6}  " + " ".join(f"{name:>10}" for name in EVENT_TYPES))
    lines += [header, "-" * len(header)]
    rows = [("model", result["model"])]
    names = {"unigram": "unigram (add-1)", "bigram": "bigram (add-{k})",
             "repeat_previous": "repeat previous"}
    for key, row in result.get("baselines", {}).items():
        rows.append((names.get(key, key).format(k=row.get("k")), row))
    for label, row in rows:
        nll = _fixed(row["nll"], 3)
        ci = row.get("ci", {}).get("nll")
        if ci and row["nll"] is not None:
            nll += f" [{_fixed(ci[0], 3)}, {_fixed(ci[1], 3)}]"
        by_type = " ".join(f"{_fixed(row['accuracy_by_type'][name], 3):>10}"
                           for name in EVENT_TYPES)
        lines.append(f"{label:<16} {nll:<26} {_fixed(row['perplexity'], 2):>7} "
                     f"{_fixed(row['bits_per_note'], 2):>9} {_fixed(row['bits_per_second'], 1):>7} "
                     f"{_fixed(row['accuracy'], 3):>6}  {by_type}")

    ratio = result["model"].get("ratio_to_bigram")
    if ratio is not None:
        ci = result["model"].get("ci", {}).get("ratio_to_bigram")
        interval = f" [{_fixed(ci[0], 3)}, {_fixed(ci[1], 3)}]" if ci else ""
        lines += ["", f"model NLL / bigram NLL: {ratio:.3f}{interval}"]
    if "seconds" in result:
        lines.append(f"evaluated in {result['seconds']:.1f} s")
    return "\n".join(lines)


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
