"""A non-editable install finds its shipped checkpoints and soundfonts (musicgen.resources)."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO, tiny_checkpoint

from musicgen import resources


def test_the_root_is_the_environment_variable_then_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(resources.ROOT_ENV, raising=False)
    assert resources.checkpoint_dir() == REPO / "checkpoints"
    monkeypatch.setenv(resources.ROOT_ENV, str(tmp_path))
    assert resources.checkpoint_dir() == tmp_path / "checkpoints"
    assert resources.soundfont_dir() == tmp_path / "soundfonts"


def test_a_non_editable_install_generates_with_its_packaged_checkpoint(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "musicgen", source / "musicgen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "soundfonts", source / "soundfonts")
    # A small checkpoint stands in for the shipped ones: the same layout, a faster test.
    tiny_checkpoint(source / "checkpoints" / "lstm", "lstm")
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                              "--no-build-isolation", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    shutil.rmtree(source)  # nothing may be read from the source tree any more

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != resources.ROOT_ENV}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run(
        [sys.executable, "-m", "musicgen", "generate", "--example", "Beethoven: Ode to Joy",
         "--seconds", "2", "--seed", "1", "--out", "out.mid", "--json"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    checkpoint = json.loads(result.stdout)["checkpoint"]
    assert checkpoint == str(target / "musicgen" / "checkpoints" / "lstm")
    assert (elsewhere / "out.mid").is_file()
