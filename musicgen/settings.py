"""How to sample a continuation: every default and limit, in one place.

`Settings` is what the CLI's options and the app's sliders set; both read
their ranges, defaults and help texts from `LIMITS` here, and both build
`Settings` through `Settings.from_user`, which turns what a person typed into
checked values or a `SettingsError` in plain words, before any sampling runs.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, fields, replace

from musicgen.controls import DENSITY_CHOICES, KEY_CHOICES, REGISTER_CHOICES
from musicgen.errors import SettingsError

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Limit:
    """The range of one setting, and how to name it to people.

    Attributes:
        low: Smallest allowed value.
        high: Largest allowed value.
        label: Its name in the UI and in messages.
        help: One phrase on what it does.
    """

    low: float
    high: float
    label: str
    help: str = ""

    def check(self, value: float) -> None:
        """Raise SettingsError unless low <= value <= high."""
        if not self.low <= value <= self.high:
            raise SettingsError(f"{self.label} must be between {_shown(self.low)} and "
                                f"{_shown(self.high)}, not {_shown(value)}")


def _shown(value: float) -> str:
    """A number as people write it: 2147483647, not 2.14748e+09; 0.05, not 0.050000."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


LIMITS = {
    "seconds": Limit(1, 120, "Length of the continuation (seconds)"),
    "temperature": Limit(0, 2, "Temperature",
                         "0 = greedy (always the likeliest event); higher = more adventurous"),
    "top_k": Limit(0, 200, "Top-k", "sample among the k likeliest events; 0 = off"),
    "top_p": Limit(0.05, 1, "Top-p", "sample among the likeliest events that make up p; 1 = off"),
    "min_p": Limit(0, 0.5, "Min-p", "leave out events less likely than this share of the "
                   "likeliest; 0 = off"),
    "seed": Limit(0, MAX_SEED, "Variation",
                  "the random seed: the same number gives the same notes"),
    "n": Limit(1, 4, "Candidates", "continuations sampled at once, variations seed, seed+1, ..."),
    "max_silence": Limit(0, 30, "Longest silence (seconds)",
                         "a new note starts before a gap grows longer; 0 = no limit"),
    # A yes/no: 0 and 1 are its range.
    "paired_notes": Limit(0, 1, "Paired notes",
                          "a key is struck only when silent and released only when sounding, "
                          "as in real playing"),
    "keep_timing": Limit(0, 1, "Keep the model's timing",
                         "temperature changes which notes are played, not when: pauses "
                         "and note lengths stay as the model would play them"),
    "release_held_keys": Limit(0, 1, "Release held keys",
                               "a key held 3 s or more gets about a 2% chance or more of being "
                               "let go at each event (pianists: 2-4%), so notes do not hang on"),
}


@dataclass(frozen=True)
class Choice:
    """A setting picked from named options, and how to name it to people.

    Attributes:
        options: What may be picked; the first is the default.
        label: Its name in the UI and in messages.
        help: One phrase on what it does.
    """

    options: tuple[str, ...]
    label: str
    help: str = ""

    def pick(self, value) -> str:
        """The option `value` names (any case, spaces around ignored), or SettingsError."""
        by_name = {option.lower(): option for option in self.options}
        picked = by_name.get(str(value).strip().lower()) if isinstance(value, str) else None
        if picked is None:
            shown = ", ".join(self.options[:4]) + (", ..." if len(self.options) > 4 else "")
            raise SettingsError(f"{self.label} must be one of {shown}, not {str(value)[:40]!r}")
        return picked


# What the music should keep, for a model with a control input (`musicgen.controls`).
CHOICES = {
    "key": Choice(KEY_CHOICES, "Key", "the key the continuation keeps: as the seed, free, "
                  "or one such as D minor or F# major"),
    "register": Choice(REGISTER_CHOICES, "Register", "how high it plays: as the seed, "
                       "lower, higher or free"),
    "density": Choice(DENSITY_CHOICES, "Density", "how many notes a second: as the seed, "
                      "sparser, denser or free"),
}


@dataclass(frozen=True)
class Settings:
    """How to sample; every field goes into the recipe.

    Attributes:
        seconds: Length of the continuation.
        temperature: Divides the model's logits (with keep_timing, only within
            the pitches and the velocities); 0 is greedy decoding.
        top_k: Keep the k likeliest events (0: all).
        top_p: Nucleus: keep the likeliest events up to this probability (1: all).
        min_p: Leave out events less likely than min_p times the likeliest (0: none).
        seed: The random seed of candidate 0; candidate i uses seed + i.
        n: How many candidates.
        include_prompt: Whether the written music starts with the seed MIDI's excerpt.
        max_silence: Seconds without a new note after which the sampler must
            start one (0: no limit); it keeps a model from drifting into
            minutes of nothing after a final chord.
        paired_notes: Sample a NOTE_ON only for a silent pitch and a
            NOTE_OFF only for a sounding one (`musicgen.sample.generate`).
        paired_keeps_types: How paired_notes bans a key: its probability
            stays with its event type, so the model's chance of striking or
            releasing a key is kept (`musicgen.sample.move_within_types`).
            False is the rule recipes of version 5 and older were sampled
            with; it is not a control anyone picks, so no UI shows it.
        keep_timing: Temper only which pitch and velocity come next; time
            shifts and the mix of event types stay at temperature 1
            (`musicgen.sample.temper_keeping_timing`). Exactly so only without
            a top-k, top-p or min-p cut, which ranks all events together after it.
        release_held_keys: Raise the chance of releasing a key held 3 s or more
            to `musicgen.sample.RELEASE_FLOOR` a token where the sampler's is lower.
        key, register, density: What the continuation keeps of the seed, or
            what it should have instead (`CHOICES`; `musicgen.controls.target_controls`).
            Only a model with a control input reads them.
    """

    seconds: float = 30.0
    # T 0.85 keeping the model's timing, without a nucleus: of the settings
    # measured on 50 prompts, the closest to real playing for both shipped
    # models (docs/evaluation/timing: Frechet distance 14.7 for the LSTM and
    # 11.6 for the Transformer, against 15.0 and 16.5 at T 0.9 tempering every
    # event, whose shorter time shifts made notes too dense and too short).
    temperature: float = 0.85
    top_k: int = 0
    top_p: float = 1.0
    # Off by default: on 50 prompts min-p 0.05 matched the pianists' density
    # and note length but thinned the texture (Frechet 160 against 17;
    # docs/evaluation/controls).
    min_p: float = 0.0
    seed: int = 0
    n: int = 1
    include_prompt: bool = True
    max_silence: float = 4.0
    # On, with paired_keeps_types: the LSTM's notes held 4 s or more fell from
    # d +0.77 to +0.37 against the pianists' on 150 prompts (+0.68 to +0.16 on
    # 50), its Frechet distance from 11.4 to 9.8, and density, length and
    # loudness stayed within 0.3 SD (docs/evaluation/paired-notes). For the
    # Transformer it did not help (Frechet 7.8 -> 8.9); the LSTM is the default.
    paired_notes: bool = True
    keep_timing: bool = True
    paired_keeps_types: bool = True
    # On: with it the LSTM's notes held 4 s or more are as common as the
    # pianists' (d +0.37 -> -0.04 on 150 prompts), its density, note length and
    # loudness stay within 0.3 SD, and its Frechet distance within noise
    # (BENCHMARKS.md, "Releasing held keys").
    release_held_keys: bool = True
    key: str = "as the seed"
    register: str = "as the seed"
    density: str = "as the seed"

    def __post_init__(self) -> None:
        for name, limit in LIMITS.items():
            limit.check(getattr(self, name))
        for name, choice in CHOICES.items():
            value = getattr(self, name)
            if value not in choice.options:  # exactly: from_user is where spelling is forgiven
                raise SettingsError(f"{choice.label} must be one of "
                                    f"{', '.join(choice.options[:4])}, ..., not {value!r}")
        if self.seed + self.n - 1 > MAX_SEED:
            raise SettingsError(f"with {self.n} candidates the variation can be at most "
                                f"{MAX_SEED - self.n + 1}")

    @classmethod
    def from_user(cls, new_seed: bool = False, **values) -> Settings:
        """Settings from what a person typed or picked, checked.

        Args:
            new_seed: Pick a new random seed whatever `seed` says.
            **values: Fields of Settings. None means the default, except for
                `seed`, where None (an emptied field, an option not given)
                means a new random seed. Numbers may come as strings or
                floats; whole-number fields accept 3.0 but not 3.5.

        Returns:
            The checked settings.

        Raises:
            SettingsError: An unknown field, a value that is not a number, or
                one out of range (the message names the setting as the UI does).
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(f"there is no setting called {', '.join(unknown)}")
        if new_seed:
            values["seed"] = None
        given = {}
        for name, value in values.items():
            if value is None and name != "seed":
                continue
            label = LIMITS[name].label if name in LIMITS else name.replace("_", " ")
            if name in CHOICES:
                given[name] = CHOICES[name].pick(value)
            elif name == "seed" and value in (None, ""):
                given[name] = secrets.randbelow(MAX_SEED - LIMITS["n"].high)
            elif known[name].type == "bool":
                given[name] = to_bool(label, value)
            else:
                given[name] = to_number(label, value, whole=known[name].type == "int")
        return cls(**given)

    def but(self, **changes) -> Settings:
        """A copy with some fields changed (and checked)."""
        return replace(self, **changes)


# Named for how they play. "Balanced" is the default, the setting the evaluation
# of samples against real playing chose (docs/evaluation/timing); "Steady" samples
# from a narrower nucleus at a lower temperature (fewer surprises, more
# repetition), "Adventurous" the other way.
PRESETS = {
    "Steady": {"temperature": 0.75, "top_p": 0.9, "top_k": 0, "min_p": 0.0},
    "Balanced": {"temperature": Settings.temperature, "top_p": Settings.top_p, "top_k": 0,
                 "min_p": Settings.min_p},
    "Adventurous": {"temperature": 1.15, "top_p": 0.98, "top_k": 0, "min_p": 0.0},
}
DEFAULT_PRESET = "Balanced"


def to_number(label: str, value, whole: bool = False) -> float | int:
    """A number from what a person typed (a string, an int or float), or SettingsError.

    Args:
        label: The setting's name in messages.
        value: The value.
        whole: Require a whole number (3.0 is accepted as 3).
    """
    if isinstance(value, bool):
        raise SettingsError(f"{label} must be a number, not {value}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        shown = str(value)[:40] if str(value).strip() else "an empty field"
        raise SettingsError(f"{label} must be a number, not {shown}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{label} must be a finite number, not {value}")
    if not whole:
        return number
    if number != int(number):
        raise SettingsError(f"{label} must be a whole number, not {value}")
    return int(number)


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def to_bool(label: str, value) -> bool:
    """A yes/no from a bool, 0/1, or a word such as "true" or "no"; else SettingsError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise SettingsError(f"{label} must be yes or no (true or false), not {value}")
