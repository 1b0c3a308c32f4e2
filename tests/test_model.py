"""Both models: they learn, their incremental step equals the full forward, and
checkpoints round-trip through safetensors without pickle."""

import json

import pytest
import torch

from musicgen.checkpoint import load_checkpoint, read_card, save_weights
from musicgen.events import VOCAB
from musicgen.model import (
    LSTMConfig,
    TransformerConfig,
    build_model,
    config_from_dict,
    count_parameters,
)

TINY = {
    "lstm": LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2, dropout=0.0),
    "transformer": TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, context=64,
                                     dropout=0.0),
}


@pytest.mark.parametrize("kind", TINY)
def test_overfits_a_tiny_corpus(kind):
    torch.manual_seed(0)
    model = build_model(TINY[kind])
    # Four fixed 33-token sequences: memorisable, so the loss must go to ~0.
    data = torch.randint(3, 391, (4, 33), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        logits, _ = model(data[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 391), data[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("kind", TINY)
def test_incremental_steps_equal_the_full_forward(kind):
    torch.manual_seed(0)
    model = build_model(TINY[kind]).eval()
    tokens = torch.randint(0, 391, (3, 40))
    with torch.no_grad():
        full, _ = model(tokens)
        # A prompt of 10 in one call, then one token at a time with the carried state.
        logits, state = model(tokens[:, :10])
        steps = [logits]
        for t in range(10, 40):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits[:, None])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_transformer_cache_slides_past_its_context():
    from dataclasses import replace
    # One layer: the last prediction must equal a fresh pass over exactly the last
    # `context` tokens, since RoPE makes attention depend on relative positions only.
    # (With more layers, cached keys also carry what their tokens saw earlier.)
    config = replace(TINY["transformer"], n_layers=1)
    model = build_model(config).eval()
    tokens = torch.randint(0, 391, (1, config.context + 20))
    with torch.no_grad():
        logits, state = model(tokens[:, :1])
        for t in range(1, tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
        caches, position = state
        reference, _ = model(tokens[:, -config.context:])
    assert caches[0][0].shape[2] == config.context - 1
    assert position == tokens.shape[1]
    torch.testing.assert_close(logits, reference[:, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", TINY)
def test_checkpoint_round_trip(kind, tmp_path):
    from dataclasses import asdict
    model = build_model(TINY[kind])
    save_weights(tmp_path / "ckpt", model, {"config": asdict(TINY[kind]), "name": "tiny"})
    loaded, card = load_checkpoint(tmp_path / "ckpt")
    assert card["name"] == "tiny" and card["vocab"]["size"] == 391
    assert count_parameters(loaded) == count_parameters(model)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    # The bare safetensors file carries the same card in its header.
    assert read_card(tmp_path / "ckpt" / "model.safetensors")["name"] == "tiny"


def test_fp16_checkpoint_loads_as_float32(tmp_path):
    from dataclasses import asdict
    model = build_model(TINY["lstm"])
    save_weights(tmp_path / "half", model, {"config": asdict(TINY["lstm"])}, dtype=torch.float16)
    loaded, _ = load_checkpoint(tmp_path / "half")
    weight = loaded.head.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.head.weight, atol=1e-3, rtol=1e-3)


def test_checkpoint_from_a_gpu_run_maps_to_cpu(tmp_path, monkeypatch):
    """Weights are always read onto the CPU first; a CUDA run's card loads anywhere."""
    from dataclasses import asdict

    import safetensors.torch as st
    seen = []
    real_load_model = st.load_model

    def spy(model, filename, strict=True, device="cpu"):
        seen.append(device)
        return real_load_model(model, filename, strict=strict, device=device)

    monkeypatch.setattr(st, "load_model", spy)  # checkpoint.py imports it when loading
    model = build_model(TINY["lstm"])
    card = {"config": asdict(TINY["lstm"]), "training": {"hardware": "1 x NVIDIA H100"}}
    save_weights(tmp_path / "gpu", model, card)
    loaded, card = load_checkpoint(tmp_path / "gpu", device="cpu")
    assert seen == ["cpu"]
    assert next(loaded.parameters()).device.type == "cpu"


def test_loading_refuses_other_vocabularies(tmp_path):
    from dataclasses import asdict
    save_weights(tmp_path / "c", build_model(TINY["lstm"]), {"config": asdict(TINY["lstm"])})
    card = json.loads((tmp_path / "c" / "card.json").read_text())
    card["vocab"]["version"] = "other"
    (tmp_path / "c" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="vocabulary"):
        load_checkpoint(tmp_path / "c")


def test_config_round_trip_and_unknown_keys_or_kinds_are_refused():
    from dataclasses import asdict

    from musicgen.errors import SettingsError
    from musicgen.model import make_config

    config = TINY["transformer"]
    assert config_from_dict(asdict(config)) == config
    with pytest.raises(SettingsError, match="no setting called hiden_size"):
        make_config("lstm", hiden_size=64)
    with pytest.raises(SettingsError, match="no model kind called gru"):
        config_from_dict({**asdict(TINY["lstm"]), "kind": "gru"})
    with pytest.raises(SettingsError, match="no setting called future_setting"):
        config_from_dict({**asdict(config), "future_setting": 1})


@pytest.mark.parametrize("kind", TINY)
def test_sampling_on_cpu_uses_the_serving_graph(kind):
    from musicgen.inference import stepper_for
    from musicgen.serving import LSTMStepper, TransformerStepper
    expected = {"lstm": LSTMStepper, "transformer": TransformerStepper}[kind]
    assert isinstance(stepper_for(build_model(TINY[kind])), expected)


def test_a_held_note_input_starts_as_the_model_without_it_and_carries_its_state(tmp_path):
    from pathlib import Path

    from musicgen.train import _load_initial_weights

    torch.manual_seed(0)
    plain = build_model(TINY["lstm"]).eval()
    save_weights(tmp_path / "plain", plain, {"config": {"kind": "lstm"}})
    held = build_model(LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2, dropout=0.0,
                                  held_notes_input=True)).eval()
    _load_initial_weights(held, Path(tmp_path / "plain" / "model.safetensors"),
                          torch.device("cpu"))
    tokens = torch.randint(3, 391, (3, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(held(tokens)[0], plain(tokens)[0])  # zero until trained
        torch.nn.init.normal_(held.held.weight, std=0.5)
        full, _ = held(tokens)
        first, state = held(tokens[:, :20])
        rest, _ = held(tokens[:, 20:], state)
        torch.testing.assert_close(torch.cat((first, rest), 1), full)
        assert not torch.allclose(full, plain(tokens)[0])  # the input is read
        # What sounds before a window changes what the model predicts in it.
        sounding = torch.full((3, 128), -1)
        sounding[:, 60] = 150
        assert not torch.allclose(held(tokens, held.start_state(sounding))[0], full)


@pytest.mark.parametrize("kind", TINY)
def test_a_withheld_token_is_not_seen_but_the_held_note_input_still_follows_it(kind):
    torch.manual_seed(0)
    config = TINY[kind]
    if kind == "lstm":
        config = LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2, dropout=0.0,
                            held_notes_input=True)
    model = build_model(config).eval()
    one = torch.randint(3, 391, (1, 40), generator=torch.Generator().manual_seed(3))
    other = one.clone()
    one[0, 10], other[0, 10] = VOCAB["note_on"].token(60), VOCAB["note_on"].token(72)
    withheld = torch.zeros_like(one, dtype=torch.bool)
    withheld[0, 10] = True
    with torch.no_grad():
        assert not torch.allclose(model(one)[0][:, 10:], model(other)[0][:, 10:])
        if kind == "lstm":  # the held-note input starts at zero: the token is unseen
            torch.testing.assert_close(model(one, withheld=withheld)[0],
                                       model(other, withheld=withheld)[0])
            torch.nn.init.normal_(model.held.weight, std=0.5)
            # ... until it is trained: then it tells which key went down.
            assert not torch.allclose(model(one, withheld=withheld)[0][:, 10:],
                                      model(other, withheld=withheld)[0][:, 10:])
        else:
            torch.testing.assert_close(model(one, withheld=withheld)[0],
                                       model(other, withheld=withheld)[0])


def test_weights_that_do_not_fit_apart_from_the_held_note_input_are_refused(tmp_path):
    from pathlib import Path

    from musicgen.errors import UserError
    from musicgen.train import _load_initial_weights

    save_weights(tmp_path / "small", build_model(TINY["lstm"]), {"config": {"kind": "lstm"}})
    wider = build_model(LSTMConfig(embed_dim=32, hidden_size=64, num_layers=3,
                                   held_notes_input=True))
    with pytest.raises(UserError, match="does not fit this model: missing .*lstm.weight_ih_l2"):
        _load_initial_weights(wider, Path(tmp_path / "small" / "model.safetensors"),
                              torch.device("cpu"))
