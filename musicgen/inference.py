"""Run a model one token at a time for sampling: numpy for the LSTM on CPU, torch otherwise.

Why numpy: at batch 1 an LSTM step is three matrix-vector products, and on
this project's AMD CPUs torch's CPU matmul takes about 0.8 ms for them where
numpy's OpenBLAS takes about 0.2 ms (bench/sampling.py); the rest of a step
is a handful of elementwise operations that numpy also dispatches faster.
Both steppers give the same logits as `model.step` (tested to 1e-5).
"""

from __future__ import annotations

import numpy as np
import torch

from musicgen.model import LSTMModel


class TorchStepper:
    """Any model with the forward/step interface of `musicgen.model`."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.state = None

    def start(self, tokens: np.ndarray) -> np.ndarray:
        """Run the primer [n, T]; return the logits [n, V] for the next token."""
        logits, self.state = self.model(torch.from_numpy(tokens).to(self.device))
        return logits[:, -1].float().cpu().numpy()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        logits, self.state = self.model.step(torch.from_numpy(tokens).to(self.device),
                                             self.state)
        return logits.float().cpu().numpy()


class NumpyLSTMStepper:
    """The LSTM's step in float32 numpy, with input and recurrent weights fused per layer."""

    def __init__(self, model: LSTMModel):
        self.hidden = model.lstm.hidden_size
        self.embedding, self.layers, self.head_weight, self.head_bias = _numpy_weights(model)
        self.h = self.c = None

    def start(self, tokens: np.ndarray) -> np.ndarray:
        """Run the primer [n, T]; return the logits [n, V] for the next token.

        Layer by layer: the input projections of all T steps are one matrix
        product, and only the recurrent half of the weights is read per step.
        """
        rows, steps = tokens.shape
        self.h = np.zeros((len(self.layers), rows, self.hidden), np.float32)
        self.c = np.zeros_like(self.h)
        x = self.embedding[tokens]  # [n, T, inputs]
        for k, (weights, bias) in enumerate(self.layers):
            inputs = x.shape[-1]
            projected = x @ weights[:inputs] + bias
            recurrent = weights[inputs:]
            outputs = np.empty((rows, steps, self.hidden), np.float32)
            for t in range(steps):
                self._cell(k, projected[:, t] + self.h[k] @ recurrent)
                outputs[:, t] = self.h[k]
            x = outputs
        return x[:, -1] @ self.head_weight + self.head_bias

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        x = self.embedding[tokens]
        for k, (weights, bias) in enumerate(self.layers):
            self._cell(k, np.concatenate((x, self.h[k]), axis=1) @ weights + bias)
            x = self.h[k]
        return x @ self.head_weight + self.head_bias

    def _cell(self, layer: int, preactivation: np.ndarray) -> None:
        """Update h and c of one layer from its (pre-scaled) gate preactivations."""
        size = self.hidden
        gates = np.tanh(preactivation)
        i, f = gates[:, :size] + 1, gates[:, size:2 * size] + 1  # 2 x sigmoid
        g, o = gates[:, 2 * size:3 * size], gates[:, 3 * size:] + 1
        self.c[layer] = 0.5 * (f * self.c[layer] + i * g)
        self.h[layer] = 0.5 * o * np.tanh(self.c[layer])


def _numpy_weights(model: LSTMModel) -> tuple:
    """The LSTM's weights laid out for `NumpyLSTMStepper`, prepared once per model.

    Preparing them takes ~40 ms, as long as ~100 steps, so they are kept on the
    model and reused until a parameter changes: its data pointer or its version
    counter (bumped by every in-place update, e.g. an optimizer step) differs.
    """
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    cached = getattr(model, "_numpy_step_weights", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    lstm, size = model.lstm, model.lstm.hidden_size
    # sigmoid(x) = (tanh(x / 2) + 1) / 2: halving the input, forget and output
    # gates' weights here lets one tanh call serve all four gates per step.
    scale = np.full(4 * size, 0.5, np.float32)
    scale[2 * size:3 * size] = 1.0  # the cell gate (PyTorch order i, f, g, o) is a tanh
    layers = []
    for k in range(lstm.num_layers):
        weights = torch.cat((getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")),
                            dim=1)
        bias = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")
        layers.append((np.ascontiguousarray(_array(weights).T * scale), _array(bias) * scale))
    weights = (_array(model.embed.weight), layers,
               np.ascontiguousarray(_array(model.head.weight).T), _array(model.head.bias))
    object.__setattr__(model, "_numpy_step_weights", (key, weights))
    return weights


def stepper_for(model: torch.nn.Module) -> TorchStepper | NumpyLSTMStepper:
    """The fastest stepper for a model where it lives."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return NumpyLSTMStepper(model) if on_cpu and isinstance(model, LSTMModel) else (
        TorchStepper(model))


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()
