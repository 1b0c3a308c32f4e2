"""The training loop: it learns, resumes exactly, and runs under torchrun with gloo."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import REPO, tiny_cache

from musicgen.errors import SettingsError
from musicgen.train import TrainConfig, learning_rate, load_train_config, resume_config, train

TINY_LSTM = {"embed_dim": 16, "hidden_size": 32, "num_layers": 2, "dropout": 0.1}


def _config(tmp_path, out="run", **overrides) -> TrainConfig:
    values = dict(model="lstm", data=str(tiny_cache(tmp_path / "cache")), out=str(tmp_path / out),
                  seq_len=32, batch_size=4, lr=3e-3, warmup_steps=2, max_steps=8,
                  eval_interval=2, eval_windows=4, precision="fp32", model_config=TINY_LSTM)
    values.update(overrides)
    return TrainConfig(**values)


def _losses(run_dir):
    with open(run_dir / "log.csv") as handle:
        return [(int(r["step"]), float(r["train_loss"]), float(r["val_loss"]))
                for r in csv.DictReader(handle)]


def test_schedule_warms_up_then_decays_to_the_floor():
    config = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(60, config) == pytest.approx(0.55)
    assert learning_rate(110, config) == pytest.approx(0.1)


def test_training_writes_checkpoints_logs_and_curves(tmp_path):
    config = _config(tmp_path, max_steps=30, eval_interval=10)
    record = train(config, progress=False)
    out = tmp_path / "run"
    assert record["step"] == 30 and record["tokens"] == 30 * 4 * 32
    for name in ("last/model.safetensors", "last/optimizer.safetensors", "last/trainer.json",
                 "best/model.safetensors", "best/card.json", "log.csv", "curves.png"):
        assert (out / name).is_file(), name
    losses = _losses(out)
    assert losses[-1][2] < losses[0][2]  # validation loss went down
    card = json.loads((out / "best" / "card.json").read_text())
    assert card["training"]["tokens_seen"] > 0 and "CC BY-NC-SA" in card["licence"]


def test_resume_continues_the_same_loss_curve(tmp_path):
    straight = _config(tmp_path, out="straight")
    train(straight, progress=False)
    train(_config(tmp_path, out="resumed"), progress=False, until_step=4)
    assert _losses(tmp_path / "resumed")[-1][0] == 4
    train(_config(tmp_path, out="resumed"), resume=True, progress=False)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test runs on Linux")
def test_distributed_data_parallel_with_gloo(tmp_path):
    config = _config(tmp_path, out="ddp", max_steps=4)
    config_path = tmp_path / "ddp.json"
    from dataclasses import asdict
    config_path.write_text(json.dumps(asdict(config)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A session of its own, so that a hang kills torchrun *and* its workers.
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "musicgen", "train", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]
    card = json.loads((tmp_path / "ddp" / "last" / "card.json").read_text())
    assert card["training"]["hardware"].startswith("2 x CPU")
    assert card["training"]["tokens_seen"] == 4 * 2 * 4 * 32  # steps x ranks x batch x length


def test_init_from_a_checkpoint_continues_from_its_weights(tmp_path):
    first = _config(tmp_path, out="first", max_steps=20, eval_interval=10)
    train(first, progress=False)
    first_val = _losses(tmp_path / "first")[-1][2]
    warm = _config(tmp_path, out="warm", max_steps=2, eval_interval=2, lr=1e-9,
                   init_from=str(tmp_path / "first" / "best"))
    train(warm, progress=False)
    # With a negligible learning rate the warm start scores what the weights scored.
    assert _losses(tmp_path / "warm")[-1][2] == pytest.approx(first_val, abs=1e-3)
    card = json.loads((tmp_path / "warm" / "last" / "card.json").read_text())
    assert card["training"]["tokens_seen_before"] == 20 * 4 * 32


def test_init_from_a_checkpoint_of_another_kind_is_refused_in_plain_words(tmp_path):
    first = _config(tmp_path, out="first", max_steps=2, eval_interval=2)
    train(first, progress=False)
    other = _config(tmp_path, out="other", model="transformer", model_config={},
                    init_from=str(tmp_path / "first" / "best"))
    with pytest.raises(SettingsError, match="holds a model of kind lstm, but this run trains "
                       "transformer"):
        other.build_model_config()


def test_a_typo_in_the_model_settings_or_kind_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="no setting called hiden_size"):
        _config(tmp_path, model_config={"hiden_size": 64}).build_model_config()
    with pytest.raises(SettingsError, match="no model kind called gru"):
        _config(tmp_path, model="gru", model_config={}).build_model_config()
    with pytest.raises(SettingsError, match="no training setting called learning_rate"):
        load_train_config(None, learning_rate=0.1)


def test_resume_keeps_the_stored_schedule_unless_told_otherwise(tmp_path):
    config = _config(tmp_path, out="run", max_steps=40)
    train(config, progress=False, until_step=4)
    resumed = resume_config(tmp_path / "run")
    assert resumed.max_steps == 40 and resumed.lr == config.lr
    assert learning_rate(4, resumed) == pytest.approx(learning_rate(4, config))
    assert resume_config(tmp_path / "run", max_steps=60, lr=None).max_steps == 60
    with pytest.raises(SettingsError, match="only max_steps can change, not lr"):
        resume_config(tmp_path / "run", lr=1.0)
    with pytest.raises(SettingsError, match="no run to resume"):
        resume_config(tmp_path / "nothing")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "musicgen", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_train_command_resumes_with_the_stored_schedule(tmp_path):
    config = _config(tmp_path, out="run", max_steps=40)
    train(config, progress=False, until_step=4)
    result = _cli("train", "--resume", "--out", tmp_path / "run", "--until-step", 6)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "last" / "trainer.json").read_text())
    assert record["step"] == 6 and record["config"]["max_steps"] == 40


def test_train_command_without_a_cache_says_to_run_prepare(tmp_path):
    result = _cli("train", "--data", tmp_path / "empty", "--out", tmp_path / "run")
    assert result.returncode == 1
    assert "no token cache" in result.stderr and "musicgen prepare" in result.stderr
    assert "Traceback" not in result.stderr


def test_training_settings_files_are_checked_in_plain_words(tmp_path):
    for text, words in (("{bad", "not valid JSON"), ("[1]", "one JSON object"),
                        ('{"hidden": 3}', "no training setting called hidden")):
        path = tmp_path / "settings.json"
        path.write_text(text)
        with pytest.raises(SettingsError, match=words):
            load_train_config(path)
    with pytest.raises(SettingsError, match="cannot be read"):
        load_train_config(tmp_path / "missing.json")


def test_resume_refuses_settings_that_disagree_with_the_stored_run(tmp_path):
    config = _config(tmp_path, out="run", max_steps=40)
    train(config, progress=False, until_step=2)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"lr": config.lr, "model": "lstm"}))  # agrees: fine
    ok = _cli("train", "--resume", "--config", settings, "--out", tmp_path / "run",
              "--until-step", 4)
    assert ok.returncode == 0, ok.stderr
    settings.write_text(json.dumps({"lr": config.lr, "out": str(tmp_path / "run")}))
    named = _cli("train", "--resume", "--config", settings, "--until-step", 6)  # as configs/ do
    assert named.returncode == 0, named.stderr
    settings.write_text(json.dumps({"lr": 0.5}))
    refused = _cli("train", "--resume", "--config", settings, "--out", tmp_path / "run")
    assert refused.returncode == 1 and "not lr" in refused.stderr
    other = _cli("train", "--resume", "--model", "transformer", "--out", tmp_path / "run")
    assert other.returncode == 1 and "not model" in other.stderr


def test_a_held_note_input_trains_from_weights_without_it(tmp_path):
    first = _config(tmp_path, out="first", max_steps=20, eval_interval=10)
    train(first, progress=False)
    first_val = _losses(tmp_path / "first")[-1][2]
    held = {**TINY_LSTM, "held_notes_input": True}
    # A negligible learning rate: the new input is still zero, so the model scores as before.
    warm = _config(tmp_path, out="warm", max_steps=2, eval_interval=2, lr=1e-9, model_config=held,
                   init_from=str(tmp_path / "first" / "best"))
    train(warm, progress=False)
    assert _losses(tmp_path / "warm")[-1][2] == pytest.approx(first_val, abs=1e-3)
    from safetensors.numpy import load_file

    def learning(out: str) -> TrainConfig:
        return _config(tmp_path, out=out, max_steps=6, eval_interval=2, model_config=held,
                       init_from=str(tmp_path / "first" / "best"))

    train(learning("straight"), progress=False)
    weights = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    assert abs(weights["held.weight"]).max() > 0  # it is trained
    card = json.loads((tmp_path / "straight" / "last" / "card.json").read_text())
    assert card["config"]["held_notes_input"] is True
    trainer = json.loads((tmp_path / "straight" / "last" / "trainer.json").read_text())
    assert [(g["names"], g["lr"] / trainer["param_groups"][0]["lr"])
            for g in trainer["param_groups"][1:]] == [(["held.weight"], 10.0)]
    # Resumed with its own groups, though init_from holds weights with the input by then.
    train(learning("resumed"), progress=False, until_step=2)
    shutil.copy(tmp_path / "straight" / "last" / "model.safetensors",
                tmp_path / "first" / "best" / "model.safetensors")
    train(learning("resumed"), resume=True, progress=False)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")


def test_token_mask_share_resumes_exactly_and_is_refused_out_of_range(tmp_path):
    masked = {"token_mask_share": 0.3, "model_config": {**TINY_LSTM, "held_notes_input": True}}
    train(_config(tmp_path, out="straight", **masked), progress=False)
    train(_config(tmp_path, out="resumed", **masked), progress=False, until_step=4)
    train(_config(tmp_path, out="resumed", **masked), resume=True, progress=False)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    train(_config(tmp_path, out="unmasked", model_config=masked["model_config"]), progress=False)
    # The same windows either way (the masks have their own generator): only the mask differs.
    assert _losses(tmp_path / "unmasked") != _losses(tmp_path / "straight")
    with pytest.raises(SettingsError, match="token_mask_share"):
        train(_config(tmp_path, out="bad", token_mask_share=1.0), progress=False)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_a_control_input_trains_from_weights_without_it_and_resumes_exactly(tmp_path, kind):
    shape = TINY_LSTM if kind == "lstm" else {"d_model": 16, "n_layers": 1, "n_heads": 2,
                                              "d_ff": 32, "context": 32, "dropout": 0.0}
    first = _config(tmp_path, out="first", model=kind, max_steps=10, eval_interval=10,
                    model_config=shape)
    train(first, progress=False)
    first_val = _losses(tmp_path / "first")[-1][2]
    controlled = {**shape, "control_input": True}
    # Zero at first: with a negligible rate it scores as the model it starts from.
    warm = _config(tmp_path, out="warm", model=kind, max_steps=2, eval_interval=2, lr=1e-9,
                   model_config=controlled, init_from=str(tmp_path / "first" / "best"))
    train(warm, progress=False)
    assert _losses(tmp_path / "warm")[-1][2] == pytest.approx(first_val, abs=1e-3)

    def learning(out: str, **overrides) -> TrainConfig:
        return _config(tmp_path, out=out, model=kind, max_steps=6, eval_interval=2,
                       model_config=controlled, init_from=str(tmp_path / "first" / "best"),
                       **overrides)

    train(learning("straight"), progress=False)
    from safetensors.numpy import load_file
    weights = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    assert abs(weights["control.weight"]).max() > 0  # it is trained
    train(learning("resumed"), progress=False, until_step=2)
    train(learning("resumed"), resume=True, progress=False)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    # Which parts a window goes without has its own generator: the same windows either way.
    train(learning("all-given", control_absent_share=0.0), progress=False)
    assert _losses(tmp_path / "all-given") != _losses(tmp_path / "straight")
    with pytest.raises(SettingsError, match="control_absent_share"):
        train(learning("bad", control_absent_share=1.5), progress=False)
