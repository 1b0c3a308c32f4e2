"""One-token steps for torch models: the numpy steppers on CPU, torch's own elsewhere.

Shipped checkpoints are sampled through `musicgen.serving` without torch; this
module is for models that live in torch (during training, in tests, on a
GPU). On the CPU their weights are copied into the numpy steppers of
`musicgen.serving`, which are faster there; on a GPU torch steps itself.
"""

from __future__ import annotations

import numpy as np
import torch

from musicgen.model import LSTMModel, TransformerModel
from musicgen.serving import (
    NumpyLSTMStepper,
    NumpyTransformerStepper,
    lstm_layout,
    transformer_layout,
)


class TorchStepper:
    """Any model with the forward/step interface of `musicgen.model`, in eval mode."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.state = None
        self._was_training = model.training
        model.eval()

    @torch.inference_mode()
    def start(self, tokens: np.ndarray) -> np.ndarray:
        """Run the prompt [n, T]; return the logits [n, V] for the next token."""
        logits, self.state = self.model(torch.from_numpy(tokens).to(self.device))
        return logits[:, -1].float().cpu().numpy()

    @torch.inference_mode()
    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        logits, self.state = self.model.step(torch.from_numpy(tokens).to(self.device),
                                             self.state)
        return logits.float().cpu().numpy()

    def close(self) -> None:
        """Drop the state and give the model back its training mode."""
        self.state = None
        self.model.train(self._was_training)


def stepper_for(model: torch.nn.Module) -> TorchStepper | NumpyLSTMStepper | (
        NumpyTransformerStepper):
    """The fastest stepper for a torch model where it lives: numpy on CPU, torch elsewhere."""
    if next(model.parameters()).device.type == "cpu":
        if isinstance(model, LSTMModel):
            return NumpyLSTMStepper(model.config, _layout(model, lstm_layout))
        if isinstance(model, TransformerModel):
            return NumpyTransformerStepper(model.config, _layout(model, transformer_layout))
    return TorchStepper(model)


def _layout(model: torch.nn.Module, layout) -> tuple:
    """`layout(weights, config)`, computed once per model and kept until a parameter changes.

    Laying out weights takes tens of milliseconds, as long as ~100 steps, so
    they are reused until a parameter's data pointer or its version counter
    (bumped by every in-place update, e.g. an optimizer step) differs.
    """
    key = (layout.__name__, tuple((p.data_ptr(), p._version) for p in model.parameters()))
    cached = getattr(model, "_numpy_step_weights", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    weights = {name: tensor.detach().float().cpu().numpy()
               for name, tensor in model.state_dict().items()}
    prepared = layout(weights, model.config)
    object.__setattr__(model, "_numpy_step_weights", (key, prepared))
    return prepared
