"""The serving graph: the float graph is the model, the int8 graph costs at most
0.01 nats/event, rows do not depend on their batch, and stale exports are refused."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint

from musicgen.checkpoint import SERVING, save_weights
from musicgen.configs import LSTMConfig, TransformerConfig
from musicgen.controls import control_features
from musicgen.errors import UserError
from musicgen.inference import TorchStepper
from musicgen.model import build_model
from musicgen.serving import ServingModel, load_serving, merged, session_for
from musicgen.serving_graph import export_serving, serving_graph

SMALL = {
    "lstm": LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2, dropout=0.0),
    "lstm-held": LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2, dropout=0.0,
                            held_notes_input=True),
    "transformer": TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, context=16,
                                     dropout=0.0),
    "lstm-controls": LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2, dropout=0.0,
                                held_notes_input=True, control_input=True),
    "transformer-controls": TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128,
                                              context=16, dropout=0.0, control_input=True),
}


def row_controls_for(kind: str, rows: int, seed: int = 0) -> np.ndarray | None:
    """Different controls for each row, from random music (None for a model without them)."""
    if not SMALL[kind].control_input:
        return None
    music = np.random.default_rng(seed).integers(3, 391, (rows, 300))
    controls = control_features(music)
    controls[0] = 0.0  # one row plays free
    return controls


def served(model: torch.nn.Module, quantized: bool) -> ServingModel:
    weights = {name: tensor.detach().float().numpy()
               for name, tensor in model.state_dict().items()}
    graph = serving_graph(weights, model.config, quantized=quantized).SerializeToString()
    return ServingModel(model.config, session_for(graph))


def perturbed(config) -> torch.nn.Module:
    """A model whose LayerNorms and biases are away from 1 and 0, as after training."""
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("kind", SMALL)
def test_the_float_graph_steps_as_the_torch_model_past_the_context(kind):
    model = perturbed(SMALL[kind])
    tokens = np.random.default_rng(0).integers(0, 391, (3, 60))
    fast, reference = served(model, quantized=False).stepper(), TorchStepper(model)
    controls = row_controls_for(kind, len(tokens))
    with torch.no_grad():
        np.testing.assert_allclose(fast.start(tokens[:, :10], controls),
                                   reference.start(tokens[:, :10], controls),
                                   atol=1e-4, rtol=1e-4)
        for t in range(10, 60):  # 60 tokens through a 16-token window: the cache slides
            np.testing.assert_allclose(fast.step(tokens[:, t]), reference.step(tokens[:, t]),
                                       atol=1e-4, rtol=1e-4)


def markov_sequences(count: int, length: int, seed: int) -> torch.Tensor:
    """Sequences of a chain over 48 tokens, each with two successors (0.7 / 0.3): 0.61 nats."""
    rng = np.random.default_rng(1234)  # the chain is fixed; `seed` draws the sequences
    successors = rng.integers(100, 148, (391, 2))
    draw = np.random.default_rng(seed)
    sequences = np.empty((count, length), np.int64)
    sequences[:, 0] = draw.integers(100, 148, count)
    for t in range(1, length):
        pick = (draw.random(count) < 0.7).astype(int)
        sequences[:, t] = successors[sequences[:, t - 1], pick]
    return torch.from_numpy(sequences)


# Without the control kinds: trained here without controls, they are the plain models.
@pytest.mark.parametrize("kind", ["lstm", "lstm-held", "transformer"])
def test_int8_weights_cost_at_most_a_hundredth_of_a_nat_per_event(kind):
    torch.manual_seed(0)
    model = build_model(SMALL[kind])
    train = markov_sequences(128, 16, seed=0)  # within the 16-token window
    rate = 2e-3 if kind.startswith("transformer") else 1e-2
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate)
    for _ in range(300):
        logits, _ = model(train[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 391), train[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    held_out = markov_sequences(32, 16, seed=1).numpy()

    def nll(logits: np.ndarray) -> float:
        logits = logits.astype(np.float64)
        log_norm = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        chosen = np.take_along_axis(logits[:, :-1], held_out[:, 1:, None], -1)[..., 0]
        return float((log_norm[:, :-1] - chosen).mean())

    with torch.no_grad():
        reference = nll(model(torch.from_numpy(held_out))[0].numpy())
    quantized = nll(served(model, quantized=True).stepper().sequence_logits(held_out))
    assert reference < 2.0  # learned the chain (uniform: 5.97): the bound means something
    assert abs(quantized - reference) <= 0.01


@pytest.mark.parametrize("kind", SMALL)
def test_a_row_gives_the_same_numbers_alone_or_in_a_batch(kind):
    model = served(perturbed(SMALL[kind]), quantized=True)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 391, (1, length)) for length in (5, 9, 14)]
    controls = row_controls_for(kind, len(prompts))
    alone = _started(model, prompts, controls)
    # Rows at different positions, as requests are.
    batch = merged(_started(model, prompts, controls))
    for _ in range(30):  # past the Transformer's 16-token window
        tokens = rng.integers(3, 391, len(prompts))
        together = batch.step(tokens)
        for row, stepper in enumerate(alone):
            assert np.array_equal(stepper.step(tokens[row:row + 1])[0], together[row])


def _started(model: ServingModel, prompts: list[np.ndarray],
             controls: np.ndarray | None = None) -> list:
    steppers = [model.stepper() for _ in prompts]
    for row, (stepper, prompt) in enumerate(zip(steppers, prompts, strict=True)):
        stepper.start(prompt, None if controls is None else controls[row])
    return steppers


@pytest.mark.parametrize("kind", ["lstm-controls", "transformer-controls"])
def test_the_controls_change_the_music_and_free_is_the_model_without_them(kind):
    model = perturbed(SMALL[kind])
    tokens = np.random.default_rng(0).integers(3, 391, (3, 12))
    stepper = served(model, quantized=True).stepper()
    controls = row_controls_for(kind, 3)
    steered = stepper.start(tokens, controls)
    free = stepper.start(tokens)
    assert np.array_equal(steered[0], free[0])  # row 0's controls are all free
    assert not np.allclose(steered[1:], free[1:], atol=1e-3)
    with torch.no_grad():
        model.control.weight.zero_()  # as `train --init-from` starts it
    untaught = served(model, quantized=True).stepper()
    base = SMALL[kind.removesuffix("-controls") + ("-held" if "lstm" in kind else "")]
    without = build_model(base).eval()
    without.load_state_dict({k: v for k, v in model.state_dict().items()
                             if not k.startswith("control.")})
    # Equal to rounding: the graphs differ by an Add of zeros, which ONNX Runtime may fuse.
    np.testing.assert_allclose(untaught.start(tokens, controls),
                               served(without, quantized=True).stepper().start(tokens),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", SMALL)
def test_the_exported_serving_form_is_what_load_serving_runs(tmp_path, kind):
    model = perturbed(SMALL[kind])
    save_weights(tmp_path / "ckpt", model, {"config": asdict(model.config)})
    in_memory = load_serving(tmp_path / "ckpt")[0].stepper()  # built on the fly
    export_serving(tmp_path / "ckpt")
    exported, card = load_serving(tmp_path / "ckpt")
    assert card["serving"]["file"] == SERVING
    tokens = np.random.default_rng(0).integers(3, 391, (2, 12))
    assert np.array_equal(exported.stepper().start(tokens), in_memory.start(tokens))


def test_a_serving_form_left_by_other_weights_is_refused(tmp_path):
    path = tiny_checkpoint(tmp_path / "a")
    export_serving(path)
    other = tiny_checkpoint(tmp_path / "b", seed=1)
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    card = json.loads((path / "card.json").read_text())
    card["weights_sha256"] = json.loads((other / "card.json").read_text())["weights_sha256"]
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="not the one its card names"):
        load_serving(path)
    export_serving(path)  # made again from these weights: fine
    load_serving(path)
    (path / SERVING).write_bytes((path / SERVING).read_bytes() + b"\0")  # damaged
    with pytest.raises(UserError, match="not the one its card names"):
        load_serving(path)
