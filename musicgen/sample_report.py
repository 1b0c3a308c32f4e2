"""The `evaluate-samples` run: test-split prompts continued by each model, measured, reported.

    evaluation = evaluate_samples(["checkpoints/lstm", "checkpoints/transformer"],
                                  "../shared/data/maestro-v3.0.0", n=50)
    write_report(evaluation, "docs/evaluation")

Prompts: `n` test-split performances at least `prompt_seconds + seconds` long,
evenly spaced through the split in the cache's order; each prompt is the
`prompt_seconds` from `PROMPT_POSITION` (30%) of the performance on, rounded
down to a whole second, and the real continuation is what the pianist played
next. Every model continues every prompt once per condition: greedy and each
temperature x top-p of the grid, with the app's longest silence
(`Settings.max_silence`) and the seed `seed + i` for prompt i, so reruns give
the same notes.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from musicgen.checkpoint import CARD, record_evaluation
from musicgen.compose import LoadedModel, compose, load_model
from musicgen.data import TokenCache, open_cache, open_split
from musicgen.errors import UserError
from musicgen.events import decode_events
from musicgen.notes import Notes
from musicgen.prompt import Prompt, prompt_from_notes
from musicgen.recipe import RECIPE_VERSION
from musicgen.samples import (
    FEATURES,
    FRECHET_FEATURES,
    TIMELINE_BIN_SECONDS,
    ClipFeatures,
    TrainIntervals,
    best_scale,
    clip_features,
    compare_sets,
    density,
    kde_grid,
)
from musicgen.settings import Settings, to_bool

DEFAULT_N = 50
DEFAULT_SECONDS = 30.0
PROMPT_SECONDS = 10.0
PROMPT_POSITION = 0.3  # of the way through a performance: past the opening, not the coda
# The app's default (T 0.85, top-p 1, paired notes, timing kept) and T 1: with
# greedy, three conditions per model, which is what fits 15 minutes for N = 50 on
# 2 cores (a 30 s clip takes about 2.6 s of one core for the LSTM, 5 s for the
# Transformer). Each further condition costs 3-4 minutes of the 2 cores;
# docs/evaluation ran 7 per model.
DEFAULT_TEMPERATURES = (Settings.temperature, 1.0)
FREE = {"key": "free", "register": "free", "density": "free"}  # a condition not following
DEFAULT_TOP_PS = (1.0,)
MIN_N = 4  # the real-vs-real ceiling needs two halves of at least two prompts
REAL = "real"
CEILING = "real (other half)"


@dataclass(frozen=True)
class Excerpt:
    """One prompt from the test split and what the pianist played after it.

    Attributes:
        source: The performance's file.
        start: Seconds into it where the prompt begins.
        prompt: The prompt.
        real: The real continuation, from the prompt's end, starting at 0 s.
    """

    source: str
    start: float
    prompt: Prompt
    real: Notes


@dataclass(frozen=True)
class Condition:
    """How to sample: greedy (temperature 0), or a temperature, top-p and min-p, and the
    `Settings` yes/no controls paired_notes, keep_timing and release_held_keys;
    follow_seed asks a model with a control input to keep the seed's key,
    register and density (the app's default), or lets it play free."""

    temperature: float
    top_p: float
    min_p: float = 0.0
    paired_notes: bool = False
    keep_timing: bool = False
    release_held_keys: bool = False
    follow_seed: bool = True

    @property
    def label(self) -> str:
        if self.temperature == 0:
            label = "greedy"
        else:
            label = f"T={self.temperature:g} top-p={self.top_p:g}"
            label += f" min-p={self.min_p:g}" if self.min_p else ""
        return (label + (" paired" if self.paired_notes else "")
                + (" keep-timing" if self.keep_timing else "")
                + (" release-held" if self.release_held_keys else "")
                + ("" if self.follow_seed else " free"))

    def settings_fields(self) -> dict:
        """The `Settings` fields this condition sets, by name."""
        fields = {name: value for name, value in asdict(self).items() if name != "follow_seed"}
        return {**fields, **({name: getattr(Settings, name) for name in FREE}
                             if self.follow_seed else FREE)}

    @staticmethod
    def default() -> Condition:
        """The app's default."""
        return Condition(Settings.temperature, Settings.top_p, Settings.min_p,
                         Settings.paired_notes, Settings.keep_timing, Settings.release_held_keys,
                         all(getattr(Settings, name) == "as the seed" for name in FREE))


def sampling_conditions(temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                        top_ps: Sequence[float] = DEFAULT_TOP_PS,
                        min_ps: Sequence[float] = (Settings.min_p,),
                        pairings: Sequence[bool] = (Settings.paired_notes,),
                        timings: Sequence[bool] = (Settings.keep_timing,),
                        releases: Sequence[bool] = (Settings.release_held_keys,),
                        follows: Sequence[bool] = (True,),
                        ) -> list[Condition]:
    """Greedy, then every temperature x top-p x min-p x pairing x timing x release, checked
    by `Settings`.

    Args:
        temperatures: Sampling temperatures (0 is greedy and is always included).
        top_ps: Nucleus thresholds.
        min_ps: Min-p thresholds.
        pairings: Values of `Settings.paired_notes`, as bools or words such
            as "yes" (greedy, the reference without sampling, is unpaired).
        timings: Values of `Settings.keep_timing`, likewise (greedy has no
            temperature to keep the timing from).
        releases: Values of `Settings.release_held_keys`, likewise (greedy,
            which draws nothing, has none).
        follows: Whether the model keeps the seed's key, register and density
            (`Condition.follow_seed`), likewise (greedy follows it).

    Returns:
        The conditions, greedy first, without repeats.

    Raises:
        SettingsError: A value outside the app's range.
    """
    pairings = [to_bool("paired notes", value) for value in pairings]
    timings = [to_bool("keep timing", value) for value in timings]
    releases = [to_bool("release held keys", value) for value in releases]
    follows = [to_bool("follow the seed", value) for value in follows]
    conditions = [Condition(0.0, Settings.top_p)]
    for temperature, top_p, min_p, paired, timed, released, follow in itertools.product(
            temperatures, top_ps, min_ps, pairings, timings, releases, follows):
        Settings(temperature=temperature, top_p=top_p, min_p=min_p)
        condition = Condition(float(temperature), float(top_p), float(min_p), paired, timed,
                              released, follow)
        if temperature != 0 and condition not in conditions:
            conditions.append(condition)
    return conditions


def prompt_excerpts(data: str | os.PathLike | TokenCache, n: int = DEFAULT_N,
                    seconds: float = DEFAULT_SECONDS,
                    prompt_seconds: float = PROMPT_SECONDS) -> list[Excerpt]:
    """The `n` prompts of the run and their real continuations (see the module docstring).

    Args:
        data: A `TokenCache`, or a token cache or MAESTRO folder
            (`musicgen.data.open_cache`).
        n: How many prompts.
        seconds: Length of each continuation.
        prompt_seconds: Length of each prompt.

    Returns:
        The excerpts, in the split's order.

    Raises:
        UserError: No such folder, no test split, or too few performances long enough.
    """
    if n < MIN_N:
        raise UserError(f"evaluating samples needs at least {MIN_N} prompts, not {n}")
    Settings(seconds=seconds)
    cache = data if isinstance(data, TokenCache) else _open_data(data)
    pieces, durations = open_split(cache, "test")
    sources = [p["source"] for p in cache.pieces if p["split"] == "test"]
    long_enough = [i for i, d in enumerate(durations) if d >= prompt_seconds + seconds
                   and math.floor(PROMPT_POSITION * d) + prompt_seconds + seconds <= d]
    if len(long_enough) < n:
        raise UserError(f"the test split has {len(long_enough)} performances of at least "
                        f"{prompt_seconds + seconds:g} s; ask for at most that many prompts")
    chosen = [long_enough[k] for k in np.linspace(0, len(long_enough) - 1, n).round().astype(int)]
    excerpts = []
    for i in chosen:
        start = float(math.floor(PROMPT_POSITION * durations[i]))
        # The prompt keeps pedalled notes whole, as prompt_from_tokens does; the
        # continuation is decoded exactly as generated tokens are (5 s cut).
        heard, _ = decode_events(pieces[i], max_note_seconds=None)
        played, _ = decode_events(pieces[i])
        prompt = prompt_from_notes(heard, prompt_seconds, f"test:{sources[i]}@{start:g}s", start)
        begin = start + prompt.seconds
        excerpts.append(Excerpt(sources[i], start, prompt, played.window(begin, begin + seconds)))
    return excerpts


def _open_data(data: str | os.PathLike) -> TokenCache:
    """`open_cache`, with a plain message for a folder that is not there."""
    if not Path(data).is_dir():
        raise UserError(f"there is no data folder {data}; give a MAESTRO folder or token cache "
                        "with --data")
    return open_cache(data)


def continue_excerpts(model: LoadedModel, excerpts: Sequence[Excerpt], condition: Condition,
                      seconds: float, seed: int = 0,
                      on_clip: Callable[[], None] | None = None) -> list[Notes]:
    """Each model continuation of the excerpts' prompts under one condition.

    Args:
        model: The model.
        excerpts: From `prompt_excerpts`.
        condition: How to sample.
        seconds: Length of each continuation.
        seed: Prompt i is sampled with seed + i.
        on_clip: Called after each continuation.

    Returns:
        The continuations, each starting at 0 s.
    """
    clips = []
    for i, excerpt in enumerate(excerpts):
        settings = Settings(seconds=seconds, **condition.settings_fields(), seed=seed + i,
                            include_prompt=False)
        clips.append(compose(model, excerpt.prompt, settings)[0].notes)
        if on_clip is not None:
            on_clip()
    return clips


@dataclass
class SampleEvaluation:
    """Everything one run measured.

    Attributes:
        excerpts: The prompts and real continuations.
        clips: Set name ("real", "<model> <condition>") -> its continuations.
        features: Set name -> the features of each continuation.
        comparison: `musicgen.samples.compare_sets` of every set against real.
        copying: Set name -> `TrainIntervals.copying` of its continuations.
        models: Model name -> {"checkpoint", "accuracy", "nll"} (test split, from its card).
        conditions: Set name -> {"model", "temperature", "top_p"}.
        seconds: Continuation length.
        timing: Seconds spent per stage and per set.
    """

    excerpts: list[Excerpt]
    clips: dict[str, list[Notes]]
    features: dict[str, list[ClipFeatures]]
    comparison: dict
    copying: dict[str, dict]
    models: dict[str, dict]
    conditions: dict[str, dict]
    seconds: float
    timing: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """The JSON-ready numbers (no per-clip notes), as `--json` prints and results.json holds."""
        sets = {}
        for name, measured in self.comparison["sets"].items():
            copying = self.copying.get(REAL if name == CEILING else name, {})
            sets[name] = {**self.conditions.get(name, {}), **measured,
                          "copying": {k: v for k, v in copying.items()
                                      if k not in ("share", "longest")}}
        return _finite({"prompts": [{"source": e.source, "start": e.start,
                             "prompt_seconds": round(e.prompt.seconds, 2)}
                            for e in self.excerpts],
                "seconds": self.seconds, "models": self.models, "sets": sets,
                "split": self.comparison["split"], "timing": self.timing})


def evaluate_samples(checkpoints: Sequence[str | os.PathLike], data: str | os.PathLike,
                     n: int = DEFAULT_N, seconds: float = DEFAULT_SECONDS,
                     temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                     top_ps: Sequence[float] = DEFAULT_TOP_PS,
                     min_ps: Sequence[float] = (Settings.min_p,),
                     pairings: Sequence[bool] = (Settings.paired_notes,),
                     timings: Sequence[bool] = (Settings.keep_timing,),
                     releases: Sequence[bool] = (Settings.release_held_keys,),
                     follows: Sequence[bool] = (True,),
                     resamples: int = 1000,
                     seed: int = 0, workers: int | None = None,
                     on_progress: Callable[[str, int, int], None] | None = None,
                     for_cards: bool = False) -> SampleEvaluation:
    """Sample every checkpoint on the test prompts and compare with the real continuations.

    Args:
        checkpoints: Checkpoint folders.
        data: A MAESTRO folder or token cache with train and test splits.
        n: Prompts.
        seconds: Continuation length.
        temperatures, top_ps, min_ps, pairings, timings, releases: The
            sampling grid (greedy is always added); pairings are values of
            `Settings.paired_notes`, timings of `Settings.keep_timing`,
            releases of `Settings.release_held_keys`.
        resamples: Bootstrap draws for the intervals.
        seed: Prompt i is sampled with seed + i; also seeds the bootstrap.
        workers: Processes sampling at once (None: one per CPU core); the
            notes do not depend on it.
        on_progress: Called with (set name, clips done, clips in the set).
        for_cards: The result is for `record_in_cards`, so the grid must hold
            the app's default setting, which is what a card keeps.

    Returns:
        The evaluation.

    Raises:
        UserError: A bad setting, a missing folder or checkpoint, no test or
            train split, too few long performances, or (for cards) a grid
            without the app's default (all before any sampling).
    """
    began = time.perf_counter()
    conditions = sampling_conditions(temperatures, top_ps, min_ps, pairings, timings, releases,
                                     follows)
    if for_cards and Condition.default() not in conditions:
        raise UserError(f"a card keeps the numbers of the app's default setting "
                        f"({Condition.default().label}); add it to the grid")
    for path in checkpoints if for_cards else ():
        if not (Path(path) / CARD).is_file():
            raise UserError(f"{path} has no {CARD} to write to (give checkpoint folders)")
    if not checkpoints:
        raise UserError("give at least one checkpoint with --checkpoint")
    models = [load_model(path) for path in checkpoints]
    names = [model.name for model in models]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"two checkpoints are both called {repeated[0]}: each set is named after "
                        "its model, so give each checkpoint a name of its own (export --name)")
    cache = _open_data(data)
    excerpts = prompt_excerpts(cache, n, seconds)
    train, _ = open_split(cache, "train")
    timing = {"prompts_s": time.perf_counter() - began}

    clips = {REAL: [e.real for e in excerpts]}
    meta, jobs = {}, []
    for model, path in zip(models, checkpoints, strict=True):
        for condition in conditions:
            name = f"{model.name} {condition.label}"
            meta[name] = {"model": model.name, "temperature": condition.temperature,
                          "top_p": condition.top_p, "min_p": condition.min_p,
                          "paired_notes": condition.paired_notes,
                          "keep_timing": condition.keep_timing,
                          "release_held_keys": condition.release_held_keys,
                          "follow_seed": condition.follow_seed}
            clips[name] = [None] * len(excerpts)
            for first in range(0, len(excerpts), PROMPTS_PER_JOB):
                jobs.append(_Job(name, str(path), condition, first,
                                 excerpts[first:first + PROMPTS_PER_JOB], seconds, seed))
    started = time.perf_counter()
    for job, notes, spent in _run_jobs(jobs, workers):
        clips[job.name][job.first:job.first + len(notes)] = notes
        timing[f"sampling_s {job.name}"] = timing.get(f"sampling_s {job.name}", 0.0) + spent
        if on_progress is not None:
            on_progress(job.name, sum(c is not None for c in clips[job.name]), len(excerpts))
    timing["sampling_wall_s"] = time.perf_counter() - started

    started = time.perf_counter()
    features = {name: [clip_features(clip, e.prompt.notes, seconds)
                       for clip, e in zip(set_clips, excerpts, strict=True)]
                for name, set_clips in clips.items()}
    comparison = compare_sets(features[REAL], {k: v for k, v in features.items() if k != REAL},
                              resamples, seed)
    timing["features_and_comparison_s"] = time.perf_counter() - started
    started = time.perf_counter()
    index = TrainIntervals.from_pieces(train)
    copying = {name: index.copying(set_clips) for name, set_clips in clips.items()}
    timing["copying_s"] = time.perf_counter() - started
    timing["total_s"] = time.perf_counter() - began
    accuracy = {model.name: _card_accuracy(model, path) for model, path in
                zip(models, checkpoints, strict=True)}
    return SampleEvaluation(excerpts, clips, features, comparison, copying, accuracy, meta,
                            seconds, {k: round(v, 2) for k, v in timing.items()})


PROMPTS_PER_JOB = 10  # small enough to keep every worker busy to the end


@dataclass(frozen=True)
class _Job:
    """Some prompts of one set, sampled in one worker."""

    name: str
    checkpoint: str
    condition: Condition
    first: int  # index of the first prompt, for its seed
    excerpts: Sequence[Excerpt]
    seconds: float
    seed: int


def _run_jobs(jobs: list[_Job], workers: int | None):
    """(job, its continuations, seconds it took) for every job, as they finish.

    Sampling one token is a chain of small products that one core runs best
    (`musicgen.sample` holds BLAS to one thread), so the cores are used by
    sampling different jobs in different processes.
    """
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        yield from (_sample_job(job) for job in jobs)
        return
    # Longest first: the Transformer's jobs take twice the LSTM's, and a long
    # job started last would leave the other cores idle.
    ordered = sorted(jobs, key=lambda job: "lstm" in job.checkpoint)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from (future.result() for future in
                    as_completed([pool.submit(_sample_job, job) for job in ordered]))


@lru_cache(maxsize=4)
def _worker_model(checkpoint: str) -> LoadedModel:
    return load_model(checkpoint)


def _sample_job(job: _Job) -> tuple[_Job, list[Notes], float]:
    started = time.perf_counter()
    notes = continue_excerpts(_worker_model(job.checkpoint), job.excerpts, job.condition,
                              job.seconds, job.seed + job.first)
    return job, notes, time.perf_counter() - started


def _card_accuracy(model: LoadedModel, path: str | os.PathLike) -> dict:
    """The test-split likelihood and accuracy its card records (None where never evaluated)."""
    scored = model.card.get("evaluation", {}).get("test", {}).get("model", {})
    return {"checkpoint": str(path), "accuracy": scored.get("accuracy"), "nll": scored.get("nll"),
            "weights_sha256": model.card.get("weights_sha256")}


# --------------------------------------------------------------------------- reading the numbers

# What a card keeps per feature, in this order: density, note length, loudness
# and stuck notes, the four sample targets of the models; the rest stays in the report.
CARD_FEATURES = ("notes_per_second", "duration_median", "velocity_mean", "long_note_share")


def card_entry(evaluation: SampleEvaluation, model: str, command: str | None = None) -> dict:
    """What a model's card keeps of an evaluation: its samples at the app's default.

    Args:
        evaluation: An evaluation whose grid held the app's default setting.
        model: The model's name, as in `evaluation.models`.
        command: How the evaluation was made, to repeat it.

    Returns:
        JSON-ready: the setting (its label, its `Settings` fields by name,
        and the recipe version that samples it), the weights' hash, prompts
        (test split) and seconds, Fréchet distance with
        its interval and the real-against-real ceiling, mean |d|, d with its
        interval and both means for each of `CARD_FEATURES`, and the copied
        shares.

    Raises:
        UserError: The evaluation has no set of this model at the app's default.
    """
    setting = Condition.default().label
    rows = {row["name"]: row for row in ranking(evaluation)}
    name = f"{model} {setting}"
    if name not in rows:
        raise UserError(f"the evaluation has no {model} samples at the app's default ({setting})")
    row, measured = rows[name], evaluation.comparison["sets"][name]["features"]
    real = evaluation.comparison["sets"][REAL]["features"]
    return _finite({
        "command": command, "prompts": len(evaluation.excerpts), "seconds": evaluation.seconds,
        "setting": setting, "settings": Condition.default().settings_fields(),
        "recipe_version": RECIPE_VERSION,
        "weights_sha256": evaluation.models[model].get("weights_sha256"),
        "frechet": row["frechet"], "frechet_ci": row["frechet_ci"],
        "ceiling_frechet": rows[CEILING]["frechet"], "mean_abs_d": row["mean_abs_smd"],
        "features": {feature: {"d": measured[feature]["smd"], "d_ci": measured[feature]["smd_ci"],
                               "mean": measured[feature]["mean"],
                               "real_mean": real[feature]["mean"]}
                     for feature in CARD_FEATURES},
        "copied_share": row["copied_share"],
        "real_copied_share": evaluation.copying[REAL]["mean_share"]})


def current_samples(card: dict) -> dict | None:
    """A card's `card_entry`, if it describes these weights as the app samples them today.

    Args:
        card: A checkpoint's card.

    Returns:
        Its evaluation.samples, or None: there is none, or it was measured on
        other weights, at another default setting or length, or with another
        recipe version (whose sampling rules may differ).
    """
    entry = card.get("evaluation", {}).get("samples") or {}
    defaults = Settings()
    settings = entry.get("settings") or {}
    # Version 8 added only what a model with a control input reads: a model without
    # one samples as it did at version 7.
    versions = {RECIPE_VERSION} | (
        set() if card.get("config", {}).get("control_input") else {7})
    if (not settings or entry.get("recipe_version") not in versions
            or entry.get("weights_sha256") != card.get("weights_sha256")
            or entry.get("seconds") != defaults.seconds
            or any(getattr(defaults, name, None) != value for name, value in settings.items())):
        return None
    return entry


def record_in_cards(evaluation: SampleEvaluation, command: str | None = None) -> list[Path]:
    """Store each model's `card_entry` in its checkpoint's card, under evaluation.samples.

    Args:
        evaluation: An evaluation made with `for_cards`.
        command: How it was made, to repeat it.

    Returns:
        The checkpoint folders whose cards were updated.
    """
    entries = {model: card_entry(evaluation, model, command) for model in evaluation.models}
    folders = []
    for model, entry in entries.items():
        folder = Path(evaluation.models[model]["checkpoint"])
        record_evaluation(folder, "samples", entry)
        folders.append(folder)
    return folders


def ranking(evaluation: SampleEvaluation) -> list[dict]:
    """One row per set: its headline numbers, closest to real first (by Fréchet distance).

    Returns:
        Dicts with name, model, frechet, frechet_ci, mean_abs_smd, far_features
        (|d| > 0.5), overlap (mean over features), copied_share, longest_match.
    """
    rows = []
    for name, measured in evaluation.comparison["sets"].items():
        if name == REAL:
            continue
        features = measured["features"]
        smd = [abs(features[f]["smd"]) for f in FRECHET_FEATURES]
        copying = evaluation.copying[REAL if name == CEILING else name]
        rows.append({"name": name, "model": evaluation.conditions.get(name, {}).get("model"),
                     "frechet": measured["frechet"], "frechet_ci": measured["frechet_ci"],
                     "mean_abs_smd": float(np.mean(smd)),
                     "far_features": int(sum(d > 0.5 for d in smd)),
                     "overlap": float(np.mean([v["overlap"] for v in features.values()])),
                     "copied_share": copying["mean_share"],
                     "longest_match": copying["mean_longest"],
                     "max_match": copying["max_longest"]})
    return sorted(rows, key=lambda row: row["frechet"])


def findings(evaluation: SampleEvaluation) -> list[str]:
    """The answers the report gives, as sentences built from this run's numbers."""
    rows = ranking(evaluation)
    by_name = {row["name"]: row for row in rows}
    ceiling = by_name[CEILING]
    default = Condition.default().label
    lines = []
    models = evaluation.models
    ordered = sorted(models, key=lambda m: -(models[m]["accuracy"] or 0))
    if all(models[m]["accuracy"] is not None for m in models) and len(models) > 1:
        lines.append("Accuracy (test split, from the cards) ranks " + " > ".join(
            f"{m} ({models[m]['accuracy']:.3f})" for m in ordered) + ". It scores one "
            "step at a time with the real past, which is exactly greedy decoding's choice, so "
            "it cannot rank greedy against sampled decoding at all.")
    best = {}
    for model in models:
        own = [row for row in rows if row["model"] == model]
        best[model] = own[0]
        greedy = by_name.get(f"{model} greedy")
        line = (f"{model}: closest to real playing is {own[0]['name']} (Fréchet "
                f"{own[0]['frechet']:.2f}, mean |d| {own[0]['mean_abs_smd']:.2f}); ")
        if greedy is not None:
            place = [row["name"] for row in own].index(greedy["name"]) + 1
            line += (f"greedy is {place} of {len(own)} (Fréchet {greedy['frechet']:.2f}, "
                     f"{greedy['far_features']} features with |d| > 0.5, longest repeat "
                     f"{_mean_feature(evaluation, greedy['name'], 'longest_repeat'):.0f} "
                     "intervals on average against "
                     f"{_mean_feature(evaluation, REAL, 'longest_repeat'):.0f} in real playing)")
        app = by_name.get(f"{model} {default}")
        if app is not None:
            line += (f"; the app's default ({default}) is "
                     f"{[row['name'] for row in own].index(app['name']) + 1} of {len(own)} "
                     f"(Fréchet {app['frechet']:.2f})")
        lines.append(line + ".")
    if len(best) > 1:
        order = sorted(best.values(), key=lambda row: row["frechet"])
        lines.append("At its best setting " + " beats ".join(
            f"{row['model']} ({row['frechet']:.2f})" for row in order)
            + " on Fréchet distance; the ceiling, two halves of the real continuations, "
            f"scores {ceiling['frechet']:.2f} "
            f"[{ceiling['frechet_ci'][0]:.2f}, {ceiling['frechet_ci'][1]:.2f}].")
    real_copy = evaluation.copying[REAL]
    most = max((row for row in rows if row["name"] != CEILING),
               key=lambda row: row["copied_share"])
    lines.append(f"Copying: {real_copy['mean_share']:.1%} of the real test continuations' "
                 f"interval 8-grams occur in the train split (longest match "
                 f"{real_copy['mean_longest']:.1f} intervals on average, at most "
                 f"{real_copy['max_longest']}); the most of any model set is {most['name']} "
                 f"with {most['copied_share']:.1%} (longest {most['longest_match']:.1f}, "
                 f"at most {most['max_match']}).")
    return lines


def _mean_feature(evaluation: SampleEvaluation, name: str, feature: str) -> float:
    return evaluation.comparison["sets"][name]["features"][feature]["mean"]


def format_summary(evaluation: SampleEvaluation) -> str:
    """Plain-text ranking and findings for the terminal."""
    lines = [f"{'set':<32} {'Fréchet':>8} {'mean|d|':>8} {'overlap':>8} {'in train':>9}"]
    for row in ranking(evaluation):
        lines.append(f"{row['name']:<32} {row['frechet']:8.2f} {row['mean_abs_smd']:8.2f} "
                     f"{row['overlap']:8.2f} {row['copied_share']:9.1%}")
    return "\n".join(lines + [""] + findings(evaluation))


# --------------------------------------------------------------------------- the report

PLOTTED_FEATURES = ("notes_per_second", "polyphony", "silence_fraction", "pitch_range",
                    "pitch_class_entropy", "mean_abs_interval", "ioi_median", "duration_median",
                    "velocity_std", "key_agreement_end", "distinct_4", "longest_repeat")
REAL_COLOUR = "#222222"
MODEL_COLOURS = ("#5b7db1", "#e0823d", "#5aa469", "#a05195")


def write_report(evaluation: SampleEvaluation, directory: str | os.PathLike,
                 command: str = "") -> Path:
    """Write README.md, results.json and three PNG plots into `directory`.

    Args:
        evaluation: From `evaluate_samples`.
        directory: Created if missing.
        command: The command line that produced it, quoted in the report.

    Returns:
        The Markdown file's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shown = _plotted_sets(evaluation)
    _plot_features(evaluation, shown, directory / "features.png")
    _plot_pitch_classes(evaluation, shown, directory / "pitch_classes.png")
    _plot_density(evaluation, shown, directory / "density.png")
    _plot_timeline(evaluation, shown, directory / "over_time.png")
    (directory / "results.json").write_text(
        json.dumps(evaluation.summary(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    path = directory / "README.md"
    path.write_text(_markdown(evaluation, command), encoding="utf-8")
    return path


def _plotted_sets(evaluation: SampleEvaluation) -> dict[str, tuple[str, str]]:
    """Sets drawn in the plots -> (colour, line style): real, and per model greedy,
    the app's default and its closest setting."""
    default = Condition.default().label
    rows = ranking(evaluation)
    shown = {REAL: (REAL_COLOUR, "-")}
    for k, model in enumerate(evaluation.models):
        colour = MODEL_COLOURS[k % len(MODEL_COLOURS)]
        closest = next(row["name"] for row in rows if row["model"] == model)
        for name, style in ((f"{model} greedy", ":"), (f"{model} {default}", "--"),
                            (closest, "-")):
            if name in evaluation.clips and name not in shown:
                shown[name] = (colour, style)
    return shown


def _plot_features(evaluation: SampleEvaluation, shown: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only for the report

    figure = Figure(figsize=(10, 7.5))
    axes = figure.subplots(3, 4).ravel()
    for axis, feature in zip(axes, PLOTTED_FEATURES, strict=True):
        k = list(FEATURES).index(feature)
        samples = {name: np.array([c.values[k] for c in evaluation.features[name]])
                   for name in shown}
        grid = kde_grid(*samples.values())
        for name, values in samples.items():
            colour, style = shown[name]
            axis.plot(grid.points, density(values, grid), color=colour, linestyle=style,
                      linewidth=2 if name == REAL else 1.2, label=name)
        pooled = np.concatenate(list(samples.values()))
        margin = 0.05 * max(float(np.ptp(pooled)), 1e-9)
        axis.set_xlim(pooled.min() - margin, pooled.max() + margin)
        axis.set_title(feature, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.set_yticks([])
    axes[0].legend(fontsize=6, loc="upper right")
    figure.suptitle("Feature distributions over the prompts (kernel densities on one grid)",
                    fontsize=10)
    _save(figure, path)


def _plot_pitch_classes(evaluation: SampleEvaluation, shown: dict, path: Path) -> None:
    """Mean pitch-class shares relative to each prompt's tonic, so keys do not blur together."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only for the report

    figure = Figure(figsize=(8, 3.4))
    axis = figure.subplots()
    roots = [best_scale(e.prompt.notes.pitch)[0] if len(e.prompt.notes) else 0
             for e in evaluation.excerpts]
    width = 0.8 / len(shown)
    for k, (name, (colour, style)) in enumerate(shown.items()):
        shares = np.mean([np.roll(c.pitch_classes, -root) for c, root in
                          zip(evaluation.features[name], roots, strict=True)], axis=0)
        axis.bar(np.arange(12) + (k - len(shown) / 2 + 0.5) * width, shares, width,
                 color=colour, alpha=1.0 if style == "-" else 0.55,
                 hatch=None if style == "-" else ("//" if style == "--" else ".."),
                 label=name)
    axis.set_xticks(np.arange(12), [str(i) for i in range(12)])
    axis.set_xlabel("semitones above the prompt's tonic (root of its best-fitting scale)")
    axis.set_ylabel("share of notes")
    axis.legend(fontsize=6, ncol=2)
    _save(figure, path)


def _plot_density(evaluation: SampleEvaluation, shown: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only for the report

    figure = Figure(figsize=(8, 3.4))
    axis = figure.subplots()
    for name, (colour, style) in shown.items():
        curves = np.stack([c.density for c in evaluation.features[name]])
        times = np.arange(curves.shape[1]) * (evaluation.seconds / curves.shape[1])
        axis.plot(times, curves.mean(0), color=colour, linestyle=style,
                  linewidth=2 if name == REAL else 1.2, label=name, drawstyle="steps-post")
    axis.set_xlabel("seconds into the continuation")
    axis.set_ylabel("notes per second (mean over prompts)")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=6, ncol=2)
    _save(figure, path)


def _plot_timeline(evaluation: SampleEvaluation, shown: dict, path: Path) -> None:
    """Key agreement with the prompt, mean pitch and polyphony over the continuation."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only for the report

    figure = Figure(figsize=(10, 3.4))
    axes = figure.subplots(1, 3)
    titles = ("key: correlation with the prompt", "mean pitch (MIDI)",
              "notes sounding at once")
    for name, (colour, style) in shown.items():
        curves = np.stack([c.timeline for c in evaluation.features[name]])  # [n, 3, bins]
        times = (np.arange(curves.shape[2]) + 0.5) * TIMELINE_BIN_SECONDS
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a bin silent in every clip
            means = np.nanmean(curves, axis=0)
        for axis, mean in zip(axes, means, strict=True):
            axis.plot(times, mean, color=colour, linestyle=style,
                      linewidth=2 if name == REAL else 1.2, label=name, marker=".")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("seconds into the continuation", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    figure.suptitle(f"Over time: mean over prompts in {TIMELINE_BIN_SECONDS:g} s bins",
                    fontsize=10)
    _save(figure, path)


# What music that holds together is judged by: the last third against the
# prompt, and what comes back (the coherence targets: |d| <= 0.3, repetition 0.5).
TIME_FEATURES = ("key_third_3", "pitch_mean_third_3", "pitch_range_third_3",
                 "polyphony_third_3", "distinct_4", "rhythm_distinct_4", "restated_share",
                 "bar_similarity")


def _save(figure, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    figure.tight_layout()
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=72)


def _markdown(evaluation: SampleEvaluation, command: str) -> str:
    sets = evaluation.comparison["sets"]
    names = [name for name in sets if name != REAL]
    n = len(evaluation.excerpts)
    lines = ["# Do the samples play like real pianists?", "",
             f"{n} prompts from the MAESTRO v3.0.0 test split, each "
             f"{PROMPT_SECONDS:g} s from {PROMPT_POSITION:.0%} of the way through a "
             f"performance, continued for {evaluation.seconds:g} s by the pianist (*real*) and "
             "by each model under each sampling condition (prompt i with seed i; longest "
             f"silence {Settings.max_silence:g} s as in the app). Features are measured on the "
             "continuation only. Made by `musicgen/sample_report.py`:", "",
             "```bash", command or "python -m musicgen evaluate-samples ...", "```", "",
             f"Run time: {evaluation.timing.get('total_s', 0) / 60:.1f} minutes "
             "(BENCHMARKS.md has the machine).", "", "## Findings", ""]
    lines += [f"- {line}" for line in findings(evaluation)]
    lines += ["", "## Accuracy against these measures", "",
              "*Fréchet*: distance between Gaussians fitted to the standardised feature "
              "vectors (real half against the set's other half, both ways; 95% bootstrap "
              "interval over prompts: resampling repeats prompts, which makes a set look "
              "narrower and every distance larger, so an interval can lie wholly above its "
              "estimate, as the ceiling's does; read it as spread, and compare sets by their "
              "estimates). *mean |d|*: mean absolute standardised mean difference against "
              "real over the features. *overlap*: mean over features of the overlap area of "
              "the real intra-set distance density and the real-to-set inter-set distance "
              "density (1 = indistinguishable). *in train*: share of interval 8-grams found "
              "in the train split; *longest*: longest exact interval match, mean and max. "
              "The *real (other half)* row is the ceiling: real playing against itself.", "",
              "| set | test accuracy | nats/event | Fréchet [95% CI] | mean \\|d\\| | "
              "features \\|d\\| > 0.5 | overlap | in train | longest (mean / max) |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in ranking(evaluation):
        model = evaluation.models.get(row["model"], {})
        accuracy = "-" if model.get("accuracy") is None else f"{model['accuracy']:.3f}"
        nll = "-" if model.get("nll") is None else f"{model['nll']:.3f}"
        low, high = row["frechet_ci"]
        lines.append(f"| {row['name']} | {accuracy} | {nll} | {row['frechet']:.2f} "
                     f"[{low:.2f}, {high:.2f}] | {row['mean_abs_smd']:.2f} | "
                     f"{row['far_features']} | {row['overlap']:.2f} | "
                     f"{row['copied_share']:.1%} | {row['longest_match']:.1f} / "
                     f"{row['max_match']} |")
    lines += ["", "![Feature distributions](features.png)", "",
              "![Pitch classes relative to the prompt's tonic](pitch_classes.png)", "",
              "![Notes per second over the continuation](density.png)", "",
              "## Over time", "",
              "Does the music hold together? The last third of each continuation against its "
              "prompt, and what comes back, as d against real (|d| <= 0.3 is within reach "
              "of the pianists; the over-time curves below are means over the prompts).", "",
              "| feature | real | " + " | ".join(names) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for feature in TIME_FEATURES:
        real = sets[REAL]["features"][feature]
        cells = [f"{sets[name]['features'][feature]['smd']:+.2f}" for name in names]
        lines.append(f"| {feature}: {FEATURES[feature]} | {real['mean']:.3g} ± "
                     f"{real['std']:.2g} | " + " | ".join(cells) + " |")
    lines += ["", "![Key, register and polyphony over the continuation](over_time.png)", "",
              "## Per feature", "",
              "Real mean ± std, then each set's standardised mean difference d against real "
              "(negative: less than real).", "",
              "| feature | real | " + " | ".join(names) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for feature, meaning in FEATURES.items():
        real = sets[REAL]["features"][feature]
        cells = [f"{sets[name]['features'][feature]['smd']:+.2f}" for name in names]
        lines.append(f"| {feature}: {meaning} | {real['mean']:.3g} ± {real['std']:.2g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Overlap area (intra-set real distances against inter-set distances; "
              "1 = indistinguishable) per feature, with the pitch-class histogram and "
              "transition matrix as vectors.", "",
              "| feature | " + " | ".join(names) + " |",
              "| --- | " + " | ".join("---:" for _ in names) + " |"]
    for feature in sets[names[0]]["features"]:
        cells = [f"{sets[name]['features'][feature]['overlap']:.2f}" for name in names]
        lines.append(f"| {feature} | " + " | ".join(cells) + " |")
    lines += ["", "## How it is measured", "",
              "Both real and generated continuations are notes decoded from event tokens by "
              "the same decoder (sustain applied when the MIDI was read, held notes cut at "
              "5 s), windowed to the clip's length. MGEval's flaws are fixed: every density "
              "of one feature is estimated on one common grid, a set whose values do not vary "
              "gets a narrow kernel instead of a failed KDE, and inter-set pairs that share a "
              "prompt are left out as intra-set pairs leave out a clip with itself, so a set "
              "against itself overlaps exactly 1. Copying reads pitch intervals, so a copy is "
              "found in any transposition. Per-clip numbers, the CIs of every mean and d, "
              "and the KL divergences are in `results.json`.", ""]
    return "\n".join(lines)


def _finite(value):
    """JSON without NaN or infinity (None instead), as `json.dumps(allow_nan=False)` wants."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
