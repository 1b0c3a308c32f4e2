"""Serving without torch: the same random draws, the same notes, and no torch imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, tiny_checkpoint

from musicgen.errors import UserError
from musicgen.sample import TorchUniforms, generate
from musicgen.serving import load_serving


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1])
def test_the_uniforms_are_torch_s_bit_for_bit(seed):
    import torch

    generator = torch.Generator().manual_seed(seed)
    expected = [float(torch.rand(1, generator=generator, dtype=torch.float64))
                for _ in range(500)]
    uniforms = TorchUniforms(seed)
    assert [uniforms.next() for _ in range(500)] == expected


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_serving_samples_the_notes_of_the_torch_model(tmp_path, kind):
    """The shipped path (safetensors -> numpy) and the training model agree token for token."""
    from musicgen.checkpoint import load_checkpoint

    path = tiny_checkpoint(tmp_path / kind, kind)
    serving, _ = load_serving(path)
    torch_model, _ = load_checkpoint(path)
    prompt = np.array([300, 60, 270, 188, 60 + 128])
    for seed in (0, 7):
        ours = generate(serving, prompt, max_tokens=150, seed=seed, n=2, temperature=1.1,
                        top_p=0.95)
        theirs = generate(torch_model, prompt, max_tokens=150, seed=seed, n=2,
                          temperature=1.1, top_p=0.95)
        for a, b in zip(ours.tokens, theirs.tokens, strict=True):
            assert np.array_equal(a, b)


def test_a_checkpoint_missing_weights_is_a_plain_message(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = tiny_checkpoint(tmp_path / "lstm")
    weights = load_file(str(path / "model.safetensors"))
    del weights["lstm.weight_hh_l1"]
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(UserError, match="lacks weights its config needs"):
        load_serving(path)


NO_TORCH = """
import json, sys
from musicgen import cli
code = cli.main(sys.argv[1:])
assert code == 0, code
loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
print(json.dumps({"torch_modules": loaded}), file=sys.stderr)
"""


def test_generate_with_audio_imports_no_torch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "generate", "--example", "Beethoven: Ode to Joy",
         "--seconds", "3", "--seed", "1", "--out", str(tmp_path / "out.mid"),
         "--audio", str(tmp_path / "out.mp3"), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = [json.loads(line) for line in result.stderr.splitlines()
              if line.startswith('{"torch_modules"')]
    assert report == [{"torch_modules": []}]
    assert (tmp_path / "out.mp3").stat().st_size > 1000


APP_NO_TORCH = """
import sys
sys.path.insert(0, {repo!r})
import app
from musicgen.listening import build_pool
from musicgen.prompt import choose_prompt
from musicgen.settings import Settings
from musicgen.studio import Studio
studio = Studio(output_dir={out!r}, ratings_path={db!r})
app.build_app(studio)
clips, _ = studio.generate(studio.model_names()[0], choose_prompt("example", seconds=5),
                           Settings(seconds=3, n=2))
build_pool(studio.ratings, studio.models, prompts=1, seconds=5, renderer=studio.renderer)
assert len(clips) == 2
print(sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")))
"""


def test_the_app_and_the_listening_pool_import_no_torch(tmp_path):
    script = APP_NO_TORCH.format(repo=str(REPO), out=str(tmp_path / "outputs"),
                                 db=str(tmp_path / "var" / "ratings.sqlite"))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


WITHOUT_TORCH = """
import sys
class NoTorch:  # as on an app-only install (requirements.txt)
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, NoTorch())
from musicgen import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_without_torch_training_says_what_to_install_and_generate_works(tmp_path):
    run = [sys.executable, "-c", WITHOUT_TORCH]
    train = subprocess.run([*run, "train", "--model", "lstm", "--data", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert train.returncode == 1
    assert "musicgen: train needs torch: pip install -r requirements-train.txt" in train.stderr
    generate = subprocess.run([*run, "generate", "--seconds", "2", "--out",
                               str(tmp_path / "x.mid")], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
    assert generate.returncode == 0, generate.stderr
