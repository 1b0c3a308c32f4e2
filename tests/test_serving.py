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


@pytest.mark.parametrize("kind", ["lstm", "lstm-held", "transformer"])
def test_the_float_serving_graph_samples_the_notes_of_the_torch_model(tmp_path, kind):
    """The serving path (graph, stepper, sampler) and torch's own steps agree token for token.

    With float32 weights in the graph, so that only the int8 rounding, bounded
    in tests/test_serving_graph.py, separates what the app samples from the model.
    """
    from unittest import mock

    from musicgen.checkpoint import load_checkpoint
    from musicgen.inference import TorchStepper
    from musicgen.serving import ServingModel, session_for
    from musicgen.serving_graph import checked_float_weights, serving_graph

    path = tiny_checkpoint(tmp_path / kind, kind)
    torch_model, card = load_checkpoint(path)
    graph = serving_graph(checked_float_weights(path / "model.safetensors", torch_model.config),
                          torch_model.config, quantized=False)
    serving = ServingModel(torch_model.config, session_for(graph.SerializeToString()))
    prompt = np.array([300, 60, 270, 188, 60 + 128])
    # The second: rows that end at different times (torch's stepper keeps them
    # in its batch) while the silence cap bans time shifts in some rows.
    for settings in ({"max_tokens": 150, "seed": 0, "n": 2, "top_p": 0.95},
                     {"max_tokens": 150, "seed": 7, "n": 2, "top_p": 0.95},
                     {"seconds": 1.5, "seed": 3, "n": 3, "max_silence": 0.1}):
        ours = generate(serving, prompt, temperature=1.1, **settings)
        with mock.patch("musicgen.inference.stepper_for", TorchStepper):
            theirs = generate(torch_model, prompt, temperature=1.1, **settings)
        assert ours.stop_reasons == theirs.stop_reasons
        for a, b in zip(ours.tokens, theirs.tokens, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "lstm-held", "transformer"])
def test_a_request_gets_the_same_notes_alone_or_batched_with_others(tmp_path, kind):
    from musicgen.sample import SamplingRequest, generate_batch

    serving, _ = load_serving(tiny_checkpoint(tmp_path / kind, kind))
    ask = SamplingRequest
    requests = [ask(np.array([300, 60, 270, 188]), seconds=2.0, temperature=0.9, seed=3, n=2),
                ask(np.array([]), max_tokens=90, temperature=0.0),  # greedy, from silence
                ask(np.arange(300, 340), seconds=1.0, top_k=20, top_p=0.8, seed=11,
                    max_silence=0.5),
                ask(np.array([62, 290]), max_tokens=40, temperature=1.3, seed=5, n=3),
                ask(np.array([62, 290]), max_tokens=40, temperature=1.3, seed=5, n=2,
                    paired_notes=True, min_p=0.1),
                ask(np.array([62, 290]), max_tokens=40, temperature=0.7, seed=6, n=2,
                    keep_timing=True),
                ask(np.array([62, 290]), max_tokens=40, temperature=0.8, seed=7, n=2,
                    keep_timing=True, paired_notes=True),
                ask(np.array([62, 290]), max_tokens=40, temperature=1.3, seed=5, n=2,
                    paired_notes=True, paired_keeps_types=False),
                ask(np.array([62, 290]), max_tokens=40, temperature=0.0, paired_notes=True),
                ask(np.array([62, 290]), seconds=12.0, temperature=1.0, seed=8, n=2,
                    keep_timing=True, paired_notes=True, release_held_keys=True)]
    together = generate_batch(serving, requests)
    for request, batched in zip(requests, together, strict=True):
        alone = generate_batch(serving, [request])[0]
        assert batched.stop_reasons == alone.stop_reasons
        for a, b in zip(alone.tokens, batched.tokens, strict=True):
            assert np.array_equal(a, b)
        for a, b in zip(alone.entropy, batched.entropy, strict=True):
            assert np.array_equal(a, b)
    assert len({len(t) for g in together for t in g.tokens}) > 1  # rows ended at different steps


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
studio.results()
# None of what requirements.txt leaves out (training, evaluation, building graphs).
print(sorted(name for name in sys.modules
             if name.split(".")[0] in ("torch", "onnx", "scipy", "matplotlib")))
"""


def test_the_app_and_the_listening_pool_import_nothing_outside_the_app_requirements(tmp_path):
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


@pytest.mark.parametrize("kind", ["lstm", "lstm-controls"])
def test_concurrent_requests_are_batched_and_each_gets_its_own_notes(tmp_path, kind):
    import threading

    from musicgen.batcher import Batcher
    from musicgen.controls import control_features
    from musicgen.sample import SamplingRequest, SamplingRun, generate_batch

    serving, _ = load_serving(tiny_checkpoint(tmp_path / "lstm", kind))
    music = np.random.default_rng(0).integers(3, 391, (8, 200))
    requests = [SamplingRequest(np.array([300 + k, 60]), max_tokens=600 + 10 * k,
                                temperature=0.8 + 0.1 * k, seed=k, n=1 + k % 2,
                                # each its own key, register and density; some play free
                                controls=None if k % 3 == 0 else control_features(music[k]))
                for k in range(8)]
    batcher = Batcher(serving)
    sizes = []
    real = SamplingRun.step

    def recording(run):
        sizes.append(run.rows)
        return real(run)

    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def client(k: int) -> None:
        start.wait()
        results[k] = batcher.generate(requests[k])

    from unittest import mock
    with mock.patch.object(SamplingRun, "step", recording):
        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert max(sizes) > 2  # rows of several requests stepped together (each has 1 or 2)
    for request, result in zip(requests, results, strict=True):
        alone = generate_batch(serving, [request])[0]
        assert all(np.array_equal(a, b) for a, b in zip(alone.tokens, result.tokens, strict=True))
    with pytest.raises(ValueError, match="no such sampler"):
        batcher.generate(SamplingRequest(np.array([60]), max_tokens=5, top_p=0.0))


def test_the_batcher_reports_progress_in_the_caller_s_thread_and_keeps_its_errors(
        tmp_path, monkeypatch):
    """Gradio finds a request by context variables of the handler's thread."""
    import threading

    import musicgen.batcher
    from musicgen.batcher import Batcher
    from musicgen.sample import SamplingRequest

    monkeypatch.setattr(musicgen.batcher, "PROGRESS_POLL_S", 0.001)
    batcher = Batcher(load_serving(tiny_checkpoint(tmp_path / "lstm"))[0])
    seen = []

    def progress(fraction: float) -> None:
        seen.append((threading.get_ident(), fraction))

    batcher.generate(SamplingRequest(np.array([60]), max_tokens=3000, temperature=0.9,
                                     on_progress=progress))
    assert {thread for thread, _ in seen} == {threading.get_ident()}
    assert len(seen) > 2 and seen[-1][1] == 1.0  # some on the way, then the end
    # At most one report per poll reaches the caller (the browser): none on the
    # way when a request takes less than one.
    monkeypatch.setattr(musicgen.batcher, "PROGRESS_POLL_S", 60)
    seen.clear()
    batcher.generate(SamplingRequest(np.array([60]), max_tokens=300, on_progress=progress))
    assert [fraction for _, fraction in seen] == [1.0]

    def broken(fraction: float) -> None:
        raise ConnectionError("the browser went away")

    outcome = {}

    def client(name: str, callback) -> None:
        try:
            batcher.generate(SamplingRequest(np.array([60]), max_tokens=3000, seed=1,
                                             on_progress=callback))
            outcome[name] = "served"
        except ConnectionError:
            outcome[name] = "its own error"

    threads = [threading.Thread(target=client, args=args)
               for args in (("broken", broken), ("innocent", lambda fraction: None))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcome == {"broken": "its own error", "innocent": "served"}


def test_a_short_request_is_not_kept_waiting_for_a_long_one(tmp_path):
    import threading
    import time

    from musicgen.batcher import Batcher
    from musicgen.sample import SamplingRequest, generate_batch

    serving = load_serving(tiny_checkpoint(tmp_path / "lstm"))[0]
    batcher = Batcher(serving)
    order = []
    long = SamplingRequest(np.array([60]), max_tokens=20_000, temperature=0.9, seed=2)
    short = SamplingRequest(np.array([62, 300]), max_tokens=20, temperature=0.9, seed=3)
    started = threading.Event()

    def first() -> None:
        started.set()
        order.append(("long", batcher.generate(long)))

    thread = threading.Thread(target=first)
    thread.start()
    started.wait()
    while batcher._worker is None or batcher._waiting:
        time.sleep(0.001)  # until the long request has joined the run
    order.append(("short", batcher.generate(short)))
    thread.join(timeout=300)
    assert [name for name, _ in order] == ["short", "long"]  # it joined, and left first
    alone = generate_batch(serving, [short])[0]
    assert np.array_equal(dict(order)["short"].tokens[0], alone.tokens[0])


def test_a_stopped_request_ends_at_once_and_its_batch_goes_on_untouched(tmp_path):
    import threading
    import time

    from musicgen.batcher import Batcher
    from musicgen.sample import SamplingRequest, generate_batch

    # The shipped LSTM: a random one ends its rows early with EOS.
    serving = load_serving(REPO / "checkpoints" / "lstm")[0]
    batcher = Batcher(serving)
    stop = threading.Event()
    # A minute and more of tokens unless stopped; two rows, both stopped.
    doomed = SamplingRequest(np.array([60]), max_tokens=200_000, temperature=0.9, seed=2,
                             n=2, stop=stop)
    other = SamplingRequest(np.array([62, 300]), max_tokens=1_000, temperature=0.9, seed=3)
    results = {}
    thread = threading.Thread(target=lambda: results.update(doomed=batcher.generate(doomed)))
    thread.start()
    while batcher._worker is None or batcher._waiting:
        time.sleep(0.001)  # until it has joined the run
    other_thread = threading.Thread(target=lambda: results.update(other=batcher.generate(other)))
    other_thread.start()
    time.sleep(0.2)
    stopped_at = time.perf_counter()
    stop.set()
    thread.join(timeout=60)
    assert time.perf_counter() - stopped_at < 2.0
    assert results["doomed"].stop_reasons == ["stopped", "stopped"]
    other_thread.join(timeout=300)
    alone = generate_batch(serving, [other])[0]
    assert np.array_equal(results["other"].tokens[0], alone.tokens[0])


def test_compose_says_stopped_when_its_page_went_away(tmp_path):
    import threading

    from musicgen.compose import compose, load_model
    from musicgen.prompt import silence
    from musicgen.sample import Stopped
    from musicgen.settings import Settings

    model = load_model(tiny_checkpoint(tmp_path / "lstm"))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        compose(model, silence(), Settings.from_user(seconds=120, seed=1), stop=stop)
    assert len(compose(model, silence(), Settings.from_user(seconds=2, seed=1))) == 1
