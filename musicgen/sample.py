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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from musicgen.events import STEPS_PER_SECOND, VOCAB, Vocabulary
from musicgen.serving import merged

# Without a token budget, stop a run that never advances time (e.g. only
# note events) after this many tokens per second of music asked for.
TOKENS_PER_SECOND_CAP = 200


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
                  top_p: float | np.ndarray = 1.0) -> np.ndarray:
    """Keep the top-k tokens and the smallest set whose probability reaches top_p.

    Args:
        logits: [B, V] scores (already divided by the temperature).
        top_k: Keep this many highest-scoring tokens; 0 keeps all. One value,
            or one per row.
        top_p: Nucleus: keep the most likely tokens until their probability
            sum reaches top_p (the token that crosses it is kept); 1.0 keeps all.
            One value, or one per row.

    Returns:
        A float64 copy with every dropped token at -inf.
    """
    logits = np.array(logits, dtype=np.float64)
    rows, size = logits.shape
    top_k, top_p = _per_row(top_k, np.int64, rows), _per_row(top_p, np.float64, rows)
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def _check(temperature: float, top_k: int, top_p: float, n: int) -> None:
    """Where the sampling math is defined; the product's narrower limits are `Settings`'."""
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1 or n < 1:
        raise ValueError(f"no such sampler: temperature {temperature}, top_k {top_k}, "
                         f"top_p {top_p}, n {n}")


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
    """One call's worth of sampling: a prompt, its controls and n rows.

    The fields are `generate`'s arguments of the same names.
    """

    prompt_tokens: np.ndarray
    seconds: float | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    n: int = 1
    max_silence: float = 0.0
    on_progress: Callable[[float], None] | None = None


def generate(model, prompt_tokens, *, seconds: float | None = None,
             max_tokens: int | None = None, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, n: int = 1, max_silence: float = 0.0,
             on_progress: Callable[[float], None] | None = None,
             vocab: Vocabulary = VOCAB) -> Generation:
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
        seed: Sequence i uses a generator seeded with seed + i.
        n: Number of sequences, sampled as one batch.
        max_silence: Once this many seconds have passed without a new note
            (counted from the prompt's last one), time shifts are not sampled
            until a note starts, so a model cannot drift into minutes of
            nothing; 0 means no limit. The diagnostics stay those of the
            model's own, unmasked distribution.
        on_progress: Called with a fraction in [0, 1] now and then.
        vocab: The event table.

    Returns:
        A `Generation` with the continuations and per-step diagnostics.
    """
    request = SamplingRequest(prompt_tokens, seconds, max_tokens, temperature, top_k, top_p,
                              seed, n, max_silence, on_progress)
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
    for request in requests:
        check_request(request)
    owner = np.repeat(np.arange(len(requests)), [r.n for r in requests])  # request of each row

    def per_row(values: list, dtype) -> np.ndarray:
        return np.asarray(values, dtype=dtype)[owner]

    budget = per_row([r.max_tokens if r.max_tokens is not None
                      else max(64, int(r.seconds * TOKENS_PER_SECOND_CAP)) for r in requests],
                     np.int64)
    no_target = np.iinfo(np.int64).max
    target_steps = per_row([no_target if r.seconds is None else round(r.seconds * STEPS_PER_SECOND)
                            for r in requests], np.int64)
    temperature = per_row([r.temperature for r in requests], np.float64)
    top_k = per_row([r.top_k for r in requests], np.int64)
    top_p = per_row([r.top_p for r in requests], np.float64)
    silence_cap = per_row([round(r.max_silence * STEPS_PER_SECOND) if r.max_silence > 0
                           else no_target for r in requests], np.int64)
    generators = [TorchUniforms(r.seed + i) for r in requests for i in range(r.n)]
    shift, note_on = vocab["time_shift"], vocab["note_on"]
    prompts = [_prompt(r.prompt_tokens, model.context, vocab) for r in requests]
    silent = per_row([_steps_since_last_note_on(prompt, vocab) for prompt in prompts], np.int64)

    rows, width = len(owner), int(budget.max())
    tokens = np.zeros((rows, width), dtype=np.int64)
    entropy = np.zeros((rows, width), dtype=np.float32)
    chosen_probability = np.zeros((rows, width), dtype=np.float32)
    elapsed = np.zeros(rows, dtype=np.int64)
    length = budget.copy()
    reasons = ["max_tokens"] * rows
    active = np.ones(rows, dtype=bool)
    steppers = []
    try:
        steppers.append(_stepper(model))
        if len(requests) > 1 and hasattr(steppers[0], "start_rows"):
            # The LSTM: every row's prompt in one batch (`LSTMStepper.start_rows`).
            logits = steppers[0].start_rows([prompts[k] for k in owner])
            stepper = steppers[0]
        else:
            logits = [steppers[0].start(np.repeat(prompts[0][None, :], requests[0].n, axis=0))]
            for request, prompt in zip(requests[1:], prompts[1:], strict=True):
                steppers.append(_stepper(model))
                logits.append(steppers[-1].start(np.repeat(prompt[None, :], request.n, axis=0)))
            stepper = steppers[0] if len(steppers) == 1 else merged(steppers)
            logits = np.concatenate(logits)
        for t in range(width):
            banned = None
            if (silent >= silence_cap).any():
                banned = np.zeros((rows, vocab.size), dtype=bool)
                banned[silent >= silence_cap, shift.offset:shift.stop] = True
            chosen, step_entropy, step_probability = _choose(
                logits, temperature, top_k, top_p, generators, banned)
            tokens[:, t] = chosen
            entropy[:, t] = step_entropy
            chosen_probability[:, t] = step_probability
            is_shift = (chosen >= shift.offset) & (chosen < shift.stop)
            shift_steps = np.where(is_shift, chosen - shift.offset + shift.min_value, 0)
            elapsed += np.where(active, shift_steps, 0)
            is_note_on = (chosen >= note_on.offset) & (chosen < note_on.stop)
            silent = np.where(is_note_on, 0, silent + shift_steps)
            by_eos = active & (chosen == vocab.eos)
            by_time = active & ~by_eos & (elapsed >= target_steps)
            finished = by_eos | by_time | (active & (t + 1 >= budget))
            for i in np.nonzero(finished)[0]:
                length[i] = t + 1
                reasons[i] = "eos" if by_eos[i] else "seconds" if by_time[i] else "max_tokens"
            active &= ~finished
            if not active.any():
                break
            if t % 32 == 0:
                _report_progress(requests, owner, active, t, budget, elapsed, target_steps)
            logits = stepper.step(chosen)
    finally:
        for each in steppers:
            each.close()
    results = []
    for k, request in enumerate(requests):
        if request.on_progress is not None:
            request.on_progress(1.0)
        mine = np.nonzero(owner == k)[0]
        results.append(Generation(
            tokens=[tokens[i, :length[i]].copy() for i in mine],
            entropy=[entropy[i, :length[i]].copy() for i in mine],
            chosen_probability=[chosen_probability[i, :length[i]].copy() for i in mine],
            stop_reasons=[reasons[i] for i in mine]))
    return results


def check_request(request: SamplingRequest) -> None:
    """Refuse a request the sampler cannot do (the product's narrower limits are `Settings`').

    Raises:
        ValueError: No length, or controls outside where the sampling math is defined.
    """
    if request.seconds is None and request.max_tokens is None:
        raise ValueError("give seconds, max_tokens or both")
    _check(request.temperature, request.top_k, request.top_p, request.n)


def _prompt(prompt_tokens, context: int | None, vocab: Vocabulary) -> np.ndarray:
    """The prompt as the model reads it: BOS in front, at most context - 1 tokens."""
    prompt = np.asarray(prompt_tokens, dtype=np.int64).ravel()
    if not len(prompt) or prompt[0] != vocab.bos:
        prompt = np.concatenate(([vocab.bos], prompt))
    if context is not None:
        prompt = prompt[-(context - 1):]  # the next token then sees `context`
    return prompt


def _report_progress(requests: list[SamplingRequest], owner: np.ndarray, active: np.ndarray, t: int,
                     budget: np.ndarray, elapsed: np.ndarray, target_steps: np.ndarray) -> None:
    """Each unfinished request's progress: the least advanced of its rows, by time or tokens."""
    for k, request in enumerate(requests):
        rows = active & (owner == k)
        if request.on_progress is None or not rows.any():
            continue
        by_tokens = t / budget[rows].max()
        if request.seconds is None:
            request.on_progress(by_tokens)
        else:
            by_time = float(elapsed[rows].min()) / target_steps[rows].max()
            request.on_progress(min(1.0, max(by_tokens, by_time)))


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
            top_p: float | np.ndarray, generators: list[TorchUniforms],
            banned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One token per row, with the entropy and chosen probability of the model's distribution.

    `temperature`, `top_k` and `top_p` hold each row's own value (temperature
    0: argmax). `banned` [B, V] marks tokens that may not be chosen; the
    entropy and the chosen probability are still those of the unmasked
    distribution. Only sampled rows draw a uniform, each from its own generator.

    Numpy rather than torch: on a 391-long row each torch call costs more in
    overhead than in arithmetic, and this runs once per generated token.
    """
    logits = logits.astype(np.float64)
    temperature, top_k, top_p = (_per_row(value, dtype, len(logits)) for value, dtype in (
        (temperature, np.float64), (top_k, np.int64), (top_p, np.float64)))
    shifted = logits - logits.max(-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(-1, keepdims=True))
    log_probs = shifted - log_norm
    probabilities = np.exp(log_probs)
    step_entropy = -(probabilities * log_probs).sum(-1)
    if banned is not None:
        logits = np.where(banned, -np.inf, logits)
    chosen = logits.argmax(-1)
    sampled = np.nonzero(temperature > 0)[0]
    if len(sampled):
        sampling = _softmax(filter_logits(logits[sampled] / temperature[sampled, None],
                                          top_k[sampled], top_p[sampled]))
        cumulative = np.cumsum(sampling, -1)
        # Inverse-CDF sampling with each row's own seeded generator.
        uniforms = np.array([generators[i].next() for i in sampled])
        # The first token whose cumulative probability passes u * total (what
        # searchsorted(side="right") finds, for all rows at once): never a
        # zero-probability token, except past the end when u * total rounds up
        # to total; then the last kept token.
        last_kept = (sampling.shape[-1] - 1) - np.argmax(sampling[:, ::-1] > 0, axis=-1)
        passed = (cumulative <= (uniforms * cumulative[:, -1])[:, None]).sum(-1)
        chosen[sampled] = np.minimum(passed, last_kept)
    picked = probabilities[np.arange(len(chosen)), chosen]
    return chosen.astype(np.int64), step_entropy, picked


def _per_row(value, dtype, rows: int) -> np.ndarray:
    """One value per row: `value` itself when it already is that array (the loop's case)."""
    if isinstance(value, np.ndarray) and value.shape == (rows,) and value.dtype == dtype:
        return value
    return np.broadcast_to(np.asarray(value, dtype=dtype), (rows,))
