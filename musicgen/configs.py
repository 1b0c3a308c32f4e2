"""The models' shapes: one config dataclass per kind, read and checked without torch.

Sampling on a CPU (`musicgen.serving`) needs a checkpoint's config but not
torch; the models themselves are in `musicgen.model`.
"""

from __future__ import annotations

from dataclasses import dataclass

from musicgen.errors import SettingsError
from musicgen.events import VOCAB


@dataclass
class LSTMConfig:
    """Performance RNN's shape by default: 3 x 512 LSTM."""

    vocab_size: int = VOCAB.size
    embed_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 3
    dropout: float = 0.1
    # Which pitches sound, and for how long, as an input beside each token
    # (`musicgen.events.held_features`): what the model would otherwise have
    # to remember to end its notes.
    held_notes_input: bool = False
    # The key, register and density the music should keep, as an input beside
    # every token (`musicgen.controls`).
    control_input: bool = False
    kind: str = "lstm"


@dataclass
class TransformerConfig:
    """A small decoder-only Transformer; `context` is the attention window."""

    vocab_size: int = VOCAB.size
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    d_ff: int = 1024
    context: int = 1024
    dropout: float = 0.1
    rope_base: float = 10000.0
    control_input: bool = False  # as LSTMConfig's
    kind: str = "transformer"


ModelConfig = LSTMConfig | TransformerConfig

# kind -> config class: the one place that knows the model kinds.
CONFIGS: dict[str, type] = {"lstm": LSTMConfig, "transformer": TransformerConfig}


def make_config(kind: str, **values) -> ModelConfig:
    """The config of a model kind, with `values` in place of its defaults.

    Args:
        kind: A key of `CONFIGS`.
        **values: Fields of that kind's config; `kind` may repeat the kind.

    Returns:
        The config dataclass.

    Raises:
        SettingsError: An unknown kind, or a field that kind does not have
            (a typo would otherwise train the default model silently).
    """
    if kind not in CONFIGS:
        raise SettingsError(f"there is no model kind called {kind}; "
                            f"choose one of: {', '.join(CONFIGS)}")
    config_class = CONFIGS[kind]
    if values.get("kind", kind) != kind:
        raise SettingsError(f"the settings say kind {values['kind']} for a {kind} model")
    fields = config_class.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(name for name in fields if name != "kind")
        raise SettingsError(f"{kind} models have no setting called {', '.join(unknown)}; "
                            f"their settings are: {known}")
    return config_class(**{**values, "kind": kind})


def config_from_dict(values: dict) -> ModelConfig:
    """A config from `asdict(config)` (a checkpoint's card, say); strict as `make_config`."""
    values = dict(values)
    return make_config(values.pop("kind", "lstm"), **values)


def describe(config: ModelConfig) -> str:
    """One line naming the architecture, for logs and model cards."""
    controls = ", key/register/density input" if config.control_input else ""
    if config.kind == "lstm":
        held = ", held-note input" if config.held_notes_input else ""
        return (f"LSTM {config.num_layers} x {config.hidden_size} "
                f"(embedding {config.embed_dim}{held}{controls})")
    return (f"Transformer {config.n_layers} layers x d{config.d_model}, {config.n_heads} heads, "
            f"RoPE, context {config.context}{controls}")
