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
from threadpoolctl import threadpool_limits

from musicgen.events import STEPS_PER_SECOND, VOCAB, Vocabulary
from musicgen.serving import ServingModel

# Without a token budget, stop a run that never advances time (e.g. only
# note events) after this many tokens per second of music asked for.
TOKENS_PER_SECOND_CAP = 200
# A step's products are too small to share between BLAS threads, and when the
# cores are busy (a training job, other users) the threads wait on each other:
# measured on this project's 2-core machine while two other jobs ran, a 10 s
# LSTM continuation took 22 s with OpenBLAS's 2 threads and 0.9 s with 1.
SAMPLING_BLAS_THREADS = 1


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


def filter_logits(logits: np.ndarray, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Keep the top-k tokens and the smallest set whose probability reaches top_p.

    Args:
        logits: [B, V] scores (already divided by the temperature).
        top_k: Keep this many highest-scoring tokens; 0 keeps all.
        top_p: Nucleus: keep the most likely tokens until their probability
            sum reaches top_p (the token that crosses it is kept); 1.0 keeps all.

    Returns:
        A float64 copy with every dropped token at -inf.
    """
    logits = np.array(logits, dtype=np.float64)
    if top_k and top_k < logits.shape[-1]:
        threshold = np.partition(logits, -top_k, axis=-1)[:, -top_k:].min(-1, keepdims=True)
        logits[logits < threshold] = -np.inf
    if top_p < 1.0:
        ordered = -np.sort(-logits, axis=-1)
        probabilities = _softmax(ordered)
        # Keep a token while the tokens before it sum to less than top_p; then
        # every logit at or above the last kept one stays (ties are kept together).
        kept = ((np.cumsum(probabilities, -1) - probabilities) < top_p).sum(-1, keepdims=True)
        threshold = np.take_along_axis(ordered, kept - 1, axis=-1)
        logits[logits < threshold] = -np.inf
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

    def __init__(self, seed: int):
        self._state = np.random.RandomState(seed)

    def next(self) -> float:
        """The next uniform."""
        high, low = self._state.randint(0, 2**32, size=2, dtype=np.uint64)
        return float((int(high) << 32 | int(low)) & (2**53 - 1)) * 2.0**-53


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
    if seconds is None and max_tokens is None:
        raise ValueError("give seconds, max_tokens or both")
    _check(temperature, top_k, top_p, n)
    if max_tokens is None:
        max_tokens = max(64, int(seconds * TOKENS_PER_SECOND_CAP))
    target_steps = None if seconds is None else round(seconds * STEPS_PER_SECOND)
    prompt = np.asarray(prompt_tokens, dtype=np.int64).ravel()
    if not len(prompt) or prompt[0] != vocab.bos:
        prompt = np.concatenate(([vocab.bos], prompt))
    if model.context is not None:
        prompt = prompt[-(model.context - 1):]  # the next token then sees `context`
    generators = [TorchUniforms(seed + i) for i in range(n)]
    shift, note_on = vocab["time_shift"], vocab["note_on"]
    silence_cap = round(max_silence * STEPS_PER_SECOND) if max_silence > 0 else None
    silent = np.full(n, _steps_since_last_note_on(prompt, vocab), dtype=np.int64)
    no_shifts = np.zeros((n, vocab.size), dtype=bool)

    stepper = _stepper(model)
    blas = threadpool_limits(limits=SAMPLING_BLAS_THREADS, user_api="blas")
    tokens = np.zeros((n, max_tokens), dtype=np.int64)
    entropy = np.zeros((n, max_tokens), dtype=np.float32)
    chosen_probability = np.zeros((n, max_tokens), dtype=np.float32)
    elapsed = np.zeros(n, dtype=np.int64)
    length = np.full(n, max_tokens)
    reasons = ["max_tokens"] * n
    active = np.ones(n, dtype=bool)
    try:
        logits = stepper.start(np.repeat(prompt[None, :], n, axis=0))
        for t in range(max_tokens):
            banned = None
            if silence_cap is not None and (silent >= silence_cap).any():
                banned = no_shifts.copy()
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
            finished = active & (chosen == vocab.eos)
            if target_steps is not None:
                finished_by_time = active & ~finished & (elapsed >= target_steps)
                for i in np.nonzero(finished_by_time)[0]:
                    reasons[i] = "seconds"
                finished |= finished_by_time
            for i in np.nonzero(finished)[0]:
                length[i] = t + 1
                if reasons[i] == "max_tokens":
                    reasons[i] = "eos"
            active &= ~finished
            if not active.any():
                break
            if on_progress is not None and t % 32 == 0:
                on_progress(_progress(t, max_tokens, elapsed[active], target_steps))
            logits = stepper.step(chosen)
    finally:
        stepper.close()
        blas.restore_original_limits()
    if on_progress is not None:
        on_progress(1.0)
    return Generation(tokens=[tokens[i, :length[i]].copy() for i in range(n)],
                      entropy=[entropy[i, :length[i]].copy() for i in range(n)],
                      chosen_probability=[chosen_probability[i, :length[i]].copy()
                                          for i in range(n)],
                      stop_reasons=reasons)


def _stepper(model):
    """The model's stepper: its own when it serves from numpy, else `musicgen.inference`'s."""
    if isinstance(model, ServingModel):
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


def _choose(logits: np.ndarray, temperature: float, top_k: int, top_p: float,
            generators: list[TorchUniforms], banned: np.ndarray | None = None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One token per row, with the entropy and chosen probability of the model's distribution.

    `banned` [B, V] marks tokens that may not be chosen; the entropy and the
    chosen probability are still those of the unmasked distribution.

    Numpy rather than torch: on a 391-long row each torch call costs more in
    overhead than in arithmetic, and this runs once per generated token.
    """
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(-1, keepdims=True))
    log_probs = shifted - log_norm
    probabilities = np.exp(log_probs)
    step_entropy = -(probabilities * log_probs).sum(-1)
    if banned is not None:
        logits = np.where(banned, -np.inf, logits)
    if temperature == 0:
        chosen = logits.argmax(-1)
    else:
        sampling = _softmax(filter_logits(logits / temperature, top_k, top_p))
        cumulative = np.cumsum(sampling, -1)
        # Inverse-CDF sampling with each row's own seeded generator.
        uniforms = np.array([generator.next() for generator in generators])
        # side="right" never lands on a zero-probability token, except past the
        # end when u * total rounds up to total: then take the last kept token.
        last_kept = (sampling.shape[-1] - 1) - np.argmax(sampling[:, ::-1] > 0, axis=-1)
        chosen = np.array([min(int(np.searchsorted(row, u * row[-1], side="right")), last)
                           for row, u, last in zip(cumulative, uniforms, last_kept, strict=True)])
    picked = probabilities[np.arange(len(chosen)), chosen]
    return chosen.astype(np.int64), step_entropy, picked


def _progress(t: int, max_tokens: int, elapsed: np.ndarray, target_steps: int | None) -> float:
    by_tokens = t / max_tokens
    if target_steps is None:
        return by_tokens
    return min(1.0, max(by_tokens, float(elapsed.min()) / target_steps))
