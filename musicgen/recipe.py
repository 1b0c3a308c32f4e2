"""Recipes: what it takes to sample a candidate again, stored inside its MIDI file.

Every MIDI that musicgen writes carries, in a text meta event, the model's
name and weights hash, the `Settings` with the candidate's own seed, and the
prompt's tokens and hash. `read_recipe` gets it back, checked, and
`replay` turns it into the same call to `musicgen.compose.compose`, which
gives the same notes.

Older recipes are read too: version 1's `primer_*` keys (before the seed MIDI
was called the prompt in the code) are renamed, versions 1 and 2, sampled
before there was a longest-silence limit, replay without one, and versions
1 to 3 without min-p or paired notes, versions 1 to 4 without keeping the
model's timing, versions 1 to 5 with paired notes that spread a banned
key's probability over every event (`Settings.paired_keeps_types` False),
versions 1 to 6 without releasing held keys, and versions 1 to 7 with no
key, register or density to keep ("free").
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields

import mido
import numpy as np

from musicgen.errors import MidiError, RecipeError, SettingsError
from musicgen.events import VOCAB, decode_events
from musicgen.prompt import Prompt, prompt_from_tokens
from musicgen.settings import Settings

RECIPE_PREFIX = "musicgen-recipe:"
RECIPE_VERSION = 8
_V1_NAMES = {"primer_source": "prompt_source", "primer_sha256": "prompt_sha256",
             "primer_seconds": "prompt_seconds", "primer_tokens": "prompt_tokens",
             "include_primer": "include_prompt"}
_SETTINGS = tuple(f.name for f in fields(Settings))
REQUIRED = ("model", "weights_sha256", "prompt_source", "prompt_sha256", "prompt_seconds",
            "prompt_tokens", *_SETTINGS)


def make_recipe(model_name: str, weights_sha256: str, prompt: Prompt, settings: Settings,
                index: int = 0) -> dict:
    """Everything needed to sample candidate `index` of a `compose` call again.

    Returns:
        A JSON-ready dict whose `seed` is the candidate's own (settings.seed + index)
        and whose `n` is 1.
    """
    return {"version": RECIPE_VERSION, "model": model_name, "weights_sha256": weights_sha256,
            **asdict(settings.but(seed=settings.seed + index, n=1)),
            "prompt_source": prompt.source, "prompt_sha256": prompt.sha256,
            "prompt_seconds": prompt.seconds,
            "prompt_tokens": [int(t) for t in prompt.tokens], "vocab": VOCAB.version}


def recipe_text(recipe: dict) -> str:
    """The recipe as the text of its MIDI meta event."""
    return RECIPE_PREFIX + json.dumps(recipe)


def read_recipe(source: str | os.PathLike) -> dict:
    """The recipe stored in a MIDI file written by musicgen, checked and in the current version.

    Raises:
        MidiError: The file cannot be read as MIDI.
        RecipeError: It holds no musicgen recipe, or one that is damaged.
    """
    try:
        midi = mido.MidiFile(str(source))
    except (OSError, ValueError, EOFError):
        raise MidiError(f"{source} cannot be read as a MIDI file") from None
    for track in midi.tracks:
        for message in track:
            if message.is_meta and message.type == "text" and message.text.startswith(
                    RECIPE_PREFIX):
                return _checked(message.text[len(RECIPE_PREFIX):], source)
    raise RecipeError(f"{source} holds no musicgen recipe (only MIDI files written by "
                      "musicgen do)")


def _checked(text: str, source) -> dict:
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError:
        recipe = None
    if not isinstance(recipe, dict):
        raise RecipeError(f"the recipe in {source} is damaged (it is not valid JSON)")
    version = recipe.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= RECIPE_VERSION:
        raise RecipeError(f"the recipe in {source} is of version {version}, which this "
                          f"musicgen (recipes up to version {RECIPE_VERSION}) cannot replay")
    if version == 1:
        recipe = {_V1_NAMES.get(key, key): value for key, value in recipe.items()}
        recipe.setdefault("n", 1)
    if version <= 2:
        recipe.setdefault("max_silence", 0.0)
    if version <= 3:
        recipe.setdefault("min_p", 0.0)
        recipe.setdefault("paired_notes", False)
    if version <= 4:
        recipe.setdefault("keep_timing", False)
    if version <= 5:
        # A paired recipe replays with the rule it was sampled with. An unpaired
        # one never used either rule, so a replay that turns pairing on gets
        # today's, the only one a person can ask for.
        recipe.setdefault("paired_keeps_types", not recipe["paired_notes"])
    if version <= 6:
        recipe.setdefault("release_held_keys", False)
    if version <= 7:
        for name in ("key", "register", "density"):
            recipe.setdefault(name, "free")
    missing = [key for key in REQUIRED if recipe.get(key) is None]
    if missing:
        raise RecipeError(f"the recipe in {source} is incomplete: it lacks "
                          f"{', '.join(missing)}")
    wrong = [key for key in ("model", "weights_sha256", "prompt_source", "prompt_sha256")
             if not isinstance(recipe[key], str)]
    if not isinstance(recipe["prompt_tokens"], list):
        wrong.append("prompt_tokens")
    if wrong:
        raise RecipeError(f"the recipe in {source} is damaged: {', '.join(wrong)} "
                          "is not what musicgen writes there")
    if recipe.get("vocab", VOCAB.version) != VOCAB.version:
        raise RecipeError(f"the recipe in {source} uses the event vocabulary "
                          f"{recipe['vocab']}, this musicgen {VOCAB.version}")
    return recipe


def recipe_settings(recipe: dict) -> Settings:
    """The recipe's settings (one candidate).

    Raises:
        RecipeError: A setting is out of range or not a number.
    """
    try:
        return Settings.from_user(**{name: recipe[name] for name in _SETTINGS})
    except SettingsError as error:
        raise RecipeError(f"the recipe's settings cannot be used: {error}") from None


def recipe_prompt(recipe: dict) -> Prompt:
    """The exact prompt of a recipe.

    Raises:
        RecipeError: Its tokens are not valid or do not match its hash.
    """
    tokens = recipe["prompt_tokens"]
    if not isinstance(tokens, list) or not all(
            isinstance(t, int) and 0 <= t < VOCAB.size for t in tokens):
        raise RecipeError("the recipe's seed music is damaged (its events are not valid)")
    prompt = prompt_from_tokens(np.array(tokens, dtype=np.int64), recipe["prompt_source"])
    if prompt.sha256 != recipe["prompt_sha256"]:
        raise RecipeError("the recipe's seed music does not match its hash (it was altered)")
    if decode_events(prompt.tokens)[1].closed_at_end:
        raise RecipeError("the recipe's seed music is damaged (a note in it never ends)")
    return prompt


def without_tokens(recipe: dict) -> dict:
    """The recipe without its prompt tokens: what people see, and what a rating stores."""
    return {key: value for key, value in recipe.items() if key != "prompt_tokens"}


def replay(recipe: dict, prompt_seconds: float | None = None,
           prompt_start: float | None = None, **changes) -> tuple[Prompt, Settings]:
    """The prompt and settings that sample a recipe again: the same notes, unless changed.

    Args:
        recipe: From `read_recipe`.
        prompt_seconds, prompt_start: Must be None: the seed MIDI excerpt is
            stored in the recipe and cannot be cut differently (a caller
            passes what the person asked for, so that asking is refused, not
            ignored).
        **changes: Settings fields to change (None values are ignored), as
            `Settings.from_user` takes them.

    Raises:
        UserError: A change is out of range or impossible, or the recipe is damaged.
    """
    if prompt_seconds is not None or prompt_start is not None:
        raise RecipeError("a recipe holds its own seed MIDI excerpt, which cannot be "
                          "lengthened or shortened; leave out the excerpt length")
    settings = recipe_settings(recipe)
    given = {k: v for k, v in changes.items() if v is not None}
    if given:
        settings = Settings.from_user(**{**asdict(settings), **given})
    return recipe_prompt(recipe), settings


def recipe_summary(recipe: dict) -> str:
    """The recipe in one line for people."""
    return (f"{recipe['model']} ({recipe['weights_sha256'][:8]}), T={recipe['temperature']}, "
            f"top-k={recipe['top_k']}, top-p={recipe['top_p']}, variation {recipe['seed']}, "
            f"{recipe['seconds']:g} s after {recipe['prompt_seconds']:.1f} s of "
            f"{recipe['prompt_source']}")
