"""musicgen demo: pick or upload a seed, tune the sampler, listen, compare models.

    python app.py [--host 127.0.0.1] [--port 7860] [--share]

This file only wires Gradio widgets to `musicgen.studio.Studio`, which holds
the models (loaded once here) and does the work. Per-user data lives in
`gr.State`; nothing module-level changes after start-up.
"""

from __future__ import annotations

import argparse
import functools
import os
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_TEMP_DIR", str(ROOT / "tmp" / "gradio"))
os.environ.setdefault("MPLCONFIGDIR", str(ROOT / "tmp" / "matplotlib"))

import gradio as gr  # noqa: E402 - the environment above must be set first

from musicgen.errors import UserError  # noqa: E402
from musicgen.prompt import DEFAULT_PROMPT_SECONDS, MAX_UPLOAD_BYTES, PROMPT_SECONDS  # noqa: E402
from musicgen.settings import LIMITS, Settings  # noqa: E402
from musicgen.studio import Studio  # noqa: E402

SEED_KINDS = [("Built-in example", "example"), ("Upload a MIDI file", "upload"),
              ("Start from silence", "silence")]
DEFAULTS = Settings()

INTRO = """# musicgen: expressive piano continuations
Pick a seed MIDI (a built-in example, your own MIDI file, or silence), choose a model and
how adventurous it should be, and listen. Models: an LSTM and a Transformer over
performance events (note-on/off, 10 ms time shifts, velocity), trained on MAESTRO v3.0.0."""

HOW_TO = """### Run it yourself
```bash
make demo     # sets up .venv and opens http://127.0.0.1:7860
make test     # the whole test suite
python -m musicgen generate --example "Beethoven: Ode to Joy" --seconds 30 --audio out.wav
```
Weights are trained on MAESTRO v3.0.0 (CC BY-NC-SA 4.0): non-commercial use, share alike.
Ratings you submit are stored with the clip's recipe (model, settings, variation), nothing
else."""


def shows_user_errors(handler):
    """Turn a `UserError` into Gradio's message box; anything else stays a bug."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except UserError as error:
            raise gr.Error(str(error), print_exception=False) from None
    return wrapped


def _slider(name: str, step: float, **kwargs) -> gr.Slider:
    """A slider whose range, default and label come from `musicgen.settings.LIMITS`."""
    limit = LIMITS[name]
    label = f"{limit.label} ({limit.help})" if limit.help else limit.label
    return gr.Slider(limit.low, limit.high, value=getattr(DEFAULTS, name), step=step,
                     label=label, **kwargs)


def _settings(seconds, temperature, top_k, top_p, seed, n, include_seed,
              new_seed=False) -> Settings:
    return Settings.from_user(seconds=seconds, temperature=temperature, top_k=top_k,
                              top_p=top_p, seed=seed, n=n, include_prompt=include_seed,
                              new_seed=new_seed)


def _cards_markdown(studio: Studio) -> str:
    rows = ["| model | architecture | parameters | tokens seen | test NLL (nats/event) "
            "[95% CI] | bigram baseline | accuracy |", "|---|---|---:|---:|---:|---:|---:|"]
    for card in studio.cards():
        test = card.get("evaluation", {}).get("test")
        if test:
            model, low_high = test["model"], test["model"]["ci"]["nll"]
            nll = f"{model['nll']:.3f} [{low_high[0]:.3f}, {low_high[1]:.3f}]"
            bigram = f"{test['baselines']['bigram']['nll']:.3f}"
            accuracy = f"{model['accuracy']:.3f}"
        else:
            nll = bigram = accuracy = "not evaluated"
        rows.append(f"| {card.get('name', '?')} | {card.get('architecture', '?')} | "
                    f"{card.get('parameters', 0):,} | "
                    f"{card.get('training', {}).get('tokens_seen', 0):,} | {nll} | {bigram} | "
                    f"{accuracy} |")
    licence = studio.cards()[0].get("licence", "")
    return "### Models\n" + "\n".join(rows) + f"\n\n{licence}\n\n" + HOW_TO


def build_app(studio: Studio) -> gr.Blocks:
    """The Blocks app around one `Studio`."""
    models = studio.model_names()
    soundfonts = studio.soundfont_names()
    max_candidates = int(LIMITS["n"].high)

    with gr.Blocks(title="musicgen", delete_cache=(3600, 3600)) as demo:
        session = gr.State(None)  # {"id": ..., "clips": [recipe dicts], "candidates": [...]}
        gr.Markdown(INTRO)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    source = gr.Radio(SEED_KINDS, value="example", label="Seed MIDI")
                    example = gr.Dropdown(studio.examples, value=studio.examples[0],
                                          label="Example")
                    preview = gr.Audio(label="Example preview", type="filepath",
                                       interactive=False)
                    upload = gr.File(label=f"Your MIDI file (.mid/.midi, up to "
                                           f"{MAX_UPLOAD_BYTES // 2**20} MB)",
                                     file_types=[".mid", ".midi"], type="filepath")
                    seed_seconds = gr.Slider(PROMPT_SECONDS.low, PROMPT_SECONDS.high,
                                             value=DEFAULT_PROMPT_SECONDS, step=1,
                                             label=PROMPT_SECONDS.label)
                    include_seed = gr.Checkbox(DEFAULTS.include_prompt,
                                               label="Include the seed MIDI in the output")
                with gr.Column(scale=1):
                    model = gr.Dropdown(models, value=models[0], label="Model")
                    temperature = _slider("temperature", 0.05)
                    top_p = _slider("top_p", 0.01)
                    top_k = _slider("top_k", 1)
                    seconds = _slider("seconds", 1)
                    n = _slider("n", 1)
                    with gr.Row():
                        seed = gr.Number(DEFAULTS.seed, precision=0, label=LIMITS["seed"].label,
                                         info="the same number gives the same notes; "
                                              "empty = a new one", minimum=0)
                        new_seed = gr.Checkbox(True, label="New variation each click")
                    soundfont = gr.Dropdown(soundfonts, value=soundfonts[0] if soundfonts else None,
                                            label="Soundfont", allow_custom_value=False)
                    generate_button = gr.Button("Generate", variant="primary")
            slots = []
            for i in range(max_candidates):
                with gr.Group(visible=False) as group:
                    with gr.Row():
                        audio = gr.Audio(label=f"Candidate {i + 1}", type="filepath",
                                         interactive=False, elem_classes=["candidate-audio"])
                        midi = gr.File(label="MIDI", interactive=False)
                    roll = gr.Image(label="Piano roll: seed (blue), continuation (orange)",
                                    type="filepath", interactive=False)
                    info = gr.Markdown()
                    rating = gr.Radio(["1", "2", "3", "4", "5"], label="Your rating (5 = best)")
                slots.append((group, audio, midi, roll, info, rating))
            with gr.Row():
                rate_button = gr.Button("Save my ratings")
                rate_status = gr.Markdown()

        with gr.Tab("Compare models"):
            gr.Markdown("The same seed MIDI and settings (and the same variation) continued by "
                        "each model. The seed is the one chosen on the Generate tab." +
                        (" With a MAESTRO folder configured you can also use a test-split "
                         "excerpt and hear the human continuation." if studio.maestro_dir
                         else ""))
            with gr.Row():
                use_maestro = gr.Checkbox(False, label="Use a MAESTRO test-split excerpt",
                                          visible=studio.maestro_dir is not None)
                maestro_piece = gr.Number(0, precision=0, label="Test piece number",
                                          visible=studio.maestro_dir is not None)
                maestro_start = gr.Number(30, label="Excerpt start (s)",
                                          visible=studio.maestro_dir is not None)
            compare_button = gr.Button("Continue with every model", variant="primary")
            compare_slots = []
            with gr.Row():
                for name in [*models, "human"]:
                    with gr.Column(visible=name != "human") as column:
                        c_audio = gr.Audio(label=name, type="filepath", interactive=False)
                        c_roll = gr.Image(type="filepath", interactive=False, show_label=False)
                        c_info = gr.Markdown()
                    compare_slots.append((column, c_audio, c_roll, c_info))

        with gr.Tab("Why temperature?"):
            gr.Markdown(
                "Greedy decoding (temperature 0) always takes the most likely next event; "
                "a performance model then falls into loops, repeating a figure or a note. "
                "Sampling keeps the music moving. The plots show, for every generated event, "
                "the entropy of the model's prediction (how unsure it was) and the "
                "probability of the event actually chosen.")
            with gr.Row():
                plot_button = gr.Button("Plot my last generated clip (candidate 1)")
            last_plot = gr.Image(label="Your last generated clip", type="filepath",
                                 interactive=False)
            versus_button = gr.Button("Greedy vs sampled, same variation and seed MIDI",
                                      variant="primary")
            with gr.Row():
                versus = []
                for _ in range(2):
                    with gr.Column():
                        v_audio = gr.Audio(type="filepath", interactive=False)
                        v_roll = gr.Image(type="filepath", interactive=False, show_label=False)
                        v_plot = gr.Image(type="filepath", interactive=False, show_label=False)
                        v_info = gr.Markdown()
                    versus.append((v_audio, v_roll, v_plot, v_info))

        with gr.Tab("About"):
            gr.Markdown(_cards_markdown(studio))

        seed_inputs = [source, example, upload, seed_seconds]
        setting_inputs = [seconds, temperature, top_k, top_p, seed, n, include_seed]

        def new_session(state):
            return state or {"id": uuid.uuid4().hex, "clips": [], "candidates": []}

        @shows_user_errors
        def on_generate(source, example, upload, seed_seconds, model, soundfont, seconds,
                        temperature, top_k, top_p, seed, n, include_seed, new_seed, state,
                        progress=gr.Progress()):
            state = new_session(state)
            prompt = studio.prompt(source, example, upload, seed_seconds)
            settings = _settings(seconds, temperature, top_k, top_p, seed, n, include_seed,
                                 new_seed)
            clips, candidates = studio.generate(
                model, prompt, settings, soundfont,
                on_progress=lambda f: progress(f, desc="sampling"))
            state = {**state, "clips": [c.recipe_data for c in clips],
                     "candidates": candidates}
            updates = []
            for i, _ in enumerate(slots):
                if i < len(clips):
                    clip = clips[i]
                    text = f"**{clip.stats}**  \n`{clip.recipe}`"
                    if clip.engine_note:
                        text += f"  \n_{clip.engine_note}_"
                    updates += [gr.update(visible=True), clip.audio, clip.midi, clip.piano_roll,
                                text, None]
                else:
                    updates += [gr.update(visible=False), None, None, None, "", None]
            return [*updates, settings.seed, state]

        slot_outputs = [component for slot in slots for component in slot]
        generate_button.click(
            on_generate,
            [*seed_inputs, model, soundfont, *setting_inputs, new_seed, session],
            [*slot_outputs, seed, session], api_name="generate",
            concurrency_limit=1)

        def on_plot(state):
            if not state or not state["candidates"]:
                raise gr.Error("Generate a clip on the Generate tab first.")
            candidate = state["candidates"][0]
            recipe = candidate.recipe
            return studio.confidence_plot(candidate,
                                          f"{recipe['model']}, T={recipe['temperature']}")

        plot_button.click(on_plot, session, last_plot, api_name="plot")

        on_preview = shows_user_errors(studio.preview_example)
        example.change(on_preview, [example, soundfont], preview, api_name="preview")
        demo.load(on_preview, [example, soundfont], preview, api_name=False)

        @shows_user_errors
        def on_rate(*values):
            *scores, state = values
            state = new_session(state)
            if not state["clips"]:
                raise gr.Error("Generate something first, then rate it.")
            saved = [studio.rate(state["id"], clip, int(score))
                     for clip, score in zip(state["clips"], scores, strict=False) if score]
            if not saved:
                raise gr.Error("Pick a score (1-5) for at least one candidate.")
            return f"Saved {len(saved)} rating(s). Thank you!"

        rate_button.click(on_rate, [slot[5] for slot in slots] + [session], rate_status,
                          api_name="rate")

        @shows_user_errors
        def on_compare(source, example, upload, seed_seconds, soundfont, seconds,
                       temperature, top_k, top_p, seed, n, include_seed, use_maestro, piece,
                       start, progress=gr.Progress()):
            settings = _settings(seconds, temperature, top_k, top_p, seed, 1, include_seed)
            reference = None
            if use_maestro:
                prompt, reference = studio.reference(int(piece or 0), float(start or 0),
                                                     seed_seconds, settings.seconds, soundfont)
            else:
                prompt = studio.prompt(source, example, upload, seed_seconds)
            clips = studio.compare(prompt, settings, soundfont,
                                   on_progress=lambda f: progress(f, desc="sampling"))
            outputs = []
            for clip in clips:
                outputs += [gr.update(visible=True), clip.audio, clip.piano_roll,
                            f"**{clip.stats}**  \n`{clip.recipe}`"]
            if reference is None:
                outputs += [gr.update(visible=False), None, None, ""]
            else:
                outputs += [gr.update(visible=True), reference.audio, reference.piano_roll,
                            f"**{reference.stats}**  \n{reference.recipe}"]
            return outputs

        compare_button.click(
            on_compare,
            [*seed_inputs, soundfont, *setting_inputs, use_maestro, maestro_piece,
             maestro_start],
            [component for slot in compare_slots for component in slot], api_name="compare",
            concurrency_limit=1)

        @shows_user_errors
        def on_versus(source, example, upload, seed_seconds, model, soundfont, seconds,
                      temperature, top_k, top_p, seed, n, include_seed):
            prompt = studio.prompt(source, example, upload, seed_seconds)
            settings = _settings(seconds, temperature, top_k, top_p, seed, 1, include_seed)
            outputs = []
            for clip, plot in studio.greedy_and_sampled(model, prompt, settings, soundfont):
                outputs += [gr.update(value=clip.audio, label=clip.title), clip.piano_roll,
                            plot, f"**{clip.title}**: {clip.stats}"]
            return outputs

        versus_button.click(on_versus, [*seed_inputs, model, soundfont, *setting_inputs],
                            [c for column in versus for c in column], api_name="versus",
                            concurrency_limit=1)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Hugging Face Spaces sets GRADIO_SERVER_NAME/PORT; locally we stay on loopback.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="make a public gradio.live link")
    parser.add_argument("--checkpoints", help="folder of checkpoint folders "
                        "(default: musicgen.resources.checkpoint_dir())")
    args = parser.parse_args(argv)
    studio = Studio(args.checkpoints, output_dir=ROOT / "tmp" / "outputs",
                    maestro_dir=os.environ.get("MUSICGEN_MAESTRO_DIR"))
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=1, max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=MAX_UPLOAD_BYTES, theme=gr.themes.Soft(), show_error=True,
                allowed_paths=[str(studio.output_dir)])


if __name__ == "__main__":
    main()
