"""Train a model on a token cache: AdamW, warm-up + cosine, clipping, exact resume.

Needs only torch, numpy and the cache written by `musicgen prepare`, so it
runs on a GPU machine without MIDI libraries. One process by default; under
`torchrun --nproc_per_node N -m musicgen train ...` it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs), rank 0 writing all files.

Output folder:

    last/      weights + optimizer + trainer.json (what --resume continues)
    best/      weights with the lowest validation loss so far
    log.csv    step, tokens, lr, train loss, validation loss/accuracy, tokens/s
    curves.png learning curves
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 - the conventional name
from safetensors import safe_open
from safetensors.torch import load_model
from tqdm import tqdm

from musicgen.checkpoint import (
    DATA_LICENCE,
    TRAINER,
    load_training_state,
    read_card,
    save_training_state,
    save_weights,
    tokens_seen,
)
from musicgen.controls import drop_parts, future_controls
from musicgen.data import TokenCache, WindowSampler
from musicgen.errors import SettingsError, UserError
from musicgen.events import VOCAB
from musicgen.model import ModelConfig, build_model, count_parameters, describe, make_config

LOG_FIELDS = ("step", "tokens", "lr", "train_loss", "val_loss", "val_accuracy", "tokens_per_s",
              "elapsed_s")


# Masks get a seed sequence of their own (seed, rank, step, this tag), apart
# from the windows' (seed, rank).
MASK_STREAM = 0x6D61736B
CONTROL_STREAM = 0x6374726C  # likewise for which control parts a window goes without
# Tokens read after a window for its last tokens' controls: 10 s of piano is
# 362 tokens on average in the validation split, and dense passages run to ~1,000.
CONTROL_LOOKAHEAD_TOKENS = 1024


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored in every checkpoint)."""

    model: str = "lstm"
    data: str = "cache/maestro"
    out: str = "runs/lstm"
    seq_len: int = 256
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_steps: int = 10000
    grad_clip: float = 1.0
    augment: bool = True
    # Share of input tokens whose embedding is withheld (their targets stay).
    # Trained only on real pasts, the LSTM tracks sounding keys in its state
    # and reads the held-note input little, so on its own music it loses keys
    # and leaves them down (BENCHMARKS.md, "Why the LSTM still holds keys").
    # With some tokens unseen its state is unreliable, and the held-note input,
    # which still follows every token, is what tells it which keys sound.
    token_mask_share: float = 0.0
    # For a model with `control_input`: the share of windows that go without
    # each part (key, register, density), so that "free" is something it knows.
    control_absent_share: float = 0.15
    eval_interval: int = 250
    eval_windows: int = 128
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where the hardware has it, else fp32
    model_config: dict = field(default_factory=dict)  # overrides of the model's defaults
    # Start from these weights (a checkpoint folder) with a fresh optimizer and
    # schedule: how a later session continues a shipped model.
    init_from: str = ""

    def build_model_config(self) -> ModelConfig:
        """The model's config: its kind's defaults (or `init_from`'s), then `model_config`.

        Raises:
            SettingsError: An unknown kind or model setting, or an `init_from`
                checkpoint of another kind.
        """
        defaults: dict = {}
        if self.init_from:
            defaults = dict(read_card(self.init_from)["config"])
            kind = defaults.pop("kind", "lstm")
            if kind != self.model:
                raise SettingsError(f"{self.init_from} holds a model of kind {kind}, but this "
                                    f"run trains {self.model} (set model / --model)")
        return make_config(self.model, **{**defaults, **self.model_config})


def read_train_settings(path: str | os.PathLike | None) -> dict:
    """The settings written in a JSON file of TrainConfig fields ({} for no file).

    Raises:
        SettingsError: The file is missing, not a JSON object, or names a
            setting TrainConfig does not have.
    """
    if not path:
        return {}
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError:
        raise SettingsError(f"the training settings file {path} cannot be read") from None
    except json.JSONDecodeError as error:
        raise SettingsError(f"the training settings file {path} is not valid JSON "
                            f"(line {error.lineno})") from None
    if not isinstance(values, dict):
        raise SettingsError(f"the training settings file {path} must hold one JSON object "
                            "of settings by name")
    _refuse_unknown(values)
    return values


def load_train_config(path: str | os.PathLike | None, **overrides) -> TrainConfig:
    """A TrainConfig from a JSON file, with non-None keyword overrides applied.

    A run folder left at the default follows the model (`runs/<model>`).

    Raises:
        SettingsError: An unreadable file or a setting TrainConfig does not have.
    """
    values = read_train_settings(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    _refuse_unknown(values)
    config = TrainConfig(**values)
    if "out" not in values:
        config.out = f"runs/{config.model}"
    return config


# What may change when a run is resumed: how long it goes on. Anything else
# would make "continue exactly" untrue.
RESUME_OVERRIDES = ("max_steps",)


def resume_config(out: str | os.PathLike, /, **overrides) -> TrainConfig:
    """The settings stored in `out`/last, for `train(..., resume=True)`.

    Args:
        out: The run folder.
        **overrides: Settings asked for (None values are ignored). Only
            `RESUME_OVERRIDES` may differ from the stored ones; an `out`
            among them (a settings file names its run) yields to `out`.

    Raises:
        SettingsError: No resumable run in `out`, or a setting that cannot change.
    """
    state = Path(out) / "last" / TRAINER
    try:
        stored = json.loads(state.read_text(encoding="utf-8"))["config"]
    except FileNotFoundError:
        raise SettingsError(f"there is no run to resume in {out} (no last/{TRAINER}); "
                            "start it without --resume") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise SettingsError(f"{state} is damaged; the run cannot be resumed") from None
    _refuse_unknown(stored)
    given = {k: v for k, v in overrides.items() if v is not None and k != "out"}
    _refuse_unknown(given)
    fixed = sorted(k for k, v in given.items() if k not in RESUME_OVERRIDES and v != stored.get(k))
    if fixed:
        raise SettingsError(f"a resumed run keeps its stored settings; only "
                            f"{', '.join(RESUME_OVERRIDES)} can change, not {', '.join(fixed)}")
    return TrainConfig(**{**stored, **given, "out": str(out)})


def _refuse_unknown(values: dict) -> None:
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise SettingsError(f"there is no training setting called {', '.join(unknown)}")


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def pick_device() -> torch.device:
    """CUDA (this rank's GPU under torchrun) if present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA and on CPUs with native bf16, unless precision says fp32."""
    if precision == "fp32":
        return nullcontext()
    cpu_bf16 = device.type == "cpu" and torch.backends.mkldnn.is_available() and (
        torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "bf16" or device.type == "cuda" or cpu_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def sequence_loss(model, batch: torch.Tensor, state=None,
                  withheld: torch.Tensor | None = None, controls: torch.Tensor | None = None):
    """Mean next-token cross-entropy (nats) over non-PAD targets, and accuracy.

    `state` is the model's state before the batch's first tokens (None: empty);
    `withheld` (bool, the inputs' shape) the inputs whose embeddings it is not shown;
    `controls` [B, T, CONTROL_FEATURES] what is coming after each input (`control_input`).
    """
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits, _ = model(inputs, state, withheld, controls)
    logits = logits.float().reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    loss = F.cross_entropy(logits, targets, ignore_index=VOCAB.pad)
    keep = targets != VOCAB.pad
    accuracy = (logits.argmax(-1)[keep] == targets[keep]).float().mean()
    return loss, accuracy


@torch.no_grad()
def validate(model, windows: torch.Tensor, device, precision: str,
             batch_size: int, held: torch.Tensor | None = None,
             controls: torch.Tensor | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over fixed validation windows (token-weighted).

    `held` is what sounds as each window begins, for a model with held-note input;
    `controls` [B, T, CONTROL_FEATURES] what follows each input, for a model with control
    input (every part given).
    """
    model.eval()
    total_loss = total_correct = total = 0.0
    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size].to(device)
        state = None if held is None else model.start_state(held[i:i + batch_size])
        with autocast_for(device, precision):
            loss, accuracy = sequence_loss(
                model, batch, state,
                controls=None if controls is None else controls[i:i + batch_size].to(device))
        count = int((batch[:, 1:] != VOCAB.pad).sum())
        total_loss += float(loss) * count
        total_correct += float(accuracy) * count
        total += count
    model.train()
    return total_loss / total, total_correct / total


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          until_step: int | None = None, time_limit_s: float | None = None) -> dict:
    """Run (or continue) training; returns the final record (also in last/trainer.json).

    Args:
        config: The run's settings.
        resume: Continue from `config.out`/last exactly (weights, optimizer,
            schedule, data RNG, dropout RNG, log); pass the settings stored
            there, from `resume_config`.
        progress: Show a progress bar on stderr (rank 0 only).
        until_step: Stop (with a checkpoint) at this step, leaving the schedule
            of `max_steps` intact so that `resume` carries on where it stopped.
        time_limit_s: Likewise, stop at the first evaluation after this many
            seconds of this call (for sessions with a wall-clock limit).
    """
    if not 0 <= config.control_absent_share <= 1:
        raise SettingsError(f"control_absent_share is a share of the windows, from 0 to 1, "
                            f"not {config.control_absent_share}")
    if not 0 <= config.token_mask_share < 1:
        raise SettingsError(f"token_mask_share is a share of the input tokens, from 0 up to but "
                            f"not including 1, not {config.token_mask_share}")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = pick_device()
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True

    out = Path(config.out)
    last_dir, best_dir = out / "last", out / "best"
    record: dict = {"step": 0, "tokens": 0, "best_val_loss": None, "elapsed_s": 0.0}
    model_config = config.build_model_config()
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config, last_dir if resume else None),
                                  lr=config.lr,
                                  weight_decay=config.weight_decay, betas=(0.9, 0.98))
    rng = np.random.default_rng([config.seed, rank])
    if resume:
        load_model(model, str(last_dir / "model.safetensors"), device=str(device))
        record, extras = load_training_state(last_dir, optimizer)
        rng.bit_generator.state = record["numpy_rng"][rank]
        torch.set_rng_state(extras["torch_rng"])
    elif config.init_from:
        _load_initial_weights(model, Path(config.init_from) / "model.safetensors", device)
    trainable = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    cache = TokenCache.load(config.data)
    for split in ("train", "validation"):
        if not cache.split(split):
            raise UserError(f"the token cache {config.data} has no {split} pieces; a folder "
                            "of few MIDI files can leave the validation split (5% of files) "
                            "empty: add files, or use MAESTRO's official split")
    train_windows = WindowSampler(cache.split("train"), config.seq_len, augment=config.augment)
    # A model with held-note input is told what sounds as each window begins.
    takes_held = getattr(model_config, "held_notes_input", False)
    val_windows, val_held = WindowSampler(cache.split("validation"), config.seq_len,
                                          augment=False).held_batch(
        np.random.default_rng(1234), config.eval_windows)
    val_windows = torch.from_numpy(val_windows)
    val_held = torch.from_numpy(val_held) if takes_held else None
    # A model with control input is told what each window keeps (`musicgen.controls`).
    takes_controls = getattr(model_config, "control_input", False)
    val_controls = None
    if takes_controls:  # the same windows, and the music after each
        _, _, following = WindowSampler(cache.split("validation"), config.seq_len,
                                        augment=False).future_batch(
            np.random.default_rng(1234), config.eval_windows, CONTROL_LOOKAHEAD_TOKENS)
        told = future_controls(np.concatenate((val_windows.numpy(), following), axis=1))
        val_controls = torch.from_numpy(told[:, :val_windows.shape[1] - 1])
    tokens_per_step = config.batch_size * config.seq_len * world

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"{describe(model_config)}: {count_parameters(model):,} parameters on {device} "
              f"x{world}; {tokens_per_step:,} tokens/step", flush=True)
    bar = tqdm(total=config.max_steps, initial=record["step"], disable=rank != 0 or not progress,
               unit="step", dynamic_ncols=True)
    model.train()
    window_began, window_tokens = time.perf_counter(), 0
    run_began = time.perf_counter() - record["elapsed_s"]
    call_began = time.perf_counter()
    stop_step = min(config.max_steps, until_step or config.max_steps)
    while record["step"] < stop_step:
        step = record["step"]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config) * group["lr_scale"]
        following = None
        if takes_controls:
            batch, held, following = train_windows.future_batch(rng, config.batch_size,
                                                                CONTROL_LOOKAHEAD_TOKENS)
            state = model.start_state(torch.from_numpy(held)) if takes_held else None
        elif takes_held:
            batch, held = train_windows.held_batch(rng, config.batch_size)
            state = model.start_state(torch.from_numpy(held))
        else:
            batch, state = train_windows.batch(rng, config.batch_size), None
        withheld = None
        if config.token_mask_share > 0:
            # Its own generator per step, not the batches': the same windows as
            # without masking, and a resumed run draws the same masks.
            masks = np.random.default_rng([config.seed, rank, step, MASK_STREAM])
            withheld = torch.from_numpy(masks.random((len(batch), batch.shape[1] - 1))
                                        < config.token_mask_share).to(device)
        controls = None
        if takes_controls:
            # Its own generator per step too, for the same reasons.
            absent = np.random.default_rng([config.seed, rank, step, CONTROL_STREAM])
            told = future_controls(np.concatenate((batch, following), axis=1))
            told = told[:, :batch.shape[1] - 1]  # what each input is told comes after it
            controls = torch.from_numpy(drop_parts(told, absent,
                                                   config.control_absent_share)).to(device)
        batch = torch.from_numpy(batch).to(device)
        with autocast_for(device, config.precision):
            loss, _ = sequence_loss(trainable, batch, state, withheld, controls)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        record["step"] += 1
        record["tokens"] += tokens_per_step
        window_tokens += tokens_per_step
        train_loss = float(loss.detach())
        bar.update()
        rate = window_tokens / max(1e-9, time.perf_counter() - window_began)
        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{rate:,.0f}")

        out_of_time = time_limit_s is not None and (
            time.perf_counter() - call_began > time_limit_s)
        if distributed:  # every rank must take the same branch
            flag = torch.tensor(float(out_of_time))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag)
        at_end = record["step"] == stop_step or out_of_time
        if record["step"] % config.eval_interval == 0 or at_end:
            record["elapsed_s"] = time.perf_counter() - run_began
            states = _gather_rng_states(rng, distributed, world)
            if rank == 0:
                val_loss, val_accuracy = validate(model, val_windows, device, config.precision,
                                                  config.batch_size, val_held, val_controls)
                row = {"step": record["step"], "tokens": record["tokens"],
                       "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                       "val_loss": val_loss, "val_accuracy": val_accuracy,
                       "tokens_per_s": rate, "elapsed_s": record["elapsed_s"]}
                _append_log(out / "log.csv", row)
                bar.write(f"step {record['step']}: train {train_loss:.4f}  val {val_loss:.4f} "
                          f"(acc {val_accuracy:.3f})  {rate:,.0f} tok/s")
                card = _card(config, model_config, model, record, device, world,
                             val_loss, val_accuracy)
                if record["best_val_loss"] is None or val_loss < record["best_val_loss"]:
                    record["best_val_loss"] = val_loss
                    card["best_val_loss"] = val_loss
                    save_weights(best_dir, model, card)
                card["best_val_loss"] = record["best_val_loss"]
                save_weights(last_dir, model, card)
                save_training_state(last_dir, optimizer,
                                    {**record, "numpy_rng": states, "config": asdict(config)},
                                    {"torch_rng": torch.get_rng_state()})
                plot_learning_curves(out / "log.csv", out / "curves.png")
            window_began, window_tokens = time.perf_counter(), 0
            if out_of_time:
                break
    bar.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return record


# With Adam a step moves each weight by about the learning rate, whatever its
# gradient's size. A held-note input started at zero beside weights already
# trained, at their rate, had reached a mean |w| of 0.005 after 750 steps and
# changed the validation loss by 0.002 (2026-12-02), so weights that `init_from`
# lacks learn this much faster.
FRESH_LR_SCALE = 10.0


def _parameter_groups(model: torch.nn.Module, config: TrainConfig,
                      resume_from: Path | None = None) -> list[dict]:
    """The optimizer's groups: weights `init_from` lacks learn at `FRESH_LR_SCALE` x the rate.

    A resumed run takes its groups from its own record (`init_from` may hold
    other weights by then), so that its optimizer state fits them.
    """
    named = dict(model.named_parameters())
    if resume_from is not None:
        stored = json.loads((resume_from / TRAINER).read_text(encoding="utf-8"))["param_groups"]
        if "names" not in stored[0]:  # a run from before the groups: one, at the base rate
            return [{"params": list(named.values()), "names": list(named), "lr_scale": 1.0}]
        return [{"params": [named[name] for name in group["names"]], "names": group["names"],
                 "lr_scale": group["lr_scale"]} for group in stored]
    fresh = set()
    if config.init_from:
        with safe_open(Path(config.init_from) / "model.safetensors", "pt") as stored:
            fresh = set(named) - set(stored.keys())
    groups = [{"names": [name for name in named if name not in fresh], "lr_scale": 1.0},
              {"names": [name for name in named if name in fresh], "lr_scale": FRESH_LR_SCALE}]
    return [{**group, "params": [named[name] for name in group["names"]]}
            for group in groups if group["names"]]


def _load_initial_weights(model: torch.nn.Module, path: Path, device: torch.device) -> None:
    """`init_from`'s weights; an input they were trained without starts at zero.

    Raises:
        UserError: Weights that are not of this model (other than that input).
    """
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    # The held-note and control inputs (`musicgen.model`) are zero until trained,
    # so the model begins as the one whose weights these are.
    missing = [name for name in missing if not name.startswith(("held.", "control."))]
    if missing or unexpected:
        raise UserError(f"{path} does not fit this model: "
                        f"missing {', '.join(missing) or 'nothing'}, "
                        f"unexpected {', '.join(unexpected) or 'nothing'}")


def _gather_rng_states(rng: np.random.Generator, distributed: bool, world: int) -> list:
    state = rng.bit_generator.state
    if not distributed:
        return [state]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


def _card(config: TrainConfig, model_config: ModelConfig, model, record: dict,
          device: torch.device, world: int, val_loss: float, val_accuracy: float) -> dict:
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({os.cpu_count()} cores)")
    return {
        "name": Path(config.out).name,
        "architecture": describe(model_config),
        "config": asdict(model_config),
        "parameters": count_parameters(model),
        "training": {**asdict(config), "steps": record["step"], "tokens_seen": record["tokens"],
                     "tokens_seen_before": _tokens_before(config),
                     "wall_time_s": round(record["elapsed_s"], 1),
                     "hardware": f"{world} x {hardware}", "torch": torch.__version__},
        "validation": {"loss_nats_per_token": val_loss, "accuracy": val_accuracy,
                       "windows": config.eval_windows, "window_tokens": config.seq_len},
        "licence": DATA_LICENCE,
    }


def _tokens_before(config: TrainConfig) -> int:
    """Tokens the initial weights had seen (0 when training from scratch)."""
    if not config.init_from:
        return 0
    return tokens_seen(read_card(config.init_from))


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in LOG_FIELDS})


def plot_learning_curves(log_path: str | os.PathLike, png_path: str | os.PathLike) -> bool:
    """Draw train/validation loss against tokens seen; False if matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415 - optional on training machines
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    with open(log_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return False
    tokens = np.array([float(r["tokens"]) for r in rows]) / 1e6
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    axis.plot(tokens, [float(r["train_loss"]) for r in rows], label="train (one batch)", alpha=0.6)
    axis.plot(tokens, [float(r["val_loss"]) for r in rows], label="validation", linewidth=2)
    axis.set_xlabel("tokens seen (millions)")
    axis.set_ylabel("cross-entropy (nats / event)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return True
