"""The serving form of a model: its one-token step as an ONNX graph with int8 weights.

    graph = serving_graph(weights, config)          # float arrays by state-dict name
    Path("serving.onnx").write_bytes(graph.SerializeToString())

Written once per checkpoint (`musicgen.checkpoint.export_serving`) and run by
ONNX Runtime in `musicgen.serving`; building it needs the `onnx` package, which
only training and tests install (its import alone takes over a second, so the
app reads the finished file and never imports it).

Why int8: sampling one token is a chain of matrix-vector products, bound by
reading the weights, not by arithmetic. A 1024 x 2048 product took 450 us in
float32 and 150 us with int8 weights on this project's 2-core machine
(numpy and ONNX Runtime, one thread, five such matrices cycled as in a step),
and at 8 rows the int8 product still took 160 us where numpy took 1,850.

How the weights are quantized, and why:
- Per output column, symmetric, to 7 bits (-63..63). x86 CPUs without VNNI
  multiply uint8 by int8 in pairs summed into 16 bits, which overflows with
  full 8-bit weights and corrupts the logits; 7 bits cannot overflow.
- Activations per row, symmetric, to 8 bits (uint8 around 128), computed in the
  graph at every step. Per row, not per tensor, so that a row's numbers do not
  depend on the other rows of its batch: the integer products are exact, and a
  request's notes stay the same whether it runs alone or batched with others.
- The output head stays float32. Measured on 12 MAESTRO test pieces with the
  shipped LSTM: every product in int8 cost 0.0087 nats/event, all but the head
  0.0003; the head is 4% of the weights (0.8 MB in float32), and its rounding
  errors go straight into the logits.
- Embedding lookups and the LSTM's first-layer input table stay float32: a step
  reads one row of them, so they cost no bandwidth.

`quantized=False` builds the same graph with float32 weights: the parity tests
check it against the torch models to 1e-4, which shows that the graph is the
model, so that the int8 graph's only difference is its rounding (whose cost in
test NLL is measured in BENCHMARKS.md and bounded in tests/test_serving.py).

The graphs' inputs and outputs (n rows, T new tokens, L layers, C cache slots):
- LSTM: tokens [n] int64, h_k and c_k [n, hidden] per layer (and, with a
  held-note input, held [n, 256]: `events.held_features`) -> logits [n, V],
  h_out_k, c_out_k.
- Either, with a control input: controls (`musicgen.controls`), what each
  row's music should keep: [n, 18] for the LSTM's one token, [n, 1 or T, 18]
  for the Transformer's tokens; the projection stays float32 (18 x width: no
  bandwidth to save).
- Transformer: tokens [n, T]; cos and sin [n, T, head_dim] (RoPE at each
  row's own positions); past_mask [n, 1, 1 or T, C] (0 where a cache slot may be
  seen, -inf elsewhere); new_mask [T, T] (causal); per layer keys_k
  [n, heads, head_dim, C] (the key cache, transposed so no step copies it) and
  values_k [n, heads, C, head_dim] -> logits [n, T, V], new_keys_k and
  new_values_k [n, heads, T, head_dim]. The stepper keeps the caches and
  writes each new key into its slot; the graph only reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from musicgen.checkpoint import SERVING, checked_weights, file_sha256, update_card
from musicgen.configs import LSTMConfig, ModelConfig, TransformerConfig, config_from_dict
from musicgen.controls import CONTROL_FEATURES
from musicgen.errors import UserError
from musicgen.events import HELD_FEATURES

OPSET = 21
WEIGHT_LEVELS = 63  # 7-bit weights: see the module docstring
ACTIVATION_LEVELS = 127


def serving_graph(weights: dict[str, np.ndarray], config: ModelConfig,
                  quantized: bool = True) -> onnx.ModelProto:
    """The one-token step of a model as an ONNX graph.

    Args:
        weights: float32 arrays by the torch state-dict names ("embed.weight", ...).
        config: The model's config.
        quantized: int8 weights (serving) or float32 (parity tests).

    Returns:
        A checked ONNX model; its metadata names the kind and the quantization.
    """
    builder = _Builder(quantized)
    if isinstance(config, LSTMConfig):
        inputs, outputs = _lstm(builder, weights, config)
    else:
        inputs, outputs = _transformer(builder, weights, config)
    graph = helper.make_graph(builder.nodes, f"musicgen_{config.kind}_step", inputs, outputs,
                              builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="musicgen")
    helper.set_model_props(model, {"kind": config.kind,
                                   "weights": "int8" if quantized else "float32"})
    onnx.checker.check_model(model)
    return model


class _Builder:
    """Nodes and initializers of one graph, with generated names."""

    def __init__(self, quantized: bool):
        self.quantized = quantized
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, array, prefix: str = "const") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, output: str | None = None,
           **attributes) -> str | list[str]:
        names = [output] if output else [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None,
               float32: bool = False) -> str:
        """x @ weight + bias, weight [in, out]; int8 when the graph is quantized, unless float32."""
        if float32 or not self.quantized:
            y = self.op("MatMul", x, self.const(weight.astype(np.float32), "weight"))
        else:
            column_scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS
            levels = np.clip(np.round(weight / column_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS)
            peak = self.op("ReduceMax", self.op("Abs", x), self.const(np.array([-1])),
                           keepdims=1)
            row_scale = self.op("Div", self.op("Max", peak, self.const(np.float32(1e-12))),
                                self.const(np.float32(ACTIVATION_LEVELS)))
            centred = self.op("Add", self.op("Round", self.op("Div", x, row_scale)),
                              self.const(np.float32(128)))
            products = self.op("MatMulInteger", self.op("Cast", centred, to=TensorProto.UINT8),
                               self.const(levels.astype(np.int8), "weight"),
                               self.const(np.uint8(128)))
            y = self.op("Mul", self.op("Mul", self.op("Cast", products, to=TensorProto.FLOAT),
                                       row_scale),
                        self.const(column_scale.astype(np.float32), "scale"))
        if bias is None:
            return y
        return self.op("Add", y, self.const(bias.astype(np.float32), "bias"))


def _value(name: str, element_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, element_type, shape)


def _lstm(builder: _Builder, weights: dict[str, np.ndarray], config: LSTMConfig):
    size, layers = config.hidden_size, config.num_layers
    # The first layer's input projection of every token (embedding x input
    # weights + both biases) as one table: a step reads one row of it.
    input_table = (weights["embed.weight"] @ weights["lstm.weight_ih_l0"].T
                   + weights["lstm.bias_ih_l0"] + weights["lstm.bias_hh_l0"])
    table = builder.const(input_table.astype(np.float32), "input_table")
    below = None
    for k in range(layers):
        h, c = f"h_{k}", f"c_{k}"
        if k == 0:
            preactivation = builder.op(
                "Add", builder.op("Gather", table, "tokens", axis=0),
                builder.linear(h, weights["lstm.weight_hh_l0"].T))
            if config.held_notes_input:  # its projection folded into the input weights too
                preactivation = builder.op("Add", preactivation, builder.linear(
                    "held", weights["held.weight"].T @ weights["lstm.weight_ih_l0"].T))
            if config.control_input:  # likewise
                preactivation = builder.op("Add", preactivation, builder.linear(
                    "controls", weights["control.weight"].T @ weights["lstm.weight_ih_l0"].T,
                    float32=True))
        else:  # [below, h] @ [input weights; recurrent weights]: one product per layer
            stacked = np.concatenate((weights[f"lstm.weight_ih_l{k}"].T,
                                      weights[f"lstm.weight_hh_l{k}"].T))
            preactivation = builder.linear(
                builder.op("Concat", below, h, axis=-1), stacked,
                weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"])
        # PyTorch's gate order: input, forget, cell, output.
        i, f, g, o = builder.op("Split", preactivation, builder.const(np.array([size] * 4)),
                                outputs=4, axis=-1)
        cell = builder.op("Add", builder.op("Mul", builder.op("Sigmoid", f), c),
                          builder.op("Mul", builder.op("Sigmoid", i), builder.op("Tanh", g)),
                          output=f"c_out_{k}")
        below = builder.op("Mul", builder.op("Sigmoid", o), builder.op("Tanh", cell),
                           output=f"h_out_{k}")
    builder.op("Identity", builder.linear(below, weights["head.weight"].T, weights["head.bias"],
                                          float32=True), output="logits")
    state = [["n", size]] * layers
    inputs = [_value("tokens", TensorProto.INT64, ["n"])]
    if config.held_notes_input:
        inputs.append(_value("held", TensorProto.FLOAT, ["n", HELD_FEATURES]))
    inputs += _control_inputs(config)
    inputs += [_value(f"{kind}_{k}", TensorProto.FLOAT, state[k])
               for k in range(layers) for kind in ("h", "c")]
    outputs = [_value("logits", TensorProto.FLOAT, ["n", config.vocab_size])]
    outputs += [_value(f"{kind}_out_{k}", TensorProto.FLOAT, state[k])
                for k in range(layers) for kind in ("h", "c")]
    return inputs, outputs


def _transformer(builder: _Builder, weights: dict[str, np.ndarray], config: TransformerConfig):
    layout = transformer_weights(weights, config)
    width, heads = config.d_model, config.n_heads
    head_dim = width // heads
    half = head_dim // 2
    swap_halves = builder.const(np.concatenate((np.arange(half, head_dim), np.arange(half))))
    ones, zeros = (builder.const(np.ones(width, np.float32)),
                   builder.const(np.zeros(width, np.float32)))

    def normalized(x: str) -> str:  # the affine part is folded into the next weights
        return builder.op("LayerNormalization", x, ones, zeros, axis=-1, epsilon=1e-5)

    cos = builder.op("Unsqueeze", "cos", builder.const(np.array([1])))  # [n, 1, T, D]
    sin = builder.op("Unsqueeze", "sin", builder.const(np.array([1])))
    x = builder.op("Gather", builder.const(layout["embedding"], "embedding"), "tokens", axis=0)
    if config.control_input:  # [n, 1 or T, width]: broadcast over the new tokens
        x = builder.op("Add", x, builder.linear("controls", weights["control.weight"].T,
                                                float32=True))
    by_heads = builder.const(np.array([0, 0, 3, heads, head_dim]))
    merged = builder.const(np.array([0, 0, width]))
    for k, layer in enumerate(layout["layers"]):
        qkv = builder.linear(normalized(x), layer["qkv"], layer["qkv_bias"])
        # [n, T, 3 x width] -> [3, n, heads, T, head_dim]
        qkv = builder.op("Transpose", builder.op("Reshape", qkv, by_heads), perm=[2, 0, 3, 1, 4])
        query, key, value = builder.op("Split", qkv, builder.const(np.array([1, 1, 1])),
                                       outputs=3, axis=0)
        rotated = []
        for part in (query, key):
            part = builder.op("Squeeze", part, builder.const(np.array([0])))
            swapped = builder.op("Gather", part, swap_halves, axis=-1)
            rotated.append(builder.op("Add", builder.op("Mul", part, cos),
                                      builder.op("Mul", swapped, sin)))
        query, key = rotated
        builder.op("Identity", key, output=f"new_keys_{k}")
        value = builder.op("Squeeze", value, builder.const(np.array([0])),
                           output=f"new_values_{k}")
        past_scores = builder.op("Add", builder.op("MatMul", query, f"keys_{k}"), "past_mask")
        new_scores = builder.op("Add", builder.op(
            "MatMul", query, builder.op("Transpose", key, perm=[0, 1, 3, 2])), "new_mask")
        weights_past, weights_new = builder.op(
            "Split", builder.op("Softmax", builder.op("Concat", past_scores, new_scores, axis=-1),
                                axis=-1),
            builder.op("Concat", builder.op("Shape", past_scores, start=-1),
                       builder.op("Shape", new_scores, start=-1), axis=0),
            outputs=2, axis=-1)
        attended = builder.op("Add", builder.op("MatMul", weights_past, f"values_{k}"),
                              builder.op("MatMul", weights_new, value))
        attended = builder.op("Reshape", builder.op("Transpose", attended, perm=[0, 2, 1, 3]),
                              merged)
        x = builder.op("Add", x, builder.linear(attended, layer["proj"], layer["proj_bias"]))
        hidden = builder.op("Gelu", builder.linear(normalized(x), layer["up"], layer["up_bias"]))
        x = builder.op("Add", x, builder.linear(hidden, layer["down"], layer["down_bias"]))
    head_weight, head_bias = layout["head"]
    builder.op("Identity", builder.linear(normalized(x), head_weight, head_bias, float32=True),
               output="logits")
    float_ = TensorProto.FLOAT
    inputs = [_value("tokens", TensorProto.INT64, ["n", "T"]),
              _value("cos", float_, ["n", "T", head_dim]),
              _value("sin", float_, ["n", "T", head_dim]),
              _value("past_mask", float_, ["n", 1, "Tm", "C"]),
              _value("new_mask", float_, ["T", "T"]), *_control_inputs(config)]
    for k in range(config.n_layers):
        inputs += [_value(f"keys_{k}", float_, ["n", heads, head_dim, "C"]),
                   _value(f"values_{k}", float_, ["n", heads, "C", head_dim])]
    outputs = [_value("logits", float_, ["n", "T", config.vocab_size])]
    for k in range(config.n_layers):
        outputs += [_value(f"new_keys_{k}", float_, ["n", heads, "T", head_dim]),
                    _value(f"new_values_{k}", float_, ["n", heads, "T", head_dim])]
    return inputs, outputs


def _control_inputs(config: ModelConfig) -> list[onnx.ValueInfoProto]:
    if not config.control_input:
        return []
    shape = ["n", CONTROL_FEATURES] if isinstance(config, LSTMConfig) else [
        "n", "Tc", CONTROL_FEATURES]
    return [_value("controls", TensorProto.FLOAT, shape)]


def read_weights(weights_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A safetensors file's tensors as float32 numpy arrays, by state-dict name.

    Raises:
        UserError: The file is damaged.
    """
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.numpy import load_file  # noqa: PLC0415

    try:
        return {name: array.astype(np.float32)
                for name, array in load_file(str(weights_path)).items()}
    except SafetensorError as error:
        raise UserError(f"{weights_path} is damaged ({error})") from None


def expected_weights(config: ModelConfig) -> list[str]:
    """The state-dict names a model of this config needs (tied weights named once)."""
    if isinstance(config, LSTMConfig):
        return ["embed.weight", "head.weight", "head.bias",
                *(["held.weight"] if config.held_notes_input else []),
                *(["control.weight"] if config.control_input else []),
                *(f"lstm.{kind}_l{k}" for k in range(config.num_layers)
                  for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))]
    return ["embed.weight", "norm.weight", "norm.bias",
            *(["control.weight"] if config.control_input else []),
            *(f"blocks.{k}.{name}" for k in range(config.n_layers)
              for name in ("norm1.weight", "norm1.bias", "qkv.weight", "qkv.bias",
                           "proj.weight", "proj.bias", "norm2.weight", "norm2.bias",
                           "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"))]


def checked_float_weights(weights_path: str | os.PathLike, config: ModelConfig,
                          ) -> dict[str, np.ndarray]:
    """`read_weights`, refused when a weight the config needs is missing."""
    weights = read_weights(weights_path)
    missing = sorted(set(expected_weights(config)) - set(weights))
    if missing:
        raise UserError(f"the checkpoint {weights_path} lacks weights its config needs "
                        f"({', '.join(missing[:3])}...); export it again")
    return weights


def export_serving(directory: str | os.PathLike) -> Path:
    """Write a checkpoint folder's serving form (serving.onnx) and name it in its card.

    The card records the hash of the weights it was made from, so that a
    serving form left behind by other weights is refused (`load_serving`).

    Returns:
        The serving file.
    """
    weights_path, card = checked_weights(directory)
    config = config_from_dict(card["config"])
    graph = serving_graph(checked_float_weights(weights_path, config), config)
    path = weights_path.parent / SERVING
    path.write_bytes(graph.SerializeToString())
    update_card(weights_path.parent, serving={
        "file": SERVING, "sha256": file_sha256(path),
        "weights_sha256": card.get("weights_sha256") or file_sha256(weights_path),
        "weights": f"int8 ({WEIGHT_LEVELS * 2 + 1} levels per output column, activations "
                   f"per row); the output head and embeddings float32",
        "format": f"ONNX opset {OPSET}"})
    return path


def transformer_weights(weights: dict[str, np.ndarray], config: TransformerConfig) -> dict:
    """The Transformer's weights as the graph uses them, [in, out] for x @ W.

    Each LayerNorm's scale and shift are folded into the linear layer that
    reads it (LN(x) W + b = x_hat (g W) + (beta W + b)), and the attention's
    1 / sqrt(head_dim) into the query columns (RoPE is linear, so the order of
    scaling and rotating does not matter). Query and key channels of each head
    are reordered evens then odds (a dot product does not change when both
    sides are permuted alike), which makes RoPE two products and a sum on
    contiguous halves. The head is tied to the embedding.
    """
    width, heads = config.d_model, config.n_heads
    head_dim = width // heads
    query_scale = np.ones(3 * width, np.float32)
    query_scale[:width] = head_dim ** -0.5
    within_head = np.concatenate((np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)))
    per_head = (np.arange(heads)[:, None] * head_dim + within_head).ravel()
    qkv_order = np.concatenate((per_head, width + per_head, np.arange(2 * width, 3 * width)))

    def folded(norm: str, weight: np.ndarray, bias: np.ndarray | float,
               scale: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        weight = weight.T  # [in, out]
        bias = weights[f"{norm}.bias"] @ weight + bias
        weight = weights[f"{norm}.weight"][:, None] * weight
        return (weight * scale).astype(np.float32), (bias * scale).astype(np.float32)

    layers = []
    for k in range(config.n_layers):
        block = f"blocks.{k}"
        qkv, qkv_bias = folded(f"{block}.norm1", weights[f"{block}.qkv.weight"],
                               weights[f"{block}.qkv.bias"], query_scale)
        up, up_bias = folded(f"{block}.norm2", weights[f"{block}.mlp.0.weight"],
                             weights[f"{block}.mlp.0.bias"])
        layers.append({"qkv": qkv[:, qkv_order], "qkv_bias": qkv_bias[qkv_order],
                       "proj": weights[f"{block}.proj.weight"].T,
                       "proj_bias": weights[f"{block}.proj.bias"],
                       "up": up, "up_bias": up_bias,
                       "down": weights[f"{block}.mlp.2.weight"].T,
                       "down_bias": weights[f"{block}.mlp.2.bias"]})
    head = weights.get("head.weight", weights["embed.weight"])
    return {"embedding": weights["embed.weight"].astype(np.float32), "layers": layers,
            "head": folded("norm", head, 0.0)}
