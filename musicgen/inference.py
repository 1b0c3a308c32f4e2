"""One-token steps for torch models: the serving graph on CPU, torch's own elsewhere.

Shipped checkpoints are sampled through `musicgen.serving` without torch; this
module is for models that live in torch (during training, in tests, on a
GPU). On the CPU their weights become the same int8 serving graph as a
shipped checkpoint's (`musicgen.serving_graph`), which is faster there and
samples what the exported model will; on a GPU torch steps itself.
"""

from __future__ import annotations

import numpy as np
import torch

from musicgen.model import LSTMModel, TransformerModel
from musicgen.serving import (
    LSTMStepper,
    ServingModel,
    TransformerStepper,
    row_controls,
    session_for,
)
from musicgen.serving_graph import serving_graph


class TorchStepper:
    """Any model with the forward/step interface of `musicgen.model`, in eval mode."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.state = None
        self.controls: torch.Tensor | None = None
        self._was_training = model.training
        model.eval()

    @torch.inference_mode()
    def start(self, tokens: np.ndarray, controls: np.ndarray | None = None) -> np.ndarray:
        """Run the prompt [n, T]; return the logits [n, V] for the next token.

        `controls` as for `musicgen.serving.LSTMStepper.start`.
        """
        config = getattr(self.model, "config", None)  # any module with the interface
        rows = None if config is None else row_controls(config, len(tokens), controls)
        self.controls = None if rows is None else torch.from_numpy(rows).to(self.device)
        logits, self.state = self.model(torch.from_numpy(tokens).to(self.device),
                                        **self._controls())
        return logits[:, -1].float().cpu().numpy()

    @torch.inference_mode()
    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row [n]; return the next logits [n, V]."""
        logits, self.state = self.model.step(torch.from_numpy(tokens).to(self.device),
                                             self.state, **self._controls())
        return logits.float().cpu().numpy()

    def _controls(self) -> dict:
        # Only a model with a control input is given them: the interface of a
        # model without one is forward(tokens, state) and step(token, state).
        return {} if self.controls is None else {"controls": self.controls}

    def close(self) -> None:
        """Drop the state and give the model back its training mode."""
        self.state = None
        self.model.train(self._was_training)


def stepper_for(model: torch.nn.Module) -> TorchStepper | LSTMStepper | TransformerStepper:
    """The fastest stepper for a torch model: the serving graph on CPU, torch elsewhere."""
    if next(model.parameters()).device.type == "cpu" and isinstance(
            model, LSTMModel | TransformerModel):
        return serving_model(model).stepper()
    return TorchStepper(model)


def serving_model(model: torch.nn.Module) -> ServingModel:
    """The model's serving form, built once and kept until a parameter changes.

    Building it takes about a second for the shipped sizes, as long as ~1,000
    steps, so it is reused until a parameter's data pointer or its version
    counter (bumped by every in-place update, e.g. an optimizer step) differs.
    """
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    cached = getattr(model, "_serving_model", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    weights = {name: tensor.detach().float().cpu().numpy()
               for name, tensor in model.state_dict().items()}
    graph = serving_graph(weights, model.config).SerializeToString()
    served = ServingModel(model.config, session_for(graph))
    object.__setattr__(model, "_serving_model", (key, served))
    return served
