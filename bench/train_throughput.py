"""Benchmark: training throughput (tokens/s) of the LSTM and the Transformer.

One training step is what `musicgen.train` does per step: forward under
`autocast_for(device, precision)`, `sequence_loss`, backward, gradient clipping
to 1.0, an AdamW step (the trainer's betas and weight decay), and reading the
loss back as a float (as the trainer's log does; on a GPU that synchronises).
Batches are random tokens already on the device, so data loading is not timed.

    lstm         LSTMConfig(embed_dim=256, hidden_size=512, num_layers=3,
                 dropout=0.0), batch 32 x 256 (configs/lstm_maestro.json)
    transformer  TransformerConfig() defaults (6 x d256, 8 heads, context
                 1024), batch 16 x 512: the same 8,192 tokens per step as the
                 LSTM, and a window half the context so that a CPU run stays
                 short. --transformer-config FILE (a training config such as
                 configs/transformer_maestro.json) times that model and batch
                 instead; --lstm-config likewise.

Each is timed with precision "auto" (bf16 autocast on CUDA and on CPUs with
native bf16, else fp32, exactly as the trainer decides) and "fp32" (on CUDA
with TF32 matmuls, as the trainer enables them). After --warmup untimed steps,
--repeats measurements of --steps steps each; the median is reported.

Needs only torch and numpy (plus safetensors and tqdm, which `musicgen.train`
imports), so it also runs on a GPU machine without MIDI libraries, from a plain
checkout (the repository root is put on sys.path).

Usage (the real numbers):
    .venv/bin/python bench/train_throughput.py --steps 10 --repeats 3          # CPU here
    python bench/train_throughput.py --steps 50 --repeats 5                    # GPU machine
    python bench/train_throughput.py --steps 50 --repeats 5 \\
        --transformer-config configs/transformer_maestro.json --json             # GPU, real config
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # a plain checkout on a GPU machine: no editable install
    sys.path.insert(0, str(REPO_ROOT))

from musicgen.events import VOCAB  # noqa: E402 - after the sys.path fix above
from musicgen.model import (  # noqa: E402
    LSTMConfig,
    ModelConfig,
    TransformerConfig,
    build_model,
    count_parameters,
    describe,
)
from musicgen.train import TrainConfig, autocast_for, load_train_config, sequence_loss  # noqa: E402

DEFAULT_RUNS = {
    "lstm": (LSTMConfig(embed_dim=256, hidden_size=512, num_layers=3, dropout=0.0), 32, 256,
             TrainConfig().lr),
    "transformer": (TransformerConfig(), 16, 512, 1e-3),
}
PRECISIONS = ("auto", "fp32")
N_BATCHES = 4  # distinct random batches cycled through
from machine import LoadMeter, cpu_name, load_line  # noqa: E402 - bench/ is on sys.path


def from_train_config(path: Path) -> tuple[ModelConfig, int, int, float]:
    """(model config, batch size, sequence length, learning rate) of a training config file."""
    config = load_train_config(path)
    return config.build_model_config(), config.batch_size, config.seq_len, config.lr


def precision_used(device: torch.device, precision: str) -> str:
    """What `autocast_for` really does for this device and precision."""
    context = autocast_for(device, precision)
    if isinstance(context, nullcontext):
        return "fp32, TF32 matmuls" if device.type == "cuda" else "fp32"
    return f"{str(context.fast_dtype).removeprefix('torch.')} autocast"


def random_batches(batch_size: int, seq_len: int, device: torch.device) -> list[torch.Tensor]:
    """Random non-PAD token windows [batch, seq_len + 1], as `WindowSampler.batch` gives."""
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(N_BATCHES):
        tokens = rng.integers(0, VOCAB.size - 1, size=(batch_size, seq_len + 1))
        tokens[tokens >= VOCAB.pad] += 1  # skip PAD
        batches.append(torch.from_numpy(tokens).to(device))
    return batches


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model_config: ModelConfig, batch_size: int, seq_len: int, lr: float,
                  precision: str, device: torch.device, steps: int, warmup: int,
                  repeats: int) -> dict:
    """Seconds per `steps` training steps, `repeats` times, after `warmup` steps."""
    torch.manual_seed(0)
    model = build_model(model_config).to(device).train()
    defaults = TrainConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=defaults.weight_decay,
                                  betas=(0.9, 0.98))
    batches = random_batches(batch_size, seq_len, device)
    counter = 0

    def step() -> float:
        nonlocal counter
        batch = batches[counter % len(batches)]
        counter += 1
        with autocast_for(device, precision):
            loss, _ = sequence_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), defaults.grad_clip)
        optimizer.step()
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        loss = step()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        for _ in range(steps):
            loss = step()
        synchronize(device)
        seconds.append(time.perf_counter() - began)
    tokens = steps * batch_size * seq_len
    median = statistics.median(seconds)
    result = {"architecture": describe(model_config), "parameters": count_parameters(model),
              "batch_size": batch_size, "seq_len": seq_len, "precision": precision,
              "precision_used": precision_used(device, precision), "steps": steps,
              "seconds": [round(s, 4) for s in seconds], "median_s": round(median, 4),
              "tokens_per_s": round(tokens / median, 1),
              "step_ms": round(1000 * median / steps, 2), "last_loss": round(loss, 3)}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


# ---------------------------------------------------------------- running


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer does
    setups = dict(DEFAULT_RUNS)
    if args.lstm_config:
        setups["lstm"] = from_train_config(args.lstm_config)
    if args.transformer_config:
        setups["transformer"] = from_train_config(args.transformer_config)

    meter = LoadMeter()
    results = {}
    for name, (model_config, batch_size, seq_len, lr) in setups.items():
        for precision in PRECISIONS:
            log(f"  {name} {precision}: {args.warmup} warm-up + {args.repeats} x {args.steps} "
                "steps")
            result = time_training(model_config, batch_size, seq_len, lr, precision, device,
                                   args.steps, args.warmup, args.repeats)
            results[f"{name} {precision}"] = result
            if device.type == "cuda":  # the model and optimizer of this run are gone
                torch.cuda.empty_cache()
            log(f"  {name} {precision}: {result['tokens_per_s']:,.0f} tokens/s")
    return {
        "device": str(device),
        "device_name": device_name(device),
        "results": results,
        "machine": {
            **meter.record(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
    }


def report(result: dict) -> str:
    """The human-readable summary of `run`'s result."""
    machine = result["machine"]
    any_result = next(iter(result["results"].values()))
    lines = [f"Training throughput on {result['device']} ({result['device_name']}), "
             f"median of {len(any_result['seconds'])} x {any_result['steps']} steps "
             "(forward + backward + clip + AdamW)", ""]
    memory = "peak_memory_gib" in any_result
    lines.append(f"{'':<18} {'batch':>11} {'precision used':<20} {'tokens/s':>10} {'ms/step':>8} "
                 + (f"{'GiB':>6} " if memory else "") + f"{'params':>11}  runs (s)")
    for key, r in result["results"].items():
        runs = ", ".join(f"{s:.2f}" for s in r["seconds"])
        batch = f"{r['batch_size']} x {r['seq_len']}"
        lines.append(f"{key:<18} {batch:>11} {r['precision_used']:<20} "
                     f"{r['tokens_per_s']:>10,.0f} {r['step_ms']:>8.1f} "
                     + (f"{r['peak_memory_gib']:>6.2f} " if memory else "")
                     + f"{r['parameters']:>11,}  {runs}")
    lines.append("")
    for key, r in result["results"].items():
        if key.endswith(" auto"):
            fp32 = result["results"].get(key.replace(" auto", " fp32"))
            if fp32:
                lines.append(f"{key.removesuffix(' auto')}: {r['architecture']}; auto / fp32 = "
                             f"{r['tokens_per_s'] / fp32['tokens_per_s']:.2f}x")
    lines += [
        "",
        f"{load_line(machine)}; {machine['torch_threads']} torch threads",
        f"python {machine['python']}, torch {machine['torch']}"
        + (f", CUDA {machine['cuda']}" if machine["cuda"] else ""),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=10,
                        help="training steps per timed measurement (default: 10)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed measurements; the median is reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps before timing (default: 3)")
    parser.add_argument("--device", default=None,
                        help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--lstm-config", type=Path, default=None,
                        help="training config JSON whose model and batch replace the LSTM's")
    parser.add_argument("--transformer-config", type=Path, default=None,
                        help="training config JSON whose model and batch replace the "
                             "Transformer's (e.g. configs/transformer_maestro.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        sys.exit("error: --steps and --repeats must be at least 1, --warmup at least 0")

    result = run(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
