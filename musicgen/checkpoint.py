"""Checkpoints that are safe to load: safetensors weights plus JSON metadata.

A checkpoint is a folder:

    model.safetensors      weights; the header's metadata repeats card.json
    serving.onnx           (shipped checkpoints) the step with int8 weights, for sampling
    card.json              config, vocabulary, training record, metrics, licence
    optimizer.safetensors  (training checkpoints only) optimizer tensors
    trainer.json           (training checkpoints only) step, schedule, RNG states

Nothing is ever unpickled: tensors come from safetensors, everything else
from JSON. Weights are loaded on the CPU and then moved, so a checkpoint
written on a GPU loads on a machine without one.

torch is imported by the functions that need it: reading a card (and
`musicgen.serving`, which samples from the weights with numpy) must work
where torch is not installed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from musicgen.configs import config_from_dict
from musicgen.errors import UserError
from musicgen.events import VOCAB

if TYPE_CHECKING:
    import torch

WEIGHTS = "model.safetensors"
SERVING = "serving.onnx"  # the int8 step for sampling (musicgen.serving_graph)
CARD = "card.json"
OPTIMIZER = "optimizer.safetensors"
TRAINER = "trainer.json"
DATA_LICENCE = ("Trained on MAESTRO v3.0.0 (Hawthorne et al. 2019), licensed CC BY-NC-SA 4.0; "
                "these weights are shared under the same terms (non-commercial, share-alike).")


def save_weights(directory: str | os.PathLike, model: torch.nn.Module, card: dict,
                 dtype: torch.dtype | None = None) -> Path:
    """Write model.safetensors and card.json into `directory`.

    Args:
        directory: Checkpoint folder (created if missing).
        model: The model; tied weights are stored once.
        card: JSON-ready metadata; must hold "config" (the model config as a dict).
        dtype: Store floating-point weights in this dtype (e.g. torch.float16
            for shipping); None keeps the model's own.

    Returns:
        The folder.
    """
    from safetensors.torch import save_model  # noqa: PLC0415 - torch only where needed

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card = {**card, "vocab": VOCAB.to_dict()}
    stored = model
    if dtype is not None:
        stored = copy.deepcopy(model).to(dtype=dtype)
    save_model(stored, str(directory / WEIGHTS), metadata={"musicgen": json.dumps(card)})
    card["weights_sha256"] = file_sha256(directory / WEIGHTS)
    (directory / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return directory


def read_card(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint folder or of a bare .safetensors file."""
    path = Path(path)
    if path.is_dir():
        if (path / CARD).is_file():
            return _card_json((path / CARD).read_text(encoding="utf-8"), path / CARD)
        path = path / WEIGHTS
    if not path.is_file():
        raise UserError(f"there is no musicgen checkpoint at {path}")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError:
        raise UserError(f"{path} is not a musicgen checkpoint (not a safetensors file)") from None
    if "musicgen" not in metadata:
        raise UserError(f"{path} is not a musicgen checkpoint (its weights file has no card)")
    return _card_json(metadata["musicgen"], path)


def _card_json(text: str, where: Path) -> dict:
    try:
        card = json.loads(text)
    except json.JSONDecodeError:
        card = None
    if not isinstance(card, dict) or not isinstance(card.get("config"), dict) or (
            "vocab" not in card):
        raise UserError(f"the checkpoint card {where} is damaged (no readable config and "
                        "vocabulary); export the checkpoint again")
    return card


def tokens_seen(card: dict) -> int:
    """Every token the weights have been trained on, over all runs that led to them."""
    training = card.get("training", {})
    return training.get("tokens_seen", 0) + training.get("tokens_seen_before", 0)


def checked_weights(path: str | os.PathLike) -> tuple[Path, dict]:
    """The weights file of a checkpoint and its card, once both are known to be usable.

    Raises:
        UserError: Nothing at `path`, not a musicgen checkpoint, no weights, or
            another vocabulary.
    """
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    card = read_card(path)
    if not weights.is_file():
        raise UserError(f"the checkpoint {path} has a card but no weights ({WEIGHTS})")
    VOCAB.check_compatible(card["vocab"])
    return weights, card


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    ) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from a checkpoint folder or .safetensors file.

    Args:
        path: Checkpoint folder or its model.safetensors.
        device: Where the model should live; weights are read on the CPU first.

    Returns:
        (model in eval mode, float32, on `device`; the card).

    Raises:
        UserError: Nothing at `path`, not a musicgen checkpoint, or another vocabulary.
    """
    from safetensors.torch import load_model  # noqa: PLC0415 - torch only where needed

    from musicgen.model import build_model  # noqa: PLC0415

    weights, card = checked_weights(path)
    model = build_model(config_from_dict(card["config"]))
    load_model(model, str(weights), strict=True, device="cpu")
    card.setdefault("weights_sha256", file_sha256(weights))
    return model.float().to(device).eval(), card


def save_training_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer,
                        trainer: dict, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write optimizer.safetensors and trainer.json so training can resume exactly.

    Args:
        directory: Checkpoint folder (normally the "last" one).
        optimizer: Its per-parameter tensors go to safetensors, its
            param_groups (plain numbers) to JSON.
        trainer: JSON-ready loop state (step, RNG state of numpy, ...).
        tensors: Extra tensors to keep, e.g. the torch RNG state.
    """
    import torch  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    directory = Path(directory)
    state = optimizer.state_dict()
    flat = {f"state.{index}.{name}": value.detach().cpu().contiguous()
            for index, entries in state["state"].items()
            for name, value in entries.items() if torch.is_tensor(value)}
    flat.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (tensors or {}).items()})
    save_file(flat, str(directory / OPTIMIZER))
    record = {**trainer, "param_groups": state["param_groups"]}
    (directory / TRAINER).write_text(json.dumps(record, indent=1), encoding="utf-8")


def load_training_state(directory: str | os.PathLike, optimizer: torch.optim.Optimizer,
                        ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore the optimizer in place; return (trainer record, extra tensors)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    directory = Path(directory)
    record = json.loads((directory / TRAINER).read_text(encoding="utf-8"))
    flat = load_file(str(directory / OPTIMIZER), device="cpu")
    state: dict[int, dict[str, torch.Tensor]] = {}
    extras = {}
    for key, value in flat.items():
        if key.startswith("extra."):
            extras[key[len("extra."):]] = value
            continue
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": record.pop("param_groups")})
    return record, extras


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (names the exact weights in recipes and cards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_checkpoint(source: str | os.PathLike, destination: str | os.PathLike,
                      name: str | None = None, dtype: str = "float16",
                      extra: dict | None = None) -> Path:
    """Copy a training checkpoint as a shippable one: weights in `dtype`, card updated.

    Args:
        source: A checkpoint folder (e.g. runs/lstm/best).
        destination: The new folder (e.g. checkpoints/lstm).
        name: The model's name in the card (default: the destination's name).
        dtype: Storage dtype of the weights, a torch dtype's name (fp16 halves the size).
        extra: Entries to add to the card (e.g. test metrics).

    Returns:
        The destination folder.
    """
    import torch  # noqa: PLC0415

    model, card = load_checkpoint(source)
    destination = Path(destination)
    card = {**card, **(extra or {}), "name": name or destination.name, "weights_dtype": dtype}
    card.pop("weights_sha256", None)
    save_weights(destination, model, card, dtype=getattr(torch, dtype))
    curves = Path(source).parent / "curves.png"
    if curves.is_file():
        (destination / "curves.png").write_bytes(curves.read_bytes())
    return destination


def update_card(directory: str | os.PathLike, **entries) -> dict:
    """Add entries to a checkpoint's card.json (the weights, and their hash, stay as they are).

    Returns:
        The updated card.
    """
    path = Path(directory) / CARD
    card = json.loads(path.read_text(encoding="utf-8"))
    card.update(entries)
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def record_evaluation(directory: str | os.PathLike, entry: str, result: dict) -> dict:
    """Store an evaluation result in the card under evaluation.<entry>, keeping the others.

    Args:
        directory: The checkpoint folder.
        entry: Its name: "test" or "test_int8" (`evaluate`), "samples" (`evaluate-samples`).
        result: JSON-ready numbers.

    Returns:
        The updated card.
    """
    evaluation = read_card(directory).get("evaluation", {})
    return update_card(directory, evaluation={**evaluation, entry: result})
