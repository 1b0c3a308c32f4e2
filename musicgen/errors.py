"""What a user did wrong, in plain words: the one error type the front ends catch.

`UserError` means "the input was wrong and the message says how to put it
right"; the CLI prints it, the app shows it, and both keep running. Anything
else that escapes the library is a bug and surfaces as one (a traceback, or
Gradio's generic error), never dressed up as a user's mistake.

Messages are sentences for people: no quotes around the offending value, no
parser jargon, and where it helps, what to do instead. This module imports
nothing, so every stage (training machines without MIDI libraries included)
can raise these.
"""


class UserError(ValueError):
    """Input that cannot be used, with a message that says why and what to do."""


class MidiError(UserError):
    """A MIDI file that cannot be used."""


class SettingsError(UserError):
    """A setting out of its range, of the wrong type, or unknown."""


class RecipeError(UserError):
    """A recipe (stored in a MIDI file written by musicgen) that cannot be replayed."""
