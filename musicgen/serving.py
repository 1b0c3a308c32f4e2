"""A checkpoint's serving form and its one-token steps: sampling without torch.

    model, card = load_serving("checkpoints/lstm")   # serving.onnx -> ONNX Runtime
    stepper = model.stepper()
    logits = stepper.start(prompt[None])              # [1, V]
    logits = stepper.step(np.array([token]))          # one token per row

The serving form is the model's step as an ONNX graph with int8 weights
(`musicgen.serving_graph`, written next to the weights by its
`export_serving`). Why: a step is bound by reading its
weights, and int8 weights are a quarter of the bytes; ONNX Runtime has the
integer kernels numpy lacks, and it imports in 0.04 s where torch takes 2-6 s.
Its rounding costs at most 0.01 nats/event of test NLL (BENCHMARKS.md).

Rows are independent (activations are quantized per row), so steppers of one
model can be merged into one batch (`merged`) and give each row the numbers
it would have had alone.

A model with a control input takes, per row, what its music should keep
(`musicgen.controls`): `start(tokens, controls)`; a model without one ignores
them, and one with it given none plays free.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen.checkpoint import SERVING, checked_weights, file_sha256
from musicgen.configs import LSTMConfig, ModelConfig, TransformerConfig, config_from_dict
from musicgen.controls import CONTROL_FEATURES
from musicgen.errors import UserError
from musicgen.events import PITCHES, advance_held_ages, held_features

# One thread per session: a step's products are too small to share between
# threads, and when the cores are busy the threads wait on each other
# (bench/session_threads.py: a 30 s clip 3.3 s with one, 4.3 s with two).
SESSION_THREADS = 1


@dataclass
class ServingModel:
    """A model's config and its step, ready to run.

    Attributes:
        config: Its shape.
        session: The ONNX Runtime session of its serving graph.
    """

    config: ModelConfig
    session: object  # onnxruntime.InferenceSession, imported where it is needed

    @property
    def context(self) -> int | None:
        """Tokens the model attends to (None: the LSTM's state carries the whole past)."""
        return self.config.context if isinstance(self.config, TransformerConfig) else None

    def stepper(self) -> LSTMStepper | TransformerStepper:
        """A new stepper, with no state until `start`."""
        if isinstance(self.config, LSTMConfig):
            return LSTMStepper(self.config, self.session)
        return TransformerStepper(self.config, self.session)


def load_serving(path: str | os.PathLike) -> tuple[ServingModel, dict]:
    """Read a checkpoint folder (or its model.safetensors) for sampling, without torch.

    A checkpoint without its serving form (a training checkpoint, say) gets one
    built in memory where the `onnx` package is installed (training and tests).

    Returns:
        (the model, its card).

    Raises:
        UserError: Nothing at `path`, not a musicgen checkpoint, another
            vocabulary, a serving form that does not belong to these weights, or
            none and no way to build one.
    """
    weights_path, card = checked_weights(path)
    card.setdefault("weights_sha256", file_sha256(weights_path))
    config = config_from_dict(card["config"])
    serving_path = weights_path.parent / SERVING
    if serving_path.is_file():
        recorded = card.get("serving", {})
        graph = serving_path.read_bytes()
        if (recorded.get("weights_sha256") != card["weights_sha256"]
                or recorded.get("sha256") != hashlib.sha256(graph).hexdigest()):
            raise UserError(f"{serving_path} is not the one its card names, made from "
                            f"{weights_path}; make it again: python -m musicgen export-serving "
                            f"{weights_path.parent}")
    else:
        graph = _graph_in_memory(weights_path, config)
    return ServingModel(config, session_for(graph)), card


def session_for(graph: bytes):
    """An ONNX Runtime session for a serialized serving graph, on the CPU."""
    import onnxruntime  # noqa: PLC0415 - 0.04 s, but only for sampling

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = SESSION_THREADS
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initializers are not for users
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def row_controls(config: ModelConfig, rows: int,
                 controls: np.ndarray | None) -> np.ndarray | None:
    """Controls [rows, CONTROL_FEATURES] for a model that takes them (None: every part
    free), or None for one that does not."""
    if not config.control_input:
        return None
    if controls is None:
        return np.zeros((rows, CONTROL_FEATURES), np.float32)
    return np.array(np.broadcast_to(
        np.asarray(controls, np.float32), (rows, CONTROL_FEATURES)))


def _graph_in_memory(weights_path: Path, config: ModelConfig) -> bytes:
    try:
        from musicgen.serving_graph import checked_float_weights, serving_graph  # noqa: PLC0415
    except ImportError:  # no onnx: the app's requirements
        raise UserError(f"the checkpoint {weights_path.parent} has no serving form "
                        f"({SERVING}); make it where training is installed: python -m "
                        f"musicgen export-serving {weights_path.parent}") from None
    weights = checked_float_weights(weights_path, config)
    return serving_graph(weights, config).SerializeToString()


class LSTMStepper:
    """The LSTM's step: (h, c) per layer kept here, the graph does the rest.

    With a held-note input, the stepper also follows which pitches sound in
    the tokens it is fed (`events.advance_held_ages`) and hands them to the graph.
    """

    def __init__(self, config: LSTMConfig, session):
        self.config, self.session = config, session
        self.state: dict[str, np.ndarray] | None = None
        self.held_ages: np.ndarray | None = None  # [n, 128], with a held-note input
        self.controls: np.ndarray | None = None  # [n, CONTROL_FEATURES], with a control input
        self._state_names = [f"{kind}_{k}" for k in range(config.num_layers)
                             for kind in ("h", "c")]
        self._outputs = ["logits", *(f"{kind}_out_{k}" for k in range(config.num_layers)
                                     for kind in ("h", "c"))]

    def start(self, tokens: np.ndarray, controls: np.ndarray | None = None) -> np.ndarray:
        """Run the prompt [n, T] token by token; return the logits [n, V] for the next one.

        `controls` ([CONTROL_FEATURES] for every row, or [n, CONTROL_FEATURES]) stay with
        the rows for every later step.
        """
        return self.start_rows(list(tokens), controls)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        tokens = np.asarray(tokens, np.int64)
        feed = {"tokens": tokens, **self.state}
        if self.held_ages is not None:
            self.held_ages = advance_held_ages(self.held_ages, tokens)
            feed["held"] = held_features(self.held_ages)
        if self.controls is not None:
            feed["controls"] = self.controls
        logits, *state = self.session.run(self._outputs, feed)
        self.state = dict(zip(self._state_names, state, strict=True))
        return logits

    def start_rows(self, prompts: list[np.ndarray],
                   controls: np.ndarray | None = None) -> np.ndarray:
        """Run prompts of different lengths as one batch; the logits [n, V] after each.

        `controls` as for `start`.

        The prompts are aligned at their ends: a row whose prompt has not
        begun yet is stepped on a placeholder and its state zeroed again, so
        it begins from the empty state, as alone. 29 prompts of 264 tokens
        took 4.1 s one after another and are one batch of 264 steps this way.
        """
        longest = max(len(prompt) for prompt in prompts)
        begins = np.array([longest - len(prompt) for prompt in prompts])
        tokens = np.zeros((len(prompts), longest), np.int64)
        for row, prompt in enumerate(prompts):
            tokens[row, begins[row]:] = prompt
        self._empty(len(prompts), controls)
        logits = None
        for t in range(longest):
            logits = self.step(tokens[:, t])
            waiting = begins > t
            if waiting.any():
                for value in self.state.values():
                    value[waiting] = 0.0
                if self.held_ages is not None:
                    self.held_ages[waiting] = -1
        return logits

    def sequence_logits(self, tokens: np.ndarray, controls: np.ndarray | None = None,
                        carry: bool = False) -> np.ndarray:
        """The logits after every token of [n, T], from an empty state: [n, T, V].

        `controls` as for `start`, or [n, T, CONTROL_FEATURES]: one per token.
        `carry` goes on from the rows' state instead (a piece read in chunks).
        """
        rows, steps = tokens.shape
        per_token = controls is not None and np.ndim(controls) == 3
        if not carry:
            self._empty(rows, None if per_token else controls)
        elif not per_token and self.controls is not None:
            self.controls = row_controls(self.config, rows, controls)
        logits = np.empty((rows, steps, self.config.vocab_size), np.float32)
        for t in range(steps):
            if per_token and self.controls is not None:
                self.controls = np.ascontiguousarray(controls[:, t], np.float32)
            logits[:, t] = self.step(tokens[:, t])
        return logits

    def _empty(self, rows: int, controls: np.ndarray | None = None) -> None:
        zeros = np.zeros((rows, self.config.hidden_size), np.float32)
        self.state = dict.fromkeys(self._state_names, zeros)
        if self.config.held_notes_input:
            self.held_ages = np.full((rows, PITCHES), -1, np.int64)
        self.controls = row_controls(self.config, rows, controls)

    def rows(self, index: np.ndarray) -> LSTMStepper:
        """A stepper holding only the given rows' state."""
        kept = LSTMStepper(self.config, self.session)
        kept.state = {name: value[index] for name, value in self.state.items()}
        if self.held_ages is not None:
            kept.held_ages = self.held_ages[index]
        if self.controls is not None:
            kept.controls = self.controls[index]
        return kept

    def close(self) -> None:
        """Drop the state."""
        self.state = self.held_ages = self.controls = None


class TransformerStepper:
    """The Transformer's KV-cached step.

    Each layer's keys and values live in a ring buffer of `context` slots per
    row: a new token's key overwrites the oldest one, which is the model's
    sliding window (context - 1 past tokens plus the current one). The order of
    the slots does not matter, since RoPE has already rotated each key by its
    own position and softmax attention is a sum over keys. Every row keeps its
    own position, so rows of different prompts can share a batch.
    """

    def __init__(self, config: TransformerConfig, session):
        self.config, self.session = config, session
        self.heads, self.head_dim = config.n_heads, config.d_model // config.n_heads
        self.context = config.context
        self.inverse_frequency = (config.rope_base ** (
            -np.arange(0, self.head_dim, 2, dtype=np.float32) / self.head_dim)).astype(np.float32)
        self.keys: list[np.ndarray] = []    # per layer [n, heads, head_dim, context]
        self.values: list[np.ndarray] = []  # per layer [n, heads, context, head_dim]
        self.position = np.zeros(0, np.int64)  # per row: tokens seen so far
        self.controls: np.ndarray | None = None  # [n, CONTROL_FEATURES], with a control input

    def start(self, tokens: np.ndarray, controls: np.ndarray | None = None) -> np.ndarray:
        """Run the prompt [n, T], T <= context; return the logits [n, V] for the next token.

        `controls` as for `LSTMStepper.start`.
        """
        tokens = np.asarray(tokens, np.int64)
        self._refuse_longer_than_context(tokens)
        self._empty(len(tokens), controls)
        return self._forward(tokens)[:, -1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        return self._forward(np.asarray(tokens, np.int64)[:, None])[:, 0]

    def sequence_logits(self, tokens: np.ndarray,
                        controls: np.ndarray | None = None) -> np.ndarray:
        """The logits after every token of [n, T] (T <= context), from an empty cache.

        `controls` as for `start`, or [n, T, CONTROL_FEATURES]: one per token.
        """
        tokens = np.asarray(tokens, np.int64)
        self._refuse_longer_than_context(tokens)
        per_token = controls is not None and np.ndim(controls) == 3
        self._empty(len(tokens), None if per_token else controls)
        if per_token and self.controls is not None:
            return self._forward(tokens, np.asarray(controls, np.float32))
        return self._forward(tokens)

    def _refuse_longer_than_context(self, tokens: np.ndarray) -> None:
        # Longer, the ring buffer would wrap while it is filled and a later step be wrong.
        if tokens.shape[1] > self.context:
            raise ValueError(f"{tokens.shape[1]} tokens at once is longer than the context "
                             f"({self.context}); give at most the last {self.context}")

    def rows(self, index: np.ndarray) -> TransformerStepper:
        """A stepper holding only the given rows' caches."""
        kept = TransformerStepper(self.config, self.session)
        kept.keys = [keys[index] for keys in self.keys]
        kept.values = [values[index] for values in self.values]
        kept.position = self.position[index]
        if self.controls is not None:
            kept.controls = self.controls[index]
        return kept

    def _empty(self, rows: int, controls: np.ndarray | None = None) -> None:
        layers = self.config.n_layers
        self.keys = [np.zeros((rows, self.heads, self.head_dim, self.context), np.float32)
                     for _ in range(layers)]
        self.values = [np.zeros((rows, self.heads, self.context, self.head_dim), np.float32)
                       for _ in range(layers)]
        self.position = np.zeros(rows, np.int64)
        self.controls = row_controls(self.config, rows, controls)

    def close(self) -> None:
        """Drop the key/value cache."""
        self.keys, self.values, self.controls = [], [], None

    def _forward(self, tokens: np.ndarray, controls: np.ndarray | None = None) -> np.ndarray:
        """Run new tokens [n, T]; `controls` [n, T, CONTROL_FEATURES] in place of the rows'."""
        rows, steps = tokens.shape
        positions = self.position[:, None] + np.arange(steps)  # [n, T]
        angles = positions.astype(np.float32)[..., None] * self.inverse_frequency
        cos, sin = np.cos(angles), np.sin(angles)
        # The graph's channels are evens then odds per head (musicgen.serving_graph).
        cos, sin = np.concatenate((cos, cos), -1), np.concatenate((-sin, sin), -1)
        feed = {"tokens": tokens, "cos": cos.astype(np.float32), "sin": sin.astype(np.float32),
                "new_mask": np.triu(np.full((steps, steps), -np.inf, np.float32), k=1)}
        if self.controls is not None:  # [n, 1 or T, CONTROL_FEATURES]
            feed["controls"] = self.controls[:, None] if controls is None else controls
        if not self.position.any():
            # An empty cache: one masked slot stands in for it, so that a
            # prompt's T queries are not scored against `context` empty slots.
            feed["past_mask"] = np.full((rows, 1, 1, 1), -np.inf, np.float32)
            for k in range(self.config.n_layers):
                feed[f"keys_{k}"] = np.zeros((rows, self.heads, self.head_dim, 1), np.float32)
                feed[f"values_{k}"] = np.zeros((rows, self.heads, 1, self.head_dim), np.float32)
        else:
            if steps > 1:
                raise ValueError("several tokens at once only from an empty cache")
            slots = np.arange(self.context)
            # A slot can be seen if filled, unless this step's token overwrites it.
            filled = slots < np.minimum(self.position, self.context)[:, None]
            leaving = (self.position[:, None] >= self.context) & (
                slots == (self.position % self.context)[:, None])
            feed["past_mask"] = np.where(filled & ~leaving, 0.0, -np.inf).astype(
                np.float32)[:, None, None, :]
            for k in range(self.config.n_layers):
                feed[f"keys_{k}"], feed[f"values_{k}"] = self.keys[k], self.values[k]
        names = [f"new_{kind}_{k}" for k in range(self.config.n_layers)
                 for kind in ("keys", "values")]
        logits, *new = self.session.run(["logits", *names], feed)
        row_index = np.arange(rows)[:, None]
        written = positions % self.context  # [n, T]
        for k in range(self.config.n_layers):
            new_keys, new_values = new[2 * k], new[2 * k + 1]  # [n, heads, T, head_dim]
            # Through [n, slot, heads, head_dim] views of the caches.
            self.keys[k].transpose(0, 3, 1, 2)[row_index, written] = (
                new_keys.transpose(0, 2, 1, 3))
            self.values[k].transpose(0, 2, 1, 3)[row_index, written] = (
                new_values.transpose(0, 2, 1, 3))
        self.position = self.position + steps
        return logits


def merged(steppers: list[LSTMStepper | TransformerStepper]) -> LSTMStepper | TransformerStepper:
    """One stepper whose rows are those of `steppers`, in order (all of one model)."""
    first = steppers[0]
    if isinstance(first, LSTMStepper):
        joined = LSTMStepper(first.config, first.session)
        joined.state = {name: np.concatenate([s.state[name] for s in steppers])
                        for name in first.state}
        if first.held_ages is not None:
            joined.held_ages = np.concatenate([s.held_ages for s in steppers])
    else:
        joined = TransformerStepper(first.config, first.session)
        joined.keys = [np.concatenate([s.keys[k] for s in steppers])
                       for k in range(len(first.keys))]
        joined.values = [np.concatenate([s.values[k] for s in steppers])
                         for k in range(len(first.values))]
        joined.position = np.concatenate([s.position for s in steppers])
    if first.controls is not None:
        joined.controls = np.concatenate([s.controls for s in steppers])
    return joined
