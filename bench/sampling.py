"""Benchmark: sampling speed on the CPU, incremental sampler versus re-feeding a window.

What is timed, batch 1, all in one run (each measurement interleaved with the
others, median of --repeats):

    a  LSTM, `musicgen.sample.generate`: the primer is fed once, then one
       `model.step` per token carrying (h, c). --tokens new tokens.
    b  LSTM, the course approach: for every new token the last 100 events go
       through the full forward with no state carried, and the token is sampled
       from the last position. --baseline-tokens new tokens (it is slow), with
       oneDNN disabled (the issue's setting for single-token torch steps) and
       enabled (faster for a 100-token forward: the stronger baseline).
    c  Transformer, `generate` with its KV cache versus re-feeding the whole
       growing context (capped at `config.context`) every step, no cache.
    d  End to end, what the app does for one click: a 30 s continuation
       (`compose`) + FluidSynth render + the app's audio file (mono MP3,
       `musicgen.studio.CLIP_SUFFIX`), with the model loaded and a `Renderer`
       already created and warmed by one render. Rendered audio includes the
       10 s seed, as in the app's default.
    e  The reference: a and c with the numpy float32 steppers that served
       before the int8 graph (bench/numpy_steppers.py), and both kinds of
       LSTM step at 16 rows (tokens/s counts every row's tokens).

All runs continue the same primer (the last --primer-seconds of a built-in
example) with the app's default temperature, top-p and keep_timing, and the same
token choice code as the sampler (`musicgen.sample._choose`). For a-c, EOS is
masked out so that every run makes exactly the asked-for number of tokens; the
mask costs the same in every method. The no-cache Transformer baseline covers
only the first --baseline-tokens tokens, where its context is shortest, so its
ratio is a lower bound.

Without a Transformer checkpoint (none in checkpoints/ and no
--transformer-checkpoint), a randomly initialised `TransformerConfig()` of the
default size is timed: speed does not depend on the weights. Its end-to-end
time then samples as many tokens as the LSTM needed for its 30 s (random
weights would not make music of a realistic density) and adds the LSTM clip's
decoding, rendering and WAV time; the output marks it "estimated".

Usage (the real numbers; an idle machine gives the fairest ones):
    .venv/bin/python bench/sampling.py --repeats 5
    .venv/bin/python bench/sampling.py --repeats 5 --threads 1 --json

Options: --checkpoint, --transformer-checkpoint, --tokens, --baseline-tokens,
--threads (torch.set_num_threads; default: torch's own), --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import musicgen.sample
from musicgen.audio import Renderer, write_audio
from musicgen.checkpoint import load_checkpoint, read_card
from musicgen.compose import LoadedModel, compose, find_checkpoints, load_model
from musicgen.events import VOCAB, decode_events
from musicgen.midi import notes_to_pretty_midi
from musicgen.model import TransformerConfig, TransformerModel, count_parameters, describe
from musicgen.prompt import prompt_from_example
from musicgen.sample import _choose, generate
from musicgen.settings import Settings
from musicgen.studio import CLIP_SUFFIX

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "lstm"
EXAMPLE = "Bach: Prelude in C (opening)"
TEMPERATURE, TOP_K, TOP_P = Settings().temperature, Settings().top_k, Settings().top_p
KEEP_TIMING = Settings().keep_timing
LSTM_WINDOW = 100  # events re-fed per token by the course approach
CLIP_SECONDS = 30.0
ROWS = 16  # e: rows of a batch
TARGETS = {"lstm_tokens_per_s": 2500, "transformer_tokens_per_s": 800, "lstm_speedup": 30,
           "lstm_e2e_s": 1.0, "transformer_e2e_s": 2.5}
from machine import LoadMeter, cpu_details, cpu_line, cpu_name, load_line  # noqa: E402
from numpy_steppers import numpy_serving_model, one_blas_thread  # noqa: E402


class NoEos(torch.nn.Module):
    """A model whose EOS logit is pushed far down, for the re-feeding baselines.

    `refeed` makes a fixed number of tokens whatever it samples; the mask keeps
    EOS out of the context it re-feeds and costs what `NoEosStepper`'s does.

    A large finite value rather than -inf keeps the sampler's entropy finite.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.config = model.config

    def forward(self, tokens, state=None):
        logits, state = self.inner(tokens, state)
        logits[..., VOCAB.eos] = -1e9
        return logits, state

    def step(self, token, state=None):
        logits, state = self.inner.step(token, state)
        logits[..., VOCAB.eos] = -1e9
        return logits, state


class NoEosStepper:
    """`NoEos` for the stepper `generate` picks (a model wrapper would hide its numpy stepper)."""

    def __init__(self, inner):
        self.inner = inner

    def start(self, tokens: np.ndarray, controls: np.ndarray | None = None) -> np.ndarray:
        return self._masked(self.inner.start(tokens, controls))

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self._masked(self.inner.step(tokens))

    def close(self) -> None:
        self.inner.close()

    @staticmethod
    def _masked(logits: np.ndarray) -> np.ndarray:
        logits[..., VOCAB.eos] = -1e9
        return logits


# ---------------------------------------------------------------- the two ways to sample


def time_incremental(model, primer: np.ndarray, tokens: int, seed: int, rows: int = 1) -> float:
    """Seconds for `generate` to make `tokens` new tokens per row (state / KV cache carried)."""
    stepper = musicgen.sample._stepper
    with mock.patch.object(musicgen.sample, "_stepper",
                           lambda model: NoEosStepper(stepper(model))):
        began = time.perf_counter()
        generation = generate(model, primer, max_tokens=tokens, temperature=TEMPERATURE,
                              top_k=TOP_K, top_p=TOP_P, seed=seed, n=rows,
                              keep_timing=KEEP_TIMING)
        seconds = time.perf_counter() - began
    assert all(len(row) == tokens for row in generation.tokens), generation.stop_reasons
    return seconds


@torch.inference_mode()
def refeed(model: torch.nn.Module, primer: np.ndarray, tokens: int, window: int, seed: int,
           onednn: bool) -> np.ndarray:
    """Sample without carrying state: each token re-runs the last `window` tokens.

    The course version's approach, kept here for comparison with `generate`.
    """
    primer = np.concatenate(([VOCAB.bos], primer)).astype(np.int64)
    sequence = torch.zeros(len(primer) + tokens, dtype=torch.int64)
    sequence[:len(primer)] = torch.from_numpy(primer)
    generator = musicgen.sample.TorchUniforms(seed)
    model.eval()
    with torch.backends.mkldnn.flags(enabled=onednn):
        for end in range(len(primer), len(sequence)):
            logits, _ = model(sequence[max(0, end - window):end][None])
            # Handed over exactly as `generate` hands over its logits.
            chosen, _, _ = _choose(logits[:, -1].float().cpu().numpy(), TEMPERATURE, TOP_K,
                                   TOP_P, 0.0, [generator], None, np.array([KEEP_TIMING]))
            sequence[end] = int(chosen[0])
    return sequence[len(primer):].numpy()


def time_reference(model, primer: np.ndarray, tokens: int, seed: int, rows: int = 1) -> float:
    """`time_incremental` for the old numpy steppers, with BLAS at one thread as they ran."""
    with one_blas_thread():
        return time_incremental(model, primer, tokens, seed, rows)


def time_refeed(model, primer, tokens, window, seed, onednn) -> float:
    began = time.perf_counter()
    refeed(model, primer, tokens, window, seed, onednn)
    return time.perf_counter() - began


# ---------------------------------------------------------------- end to end


def time_end_to_end(loaded: LoadedModel, primer, renderer: Renderer, folder: Path,
                    seed: int) -> dict:
    """One click's work: compose a 30 s continuation, render it, write the app's audio file.

    As the app's first clip is made: rendered while it is sampled (`LiveRender`),
    so render_s is the part left after sampling.
    """
    t0 = time.perf_counter()
    with renderer.live() as live:
        candidate = compose(loaded, primer, Settings(seconds=CLIP_SECONDS, n=1, seed=seed),
                            on_music=lambda _, midi, final: live.advance(midi, final))[0]
        t1 = time.perf_counter()
        rendering = renderer.render(candidate.midi, live=live)
    t2 = time.perf_counter()
    written = write_audio((folder / "clip").with_suffix(CLIP_SUFFIX), rendering, mono=True)
    t3 = time.perf_counter()
    return {"sampling_s": candidate.stats["sampling_s"], "compose_s": t1 - t0,
            "render_s": t2 - t1, "encode_s": t3 - t2, "total_s": t3 - t0,
            "audio_bytes": written.stat().st_size,
            "tokens": candidate.stats["tokens"], "stop": candidate.stats["stop"],
            "music_s": candidate.stats["seconds"], "audio_s": rendering.seconds,
            "engine": rendering.engine}


def time_estimated_end_to_end(model: torch.nn.Module, primer, lstm_run: dict,
                              seed: int) -> dict:
    """Untrained Transformer: sample the LSTM's token count, add the LSTM clip's other costs."""
    sampling_s = time_incremental(model, primer.tokens, lstm_run["tokens"], seed)
    other = lstm_run["compose_s"] - lstm_run["sampling_s"]  # decoding + building the MIDI
    return {"sampling_s": sampling_s, "compose_s": sampling_s + other,
            "render_s": lstm_run["render_s"], "encode_s": lstm_run["encode_s"],
            "total_s": sampling_s + other + lstm_run["render_s"] + lstm_run["encode_s"],
            "audio_bytes": lstm_run["audio_bytes"],
            "tokens": lstm_run["tokens"], "stop": "max_tokens (estimated)",
            "music_s": lstm_run["music_s"], "audio_s": lstm_run["audio_s"],
            "engine": lstm_run["engine"]}


# ---------------------------------------------------------------- models


def find_transformer(explicit: Path | None) -> Path | None:
    """The Transformer checkpoint to time: the one asked for, else one in checkpoints/."""
    if explicit is not None:
        if not explicit.exists():
            sys.exit(f"error: no checkpoint at {explicit}")
        return explicit
    for path in find_checkpoints().values():
        if read_card(path).get("config", {}).get("kind") == "transformer":
            return path
    return None


def load_transformer(path: Path | None) -> tuple[LoadedModel, torch.nn.Module, bool]:
    """(the Transformer as served, as a torch model, whether it is trained).

    Without a path: a random `TransformerConfig()` model, sampled through torch's
    module (`musicgen.inference` builds its serving graph).
    """
    if path is not None:
        return load_model(path), load_checkpoint(path)[0], True
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig()).eval()
    return LoadedModel("transformer (random init)", model, {}), model, False


# ---------------------------------------------------------------- running


def summary(seconds: list[float], tokens: int) -> dict:
    median = statistics.median(seconds)
    return {"tokens": tokens, "seconds": [round(s, 4) for s in seconds],
            "median_s": round(median, 4), "tokens_per_s": round(tokens / median, 1)}


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    lstm, lstm_torch = load_model(args.checkpoint), load_checkpoint(args.checkpoint)[0]
    transformer_path = find_transformer(args.transformer_checkpoint)
    transformer, transformer_torch, trained = load_transformer(transformer_path)
    primer = prompt_from_example(EXAMPLE, args.primer_seconds)
    # generate() samples the served models (time_incremental masks EOS in the
    # stepper); the re-feeding baselines call the torch models' forward, so
    # theirs is masked in the model.
    lstm_model, transformer_model = lstm.model, transformer.model
    lstm_numpy = numpy_serving_model(args.checkpoint)
    transformer_numpy = (numpy_serving_model(transformer_path) if trained else None)
    lstm_refeed, transformer_refeed = NoEos(lstm_torch), NoEos(transformer_torch)
    context = transformer.model.config.context
    renderer = Renderer(synths=os.cpu_count() or 1)  # as the app's Studio: room for a live render
    warm_midi = notes_to_pretty_midi(decode_events(primer.tokens)[0])

    # Everything once, untimed: allocator, kernels, the soundfont.
    log("warming up")
    time_incremental(lstm_model, primer.tokens, 32, 0)
    time_incremental(transformer_model, primer.tokens, 32, 0)
    time_incremental(lstm_numpy, primer.tokens, 32, 0)
    time_refeed(lstm_refeed, primer.tokens, 4, LSTM_WINDOW, 0, onednn=False)
    time_refeed(lstm_refeed, primer.tokens, 4, LSTM_WINDOW, 0, onednn=True)
    time_refeed(transformer_refeed, primer.tokens, 4, context, 0, onednn=False)
    renderer.render(warm_midi)

    # Each takes the seed; all are run once per repeat, interleaved.
    plan = {
        "lstm_incremental": partial(time_incremental, lstm_model, primer.tokens, args.tokens),
        "lstm_window": partial(time_refeed, lstm_refeed, primer.tokens, args.baseline_tokens,
                               LSTM_WINDOW, onednn=False),
        "lstm_window_onednn": partial(time_refeed, lstm_refeed, primer.tokens,
                                      args.baseline_tokens, LSTM_WINDOW, onednn=True),
        "transformer_kv_cache": partial(time_incremental, transformer_model, primer.tokens,
                                        args.tokens),
        "transformer_no_cache": partial(time_refeed, transformer_refeed, primer.tokens,
                                        args.baseline_tokens, context, onednn=False),
        "lstm_numpy_float32": partial(time_reference, lstm_numpy, primer.tokens, args.tokens),
        "lstm_rows": partial(time_incremental, lstm_model, primer.tokens, args.tokens // 4,
                             rows=ROWS),
        "lstm_numpy_rows": partial(time_reference, lstm_numpy, primer.tokens,
                                   args.tokens // 4, rows=ROWS),
    }
    if transformer_numpy is not None:
        plan["transformer_numpy_float32"] = partial(time_reference, transformer_numpy,
                                                    primer.tokens, args.tokens)
    measurements: dict[str, list[float]] = {key: [] for key in plan}
    e2e: dict[str, list[dict]] = {"lstm": [], "transformer": []}
    meter = LoadMeter()
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as folder:
        for repeat in range(1, args.repeats + 1):
            seed = repeat
            for key, measure in plan.items():
                seconds = measure(seed=seed)
                measurements[key].append(seconds)
                log(f"  run {repeat}/{args.repeats}  {key:<22} {seconds:8.3f} s")
            lstm_run = time_end_to_end(lstm, primer, renderer, Path(folder), seed=0)
            e2e["lstm"].append(lstm_run)
            if trained:
                transformer_run = time_end_to_end(transformer, primer, renderer, Path(folder),
                                                  seed=0)
            else:
                transformer_run = time_estimated_end_to_end(transformer_model, primer,
                                                            lstm_run, seed=0)
            e2e["transformer"].append(transformer_run)
            log(f"  run {repeat}/{args.repeats}  end to end  lstm {lstm_run['total_s']:.3f} s,"
                f" transformer {transformer_run['total_s']:.3f} s")

    def tokens_of(key: str) -> int:
        if key in ("lstm_window", "lstm_window_onednn", "transformer_no_cache"):
            return args.baseline_tokens
        return args.tokens // 4 * ROWS if key.endswith("_rows") else args.tokens

    rates = {key: summary(seconds, tokens_of(key)) for key, seconds in measurements.items()}
    lstm_rate = rates["lstm_incremental"]["tokens_per_s"]
    ratios = {
        "lstm_incremental_vs_window": round(lstm_rate / rates["lstm_window"]["tokens_per_s"], 1),
        "lstm_incremental_vs_window_onednn":
            round(lstm_rate / rates["lstm_window_onednn"]["tokens_per_s"], 1),
        "transformer_kv_cache_vs_no_cache":
            round(rates["transformer_kv_cache"]["tokens_per_s"]
                  / rates["transformer_no_cache"]["tokens_per_s"], 1),
        "lstm_int8_vs_numpy_float32":
            round(lstm_rate / rates["lstm_numpy_float32"]["tokens_per_s"], 2),
        "lstm_rows_int8_vs_numpy_float32":
            round(rates["lstm_rows"]["tokens_per_s"] / rates["lstm_numpy_rows"]["tokens_per_s"],
                  2),
    }
    if "transformer_numpy_float32" in rates:
        ratios["transformer_int8_vs_numpy_float32"] = round(
            rates["transformer_kv_cache"]["tokens_per_s"]
            / rates["transformer_numpy_float32"]["tokens_per_s"], 2)
    end_to_end = {}
    for name, runs in e2e.items():
        medians = {key: round(statistics.median(run[key] for run in runs), 3) for key in (
            "sampling_s", "compose_s", "render_s", "encode_s", "total_s", "audio_bytes")}
        last = runs[-1]
        end_to_end[name] = {**medians, "total_runs_s": [round(r["total_s"], 3) for r in runs],
                            **{key: last[key] for key in ("tokens", "stop", "music_s",
                                                          "audio_s", "engine")}}
    return {
        "primer": {"example": EXAMPLE, "window_seconds": args.primer_seconds,
                   "seconds": primer.seconds, "tokens": len(primer.tokens)},
        "sampling": {"temperature": TEMPERATURE, "top_k": TOP_K, "top_p": TOP_P},
        "repeats": args.repeats,
        "models": {
            "lstm": {"checkpoint": str(args.checkpoint),
                     "architecture": describe(lstm.model.config),
                     "parameters": count_parameters(lstm_torch)},
            "transformer": {"checkpoint": str(transformer_path) if trained else None,
                            "trained": trained,
                            "architecture": describe(transformer.model.config),
                            "parameters": count_parameters(transformer_torch)},
        },
        "rates": rates,
        "ratios": ratios,
        "end_to_end": end_to_end,
        "targets": TARGETS,
        "machine": {
            **meter.record(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": cpu_name(),
            "cpu": cpu_details(),
        },
    }


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(result: dict) -> str:
    """The human-readable summary of `run`'s result."""
    rates, ratios, e2e, machine = (result[key] for key in ("rates", "ratios", "end_to_end",
                                                           "machine"))
    lstm, transformer = result["models"]["lstm"], result["models"]["transformer"]
    primer = result["primer"]
    lines = [f"Sampling on the CPU, batch 1, {machine['torch_threads']} torch thread(s), "
             f"median of {result['repeats']} runs",
             f"primer: the last {primer['window_seconds']:g} s of {primer['example']!r} "
             f"({primer['seconds']:.1f} s to its last event, {primer['tokens']} tokens); "
             f"T={result['sampling']['temperature']}, "
             f"top-p={result['sampling']['top_p']}",
             f"LSTM: {lstm['architecture']}, {lstm['parameters']:,} parameters "
             f"({lstm['checkpoint']})",
             f"Transformer: {transformer['architecture']}, {transformer['parameters']:,} "
             "parameters " + (f"({transformer['checkpoint']})" if transformer["trained"] else
                              "(NO CHECKPOINT: randomly initialised TransformerConfig(); "
                              "speed does not depend on the weights)"),
             "",
             f"{'':<40} {'tokens':>6} {'median s':>9} {'tokens/s':>9}  all runs (s)"]
    labels = {
        "lstm_incremental": "a LSTM generate (state carried)",
        "lstm_window": f"b LSTM re-feed last {LSTM_WINDOW}, oneDNN off",
        "lstm_window_onednn": f"b LSTM re-feed last {LSTM_WINDOW}, oneDNN on",
        "transformer_kv_cache": "c Transformer generate (KV cache)",
        "transformer_no_cache": "c Transformer re-feed context, no cache",
        "lstm_numpy_float32": "e LSTM generate, numpy float32 (before)",
        "transformer_numpy_float32": "e Transformer generate, numpy float32",
        "lstm_rows": f"e LSTM generate, {ROWS} rows",
        "lstm_numpy_rows": f"e LSTM generate, {ROWS} rows, numpy float32",
    }
    for key, label in labels.items():
        if key not in rates:
            continue
        rate = rates[key]
        runs = ", ".join(f"{s:.3f}" for s in rate["seconds"])
        lines.append(f"{label:<40} {rate['tokens']:>6} {rate['median_s']:>9.3f} "
                     f"{rate['tokens_per_s']:>9.1f}  {runs}")
    lstm_rate = rates["lstm_incremental"]["tokens_per_s"]
    transformer_rate = rates["transformer_kv_cache"]["tokens_per_s"]
    # The target is judged against the faster window baseline.
    speedup = min(ratios["lstm_incremental_vs_window"],
                  ratios["lstm_incremental_vs_window_onednn"])
    lines += [
        "",
        f"a / b (oneDNN off): {ratios['lstm_incremental_vs_window']:.1f}x   "
        f"a / b (oneDNN on): {ratios['lstm_incremental_vs_window_onednn']:.1f}x",
        f"c KV cache / no cache: {ratios['transformer_kv_cache_vs_no_cache']:.1f}x "
        "(no-cache timed on its shortest contexts only: a lower bound)",
        f"int8 graph / numpy float32, same run: LSTM "
        f"{ratios['lstm_int8_vs_numpy_float32']:.2f}x, at {ROWS} rows "
        f"{ratios['lstm_rows_int8_vs_numpy_float32']:.2f}x"
        + (f", Transformer {ratios['transformer_int8_vs_numpy_float32']:.2f}x"
           if "transformer_int8_vs_numpy_float32" in ratios else ""),
        f"target Transformer >= {TARGETS['transformer_tokens_per_s']} events/s: "
        f"{transformer_rate:.0f} "
        f"({_mark(transformer_rate >= TARGETS['transformer_tokens_per_s'])})",
        f"target LSTM >= {TARGETS['lstm_tokens_per_s']} events/s: {lstm_rate:.0f} "
        f"({_mark(lstm_rate >= TARGETS['lstm_tokens_per_s'])}); "
        f">= {TARGETS['lstm_speedup']}x the faster window approach: {speedup:.1f}x "
        f"({_mark(speedup >= TARGETS['lstm_speedup'])})",
        "",
        f"d end to end, {CLIP_SECONDS:g} s continuation, seed 0: compose + render + "
        f"{CLIP_SUFFIX} (model loaded, renderer warm)",
        f"{'':<12} {'sample s':>9} {'compose s':>10} {'render s':>9} {'enc s':>6} "
        f"{'total s':>8} {'target':>7}  tokens  music s  audio s  {'engine':<10}  all totals (s)",
    ]
    for name, target in (("lstm", TARGETS["lstm_e2e_s"]),
                         ("transformer", TARGETS["transformer_e2e_s"])):
        run = e2e[name]
        totals = ", ".join(f"{s:.3f}" for s in run["total_runs_s"])
        lines.append(f"{name:<12} {run['sampling_s']:>9.3f} {run['compose_s']:>10.3f} "
                     f"{run['render_s']:>9.3f} {run['encode_s']:>6.3f} {run['total_s']:>8.3f} "
                     f"{'<= ' + format(target, 'g'):>7}  {run['tokens']:>6} "
                     f"{run['music_s']:>8.1f} {run['audio_s']:>8.1f}  {run['engine']:<10}  "
                     f"{totals}  ({_mark(run['total_s'] <= target)}); "
                     f"{run['audio_bytes'] / 1024:.0f} KB")
    if not transformer["trained"]:
        lines.append("transformer end to end is ESTIMATED: the random model samples the LSTM "
                     "clip's token count; decoding, rendering and encoding are the LSTM clip's.")
    lines += [
        "sample s = generate only; compose s adds decoding and building the MIDI. Audio "
        "includes the seed and a 1 s tail.",
        "",
        load_line(machine),
        f"python {machine['python']}, torch {machine['torch']}",
        cpu_line(machine["cpu"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help=f"LSTM checkpoint folder (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--transformer-checkpoint", type=Path, default=None,
                        help="Transformer checkpoint folder (default: the first Transformer in "
                             "checkpoints/, else a randomly initialised TransformerConfig())")
    parser.add_argument("--repeats", type=int, default=5,
                        help="runs of each measurement; the median is reported (default: 5)")
    parser.add_argument("--tokens", type=int, default=1000,
                        help="tokens per run of the incremental sampler (default: 1000)")
    parser.add_argument("--baseline-tokens", type=int, default=200,
                        help="tokens per run of the re-feeding baselines (default: 200)")
    parser.add_argument("--primer-seconds", type=float, default=10.0,
                        help=f"seconds of {EXAMPLE!r} to continue (default: 10)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: leave torch's default)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if min(args.repeats, args.tokens, args.baseline_tokens) < 1:
        sys.exit("error: --repeats, --tokens and --baseline-tokens must be at least 1")
    if not args.checkpoint.exists():
        sys.exit(f"error: no LSTM checkpoint at {args.checkpoint}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    result = run(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
