"""Sample continuations from a model, one model call per token.

The prompt is run through the model once; after that every new token is a
single step that carries the LSTM state or the Transformer's KV cache
(`musicgen.serving`), instead of re-feeding a window of the past for each token
(the course version's approach, kept in `bench/sampling.py` for comparison).

Reproducibility: sequence i of a batch draws from its own generator seeded
with `seed + i` (`TorchUniforms`), so a batch of n equals n single runs with
seeds seed, seed+1, ... No torch is needed unless the model is a torch module.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from musicgen.controls import CONTROL_FEATURES
from musicgen.events import MAX_NOTE_SECONDS, STEPS_PER_SECOND, VOCAB, Vocabulary
from musicgen.serving import merged

# Without a token budget, stop a run that never advances time (e.g. only
# note events) after this many tokens per second of music asked for.
TOKENS_PER_SECOND_CAP = 200
PITCHES = 128
MAX_NOTE_STEPS = round(MAX_NOTE_SECONDS * STEPS_PER_SECOND)  # decode_events' cut
# With release_held_keys, the NOTE_OFF of a key held RELEASE_AFTER_STEPS or more
# is raised to RELEASE_FLOOR a token where the sampling distribution gives it
# less. Pianists release a key held 3-4 s at 0.037 a token and one held 4 s or
# more at 0.024 (seen); the LSTM, in its own paired music, gives such keys 0.017
# and 0.0085 (predicted; bench/release_hazard.py).
# Chosen on 150 prompts (BENCHMARKS.md, "Releasing held keys"): from 2 s at 0.03,
# notes held 4 s or more went below the pianists' share (d -0.36) and the median
# note got too short (-0.34); from 3 s at 0.02 the share matched (-0.04).
# Recipes do not store these numbers: changing them needs a new RECIPE_VERSION.
RELEASE_AFTER_STEPS = round(3.0 * STEPS_PER_SECOND)
RELEASE_FLOOR = 0.02
# However many keys are old, their floors add up to at most this share of a step.
MAX_RELEASE_SHARE = 0.5


@dataclass
class Generation:
    """What `generate` returns.

    Attributes:
        tokens: One int64 array per sequence: the continuation only.
        entropy: Per sequence, the entropy (nats) of the model's own
            distribution (temperature 1, unfiltered) before each token.
        chosen_probability: Per sequence, that distribution's probability of
            the token that was chosen.
        stop_reasons: Per sequence: "seconds", "eos" or "max_tokens".
    """

    tokens: list[np.ndarray]
    entropy: list[np.ndarray]
    chosen_probability: list[np.ndarray]
    stop_reasons: list[str]


def filter_logits(logits: np.ndarray, top_k: int | np.ndarray = 0,
                  top_p: float | np.ndarray = 1.0,
                  min_p: float | np.ndarray = 0.0) -> np.ndarray:
    """Keep the tokens at least min_p as likely as the likeliest, then top-k, then top-p.

    Args:
        logits: [B, V] scores (already divided by the temperature).
        top_k: Keep this many highest-scoring tokens; 0 keeps all. One value,
            or one per row.
        top_p: Nucleus: keep the most likely tokens until their probability
            sum reaches top_p (the token that crosses it is kept); 1.0 keeps all.
            One value, or one per row.
        min_p: Drop tokens less likely than min_p times the likeliest one
            (Nguyen et al. 2024); 0 keeps all. One value, or one per row.

    Returns:
        A float64 copy with every dropped token at -inf.
    """
    logits = np.array(logits, dtype=np.float64)
    rows, size = logits.shape
    top_k, top_p = _per_row(top_k, np.int64, rows), _per_row(top_p, np.float64, rows)
    min_p = _per_row(min_p, np.float64, rows)
    floored = min_p > 0
    if floored.any():
        part = logits[floored]
        part[part < part.max(-1, keepdims=True) + np.log(min_p[floored, None])] = -np.inf
        logits[floored] = part
    limited = (top_k > 0) & (top_k < size)
    if limited.any():
        part = logits[limited]
        ordered = -np.sort(-part, axis=-1)
        threshold = ordered[np.arange(len(part)), top_k[limited] - 1][:, None]
        part[part < threshold] = -np.inf
        logits[limited] = part
    nucleus = top_p < 1.0
    if nucleus.any():
        part = logits[nucleus]
        ordered = -np.sort(-part, axis=-1)
        probabilities = _softmax(ordered)
        # Keep a token while the tokens before it sum to less than top_p; then
        # every logit at or above the last kept one stays (ties are kept together).
        before = np.cumsum(probabilities, -1) - probabilities
        kept = (before < top_p[nucleus, None]).sum(-1, keepdims=True)
        threshold = np.take_along_axis(ordered, kept - 1, axis=-1)
        part[part < threshold] = -np.inf
        logits[nucleus] = part
    return logits


def temper_keeping_timing(logits: np.ndarray, temperature: float | np.ndarray,
                          vocab: Vocabulary = VOCAB) -> np.ndarray:
    """Temper which pitch and loudness come next, but not when: the model's own timing.

    Dividing every logit by a temperature below 1 sharpens the time shifts
    too, towards the likeliest, short ones, and moves probability between
    event types: the notes end sooner (BENCHMARKS.md, "Keeping the model's
    timing", measured the shifts and the notes). Here each event type keeps
    its temperature-1 share (how often a NOTE_ON, a NOTE_OFF, a time shift
    or a velocity comes next), time shifts keep their temperature-1
    lengths, and only the values within the other types are tempered. A
    top-k, top-p or min-p cut applied afterwards ranks all events together,
    so with one of those the timing is kept only approximately.

    Args:
        logits: [B, V] scores; -inf marks a banned token.
        temperature: Above 0; one value, or one per row.
        vocab: The event table whose ranges are the types.

    Returns:
        [B, V] float64 log-probabilities (-inf where banned, and for a type
        wholly banned).
    """
    logits = np.asarray(logits, dtype=np.float64)
    temperature = _per_row(temperature, np.float64, len(logits))[:, None]
    starts, sizes, tempered_types = _type_layout(vocab)
    log_probs = logits - _log_sum_exp(logits)
    # Time shifts and one-token types keep temperature 1; the formula below
    # then gives their log-probabilities back unchanged.
    scaled = np.where(np.repeat(tempered_types, sizes), log_probs / temperature, log_probs)
    # Per type: its share at temperature 1, and the normaliser of its tempered values.
    # Segment sums (reduceat) rather than a loop over the types: the loop's
    # dozens of small numpy calls cost 0.16 ms a token, half a step's time.
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.log(np.add.reduceat(np.exp(log_probs), starts, axis=1))
        norm = _log_sum_exp_per_type(scaled, starts, sizes)
        tempered = scaled + np.repeat(share - norm, sizes, axis=1)
    return np.where(np.isfinite(tempered), tempered, -np.inf)


@functools.cache  # once per event table, not once per sampled token
def _type_layout(vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each event type's first token and size, and whether `temper_keeping_timing` tempers it."""
    starts = np.array([r.offset for r in vocab.ranges])
    sizes = np.array([r.size for r in vocab.ranges])
    tempered = np.array([r.size > 1 and r.name != "time_shift" for r in vocab.ranges])
    return starts, sizes, tempered


def _log_sum_exp_per_type(logits: np.ndarray, starts: np.ndarray,
                          sizes: np.ndarray) -> np.ndarray:
    """log(sum(exp)) of each event type's tokens, [B, types]; -inf for a type with
    nothing finite. Each type is shifted by its own peak: a type whose tokens all
    lie hundreds of nats down (a low temperature) would otherwise sum to 0."""
    peak = np.maximum.reduceat(logits, starts, axis=1)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return peak + np.log(np.add.reduceat(np.exp(logits - np.repeat(peak, sizes, axis=1)),
                                             starts, axis=1))


def _log_sum_exp(logits: np.ndarray) -> np.ndarray:
    """log(sum(exp)) over the last axis, kept as [B, 1]."""
    peak = logits.max(-1, keepdims=True)
    return np.log(np.exp(logits - peak).sum(-1, keepdims=True)) + peak


def _softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def _check(temperature: float, top_k: int, top_p: float, min_p: float, n: int) -> None:
    """Where the sampling math is defined; the product's narrower limits are `Settings`'."""
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1 or not 0 <= min_p < 1 or n < 1:
        raise ValueError(f"no such sampler: temperature {temperature}, top_k {top_k}, "
                         f"top_p {top_p}, min_p {min_p}, n {n}")


class TorchUniforms:
    """Uniform draws in [0, 1), bit for bit those of a seeded `torch.Generator`.

    Recipes written before sampling left torch name a seed, and the same seed
    must still give the same notes. torch's CPU generator is MT19937 seeded as
    numpy's `RandomState` seeds it, and `torch.rand(..., dtype=float64)` keeps
    the low 53 bits of two consecutive 32-bit outputs (the first as the high
    word); tests/test_sample.py checks this against torch itself.
    """

    # 32-bit outputs drawn at a time: a draw of 2 cost about 40 us, as much as
    # the rest of choosing a token, and a block is the same stream (each value
    # of randint's [0, 2**32) is one whole output; the test above compares).
    BLOCK = 512

    def __init__(self, seed: int):
        self._state = np.random.RandomState(seed)
        self._uniforms: list[float] = []

    def next(self) -> float:
        """The next uniform."""
        if not self._uniforms:
            words = self._state.randint(0, 2**32, size=self.BLOCK, dtype=np.uint64)
            bits = ((words[0::2] << np.uint64(32)) | words[1::2]) & np.uint64(2**53 - 1)
            self._uniforms = (bits.astype(np.float64) * 2.0**-53).tolist()[::-1]
        return self._uniforms.pop()


@dataclass
class SamplingRequest:
    """One call's worth of sampling: a prompt, its sampling and musical controls, n rows.

    The fields are `generate`'s arguments of the same names, and `on_tokens`,
    for a caller that uses the music while it is sampled (the app renders
    it): called every 32 tokens with copies of the tokens so far of each row
    still sampling, by the row's index in the request. Through a
    `musicgen.batcher.Batcher` it gets only the latest of these, every
    `TOKENS_POLL_S`, in the caller's thread.
    """

    prompt_tokens: np.ndarray
    seconds: float | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int = 0
    n: int = 1
    max_silence: float = 0.0
    paired_notes: bool = False
    keep_timing: bool = False
    on_progress: Callable[[float], None] | None = None
    paired_keeps_types: bool = True
    release_held_keys: bool = False
    on_tokens: Callable[[dict[int, np.ndarray]], None] | None = None
    controls: np.ndarray | None = None
    stop: threading.Event | None = None  # once set, the rows end at the next step ("stopped")


class Stopped(Exception):  # noqa: N818 - no error: the caller ended the request
    """A request was stopped before it was done (its `stop` was set: its page went away)."""


def generate(model, prompt_tokens, *, seconds: float | None = None,
             max_tokens: int | None = None, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, min_p: float = 0.0, seed: int = 0, n: int = 1,
             max_silence: float = 0.0, paired_notes: bool = False,
             keep_timing: bool = False, on_progress: Callable[[float], None] | None = None,
             paired_keeps_types: bool = True, release_held_keys: bool = False,
             controls: np.ndarray | None = None, vocab: Vocabulary = VOCAB) -> Generation:
    """Continue a prompt by sampling from the model.

    Args:
        model: A `musicgen.serving.ServingModel` (no torch), or a torch
            `LSTMModel` or `TransformerModel` (any module with the forward/step
            interface of `musicgen.model`).
        prompt_tokens: Token ids to continue; BOS is put in front if missing
            (an empty prompt starts from silence).
        seconds: Stop a sequence once its continuation spans this much time.
        max_tokens: Stop after this many new tokens (the default is a safety
            cap of 200 tokens per second asked for).
        temperature: Divides the logits; 0 means argmax (greedy) decoding.
        top_k: Sample among the k most likely tokens; 0 means no limit.
        top_p: Nucleus sampling threshold; 1.0 means no limit.
        min_p: Drop tokens less likely than this fraction of the likeliest
            (after the temperature); 0 means no limit.
        seed: Sequence i uses a generator seeded with seed + i.
        n: Number of sequences, sampled as one batch.
        max_silence: Once this many seconds have passed without a new note
            (counted from the prompt's last one), time shifts are not sampled
            until a note starts, so a model cannot drift into minutes of
            nothing; 0 means no limit. The diagnostics stay those of the
            model's own, unmasked distribution.
        paired_notes: Sample only note events that pair up as in the
            training data: a NOTE_ON only for a silent pitch, a NOTE_OFF only
            for a sounding one (as `decode_events` plays them), so nothing is
            restarted or ignored. The diagnostics stay unmasked. Off here,
            as every control is, so that a bare call samples the model as
            it is; `Settings` (the app's and the CLI's defaults) turns it on.
        keep_timing: Let the temperature choose which pitch and velocity
            come next but not when: time shifts and the mix of event types
            stay the model's own (`temper_keeping_timing`).
        on_progress: Called with a fraction in [0, 1] now and then.
        paired_keeps_types: With paired_notes, the probability of a banned
            NOTE_ON or NOTE_OFF stays with its event type: the model's
            chance of striking or releasing a key now is kept, and only the
            key becomes a legal one (`move_within_types`). False spreads it
            over every event, as recipes of version 5 and older sampled.
        release_held_keys: The NOTE_OFF of a key that has sounded
            `RELEASE_AFTER_STEPS` or more is raised to `RELEASE_FLOOR` a token
            where the sampling distribution gives it less (sampled rows;
            `raised_to_floor`):
            trained on real pasts only, a model forgets keys it left down in
            its own music.
        controls: The key, register and density the music should keep
            (`musicgen.controls.target_controls`), for a model with a control
            input; None plays free. A model without one ignores them.
        vocab: The event table.

    Returns:
        A `Generation` with the continuations and per-step diagnostics.
    """
    request = SamplingRequest(prompt_tokens, seconds, max_tokens, temperature, top_k, top_p,
                              min_p, seed, n, max_silence, paired_notes, keep_timing,
                              on_progress, paired_keeps_types, release_held_keys,
                              controls=controls)
    return generate_batch(model, [request], vocab)[0]


def generate_batch(model, requests: list[SamplingRequest], vocab: Vocabulary = VOCAB,
                   ) -> list[Generation]:
    """Sample several requests as one batch: every step reads the weights once for all rows.

    A step is bound by reading the weights, so rows are nearly free (measured
    in BENCHMARKS.md). Each request keeps its own prompt, controls, length and
    seeds, and gets exactly what `generate` gives it alone: the serving graph
    computes each row on its own (`musicgen.serving`), and the choice of a
    token is made row by row.

    Args:
        model: As for `generate`; several requests need a `ServingModel`.
        requests: What to sample.
        vocab: The event table.

    Returns:
        One `Generation` per request, in order.
    """
    run = SamplingRun(model, vocab)
    try:
        keys = run.add(requests)
        results = {}
        while run.rows:
            results.update(run.step())
    finally:
        run.close()
    return [results[key] for key in keys]


class SamplingRun:
    """Rows sampled together, step by step; requests join and leave between steps.

    `generate_batch` adds its requests and steps until all are done; the
    `musicgen.batcher.Batcher` adds requests as they arrive, and hands each
    one back as soon as its rows are done, so a short request is not kept
    waiting for a long one. Rows are independent, so when a row joins or
    leaves changes none of its numbers.

    Args:
        model: A `ServingModel` (or, for one request at a time, a torch model).
        vocab: The event table.
    """

    # One value per row, as arrays: the request (key), its limits and controls,
    # the row's place in its request, and where it has got to.
    ROW_FIELDS = {"owner": np.int64, "budget": np.int64, "target_steps": np.int64,
                  "temperature": np.float64, "top_k": np.int64, "top_p": np.float64,
                  "min_p": np.float64, "silence_cap": np.int64, "silent": np.int64,
                  "elapsed": np.int64, "steps": np.int64, "index": np.int64, "retired": bool,
                  "paired_notes": bool, "keep_timing": bool, "paired_keeps_types": bool,
                  "release_held_keys": bool}

    def __init__(self, model, vocab: Vocabulary = VOCAB):
        self.model, self.vocab = model, vocab
        self.stepper = None
        self.logits: np.ndarray | None = None  # [rows, V]: what the next step chooses from
        self._requests: dict[int, SamplingRequest] = {}
        self._done: dict[int, list] = {}  # request -> one (tokens, entropy, p, reason) per row
        self._next_key = 0
        self._new_row_arrays()

    @property
    def rows(self) -> int:
        """Rows still sampling."""
        return int((~self.retired).sum())

    def add(self, requests: list[SamplingRequest]) -> list[int]:
        """Start requests' prompts and let their rows join the next step.

        Returns:
            A key per request, as `step` names finished requests.

        Raises:
            ValueError: A request the sampler cannot do (nothing is added then).
        """
        for request in requests:
            check_request(request)
        keys = list(range(self._next_key, self._next_key + len(requests)))
        self._next_key += len(requests)
        prompts = [_prompt(r.prompt_tokens, self.model.context, self.vocab) for r in requests]
        owner = np.repeat(keys, [r.n for r in requests])
        stepper = _stepper(self.model)
        if len(requests) > 1 and hasattr(stepper, "start_rows"):
            # The LSTM: every new row's prompt in one batch (`LSTMStepper.start_rows`).
            logits = stepper.start_rows([prompts[k - keys[0]] for k in owner],
                                        _row_controls([requests[k - keys[0]] for k in owner]))
        else:
            parts = [stepper]
            logits = [stepper.start(np.repeat(prompts[0][None], requests[0].n, 0),
                                    requests[0].controls)]
            for request, prompt in zip(requests[1:], prompts[1:], strict=True):
                parts.append(_stepper(self.model))
                logits.append(parts[-1].start(np.repeat(prompt[None], request.n, 0),
                                              request.controls))
            logits = np.concatenate(logits)
            stepper = parts[0] if len(parts) == 1 else self._merged(parts)
        if self.stepper is None:
            self.stepper, self.logits = stepper, logits
        else:
            self.stepper = self._merged([self.stepper, stepper])
            self.logits = np.concatenate((self.logits, logits))
        no_target = np.iinfo(np.int64).max
        joining = {name: [] for name in self.ROW_FIELDS}
        for key, request, prompt in zip(keys, requests, prompts, strict=True):
            self._requests[key] = request
            self._done[key] = [None] * request.n
            budget = (request.max_tokens if request.max_tokens is not None
                      else max(64, int(request.seconds * TOKENS_PER_SECOND_CAP)))
            row = {"owner": key, "budget": budget,
                   "target_steps": (no_target if request.seconds is None
                                    else round(request.seconds * STEPS_PER_SECOND)),
                   "temperature": request.temperature, "top_k": request.top_k,
                   "top_p": request.top_p, "min_p": request.min_p,
                   "silence_cap": (round(request.max_silence * STEPS_PER_SECOND)
                                   if request.max_silence > 0 else no_target),
                   "silent": _steps_since_last_note_on(prompt, self.vocab), "elapsed": 0,
                   "steps": 0, "retired": False, "paired_notes": request.paired_notes,
                   "keep_timing": request.keep_timing,
                   "paired_keeps_types": request.paired_keeps_types,
                   "release_held_keys": request.release_held_keys}
            for index in range(request.n):
                for name, value in {**row, "index": index}.items():
                    joining[name].append(value)
                self.generators.append(TorchUniforms(request.seed + index))
                self.buffers.append(np.zeros((3, budget), np.float64))
        for name, dtype in self.ROW_FIELDS.items():
            setattr(self, name, np.concatenate((getattr(self, name),
                                                np.array(joining[name], dtype))))
        # A continuation is decoded on its own (compose), so nothing sounds at its start.
        self.sounding_since = np.concatenate((
            self.sounding_since, np.full((len(joining["owner"]), PITCHES), -1, np.int64)))
        return keys

    def step(self) -> dict[int, Generation]:
        """Choose one token for every row; return the requests that are done now, by key."""
        vocab = self.vocab
        shift, note_on, note_off = vocab["time_shift"], vocab["note_on"], vocab["note_off"]
        banned = None
        if (self.silent >= self.silence_cap).any() or self.paired_notes.any():
            banned = np.zeros((len(self.owner), vocab.size), dtype=bool)
            banned[self.silent >= self.silence_cap, shift.offset:shift.stop] = True
            paired, sounding = self.paired_notes, self.sounding_since >= 0
            banned[paired, note_on.offset:note_on.stop] = sounding[paired]
            # A note lasts at least one step, as every note of the data does.
            just_struck = self.sounding_since == self.elapsed[:, None]
            banned[paired, note_off.offset:note_off.stop] = (~sounding | just_struck)[paired]
        chosen, step_entropy, step_probability = _choose(
            self.logits, self.temperature, self.top_k, self.top_p, self.min_p, self.generators,
            banned, self.keep_timing, self.paired_notes & self.paired_keeps_types, vocab,
            release_floor(self.sounding_since, self.elapsed, self.release_held_keys, vocab))
        live = ~self.retired
        for row in np.nonzero(live)[0]:
            self.buffers[row][:, self.steps[row]] = (chosen[row], step_entropy[row],
                                                     step_probability[row])
        self.steps += live
        is_shift = (chosen >= shift.offset) & (chosen < shift.stop)
        shift_steps = np.where(is_shift, chosen - shift.offset + shift.min_value, 0)
        self.elapsed += shift_steps
        is_note_on = (chosen >= note_on.offset) & (chosen < note_on.stop)
        self.silent = np.where(is_note_on, 0, self.silent + shift_steps)
        self._follow_notes(chosen, is_note_on)
        by_eos = chosen == vocab.eos
        by_time = ~by_eos & (self.elapsed >= self.target_steps)
        stopped = [key for key, request in self._requests.items()
                   if request.stop is not None and request.stop.is_set()]
        by_stop = np.isin(self.owner, stopped) if stopped else np.zeros_like(by_eos)
        finished = live & (by_eos | by_time | by_stop | (self.steps >= self.budget))
        done = {}
        for row in np.nonzero(finished)[0]:
            key, length = int(self.owner[row]), int(self.steps[row])
            buffer = self.buffers[row]
            reason = ("stopped" if by_stop[row] else "eos" if by_eos[row] else
                      "seconds" if by_time[row] else "max_tokens")
            self._done[key][self.index[row]] = (buffer[0, :length].astype(np.int64),
                                                buffer[1, :length].astype(np.float32),
                                                buffer[2, :length].astype(np.float32), reason)
            if all(part is not None for part in self._done[key]):
                done[key] = self._finish(key)
        self._report_progress(live & ~finished)
        if hasattr(self.stepper, "rows"):  # done rows leave the batch
            kept = np.nonzero(~finished)[0]
            if len(kept) < len(self.owner):
                self._keep(kept)
        else:  # a torch model's stepper: done rows are stepped on, and ignored
            kept = np.arange(len(self.owner))
            self.retired |= finished
        if self.rows:
            self.logits = self.stepper.step(chosen[kept])
        return done

    def close(self) -> None:
        """Drop every row's state."""
        if self.stepper is not None:
            self.stepper.close()

    # --- rows ---

    def _new_row_arrays(self) -> None:
        for name, dtype in self.ROW_FIELDS.items():
            setattr(self, name, np.zeros(0, dtype))
        # [rows, 128]: the time step each pitch began sounding at, -1 where silent.
        self.sounding_since = np.zeros((0, PITCHES), np.int64)
        self.generators: list[TorchUniforms] = []
        self.buffers: list[np.ndarray] = []  # per row [3, budget]: token, entropy, p(chosen)

    def _follow_notes(self, chosen: np.ndarray, is_note_on: np.ndarray) -> None:
        """Which pitches sound after `chosen`, as `decode_events` will play them."""
        note_on, note_off = self.vocab["note_on"], self.vocab["note_off"]
        rows = np.arange(len(chosen))
        self.sounding_since[rows[is_note_on], chosen[is_note_on] - note_on.offset] = \
            self.elapsed[is_note_on]
        is_note_off = (chosen >= note_off.offset) & (chosen < note_off.stop)
        self.sounding_since[rows[is_note_off], chosen[is_note_off] - note_off.offset] = -1
        held = self.elapsed[:, None] - self.sounding_since
        self.sounding_since[(self.sounding_since >= 0) & (held > MAX_NOTE_STEPS)] = -1

    def _keep(self, kept: np.ndarray) -> None:
        """Only these rows go on (the others are done)."""
        for name in self.ROW_FIELDS:
            setattr(self, name, getattr(self, name)[kept])
        self.sounding_since = self.sounding_since[kept]
        self.generators = [self.generators[row] for row in kept]
        self.buffers = [self.buffers[row] for row in kept]
        if not len(kept):
            self.stepper.close()
            self.stepper = None
        else:
            self.stepper = self.stepper.rows(kept)

    @staticmethod
    def _merged(steppers: list):
        if not all(hasattr(stepper, "rows") for stepper in steppers):
            raise ValueError("only a ServingModel samples several requests as one batch")
        joined = merged(steppers)
        for stepper in steppers:  # merged copied their state
            stepper.close()
        return joined

    def _finish(self, key: int) -> Generation:
        request, parts = self._requests.pop(key), self._done.pop(key)
        if request.on_progress is not None:
            request.on_progress(1.0)
        return Generation(tokens=[part[0] for part in parts], entropy=[part[1] for part in parts],
                          chosen_probability=[part[2] for part in parts],
                          stop_reasons=[part[3] for part in parts])

    def _report_progress(self, going: np.ndarray) -> None:
        """Each unfinished request's progress, every 32 of its tokens: its least advanced
        row, and each row's tokens so far to `on_tokens`."""
        if not ((self.steps[going] - 1) % 32 == 0).any():  # np.unique below costs 14 us a step
            return
        for key in np.unique(self.owner[going]):
            request = self._requests[int(key)]
            rows = going & (self.owner == key)
            steps = int(self.steps[rows][0])  # a request's rows joined together
            if (steps - 1) % 32:
                continue
            if request.on_tokens is not None:
                request.on_tokens({int(self.index[row]):
                                   self.buffers[row][0, :steps].astype(np.int64)
                                   for row in np.nonzero(rows)[0]})
            if request.on_progress is None:
                continue
            by_tokens = (steps - 1) / self.budget[rows].max()
            if request.seconds is None:
                request.on_progress(by_tokens)
            else:
                by_time = float(self.elapsed[rows].min()) / self.target_steps[rows].max()
                request.on_progress(min(1.0, max(by_tokens, by_time)))


def check_request(request: SamplingRequest) -> None:
    """Refuse a request the sampler cannot do (the product's narrower limits are `Settings`').

    Raises:
        ValueError: No length, or controls outside where the sampling math is defined.
    """
    if request.seconds is None and request.max_tokens is None:
        raise ValueError("give seconds, max_tokens or both")
    _check(request.temperature, request.top_k, request.top_p, request.min_p, request.n)
    if not 0 <= request.seed <= 2**32 - request.n:  # the generators' seeds: seed .. seed+n-1
        raise ValueError(f"no such seed for {request.n} rows: {request.seed}")
    tokens = np.asarray(request.prompt_tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= VOCAB.size):
        raise ValueError(f"prompt tokens must be ids below {VOCAB.size}")
    if request.controls is not None and (
            np.shape(request.controls) != (CONTROL_FEATURES,)
            or not np.isfinite(request.controls).all()):
        raise ValueError(f"controls must be {CONTROL_FEATURES} finite numbers "
                         "(musicgen.controls)")


def _prompt(prompt_tokens, context: int | None, vocab: Vocabulary) -> np.ndarray:
    """The prompt as the model reads it: BOS in front, at most context - 1 tokens."""
    prompt = np.asarray(prompt_tokens, dtype=np.int64).ravel()
    if not len(prompt) or prompt[0] != vocab.bos:
        prompt = np.concatenate(([vocab.bos], prompt))
    if context is not None:
        prompt = prompt[-(context - 1):]  # the next token then sees `context`
    return prompt


def _row_controls(requests: list[SamplingRequest]) -> np.ndarray | None:
    """Each row's controls [rows, CONTROL_FEATURES] (a request without any plays free)."""
    if all(request.controls is None for request in requests):
        return None
    free = np.zeros(CONTROL_FEATURES, np.float32)
    return np.stack([free if request.controls is None else request.controls
                     for request in requests])


def _stepper(model):
    """The model's own stepper (a `ServingModel`'s), else `musicgen.inference`'s (torch)."""
    if hasattr(model, "stepper"):
        return model.stepper()
    from musicgen.inference import stepper_for  # noqa: PLC0415 - torch models only

    return stepper_for(model)


def _steps_since_last_note_on(tokens: np.ndarray, vocab: Vocabulary) -> int:
    """Time steps from the last NOTE_ON of a token sequence to its end (all of it if none)."""
    shift, note_on = vocab["time_shift"], vocab["note_on"]
    is_shift = (tokens >= shift.offset) & (tokens < shift.stop)
    steps = np.cumsum(np.where(is_shift, tokens - shift.offset + shift.min_value, 0))
    is_note_on = (tokens >= note_on.offset) & (tokens < note_on.stop)
    if not is_note_on.any() or not len(steps):
        return int(steps[-1]) if len(steps) else 0
    return int(steps[-1] - steps[np.nonzero(is_note_on)[0][-1]])


def _choose(logits: np.ndarray, temperature: float | np.ndarray, top_k: int | np.ndarray,
            top_p: float | np.ndarray, min_p: float | np.ndarray,
            generators: list[TorchUniforms], banned: np.ndarray | None = None,
            keep_timing: np.ndarray | None = None, moves_within_types: np.ndarray | None = None,
            vocab: Vocabulary = VOCAB, floor: np.ndarray | None = None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One token per row, with the entropy and chosen probability of the model's distribution.

    `temperature`, `top_k`, `top_p` and `min_p` hold each row's own value (temperature
    0: argmax). `banned` [B, V] marks tokens that may not be chosen; the
    entropy and the chosen probability are still those of the unmasked
    distribution. A row marked in `moves_within_types` has its bans applied after
    the temperature by `move_within_types` (a greedy one takes the argmax of
    that distribution at temperature 1); the others' banned tokens are
    dropped before it, which spreads their probability over every event.
    Rows marked in `keep_timing` keep the model's timing
    (`temper_keeping_timing`); the others divide every logit. After all of
    that, a sampled row's tokens below their `floor` [B, V] are raised to it
    (`raised_to_floor`). Only sampled rows draw a uniform, each from its own
    generator.

    Numpy rather than torch: on a 391-long row each torch call costs more in
    overhead than in arithmetic, and this runs once per generated token.
    """
    logits = logits.astype(np.float64)
    temperature, top_k, top_p, min_p = (_per_row(value, dtype, len(logits)) for value, dtype in (
        (temperature, np.float64), (top_k, np.int64), (top_p, np.float64), (min_p, np.float64)))
    peak = logits.max(-1, keepdims=True)
    exponentials = np.exp(logits - peak)
    total = exponentials.sum(-1, keepdims=True)
    log_probs = logits - peak - np.log(total)
    probabilities = exponentials / total
    step_entropy = -(probabilities * log_probs).sum(-1)
    unbanned_logits = logits
    moved = np.zeros(len(logits), bool)  # rows whose bans come after the temperature
    if banned is not None:
        logits = np.where(banned, -np.inf, logits)
        if moves_within_types is not None:
            moved = moves_within_types
    chosen = logits.argmax(-1)
    greedy_moved = moved & (temperature == 0)
    if greedy_moved.any():
        chosen[greedy_moved] = move_within_types(unbanned_logits[greedy_moved],
                                                 banned[greedy_moved], vocab).argmax(-1)
    sampled = np.nonzero(temperature > 0)[0]
    if len(sampled):
        sampling = np.empty((len(sampled), logits.shape[-1]))
        # The app's default (paired, timing kept, no cut) in probability space;
        # the rest through the functions it equals.
        direct = moved[sampled] & (top_k[sampled] == 0) & (top_p[sampled] >= 1) & (
            min_p[sampled] == 0)
        if keep_timing is not None:
            direct &= keep_timing[sampled]
        else:
            direct[:] = False
        if direct.any():
            rows = sampled[direct]
            sampling[direct] = paired_keeping_timing(log_probs[rows], probabilities[rows],
                                                     banned[rows], temperature[rows], vocab)
        if not direct.all():
            rows = sampled[~direct]
            row_moved = moved[rows]
            to_temper = np.where(row_moved[:, None], unbanned_logits[rows], logits[rows])
            tempered = to_temper / temperature[rows, None]
            if keep_timing is not None and keep_timing[rows].any():
                timed = keep_timing[rows]
                tempered[timed] = temper_keeping_timing(to_temper[timed],
                                                        temperature[rows][timed], vocab)
            if row_moved.any():
                tempered[row_moved] = move_within_types(tempered[row_moved],
                                                        banned[rows][row_moved], vocab)
            sampling[~direct] = _softmax(filter_logits(tempered, top_k[rows], top_p[rows],
                                                       min_p[rows]))
        if floor is not None:  # only rows with a floor: the others stay bit for bit
            floored = floor[sampled].any(-1)
            sampling[floored] = raised_to_floor(sampling[floored], floor[sampled][floored])
        cumulative = np.cumsum(sampling, -1)
        # Inverse-CDF sampling with each row's own seeded generator.
        uniforms = np.array([generators[i].next() for i in sampled])
        # The first token whose cumulative probability passes u * total (what
        # searchsorted(side="right") finds, for all rows at once): never a
        # zero-probability token, except past the end when u * total rounds up
        # to total; then the last kept token. Only then is every token passed,
        # so only those rows look for it.
        passed = (cumulative <= (uniforms * cumulative[:, -1])[:, None]).sum(-1)
        past_end = passed == sampling.shape[-1]
        if past_end.any():
            passed[past_end] = ((sampling.shape[-1] - 1)
                                - np.argmax(sampling[past_end, ::-1] > 0, axis=-1))
        chosen[sampled] = passed
    picked = probabilities[np.arange(len(chosen)), chosen]
    return chosen.astype(np.int64), step_entropy, picked


def move_within_types(logits: np.ndarray, banned: np.ndarray,
                      vocab: Vocabulary = VOCAB) -> np.ndarray:
    """Ban tokens, giving each one's probability to the allowed tokens of its own event type.

    Paired notes ban a NOTE_ON of a sounding key and a NOTE_OFF of a silent
    one. Dropping those tokens outright spreads their probability over every
    event, mostly time shifts and new notes: a model that meant to release a
    key but named one already silent then releases nothing, and on 50
    prompts that left more notes held past 4 s than without pairing
    (BENCHMARKS.md, "Paired notes that keep the model's odds"). Here the
    model's chance of each event type stays, and only the key is chosen
    among the legal ones, in the proportions the model gives them. A type
    with nothing allowed (every time shift past the longest silence, a
    NOTE_OFF when nothing sounds) loses its share to the others in
    proportion to theirs, as dropping it would.

    Args:
        logits: [B, V] scores of the distribution to sample (after the temperature).
        banned: [B, V] True where a token may not be chosen.
        vocab: The event table whose ranges are the types.

    Returns:
        [B, V] float64 log-probabilities, -inf where banned.
    """
    starts, sizes, _ = _type_layout(vocab)
    log_probs = np.where(np.isfinite(logits), logits - _log_sum_exp(logits), -np.inf)
    allowed = np.where(banned, -np.inf, log_probs)
    with np.errstate(divide="ignore", invalid="ignore"):  # closed types: log 0, -inf - -inf
        share = _log_sum_exp_per_type(log_probs, starts, sizes)
        kept = _log_sum_exp_per_type(allowed, starts, sizes)
        open_type = np.isfinite(kept)
        share = np.where(open_type, share, -np.inf)
        share -= _log_sum_exp(share)
        moved = allowed + np.repeat(np.where(open_type, share - kept, 0.0), sizes, axis=1)
    return np.where(np.isfinite(moved), moved, -np.inf)


def paired_keeping_timing(log_probs: np.ndarray, probabilities: np.ndarray,
                          banned: np.ndarray, temperature: np.ndarray,
                          vocab: Vocabulary = VOCAB) -> np.ndarray:
    """`move_within_types` after `temper_keeping_timing`, as probabilities, in fewer steps.

    The app's default samples every token this way. Composed, the two
    functions normalise in the log domain four times over (0.07 ms a token of
    the 0.2 ms that choosing one took); here each type's share and its
    tempered, allowed values are summed once. tests/test_sample.py checks that
    the two give the same distribution.

    Args:
        log_probs: [B, V] the model's log-probabilities at temperature 1.
        probabilities: [B, V] their exponentials.
        banned: [B, V] True where a token may not be chosen.
        temperature: [B], above 0.
        vocab: The event table whose ranges are the types.

    Returns:
        [B, V] float64 probabilities that sum to 1, 0 where banned.
    """
    starts, sizes, tempered_types = _type_layout(vocab)
    # Each type's values relative to its likeliest: no underflow at a low temperature.
    peak = np.repeat(np.maximum.reduceat(log_probs, starts, axis=1), sizes, axis=1)
    weights = np.where(np.repeat(tempered_types, sizes),
                       np.exp((log_probs - peak) / temperature[:, None]), probabilities)
    weights[banned] = 0.0
    within = np.add.reduceat(weights, starts, axis=1)  # [B, types]
    open_type = within > 0
    share = np.where(open_type, np.add.reduceat(probabilities, starts, axis=1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(open_type, share / (share.sum(-1, keepdims=True) * within), 0.0)
    return weights * np.repeat(scale, sizes, axis=1)


def release_floor(sounding_since: np.ndarray, elapsed: np.ndarray, releasing: np.ndarray,
                  vocab: Vocabulary = VOCAB) -> np.ndarray | None:
    """The floor of each old key's NOTE_OFF, for `raised_to_floor` (release_held_keys).

    A key is old once it has sounded `RELEASE_AFTER_STEPS`; each old key's
    NOTE_OFF gets `RELEASE_FLOOR`, or less where that many old keys would
    together pass `MAX_RELEASE_SHARE`. Pairing never bans these tokens: an
    old key sounds and was not just struck.

    Args:
        sounding_since: int [B, 128], the step each pitch began sounding at, -1 where silent.
        elapsed: int [B], each row's steps so far.
        releasing: bool [B], the rows with release_held_keys.
        vocab: The event table.

    Returns:
        float64 [B, V], 0 but for old keys' NOTE_OFFs; None where no row has an old key.
    """
    if not releasing.any():
        return None
    old = ((sounding_since >= 0) & releasing[:, None]
           & (elapsed[:, None] - sounding_since >= RELEASE_AFTER_STEPS))
    if not old.any():
        return None
    per_key = np.minimum(RELEASE_FLOOR,
                         MAX_RELEASE_SHARE / np.maximum(old.sum(-1, keepdims=True), 1))
    note_off = vocab["note_off"]
    floor = np.zeros((len(old), vocab.size))
    floor[:, note_off.offset:note_off.stop] = np.where(old, per_key, 0.0)
    return floor


def raised_to_floor(probabilities: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Tokens less likely than their floor raised to it; the others scaled down in proportion.

    The others keep their odds among themselves, so a token just above its
    floor can end a little below it: by the same factor as the rest, at least
    1 - floor.sum() (0.98 for one old key at the sampler's floor).

    Args:
        probabilities: [B, V], each row summing to 1.
        floor: [B, V], 0 where a token has none; each row summing to less than 1.

    Returns:
        [B, V] float64, each row summing to 1.
    """
    raised = floor > probabilities
    others = np.where(raised, 0.0, probabilities)
    room = 1.0 - np.where(raised, floor, 0.0).sum(-1, keepdims=True)
    return np.where(raised, floor, others * (room / others.sum(-1, keepdims=True)))


def _per_row(value, dtype, rows: int) -> np.ndarray:
    """One value per row: `value` itself when it already is that array (the loop's case)."""
    if isinstance(value, np.ndarray) and value.shape == (rows,) and value.dtype == dtype:
        return value
    return np.broadcast_to(np.asarray(value, dtype=dtype), (rows,))
