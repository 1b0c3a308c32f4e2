"""The numpy float32 steppers that served sampling before the int8 graph (commit 26bae35).

Kept here, as bench/sampling.py keeps the course's re-feeding sampler, so that
the serving graph's speed is always measured against them in the same run on
the same machine (issue 14's rule: judge a change by a ratio). Not used by the
app.

    model = numpy_serving_model("checkpoints/lstm")   # has .stepper() and .context
    with one_blas_thread():                            # as musicgen.sample ran them then
        generate(model, prompt, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from musicgen.checkpoint import checked_weights
from musicgen.configs import LSTMConfig, ModelConfig, TransformerConfig, config_from_dict
from musicgen.events import held_ages, held_features
from musicgen.serving_graph import checked_float_weights, transformer_weights


@dataclass
class NumpyModel:
    """What `musicgen.sample.generate` needs of a model: `stepper()` and `context`."""

    config: ModelConfig
    weights: dict[str, np.ndarray]
    _prepared: tuple | None = field(default=None, repr=False)

    @property
    def context(self) -> int | None:
        return self.config.context if isinstance(self.config, TransformerConfig) else None

    def stepper(self):
        if self._prepared is None:
            layout = (lstm_layout if isinstance(self.config, LSTMConfig) else
                      transformer_layout)
            self._prepared = layout(self.weights, self.config)
        if isinstance(self.config, LSTMConfig):
            return NumpyLSTMStepper(self.config, self._prepared)
        return NumpyTransformerStepper(self.config, self._prepared)


def numpy_serving_model(path) -> NumpyModel:
    """A checkpoint's float32 weights in the old numpy steppers."""
    weights_path, card = checked_weights(path)
    config = config_from_dict(card["config"])
    return NumpyModel(config, checked_float_weights(weights_path, config))


# --- the LSTM ---

def lstm_layout(weights: dict[str, np.ndarray], config: LSTMConfig) -> tuple:
    """The LSTM's weights laid out for `NumpyLSTMStepper`.

    Returns:
        (first layer's input table [V, 4 x hidden], per layer (input weights,
        recurrent weights, bias) transposed for x @ W, with None for the first
        layer's input weights and bias, which the table holds; head weight, head
        bias; the held-note input's first-layer weights [256, 4 x hidden] or None).
    """
    size = config.hidden_size
    # sigmoid(x) = (tanh(x / 2) + 1) / 2: halving the input, forget and output
    # gates' weights here lets one tanh call serve all four gates per step.
    scale = np.full(4 * size, 0.5, np.float32)
    scale[2 * size:3 * size] = 1.0  # the cell gate (PyTorch order i, f, g, o) is a tanh
    layers = []
    for k in range(config.num_layers):
        input_weights = weights[f"lstm.weight_ih_l{k}"].T * scale
        recurrent = np.ascontiguousarray(weights[f"lstm.weight_hh_l{k}"].T * scale)
        bias = (weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"]) * scale
        layers.append([np.ascontiguousarray(input_weights), recurrent, bias])
    first_inputs, _, first_bias = layers[0]
    input_table = weights["embed.weight"] @ first_inputs + first_bias
    held = (weights["held.weight"].T @ first_inputs if config.held_notes_input else None)
    layers[0] = [None, layers[0][1], None]
    return (input_table, [tuple(layer) for layer in layers],
            np.ascontiguousarray(weights["head.weight"].T), weights["head.bias"], held)


class NumpyLSTMStepper:
    """The LSTM's step in float32 numpy.

    The first layer's input projection of every token (embedding times input
    weights, plus bias) is a table computed once, so a step reads a row of it
    instead of the embedding and the input weights.
    """

    def __init__(self, config: LSTMConfig, layout: tuple):
        self.hidden = config.hidden_size
        self.input_table, self.layers, self.head_weight, self.head_bias, self.held = layout
        self.h = self.c = self.ages = None

    def start(self, tokens: np.ndarray, controls=None) -> np.ndarray:
        """Run the prompt [n, T]; return the logits [n, V] for the next token.

        Layer by layer: the input projections of all T steps are one matrix
        product, and only the recurrent weights are read per step.
        """
        rows, steps = tokens.shape
        self.h = np.zeros((len(self.layers), rows, self.hidden), np.float32)
        self.c = np.zeros_like(self.h)
        below = None  # the outputs of the layer below [n, T, hidden]
        for k, (input_weights, recurrent, bias) in enumerate(self.layers):
            projected = (self.input_table[tokens] if k == 0  # [n, T, 4 x hidden]
                         else below @ input_weights + bias)
            if k == 0 and self.held is not None:
                ages = held_ages(tokens)
                projected = projected + held_features(ages) @ self.held
                self.ages = ages[:, -1]
            below = np.empty((rows, steps, self.hidden), np.float32)
            for t in range(steps):
                self._cell(k, projected[:, t] + self.h[k] @ recurrent)
                below[:, t] = self.h[k]
        return below[:, -1] @ self.head_weight + self.head_bias

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        for k, (input_weights, recurrent, bias) in enumerate(self.layers):
            projected = (self.input_table[tokens] if k == 0
                         else self.h[k - 1] @ input_weights + bias)
            if k == 0 and self.held is not None:
                self.ages = held_ages(tokens[:, None], self.ages)[:, 0]
                projected = projected + held_features(self.ages) @ self.held
            self._cell(k, projected + self.h[k] @ recurrent)
        return self.h[-1] @ self.head_weight + self.head_bias

    def close(self) -> None:
        """Drop the state."""
        self.h = self.c = self.ages = None

    def _cell(self, layer: int, preactivation: np.ndarray) -> None:
        """Update h and c of one layer from its (pre-scaled) gate preactivations."""
        size = self.hidden
        gates = np.tanh(preactivation)
        i, f = gates[:, :size] + 1, gates[:, size:2 * size] + 1  # 2 x sigmoid
        g, o = gates[:, 2 * size:3 * size], gates[:, 3 * size:] + 1
        self.c[layer] = 0.5 * (f * self.c[layer] + i * g)
        self.h[layer] = 0.5 * o * np.tanh(self.c[layer])


# --- the Transformer ---

def transformer_layout(weights: dict[str, np.ndarray], config: TransformerConfig) -> tuple:
    """The Transformer's weights laid out for `NumpyTransformerStepper`: the serving
    graph's folding (`musicgen.serving_graph.transformer_weights`), as tuples."""
    folded = transformer_weights(weights, config)
    layers = [tuple(np.ascontiguousarray(layer[name]) for name in (
        "qkv", "qkv_bias", "proj", "proj_bias", "up", "up_bias", "down", "down_bias"))
        for layer in folded["layers"]]
    head_weight, head_bias = folded["head"]
    return folded["embedding"], layers, np.ascontiguousarray(head_weight), head_bias


class NumpyTransformerStepper:
    """The Transformer's KV-cached step in float32 numpy.

    Each layer's keys and values live in a ring buffer of `context` slots: a
    new token's key overwrites the oldest one, which is the model's sliding
    window (context - 1 past tokens plus the current one). The order of the
    slots does not matter, since RoPE has already rotated each key by its own
    position and softmax attention is a sum over keys. Likewise the channels
    of queries and keys are reordered per head, evens then odds (a dot product
    does not change when both sides are permuted alike), which makes RoPE two
    products and a sum on contiguous halves.
    """

    def __init__(self, config: TransformerConfig, layout: tuple):
        self.heads, self.head_dim = config.n_heads, config.d_model // config.n_heads
        self.context = config.context
        self.inverse_frequency = (config.rope_base ** (
            -np.arange(0, self.head_dim, 2, dtype=np.float32) / self.head_dim)).astype(np.float32)
        half = self.head_dim // 2
        self.swap_halves = np.concatenate((np.arange(half, 2 * half), np.arange(half)))
        self.embedding, self.layers, self.head_weight, self.head_bias = layout
        self.keys = self.values = None
        self.position = 0

    def start(self, tokens: np.ndarray, controls=None) -> np.ndarray:
        """Run the prompt [n, T], T <= context; return the logits [n, V] for the next token."""
        rows, steps = tokens.shape
        if steps > self.context:
            raise ValueError(f"a prompt of {steps} tokens is longer than the context "
                             f"({self.context}); keep its last {self.context - 1}")
        shape = (len(self.layers), rows, self.heads, self.context, self.head_dim)
        self.keys, self.values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.position = 0
        causal = np.triu(np.full((steps, steps), -np.inf, np.float32), k=1)
        return self._forward(tokens, causal)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        return self._forward(tokens[:, None], None)

    def close(self) -> None:
        """Drop the key/value cache."""
        self.keys = self.values = None

    def _forward(self, tokens: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        rows, steps = tokens.shape
        positions = np.arange(self.position, self.position + steps)
        cos, sin = rope_tables(positions, self.inverse_frequency)
        cos, sin = np.concatenate((cos, cos), axis=1), np.concatenate((-sin, sin), axis=1)
        slots = positions % self.context
        seen = min(self.position + steps, self.context)
        x = self.embedding[tokens]  # [n, T, d]
        for k, (qkv, qkv_bias, proj, proj_bias, up, up_bias, down, down_bias) in enumerate(
                self.layers):
            qkv_heads = (normalized(x) @ qkv + qkv_bias).reshape(
                rows, steps, 3, self.heads, self.head_dim).transpose(2, 0, 3, 1, 4)
            query_key = qkv_heads[:2]  # [2, n, H, T, D], channels evens then odds
            q, key = query_key * cos + query_key[..., self.swap_halves] * sin
            self.keys[k][:, :, slots] = key
            self.values[k][:, :, slots] = qkv_heads[2]
            # Scores of the T queries against every filled slot [n, H, T, seen].
            scores = q @ self.keys[k][:, :, :seen].swapaxes(-1, -2)
            if mask is not None:
                scores += mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = (scores @ self.values[k][:, :, :seen]).transpose(0, 2, 1, 3)
            x = x + attended.reshape(rows, steps, -1) @ proj + proj_bias
            x = x + gelu(normalized(x) @ up + up_bias) @ down + down_bias
        self.position += steps
        return normalized(x[:, -1]) @ self.head_weight + self.head_bias


def normalized(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """LayerNorm without its affine part (folded into the next weights)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)


def rope_tables(positions: np.ndarray, inverse_frequency: np.ndarray) -> tuple:
    """cos and sin [T, head_dim / 2], computed in float32 as `model.rope_tables` does."""
    angles = positions.astype(np.float32)[:, None] * inverse_frequency[None, :]
    return np.cos(angles), np.sin(angles)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as `nn.GELU()`; erf from Abramowitz & Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) * np.float32(0.5 ** 0.5)
    t = 1.0 / (1.0 + 0.3275911 * z)
    polynomial = t * (0.254829592 + t * (-0.284496736 + t * (
        1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.copysign(1.0 - polynomial * np.exp(-z * z), x)
    return 0.5 * x * (1.0 + erf)


def one_blas_thread():
    """BLAS capped at one thread, as `musicgen.sample` capped it around its loop then."""
    return threadpool_limits(limits=1, user_api="blas")
