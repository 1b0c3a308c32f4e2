"""Command line: `python -m musicgen COMMAND ...`; parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def _prepare(args) -> int:
    from musicgen.corpus import default_cache_dir, prepare

    out = args.out or default_cache_dir(args.data)
    summary = prepare(args.data, out, workers=args.workers, progress=not args.json)
    if args.json:
        print(json.dumps(asdict(summary)))
    else:
        print(f"{summary.files_ok} files encoded ({summary.files_reused} reused), "
              f"{summary.files_skipped} skipped, in {summary.seconds:.1f} s -> {summary.cache}")
        for split, count in summary.tokens.items():
            print(f"  {split:<10} {summary.pieces[split]:5d} pieces {count:>12,} tokens")
        for skipped in summary.skipped:
            print(f"  skipped {skipped['file']}: {skipped['reason']}")
    return 0


def _train(args) -> int:
    from musicgen.train import load_train_config, read_train_settings, resume_config, train

    overrides = {"model": args.model, "data": args.data, "max_steps": args.max_steps,
                 "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr,
                 "seed": args.seed, "eval_interval": args.eval_interval,
                 "precision": args.precision, "init_from": args.init_from,
                 "token_mask_share": args.token_mask_share,
                 "augment": False if args.no_augment else None}
    if args.resume:  # what the file or the options ask for must agree with the stored run
        out = args.out or load_train_config(args.config, model=args.model).out
        config = resume_config(out, **{**read_train_settings(args.config),
                                       **{k: v for k, v in overrides.items() if v is not None}})
    else:
        config = load_train_config(args.config, out=args.out, **overrides)
    time_limit = None if args.time_limit_minutes is None else 60 * args.time_limit_minutes
    train(config, resume=args.resume, until_step=args.until_step, time_limit_s=time_limit)
    return 0


def _evaluate(args) -> int:
    import torch

    from musicgen.evaluate import evaluate, format_report

    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate(args.checkpoint, args.data, split=args.split, window=args.window,
                      bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
                      serving=args.serving, conditioned=not args.free)
    if args.write_card:
        from musicgen.checkpoint import record_evaluation

        record_evaluation(args.checkpoint, result["card_entry"], result)
    print(json.dumps(result, allow_nan=False) if args.json else format_report(result))
    return 0


def _evaluate_samples(args) -> int:
    import shlex

    from tqdm import tqdm

    from musicgen.sample_report import (
        evaluate_samples,
        format_summary,
        record_in_cards,
        write_report,
    )

    bars = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = tqdm(total=total, desc=name, unit="clip", file=sys.stderr)
        bars[name].update(done - bars[name].n)
        if done == total:
            bars[name].close()

    options = {"n": args.n, "seconds": args.seconds, "temperatures": args.temperature,
               "top_ps": args.top_p, "min_ps": args.min_p, "pairings": args.paired_notes,
               "timings": args.keep_timing, "releases": args.release_held_keys,
               "follows": args.follow_seed, "resamples": args.bootstrap, "seed": args.seed,
               "workers": args.workers}
    evaluation = evaluate_samples(args.checkpoint, args.data,
                                  on_progress=None if args.json else progress,
                                  for_cards=args.write_card,
                                  **{k: v for k, v in options.items() if v is not None})
    command = "python -m musicgen " + shlex.join(map(str, args.argv))
    if args.report:
        print(f"report: {write_report(evaluation, args.report, command)}", file=sys.stderr)
    if args.write_card:
        for folder in record_in_cards(evaluation, command):
            print(f"card: {folder}", file=sys.stderr)
    print(json.dumps(evaluation.summary(), allow_nan=False) if args.json
          else format_summary(evaluation))
    return 0


def _download(args) -> int:
    from musicgen.download import DownloadError, download_maestro

    try:
        folder = download_maestro(args.dest, progress=True)
    except DownloadError as error:
        print(f"musicgen: {error}", file=sys.stderr)
        return 1
    print(f"MAESTRO v3.0.0 is in {folder}")
    return 0


def _generate(args) -> int:
    from tqdm import tqdm

    from musicgen import compose
    from musicgen.audio import soundfont_path
    from musicgen.outputs import check_output, numbered, write_candidate
    from musicgen.prompt import choose_prompt
    from musicgen.recipe import without_tokens
    from musicgen.settings import Settings

    soundfont_path(args.soundfont)
    for path in filter(None, (args.out, args.audio)):
        check_output(path)
    changes = {"seconds": args.seconds, "temperature": args.temperature, "top_k": args.top_k,
               "top_p": args.top_p, "min_p": args.min_p, "seed": args.seed, "n": args.n,
               "max_silence": args.max_silence, "paired_notes": args.paired_notes,
               "keep_timing": args.keep_timing, "release_held_keys": args.release_held_keys,
               "key": args.key, "register": args.register, "density": args.density,
               "include_prompt": False if args.continuation_only else None}
    if args.recipe_from is not None:
        request = compose.request_from_recipe(args.recipe_from, args.checkpoint,
                                              args.seed_seconds, args.seed_start, **changes)
    else:
        kind = ("upload" if args.seed_midi is not None else
                "example" if args.example is not None else "silence")
        request = compose.Request(
            Path(args.checkpoint) if args.checkpoint else compose.default_checkpoint(),
            choose_prompt(kind, example=args.example, path=args.seed_midi,
                          seconds=args.seed_seconds, start=args.seed_start),
            Settings.from_user(**changes))
    if request.warning:
        print(f"musicgen: warning: {request.warning}", file=sys.stderr)
    checkpoint = request.checkpoint
    model = compose.load_model(checkpoint)
    bar = tqdm(total=100, unit="%", desc="sampling", disable=args.json, file=sys.stderr)
    candidates = compose.compose(model, request.prompt, request.settings,
                                 on_progress=lambda f: bar.update(round(100 * f) - bar.n))
    bar.close()

    results = []
    for candidate in candidates:
        audio = args.audio and numbered(args.audio, candidate.index, len(candidates))
        files = write_candidate(candidate, numbered(args.out, candidate.index, len(candidates)),
                                audio or None, soundfont=args.soundfont)
        entry = {"midi": str(files.midi),
                 "recipe": without_tokens(candidate.recipe),
                 "stats": candidate.stats, "decode": vars(candidate.report)}
        if files.rendering is not None:
            entry["audio"] = {"path": str(files.audio), "engine": files.rendering.engine,
                              "soundfont": files.rendering.soundfont,
                              "note": files.rendering.note,
                              "rms_dbfs": round(files.rendering.rms_dbfs, 2),
                              "rendering_s": round(files.rendering_s, 3)}
        results.append(entry)
        if not args.json:
            print(f"{files.midi} (variation {candidate.recipe['seed']}): "
                  f"{compose.describe_stats(candidate.stats)}"
                  + (f" -> {files.audio}" if files.audio else ""))
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "candidates": results}))
    return 0


def _setting_help(name: str, text: str = "") -> str:
    """Help for a sampling option, with its range and default from `musicgen.settings`."""
    from musicgen.settings import CHOICES, LIMITS, Settings

    if name in CHOICES:
        return (f"{CHOICES[name].help} (default '{getattr(Settings(), name)}'; read by "
                "models with a key/register/density input)")

    limit = LIMITS[name]
    default = getattr(Settings(), name)
    text = (text or limit.help or limit.label).replace("%", "%%")  # argparse formats help
    if isinstance(default, bool):
        return f"{text} (yes or no, default {'yes' if default else 'no'})"
    return f"{text} ({limit.low:g}-{limit.high:g}, default {default:g})"


def _export(args) -> int:
    from musicgen.checkpoint import export_checkpoint
    from musicgen.serving_graph import export_serving

    folder = export_checkpoint(args.source, args.destination, name=args.name)
    serving = export_serving(folder)
    print(f"exported {args.source} -> {folder} (serving form: {serving.name})")
    return 0


def _export_serving(args) -> int:
    from musicgen.serving_graph import export_serving

    print(f"wrote {export_serving(args.checkpoint)}")
    return 0


def _listening_build(args) -> int:
    from musicgen import compose
    from musicgen.listening import build_pool
    from musicgen.ratings import RatingsStore

    found = compose.find_checkpoints(args.checkpoints)
    models = {name: compose.load_model(path, name) for name, path in found.items()}
    store = RatingsStore(args.db)
    summary = build_pool(store, models, prompts=args.prompts, seconds=args.seconds,
                         seed=args.seed, maestro_dir=args.data, soundfont=args.soundfont,
                         on_clip=None if args.json else lambda line: print(f"  {line}"))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"pool {summary['pool']}: {summary['prompts']} prompts x "
              f"{len(summary['conditions'])} conditions ({', '.join(summary['conditions'])}) "
              f"= {summary['clips']} clips in {summary['seconds_taken']:.0f} s -> "
              f"{summary['folder']}; ratings database {store.path}")
    return 0


def _ratings_summary(args) -> int:
    from musicgen.leaderboard import chart, format_summary, summarise
    from musicgen.ratings import RatingsStore

    result = summarise(RatingsStore(args.db), resamples=args.bootstrap, seed=args.seed,
                       all_pools=args.all_pools, unfiltered=args.unfiltered)
    if args.chart and result["leaderboard"]:
        chart(result, args.chart)
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


def _ratings_export(args) -> int:
    from musicgen.leaderboard import export_csv
    from musicgen.outputs import check_output
    from musicgen.ratings import RatingsStore

    for path in filter(None, (args.csv, args.quick)):
        check_output(path)
    rows = export_csv(RatingsStore(args.db), args.csv, args.quick)
    print(f"{rows} votes -> {args.csv}" + (f"; quick ratings -> {args.quick}"
                                           if args.quick else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from musicgen.configs import CONFIGS
    from musicgen.examples import example_names

    parser = argparse.ArgumentParser(prog="musicgen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("prepare", help="encode a folder of MIDI files into a token cache")
    p.add_argument("--data", required=True, help="MAESTRO tree or any folder of MIDI files")
    p.add_argument("--out", help="cache folder (default: cache/<name of DATA>)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.set_defaults(run=_prepare)

    from musicgen.prompt import DEFAULT_PROMPT_SECONDS, PROMPT_SECONDS

    p = commands.add_parser("generate", help="continue a seed MIDI with a trained model")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the first in checkpoints/)")
    seed_midi = p.add_mutually_exclusive_group()
    seed_midi.add_argument("--seed-midi", help="continue an excerpt of this .mid/.midi file "
                           "(its end; of a piece over a minute, a lively part: see --seed-start)")
    seed_midi.add_argument("--example", help="continue a built-in example, by name: "
                           + "; ".join(example_names()))
    seed_midi.add_argument("--recipe-from", help="sample again what a MIDI written by musicgen "
                           "holds (options given here change its recipe)")
    p.add_argument("--seed-seconds", type=float,
                   help=f"{PROMPT_SECONDS.label} ({PROMPT_SECONDS.low:g}-"
                        f"{PROMPT_SECONDS.high:g}, default {DEFAULT_PROMPT_SECONDS:g})")
    p.add_argument("--seed-start", type=float,
                   help="where in the seed MIDI the excerpt starts, in seconds")
    p.add_argument("--seconds", type=float, help=_setting_help("seconds"))
    p.add_argument("--temperature", type=float, help=_setting_help("temperature"))
    p.add_argument("--top-k", type=int, help=_setting_help("top_k"))
    p.add_argument("--top-p", type=float, help=_setting_help("top_p"))
    p.add_argument("--min-p", type=float, help=_setting_help("min_p"))
    p.add_argument("--seed", type=int, help="random seed (the app's 'variation'): the same "
                   "number gives the same notes (default: a new one each run)")
    p.add_argument("--n", type=int, help=_setting_help("n"))
    p.add_argument("--max-silence", type=float, help=_setting_help("max_silence"))
    p.add_argument("--paired-notes", metavar="yes|no", help=_setting_help("paired_notes"))
    p.add_argument("--keep-timing", metavar="yes|no", help=_setting_help("keep_timing"))
    p.add_argument("--release-held-keys", metavar="yes|no",
                   help=_setting_help("release_held_keys"))
    p.add_argument("--key", help=_setting_help("key"))
    p.add_argument("--register", help=_setting_help("register"))
    p.add_argument("--density", help=_setting_help("density"))
    p.add_argument("--continuation-only", action="store_true",
                   help="write only the continuation, without the seed MIDI's excerpt")
    p.add_argument("--out", default="out.mid", help="MIDI file (several: out-1.mid, ...)")
    p.add_argument("--audio", help="also render to this .wav, .mp3 or .ogg")
    p.add_argument("--soundfont", help="soundfont file (default: the first one found)")
    p.add_argument("--json", action="store_true", help="print paths, recipe, timings as JSON")
    p.set_defaults(run=_generate)

    p = commands.add_parser("evaluate", help="score a checkpoint against baselines")
    p.add_argument("checkpoint", help="checkpoint folder")
    p.add_argument("--data", required=True, help="token cache, MAESTRO tree or MIDI folder")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--window", type=int, help="tokens per model call (see the output)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="sequences (LSTM) or windows (Transformer) per model call")
    p.add_argument("--serving", action="store_true",
                   help="score the int8 serving form that sampling runs, not the float weights")
    p.add_argument("--free", action="store_true",
                   help="a model with key/register/density input: score it without them, "
                        "as every other model is (the card's plain entry); by default each "
                        "event is told those of the real music after it (entry SPLIT_given)")
    p.add_argument("--write-card", action="store_true",
                   help="store the result in the checkpoint's card.json under evaluation.SPLIT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_evaluate)

    from musicgen import sample_report

    p = commands.add_parser("evaluate-samples", help="compare generated continuations of "
                            "test-split prompts with the real ones (features, copying, report)")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint folder (repeat for several models)")
    p.add_argument("--data", required=True, help="MAESTRO tree or token cache (test and train "
                   "splits)")
    p.add_argument("--n", type=int, help=f"prompts (default {sample_report.DEFAULT_N})")
    p.add_argument("--seconds", type=float, help="length of each continuation (default "
                   f"{sample_report.DEFAULT_SECONDS:g})")
    p.add_argument("--temperature", type=float, nargs="+", help="temperatures of the grid "
                   f"(default {' '.join(map(str, sample_report.DEFAULT_TEMPERATURES))}; "
                   "greedy is always added)")
    p.add_argument("--top-p", type=float, nargs="+", help="top-p values of the grid (default "
                   f"{' '.join(map(str, sample_report.DEFAULT_TOP_PS))})")
    p.add_argument("--min-p", type=float, nargs="+", help="min-p values of the grid (default: "
                   "the app's default)")
    p.add_argument("--paired-notes", nargs="+", metavar="yes|no",
                   help="paired-notes values of the grid (default: the app's default)")
    p.add_argument("--keep-timing", nargs="+", metavar="yes|no",
                   help="keep-timing values of the grid (default: the app's default)")
    p.add_argument("--release-held-keys", nargs="+", metavar="yes|no",
                   help="release-held-keys values of the grid (default: the app's default)")
    p.add_argument("--follow-seed", nargs="+", metavar="yes|no",
                   help="whether a model with key/register/density input keeps the seed's "
                        "(yes, the app's default) or plays free (no), as values of the grid")
    p.add_argument("--bootstrap", type=int, help="resamples for the 95%% CIs (default 1000)")
    p.add_argument("--seed", type=int, help="prompt i is sampled with seed + i (default 0)")
    p.add_argument("--workers", type=int, help="processes sampling at once (default: one per "
                   "core; the notes do not depend on it)")
    p.add_argument("--report", help="write README.md, results.json and PNG plots here")
    p.add_argument("--write-card", action="store_true",
                   help="store each model's numbers at the app's default setting in its "
                        "checkpoint's card.json under evaluation.samples")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(run=_evaluate_samples)

    p = commands.add_parser("export", help="copy a training checkpoint as fp16 for shipping")
    p.add_argument("source", help="checkpoint folder, e.g. runs/lstm/best")
    p.add_argument("destination", help="e.g. checkpoints/lstm")
    p.add_argument("--name", help="model name in the card (default: destination's name)")
    p.set_defaults(run=_export)

    p = commands.add_parser("export-serving",
                            help="write a checkpoint's int8 serving graph (serving.onnx)")
    p.add_argument("checkpoint", help="checkpoint folder, e.g. checkpoints/lstm")
    p.set_defaults(run=_export_serving)

    p = commands.add_parser("data", help="fetch data sets")
    data_commands = p.add_subparsers(dest="data_command", required=True)
    p = data_commands.add_parser("download", help="download a data set (resumable)")
    p.add_argument("dataset", choices=("maestro",))
    p.add_argument("--dest", default="data", help="folder to unpack into (default: data)")
    p.set_defaults(run=_download)

    p = commands.add_parser("train", help="train a model on a token cache")
    p.add_argument("--model", choices=list(CONFIGS))
    p.add_argument("--config", help="JSON file of TrainConfig settings")
    p.add_argument("--data", help="token cache folder")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue OUT/last exactly")
    p.add_argument("--init-from", help="start from a checkpoint's weights (new schedule)")
    p.add_argument("--max-steps", type=int, help="length of the schedule")
    p.add_argument("--until-step", type=int, help="stop here (resumable) without changing it")
    p.add_argument("--time-limit-minutes", type=float, help="stop (resumable) after this long")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-interval", type=int)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"))
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--token-mask-share", type=float,
                   help="share of input tokens whose embedding is withheld (default 0)")
    p.set_defaults(run=_train)

    from musicgen.listening import CLIP_SECONDS, PROMPTS

    db_help = ("the ratings database (default: $MUSICGEN_RATINGS_DB, else "
               "/data/musicgen/ratings.sqlite on a Space, else var/ratings.sqlite)")
    p = commands.add_parser("listening", help="the blind listening test")
    listening_commands = p.add_subparsers(dest="listening_command", required=True)
    p = listening_commands.add_parser(
        "build", help="render the pool of clips the Listen tab serves (replaces the current)")
    p.add_argument("--prompts", type=int, default=PROMPTS, help=f"default {PROMPTS}")
    p.add_argument("--seconds", type=float, default=CLIP_SECONDS,
                   help=f"length of every clip (default {CLIP_SECONDS:g})")
    p.add_argument("--seed", type=int, default=0, help="fixes prompts and variations")
    p.add_argument("--data", default=os.environ.get("MUSICGEN_MAESTRO_DIR"),
                   help="MAESTRO v3.0.0, for test-split prompts and the real continuation "
                        "(default: $MUSICGEN_MAESTRO_DIR; without it the built-in examples)")
    p.add_argument("--checkpoints", help="folder of checkpoint folders (default: the shipped)")
    p.add_argument("--soundfont", help="soundfont for every clip (default: the first found)")
    p.add_argument("--db", help=db_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_listening_build)

    p = commands.add_parser("ratings", help="what listeners said: summary and export")
    ratings_commands = p.add_subparsers(dest="ratings_command", required=True)
    p = ratings_commands.add_parser("summary", help="leaderboard, win rates, scores, guesses")
    p.add_argument("--db", help=db_help)
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chart", help="also write the leaderboard as this SVG")
    p.add_argument("--all-pools", action="store_true",
                   help="count the votes of every pool built (default: the latest pool's)")
    p.add_argument("--unfiltered", action="store_true",
                   help="also show the leaderboard of every vote, scripted-looking ones too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_ratings_summary)
    p = ratings_commands.add_parser("export", help="every vote as CSV (raw rows)")
    p.add_argument("--csv", required=True, help="the votes (of every pool) go here")
    p.add_argument("--quick", help="also write the Generate tab's quick ratings here")
    p.add_argument("--db", help=db_help)
    p.set_defaults(run=_ratings_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    from musicgen.errors import UserError

    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what a report records to repeat
    try:
        return args.run(args)
    except UserError as error:
        print(f"musicgen: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        if error.name not in ("torch", "onnx", "scipy", "matplotlib"):
            raise
        # The app's install (requirements.txt) has neither; training does.
        print(f"musicgen: {args.command} needs {error.name}: pip install -r "
              f"requirements-train.txt", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
