"""Sample evaluation: every feature on hand-made MIDI, set comparisons, copying, the command."""

import json
import shutil

import numpy as np
import pytest
from conftest import midi_bytes, tiny_cache, tiny_checkpoint

from musicgen.checkpoint import read_card, record_evaluation
from musicgen.cli import main
from musicgen.events import encode_notes
from musicgen.midi import read_midi
from musicgen.notes import Notes
from musicgen.recipe import RECIPE_VERSION
from musicgen.sample_report import (
    CARD_FEATURES,
    PROMPT_POSITION,
    Condition,
    prompt_excerpts,
    sampling_conditions,
)
from musicgen.samples import (
    FEATURES,
    TrainIntervals,
    bar_similarity,
    clip_features,
    compare_sets,
    density,
    distinct_n,
    frechet_distance,
    inter_distances,
    intra_distances,
    kde_grid,
    key_agreement,
    kl_divergence,
    longest_repeat,
    overlap_area,
    restated_share,
    rhythm_sequence,
    standardised_mean_difference,
)
from musicgen.settings import Settings
from musicgen.studio import Studio


def _midi(notes) -> Notes:
    """Notes as read back from a MIDI file made of (pitch, velocity, start, end)."""
    return read_midi(midi_bytes(notes))


# An arpeggio C4 E4 G4 C5, one note a second, each held 0.5 s, louder each time.
ARPEGGIO = [(60, 60, 0.0, 0.5), (64, 80, 1.0, 1.5), (67, 100, 2.0, 2.5), (72, 120, 3.0, 3.5)]
# Its profile (seconds per pitch class: C 1, E 0.5, G 0.5) against a part's, by hand.
_PROFILE = np.zeros(12)
_PROFILE[[0, 4, 7]] = (1.0, 0.5, 0.5)
KEY_OF = {classes: float(np.corrcoef(_PROFILE, np.isin(np.arange(12), classes) * 0.5)[0, 1])
          for classes in ((0, 4, 7), (0,))}


def test_every_feature_of_an_arpeggio():
    f = clip_features(_midi(ARPEGGIO), _midi(ARPEGGIO), seconds=8.0)
    expected = {
        "notes_per_second": 0.5, "polyphony": 1.0, "silence_fraction": 0.75,
        "longest_silence": 4.5, "pitch_mean": 65.75, "pitch_std": np.std([60, 64, 67, 72]),
        "pitch_range": 12.0, "pitch_entropy": 2.0, "pitch_class_entropy": 1.5,
        "scale_consistency": 1.0, "mean_abs_interval": 4.0, "ioi_median": 1.0,
        "ioi_log_std": 0.0, "duration_median": 0.5, "long_note_share": 0.0,
        "velocity_mean": 90.0, "velocity_std": np.std([60, 80, 100, 120]),
        "key_agreement_start": 1.0, "key_agreement_end": 1.0,  # an 8 s clip: both windows
        "distinct_2": 1.0, "distinct_4": 0.0, "longest_repeat": 0.0,
        # Thirds of 8 s: C4 E4 G4 in the first, C5 in the second, nothing in the last.
        "key_third_1": KEY_OF[(0, 4, 7)], "key_third_2": KEY_OF[(0,)], "key_third_3": 0.0,
        "pitch_mean_third_1": 191 / 3, "pitch_mean_third_2": 72.0, "pitch_mean_third_3": 0.0,
        "pitch_range_third_1": 7.0, "pitch_range_third_2": 0.0, "pitch_range_third_3": 0.0,
        "polyphony_third_1": 1.0, "polyphony_third_2": 1.0, "polyphony_third_3": 0.0,
        "rhythm_distinct_4": 0.0,  # two inter-onset ratios: no 4-gram
        "restated_share": 0.0,  # three intervals: no 5-gram
        "bar_similarity": 0.0,  # C4+E4, then G4+C5: no pitch in common
    }
    assert set(expected) == set(FEATURES)
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, abs=1e-6), name
    assert f.notes == 4
    np.testing.assert_allclose(f.pitch_classes[[0, 4, 7]], [0.5, 0.25, 0.25])
    assert f.transitions[0, 4] == pytest.approx(1 / 3) and f.transitions.sum() == pytest.approx(1)
    np.testing.assert_allclose(f.density, [1.0, 1.0, 0.0, 0.0])  # 2 s bins of an 8 s clip


def test_figures_that_come_back_are_heard_as_restated():
    figure = [2, 2, 1, 2, 2, 2, 1]  # a major scale's steps, played twice: 14 intervals
    twice = np.array(figure * 2)
    # Grams 7, 8 and 9 (of 10) restate grams 0, 1 and 2 without overlapping them.
    assert restated_share(twice, np.zeros(0)) == pytest.approx(0.3)
    assert restated_share(twice, np.array(figure * 2)) == 1.0  # all heard in the prompt
    assert restated_share(np.arange(14), np.zeros(0)) == 0.0  # nothing comes back
    assert list(rhythm_sequence(np.array([0.0, 1.0, 1.5, 2.0, 3.0]))) == [-2, 0, 2]
    same_chord = [(p, 80, t, t + 1.0) for t in (0.0, 2.0, 4.0, 6.0) for p in (60, 64, 67)]
    assert bar_similarity(_midi(same_chord), 8.0) == pytest.approx(1.0)


def test_the_thirds_follow_a_piece_that_climbs_and_thickens():
    # Single notes around C4 for 10 s, then three-note chords two octaves up.
    low = [(60 + (k % 3), 80, 0.5 * k, 0.5 * k + 0.4) for k in range(20)]
    high = [(p, 80, 10 + 0.5 * k, 10.4 + 0.5 * k) for k in range(40) for p in (84, 88, 91)]
    f = clip_features(_midi(low + high), _midi(low), seconds=30.0)
    assert f["pitch_mean_third_1"] == pytest.approx((7 * 60 + 7 * 61 + 6 * 62) / 20)
    assert f["pitch_mean_third_3"] == pytest.approx((84 + 88 + 91) / 3)
    assert (f["polyphony_third_1"], f["polyphony_third_3"]) == pytest.approx((1.0, 3.0))
    assert f["key_third_1"] > 0.9 > f["key_third_3"]  # C E G against C C# D
    assert f.timeline.shape == (3, 6)  # 5 s bins
    assert f.timeline[1, 0] == pytest.approx((4 * 60 + 3 * 61 + 3 * 62) / 10)  # first 5 s
    assert f.timeline[2, -1] == pytest.approx(3.0)  # chords at the end


def test_chords_polyphony_stuck_notes_and_the_clip_window():
    # Two three-note chords, spread over 20 ms like a pianist's, a second apart;
    # a low C is held 4.5 s (a stuck note); a note after the clip is ignored.
    notes = [(36, 70, 0.0, 4.5), (52, 70, 0.01, 0.5), (55, 70, 0.02, 0.5),
             (48, 70, 1.0, 1.5), (52, 70, 1.01, 1.5), (55, 70, 1.02, 1.5), (90, 70, 9.5, 9.9)]
    f = clip_features(_midi(notes), Notes.empty(), seconds=6.0)
    assert f["notes_per_second"] == pytest.approx(6 / 6)
    assert f["ioi_median"] == pytest.approx(1.0)  # one interval between chords, not 10 ms ones
    assert f["long_note_share"] == pytest.approx(1 / 6)
    assert f["polyphony"] == pytest.approx(694 / 450)  # note-steps of 10 ms / sounding steps
    assert f["pitch_range"] == 19
    assert f["key_agreement_start"] == 0.0  # no prompt: nothing to agree with


def test_a_silent_clip_scores_zero_not_nan():
    f = clip_features(Notes.empty(), _midi(ARPEGGIO), seconds=5.0)
    assert f["silence_fraction"] == 1.0 and f["longest_silence"] == pytest.approx(5.0)
    assert np.isfinite(f.values).all() and f["notes_per_second"] == 0


def test_key_agreement_repetition_and_distinct_n():
    c_major = _midi([(p, 80, i * 0.5, i * 0.5 + 0.4) for i, p in
                     enumerate([60, 62, 64, 65, 67, 69, 71, 72])])
    f_sharp = Notes(c_major.pitch + 6, c_major.velocity, c_major.start, c_major.end)
    assert key_agreement(c_major, c_major) == pytest.approx(1.0)
    assert key_agreement(c_major, f_sharp) < 0
    loop = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3])
    assert longest_repeat(loop) == 6  # [1 2 3 1 2 3] at 0 and at 3
    assert longest_repeat(np.arange(10)) == 0
    assert distinct_n(loop, 2) == pytest.approx(3 / 8)
    assert distinct_n(np.arange(10), 4) == 1.0


def test_a_set_overlaps_itself_exactly_and_a_different_set_hardly():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 200), rng.normal(8, 1, 200)
    grid = kde_grid(a, b)
    pa, pb = density(a, grid), density(b, grid)
    assert np.trapezoid(pa, grid.points) == pytest.approx(1.0)
    assert overlap_area(pa, pa, grid) == pytest.approx(1.0)
    assert kl_divergence(pa, pa, grid) == pytest.approx(0.0, abs=1e-9)
    assert overlap_area(pa, pb, grid) < 0.01
    assert kl_divergence(pa, pb, grid) > 5


def test_zero_variance_gets_a_narrow_kernel_instead_of_failing():
    constant, other = np.full(30, 2.0), np.full(30, 3.0)
    grid = kde_grid(constant, other)
    p, q = density(constant, grid), density(other, grid)
    assert np.isfinite(p).all() and np.trapezoid(p, grid.points) == pytest.approx(1.0)
    assert overlap_area(p, p, grid) == pytest.approx(1.0)
    assert overlap_area(p, q, grid) < 0.01
    alone = kde_grid(constant)  # every value equal: a grid around them all the same
    assert overlap_area(density(constant, alone), density(constant, alone), alone) == (
        pytest.approx(1.0))
    assert standardised_mean_difference(constant, constant) == 0.0
    assert standardised_mean_difference(other, constant) > 1e6


def test_inter_set_distances_of_a_set_with_itself_are_its_intra_set_distances():
    x = np.random.default_rng(1).normal(size=(12, 3))
    intra, inter = intra_distances(x), inter_distances(x, x, paired=True)
    np.testing.assert_allclose(np.sort(inter), np.sort(np.repeat(intra, 2)))
    assert len(inter_distances(x, x, paired=False)) == 144


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    x = np.random.default_rng(2).normal(size=(60, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-4)
    assert frechet_distance(x, x + 3) == pytest.approx(4 * 9, rel=1e-3)


def _clips(seed: int, n: int = 12, low: int = 55, spread: int = 12):
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        count = int(rng.integers(20, 40))
        start = np.sort(rng.uniform(0, 9, count))
        clips.append(Notes.from_arrays(rng.integers(low, low + spread, count),
                                       rng.integers(40, 100, count), start,
                                       start + rng.uniform(0.1, 0.6, count)))
    return [clip_features(c, c, 10.0) for c in clips]


def test_compare_sets_real_against_itself_and_against_something_else():
    real = _clips(0)
    result = compare_sets(real, {"same": real, "high": _clips(1, low=90, spread=6)},
                          resamples=50)["sets"]
    for feature, measured in result["same"]["features"].items():
        assert measured["overlap"] == pytest.approx(1.0), feature
        assert measured["kl"] == pytest.approx(0.0, abs=1e-6), feature
    assert result["same"]["features"]["pitch_mean"]["smd"] == 0.0
    assert result["high"]["features"]["pitch_mean"]["smd"] > 5
    assert result["high"]["features"]["pitch_mean"]["overlap"] < 0.05
    low, high = result["high"]["features"]["pitch_mean"]["smd_ci"]
    assert low <= result["high"]["features"]["pitch_mean"]["smd"] <= high
    assert result["high"]["frechet"] > result["same"]["frechet"]
    assert "real (other half)" in result and result["real (other half)"]["frechet"] > 0


def _random_notes(seed: int, count: int, steps=(-2, -1, 1, 2)) -> Notes:
    rng = np.random.default_rng(seed)
    pitch = 64 + np.cumsum(rng.choice(steps, count))
    start = np.arange(count) * 0.25
    return Notes.from_arrays(np.clip(pitch, 21, 108), np.full(count, 64), start, start + 0.2)


def test_the_copy_detector_finds_a_planted_copy_in_any_transposition():
    train = [_random_notes(seed, 400) for seed in range(5)]
    index = TrainIntervals.from_notes(train)
    planted = train[3].window(10.0, 30.0)  # 80 notes of piece 3, a tone up
    planted = Notes(planted.pitch + 2, planted.velocity, planted.start, planted.end)
    copying = index.copying([planted])
    assert copying["share"] == [1.0] and copying["longest"] == [len(planted) - 1]
    # Partly copied: 30 fresh notes, 25 copied ones, 30 fresh ones.
    fresh = _random_notes(99, 30, steps=(5, -7))
    copied = train[1].window(20.0, 26.25)
    mixed = Notes.concatenate(fresh, copied.shifted(7.5), fresh.shifted(14.0))
    assert index.longest_match(np.diff(mixed.pitch.astype(np.int64))) >= len(copied) - 1
    assert 0 < index.copying([mixed])["share"][0] < 1


def test_the_copy_detector_finds_nothing_in_disjoint_material():
    index = TrainIntervals.from_notes([_random_notes(seed, 400) for seed in range(5)])
    start = np.arange(120) * 0.25  # leaps of a fifth up and then down 29: never in train
    leaps = Notes.from_arrays(40 + np.arange(120) * 7 % 36, np.full(120, 64), start,
                              start + 0.2)
    copying = index.copying([leaps])
    assert copying["share"] == [0.0] and copying["longest"] == [0]
    assert np.isnan(index.copied_share(np.array([1, 2])))  # too short for an 8-gram


def test_the_index_reads_token_pieces_as_it_reads_their_notes():
    notes = _random_notes(3, 200)
    from_tokens = TrainIntervals.from_pieces([encode_notes(notes)])
    np.testing.assert_array_equal(from_tokens.symbols, TrainIntervals.from_notes([notes]).symbols)


def test_conditions_start_with_greedy_and_refuse_settings_out_of_range():
    # The app's defaults pair notes, keep the model's timing and release held keys;
    # greedy, the reference without sampling, does none of these.
    assert [c.label for c in sampling_conditions((1.0,), (0.95, 1.0))] == [
        "greedy", "T=1 top-p=0.95 paired keep-timing release-held",
        "T=1 top-p=1 paired keep-timing release-held"]
    from musicgen.errors import SettingsError

    with pytest.raises(SettingsError, match="Temperature must be between"):
        sampling_conditions((5.0,), (0.95,))
    grid = sampling_conditions((0.9,), (1.0,), (0.0, 0.05), ("no", "yes"), (False,), (False,))
    assert [c.label for c in grid] == [
        "greedy", "T=0.9 top-p=1", "T=0.9 top-p=1 paired", "T=0.9 top-p=1 min-p=0.05",
        "T=0.9 top-p=1 min-p=0.05 paired"]
    with pytest.raises(SettingsError, match="paired notes must be yes or no"):
        sampling_conditions((0.9,), (1.0,), (0.0,), ("maybe",))
    timed = sampling_conditions((0.9,), (1.0,), (0.0,), (False,), ("no", "yes"), (False,))
    assert [(c.label, c.keep_timing) for c in timed] == [
        ("greedy", False), ("T=0.9 top-p=1", False), ("T=0.9 top-p=1 keep-timing", True)]
    released = sampling_conditions((0.9,), (1.0,), (0.0,), (False,), (False,), ("no", "yes"))
    assert [(c.label, c.release_held_keys) for c in released] == [
        ("greedy", False), ("T=0.9 top-p=1", False), ("T=0.9 top-p=1 release-held", True)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny token cache with six test pieces, and an LSTM and a Transformer."""
    folder = tmp_path_factory.mktemp("samples")
    cache = tiny_cache(folder / "cache", pieces=12, events=600)
    index = json.loads((cache / "index.json").read_text())
    for k, piece in enumerate(index["pieces"]):
        piece["split"] = "train" if k < 6 else "test"
    (cache / "index.json").write_text(json.dumps(index))
    return (cache, tiny_checkpoint(folder / "lstm-tiny", "lstm"),
            tiny_checkpoint(folder / "transformer-tiny", "transformer"))


def test_the_command_on_a_tiny_corpus(corpus, tmp_path, capsys):
    cache, lstm, transformer = corpus
    report = tmp_path / "report"
    assert main(["evaluate-samples", "--checkpoint", str(lstm), "--checkpoint",
                 str(transformer), "--data", str(cache), "--n", "4", "--seconds", "3",
                 "--temperature", "1.0", "--top-p", "0.9", "--bootstrap", "20",
                 "--workers", "1", "--report", str(report), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["sets"]) == {"real", "real (other half)", "lstm-tiny greedy",
                                    "lstm-tiny T=1 top-p=0.9 paired keep-timing release-held",
                                    "transformer-tiny greedy",
                                    "transformer-tiny T=1 top-p=0.9 paired keep-timing "
                                    "release-held"}
    assert len(summary["prompts"]) == 4
    assert all(p["start"] == int(p["start"]) for p in summary["prompts"])
    for name in ("README.md", "results.json", "features.png", "pitch_classes.png",
                 "density.png", "over_time.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "README.md").read_text()
    assert "## Findings" in text and "lstm-tiny greedy" in text
    assert "## Over time" in text and "| key_third_3:" in text and "| restated_share:" in text


def test_a_grid_can_let_the_model_play_free_of_the_seed():
    from musicgen.sample_report import sampling_conditions

    conditions = sampling_conditions(temperatures=(1.0,), follows=("yes", "no"))
    following, free = conditions[1:]
    assert (following.follow_seed, free.follow_seed) == (True, False)
    assert free.label == following.label + " free"
    assert following.settings_fields()["key"] == "as the seed"
    assert {free.settings_fields()[name] for name in ("key", "register", "density")} == {"free"}
    Settings(**free.settings_fields())  # every field is one Settings has


def test_a_card_keeps_the_app_default_and_a_grid_without_it_is_refused_at_once(
        corpus, tmp_path, capsys):
    cache, lstm, _ = corpus
    own = tmp_path / "lstm-tiny"  # the card is written: not the module's shared checkpoint
    shutil.copytree(lstm, own)
    options = ["evaluate-samples", "--checkpoint", str(own), "--data", str(cache), "--n", "4",
               "--seconds", "3", "--bootstrap", "20", "--workers", "1", "--write-card"]
    assert main([*options, "--temperature", "1.0"]) == 1
    assert "a card keeps the numbers of the app's default setting" in capsys.readouterr().err
    bare = ["--checkpoint", str(own / "model.safetensors")]
    assert main([*options, *bare, "--temperature", str(Condition.default().temperature)]) == 1
    assert "has no card.json to write to" in capsys.readouterr().err
    assert "samples" not in read_card(own).get("evaluation", {})

    assert main([*options, "--temperature", str(Condition.default().temperature), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    entry = read_card(own)["evaluation"]["samples"]
    measured = summary["sets"][f"lstm-tiny {Condition.default().label}"]
    assert entry["setting"] == Condition.default().label
    assert entry["settings"] == {name: getattr(Settings(), name) for name in entry["settings"]}
    assert entry["prompts"] == 4
    assert entry["command"].startswith("python -m musicgen evaluate-samples")
    assert entry["frechet"] == pytest.approx(measured["frechet"])
    ceiling = summary["sets"]["real (other half)"]
    assert entry["ceiling_frechet"] == pytest.approx(ceiling["frechet"])
    assert set(entry["features"]) == set(CARD_FEATURES)
    for feature in CARD_FEATURES:
        kept, reported = entry["features"][feature], measured["features"][feature]
        assert kept["d"] == pytest.approx(reported["smd"])
        assert kept["real_mean"] == pytest.approx(
            summary["sets"]["real"]["features"][feature]["mean"])

    assert entry["recipe_version"] == RECIPE_VERSION
    assert entry["weights_sha256"] == read_card(own)["weights_sha256"]

    # The About tab shows what the card keeps only while it describes the page.
    def about(**changes) -> str:
        record_evaluation(own, "samples", {**entry, **changes})
        studio = Studio(tmp_path, output_dir=tmp_path / "out", ratings_path=tmp_path / "r.sqlite")
        return studio.samples_against_real()

    assert about() == ""  # 3 s continuations: the page makes 30 s ones
    shown = about(seconds=Settings().seconds)
    long_notes = entry["features"]["long_note_share"]
    assert (f"| lstm-tiny | 4 | {entry['frechet']:.1f} ({entry['ceiling_frechet']:.1f}) | "
            f"{entry['features']['notes_per_second']['d']:+.2f} |") in shown
    assert f"{long_notes['mean']:.2%} ({long_notes['real_mean']:.2%}) |" in shown
    current = {"seconds": Settings().seconds}
    assert about(**current, settings={**entry["settings"], "temperature": 0.5}) == ""
    assert about(**current, recipe_version=RECIPE_VERSION - 2) == ""
    # Version 8 added only what a control input reads: this model (without one) samples
    # as it did at version 7, so its version-7 numbers still describe the page.
    assert RECIPE_VERSION == 8 and about(**current, recipe_version=7) != ""
    assert about(**current, weights_sha256="0" * 64) == ""
    assert about(**current, frechet=None) == ""  # written by hand: the page still builds


def test_two_checkpoints_of_one_name_are_refused_before_sampling(corpus, capsys):
    cache, lstm, _ = corpus
    assert main(["evaluate-samples", "--checkpoint", str(lstm), "--checkpoint", str(lstm),
                 "--data", str(cache), "--n", "4", "--seconds", "3"]) == 1
    assert "two checkpoints are both called lstm-tiny" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_continuations(corpus):
    from musicgen.sample_report import evaluate_samples

    cache, lstm, _ = corpus
    runs = [evaluate_samples([lstm], cache, n=4, seconds=2, temperatures=(1.0,),
                             top_ps=(0.95,), resamples=10, workers=1) for _ in range(2)]
    name = "lstm-tiny T=1 top-p=0.95 paired keep-timing release-held"
    for a, b in zip(runs[0].clips[name], runs[1].clips[name], strict=True):
        np.testing.assert_array_equal(a.pitch, b.pitch)


def test_wrong_input_is_one_plain_line(corpus, tmp_path, capsys):
    cache, lstm, _ = corpus
    assert main(["evaluate-samples", "--checkpoint", str(lstm), "--data",
                 str(tmp_path / "nope")]) == 1
    assert "musicgen: there is no data folder" in capsys.readouterr().err
    assert main(["evaluate-samples", "--checkpoint", str(lstm), "--data", str(cache),
                 "--n", "50", "--seconds", "3"]) == 1
    assert "the test split has 6 performances" in capsys.readouterr().err
    assert main(["evaluate-samples", "--checkpoint", str(lstm), "--data", str(cache),
                 "--temperature", "3"]) == 1
    assert "Temperature must be between 0 and 2" in capsys.readouterr().err


def test_maestro_prompts_sit_at_their_documented_place(maestro_dir, tmp_path):
    from musicgen.corpus import prepare

    cache = tmp_path / "cache"
    prepare(maestro_dir, cache, progress=False)
    excerpts = prompt_excerpts(cache, n=10, seconds=30.0)
    seconds = {p["source"]: p["seconds"] for p in
               json.loads((cache / "index.json").read_text())["pieces"]}
    assert len({e.source for e in excerpts}) == 10
    for excerpt in excerpts:
        assert excerpt.start == int(PROMPT_POSITION * seconds[excerpt.source])
        assert len(excerpt.prompt.tokens)
        assert len(excerpt.real) and excerpt.real.start.max() < 30.0
