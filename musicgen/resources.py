"""Where the shipped checkpoints and soundfonts are, found the same way by every front end.

One root holds `checkpoints/` and `soundfonts/`. It is, in order:

1. `$MUSICGEN_ROOT`, when set;
2. the source checkout this package runs from (the folder above `musicgen/`,
   when it holds `checkpoints/`): `make demo`, a Hugging Face Space, an
   editable install;
3. the package itself, where `pip install .` puts both folders as package data.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "MUSICGEN_ROOT"
PACKAGE_DIR = Path(__file__).resolve().parent


def resource_root() -> Path:
    """The folder that holds `checkpoints/` and `soundfonts/` (see the module docstring)."""
    if value := os.environ.get(ROOT_ENV):
        return Path(value).expanduser()
    checkout = PACKAGE_DIR.parent
    if (checkout / "checkpoints").is_dir():
        return checkout
    return PACKAGE_DIR


def checkpoint_dir() -> Path:
    """The folder of shipped checkpoint folders."""
    return resource_root() / "checkpoints"


def soundfont_dir() -> Path:
    """The folder where soundfonts may be dropped (and where shipped ones lie)."""
    return resource_root() / "soundfonts"
