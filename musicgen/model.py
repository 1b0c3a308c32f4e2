"""The two sequence models over performance events, behind one interface.

Both models map token ids [batch, time] to next-token logits and carry a
state between calls, so that sampling costs one model call per token:

    logits, state = model(tokens, state)        # a whole window (training)
    logits, state = model.step(token, state)    # one token per sequence

For the LSTM the state is (h, c), and with a held-note input also the age
of every pitch after the last token (`musicgen.events.held_ages`); for the
Transformer it is a key/value cache per layer plus the absolute position of
the next token. Their configs live in `musicgen.configs` (no torch), and
shipped weights are sampled without these classes by `musicgen.serving`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from musicgen.configs import (  # noqa: F401 - re-exported: the models' shapes live there
    CONFIGS,
    LSTMConfig,
    ModelConfig,
    TransformerConfig,
    config_from_dict,
    describe,
    make_config,
)
from musicgen.controls import CONTROL_FEATURES
from musicgen.events import HELD_FEATURES, PITCHES, held_ages, held_features


def control_layer(config: ModelConfig, width: int) -> nn.Linear | None:
    """The key/register/density input (`musicgen.controls`), or None without one.

    Zero at first, like the held-note input, so that weights trained without
    it start as the model they were (`train` loads them with this one fresh).
    """
    if not config.control_input:
        return None
    layer = nn.Linear(CONTROL_FEATURES, width, bias=False)
    nn.init.zeros_(layer.weight)
    return layer


def with_controls(x: torch.Tensor, layer: nn.Linear | None,
                  controls: torch.Tensor | None) -> torch.Tensor:
    """Embeddings x [B, T, D] plus the controls: [B, CONTROL_FEATURES] the same at every
    step (sampling), or [B, T, CONTROL_FEATURES] one per step (training).

    No controls for a model that takes them: every part absent (free).
    """
    if layer is None:
        return x
    if controls is None:
        controls = torch.zeros(len(x), CONTROL_FEATURES, device=x.device)
    projected = layer(controls.to(x.device, x.dtype))
    return x + (projected[:, None, :] if projected.dim() == 2 else projected)


class LSTMModel(nn.Module):
    """Embedding (and optionally the held notes) -> stacked LSTM -> linear over the vocabulary."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.held = None
        if config.held_notes_input:
            # Zero at first, so that weights trained without it start as the
            # model they were (`train` loads them with this one fresh).
            self.held = nn.Linear(HELD_FEATURES, config.embed_dim, bias=False)
            nn.init.zeros_(self.held.weight)
        self.control = control_layer(config, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_size, config.num_layers,
                            batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    @property
    def context(self) -> None:
        """None: the LSTM's state carries the whole past, however long."""
        return None

    def start_state(self, held: torch.Tensor | None = None, rows: int | None = None):
        """The empty state, with notes already held (ages [B, 128]) where the input takes them.

        A training window that begins inside a piece starts from this.
        """
        rows = len(held) if held is not None else rows
        zeros = torch.zeros(self.config.num_layers, rows, self.config.hidden_size,
                            device=self.head.weight.device)
        if self.held is None:
            return zeros, zeros
        if held is None:
            held = torch.full((rows, PITCHES), -1, dtype=torch.int64)
        # [1, B, 128]: the batch on dim 1, as in h and c, so that code which
        # picks rows of a state treats its three parts alike.
        return zeros, zeros, held.to(zeros.device)[None]

    def forward(self, tokens: torch.Tensor, state=None, withheld: torch.Tensor | None = None,
                controls: torch.Tensor | None = None):
        """Logits [B, T, V] for tokens [B, T], and the state after the last token.

        `withheld` (bool [B, T], training only) marks tokens whose embeddings it is not shown;
        the held-note input still follows every token (`train.TrainConfig.token_mask_share`).
        `controls` is what the music should keep, for a model with `control_input`:
        [B, CONTROL_FEATURES] at every step, or [B, T, CONTROL_FEATURES] one per token.
        """
        x = self.embed(tokens)
        if withheld is not None:
            x = x.masked_fill(withheld[..., None], 0.0)
        x = with_controls(x, self.control, controls)
        if self.held is not None:
            if state is None:
                state = self.start_state(rows=len(tokens))
            *state, before = state
            ages = held_ages(tokens.cpu().numpy(), before[0].cpu().numpy())
            x = x + self.held(torch.from_numpy(held_features(ages)).to(x.device))
            held_now = torch.from_numpy(ages[:, -1]).to(x.device)[None]
        hidden, state = self.lstm(self.drop(x), None if state is None else tuple(state))
        if self.held is not None:
            state = (*state, held_now)
        return self.head(self.drop(hidden)), state

    def step(self, token: torch.Tensor, state=None, controls: torch.Tensor | None = None):
        """Logits [B, V] after one token [B] per sequence."""
        logits, state = self(token[:, None], state, controls=controls)
        return logits[:, 0], state


def rope_tables(positions: torch.Tensor, head_dim: int, base: float):
    """cos and sin [T, head_dim / 2] for rotary embeddings at the given positions."""
    inverse = base ** (-torch.arange(0, head_dim, 2, device=positions.device,
                                     dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inverse[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, H, T, D] by position-dependent angles."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Block(nn.Module):
    """Pre-norm attention + MLP block."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.norm1 = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(nn.Linear(config.d_model, config.d_ff), nn.GELU(),
                                 nn.Linear(config.d_ff, config.d_model))
        # Dropout on the residual branches only: with dropout_p > 0, SDPA on
        # CPU leaves its fused kernel and a training step gets 3.5x slower
        # (1.8k vs 6.2k tokens/s here; BENCHMARKS.md, training throughput).
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache=None):
        batch, time, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, time, 3, self.n_heads, -1).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
        past = k.shape[2] - time
        # Query i sees keys 0 .. past + i (the cache plus the causal part).
        mask = None if past == 0 and time > 1 else torch.ones(
            time, k.shape[2], dtype=torch.bool, device=x.device).tril(past)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, time, width)))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, (k, v)


class TransformerModel(nn.Module):
    """Decoder-only Transformer with rotary position embeddings (RoPE).

    Why RoPE rather than Music Transformer's relative attention or ALiBi: all
    three make attention depend on relative distance, which is what lets a
    model reuse a motif wherever it occurs; but relative attention needs a
    learned [context, head_dim] table and its skewing trick, and ALiBi an
    additive bias matrix, and either of those turns `scaled_dot_product_attention`
    away from its fused (flash / memory-efficient) kernels. RoPE only rotates
    q and k before the call, so training and the KV-cached step keep the fast
    kernels, and a cache can slide past `context`: old keys keep their rotation,
    so only distances matter. (Past the window, as in Transformer-XL, the cached
    keys of deeper layers still carry what their tokens attended to earlier.)
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        self.control = control_layer(config, config.d_model)

    @property
    def context(self) -> int:
        """Tokens the model attends to, the current one included."""
        return self.config.context

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, state=None, withheld: torch.Tensor | None = None,
                controls: torch.Tensor | None = None):
        """Logits [B, T, V]; `state` is (caches, next position) or None.

        `withheld` (bool [B, T], training only) marks tokens whose embeddings it is not shown;
        `controls` as for `LSTMModel`.
        """
        caches, position = state if state is not None else (None, 0)
        time = tokens.shape[1]
        positions = torch.arange(position, position + time, device=tokens.device)
        cos, sin = rope_tables(positions, self.config.d_model // self.config.n_heads,
                               self.config.rope_base)
        x = self.embed(tokens)
        if withheld is not None:
            x = x.masked_fill(withheld[..., None], 0.0)
        x = self.drop(with_controls(x, self.control, controls))
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, (k, v) = block(x, cos, sin, None if caches is None else caches[i])
            # Keep at most context - 1 past keys so the next token sees `context`.
            keep = self.config.context - 1
            new_caches.append((k[:, :, -keep:], v[:, :, -keep:]))
        return self.head(self.norm(x)), (new_caches, position + time)

    def step(self, token: torch.Tensor, state=None, controls: torch.Tensor | None = None):
        """Logits [B, V] after one token [B] per sequence, using the KV cache."""
        logits, state = self(token[:, None], state, controls=controls)
        return logits[:, 0], state


# kind -> (config class, model class): the config kinds are `musicgen.configs.CONFIGS`.
MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "lstm": (LSTMConfig, LSTMModel),
    "transformer": (TransformerConfig, TransformerModel),
}


def build_model(config: ModelConfig) -> nn.Module:
    """The model for a config, by its kind."""
    return MODELS[config.kind][1](config)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
