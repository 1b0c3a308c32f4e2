"""musicgen demo: pick or upload a seed MIDI, choose how it should play, listen, compare.

    python app.py [--host 127.0.0.1] [--port 7860] [--share]

This file only wires Gradio widgets to `musicgen.studio.Studio`, which holds
the models (loaded once here) and does the work. One builder per tab puts its
widgets into `ui`, a dict by name; handlers are module-level functions whose
parameter names are those names (`connect` picks the inputs by them), and
they return dicts by name, so no list order has to match anything. A
`UserError` becomes a message beside the button, and the last good result
stays. Per-user data lives in `gr.State`; nothing module-level changes after
start-up.
"""

from __future__ import annotations

import argparse
import functools
import html
import inspect
import json
import os
import tempfile
import urllib.parse
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_TEMP_DIR", str(ROOT / "tmp" / "gradio"))

import gradio as gr  # noqa: E402 - the environment above must be set first

from musicgen.checkpoint import tokens_seen  # noqa: E402
from musicgen.errors import UserError  # noqa: E402
from musicgen.listening import ServedPair  # noqa: E402
from musicgen.played import MAX_PLAYED_NOTES, is_finite_number  # noqa: E402
from musicgen.prompt import DEFAULT_PROMPT_SECONDS, MAX_UPLOAD_BYTES, PROMPT_SECONDS  # noqa: E402
from musicgen.sample import Stopped  # noqa: E402
from musicgen.settings import CHOICES, DEFAULT_PRESET, LIMITS, PRESETS, Settings  # noqa: E402
from musicgen.studio import Clip, Studio  # noqa: E402
from musicgen.web import (  # noqa: E402
    CLIP_PATH,
    client_address,
    listener_of,
    sample_bank_routes,
    server_additions,
)

SHARE_PARAM = "result"  # ?result=<token> opens a shared result (`Studio.share`)
SEED_KINDS = [("Built-in example", "example"), ("Your MIDI file", "upload"),
              ("Play it", "played"), ("Silence", "silence")]
DEFAULTS = Settings()
SLOTS = int(LIMITS["n"].high)
# The most notes a phrase may have (`musicgen.played`), at about 40 characters each.
MAX_KEYBOARD_MESSAGE = 40 * MAX_PLAYED_NOTES

# The page's piano (`page/`): its markup, style and code, read once.
PAGE = ROOT / "page"
KEYBOARD_HTML = (PAGE / "keyboard.html").read_text()
KEYBOARD_JS = (PAGE / "keyboard.js").read_text()
KEYBOARD_CSS = (PAGE / "keyboard.css").read_text()

INTRO = """# musicgen
Choose a seed MIDI, press **Generate**, and hear a model trained on 200 hours of
competition piano continue it."""

CSS = """
#generate-button {min-height: 3.2em; font-size: 1.1em}
.mg-player svg {width: 100%; height: 170px; display: block; cursor: pointer}
.mg-player audio {width: 100%; margin-top: 4px}
.mg-title {font-weight: 600; margin-bottom: 2px}
.mg-status {min-height: 3.2em}  /* room for Gradio's progress bar and queue position */
.mg-status p {margin: 0}
.mg-hidden {display: none !important}  /* the listening test's unlock, clicked by LISTEN_JS */
.mg-pair audio {width: 100%}
.mg-listened {font-size: 0.85em; opacity: 0.8}
@media (max-width: 480px) {  /* all four tabs fit on a phone, none hidden behind a menu */
  .tab-wrapper button {padding: 4px 5px !important; font-size: 0.85em !important}
  .prose table {display: block; overflow-x: auto; white-space: nowrap}
}
"""

# Moves each player's cursor line with its audio, and seeks where the roll is clicked.
# Media events do not bubble, so they are caught on the way down (capture).
PLAYER_JS = """
const place = (audio) => {
  const svg = audio.closest('.mg-player')?.querySelector('svg.mg-roll');
  const cursor = svg?.querySelector('.mg-cursor');
  if (!cursor) return;
  const left = +svg.dataset.left, width = +svg.dataset.width;
  const x = left + (width - left) * Math.min(1, audio.currentTime / +svg.dataset.seconds);
  cursor.setAttribute('x1', x); cursor.setAttribute('x2', x);
};
const follow = (audio) => {
  place(audio);
  if (!audio.paused) requestAnimationFrame(() => follow(audio));
};
element.addEventListener('play', (e) => follow(e.target), true);
element.addEventListener('seeked', (e) => place(e.target), true);
element.addEventListener('timeupdate', (e) => place(e.target), true);
element.addEventListener('click', (e) => {
  const svg = e.target.closest?.('svg.mg-roll');
  const audio = svg?.closest('.mg-player')?.querySelector('audio');
  if (!audio) return;
  const box = svg.getBoundingClientRect(), left = +svg.dataset.left, width = +svg.dataset.width;
  const x = (e.clientX - box.left) / box.width * width;
  audio.currentTime = Math.max(0, (x - left) / (width - left)) * +svg.dataset.seconds;
});
// The first candidate's player: when a new result arrives, bring it into view
// (on a laptop it lands below the fold, on a phone a screen and more down).
// The slot is hidden until the first result, so this runs as it first appears.
if (element.closest('#mg-first-player')) {
  let shown = null;
  const bring = () => {
    const src = element.querySelector('audio')?.getAttribute('src');
    if (src && src !== shown) {
      shown = src;
      element.scrollIntoView({behavior: 'smooth', block: 'center'});
    }
  };
  bring();
  new MutationObserver(bring).observe(element, {childList: true, subtree: true});
}
"""

# Asks for the vote to open once every clip of the pair has played for the pair's
# minimum (summed over the ranges the browser actually played, so seeking ahead
# does not count): it clicks the hidden unlock button. The server decides: both clips
# downloaded in full, and the listening time passed since (`ListeningTest.vote`).
LISTEN_JS = """
const playedSeconds = (audio) => {
  let total = 0;
  const ranges = audio.played;
  for (let i = 0; i < ranges.length; i++) total += ranges.end(i) - ranges.start(i);
  return total;
};
// A pair that has been voted on is not unlocked again.
document.addEventListener('click', (e) => {
  const pair = element.querySelector('.mg-pair');
  if (pair && e.target.closest?.('[id^="vote-"]')) pair.dataset.voted = '1';
}, true);
const check = () => {
  const pair = element.querySelector('.mg-pair');
  if (!pair) return;
  const need = +pair.dataset.minListen;
  const clips = [...pair.querySelectorAll('audio.mg-clip')];
  for (const audio of clips) {
    const shown = pair.querySelector(`.mg-listened[data-clip="${audio.dataset.clip}"]`);
    const heard = Math.min(need, playedSeconds(audio)).toFixed(1);
    if (shown) shown.textContent = `played ${heard} of ${need} s`;
  }
  // Ask again every second until the vote is open: the server may answer "not
  // yet" (clips played faster than real time), and then the next ask succeeds.
  const locked = document.querySelector('#vote-a')?.disabled;
  const now = Date.now();
  if (locked && !pair.dataset.voted && clips.length
      && clips.every((audio) => playedSeconds(audio) >= need)
      && now - (+pair.dataset.asked || 0) > 1000) {
    pair.dataset.asked = now;
    document.getElementById('listen-unlock')?.click();
  }
};
element.addEventListener('timeupdate', check, true);
setInterval(check, 1000);  // also when paused after playing: "not yet" is asked again
"""

LISTEN_INTRO = """Listen to two continuations of the same piano excerpt and say which goes on
better. You are not told who played which (a model, or the pianist) until you have voted.
Votes are stored with a random id this browser keeps in a cookie, a keyed hash of your
network address (to keep scripts out), their times and the optional answers below,
nothing else; by voting you agree to that."""
LISTEN_START = ('<div class="mg-pair-empty">Press <b>Next pair</b> to hear the first two '
                "clips.</div>")
VOTES = [("A is better", "a"), ("B is better", "b"), ("About the same", "tie"),
         ("Both are bad", "both_bad")]
LISTENING_SETUP = [("Headphones", "headphones"), ("Speakers", "speakers")]

ABOUT = """### What the numbers mean
*NLL* (negative log-likelihood) is how surprised a model is by the next event of real
performances it never saw (the MAESTRO test split), in nats per event: lower is better,
and 0 would mean it always knew what comes next. The *bigram baseline* predicts each event
from the one before it by counting; a model that does not beat it has learned nothing
about music. *Accuracy* is how often the model's likeliest next event is the real one;
it stays low even for good models, because a pianist has many good next notes.

### How close is it to real playing?
On MAESTRO test-split prompts (150 for the table above; the first comparisons of settings
used 50) we measured 22 features of 30 s continuations (density, polyphony, pitch, rhythm,
dynamics, key, repetition) against what the pianists played, and looked for copying from
the training data. A top-p cut shortened the notes and made the
Transformer loop, so there is none by default. A temperature below 1 also shortens the
pauses the model chooses, which made the music too dense, with notes too short; so the
default temperature, 0.85, only chooses which notes are played and how loudly, and keeps
the model's own timing ("Keep the model's timing"). That came closest for both models.

Notes are also paired by default, as a pianist's are: a key is struck only when it is up
and released only when it is down. On 150 prompts that halved the LSTM's excess of notes
left hanging and brought it closer to real playing; for the Transformer it did not help.
The models still forgot keys they had held down for a while, so a key held 3 s or more now
gets about a 2% chance or more of being let go at each event; pianists let go of such keys
at 2-4% ("Release held keys"). With it, notes held 4 s or more are as rare as in the pianists'
playing, for both models.

Greedy decoding repeats itself, and about half of its runs of 8 intervals also occur in
the training data (of the pianists' own continuations: 3%). Accuracy cannot show any of
this: it scores one step at a time with the real past. The reports are in the code's
`docs/evaluation/`, made by `python -m musicgen evaluate-samples`: `controls-30s/` and
`controls-90s/` measure the LSTM exactly as this page plays it, `released-keys/` the
Transformer, and `paired-notes/`, `timing/` and `controls/` what pairing, keeping the timing
and Min-p change.

### Play it yourself
Choose *Play it* as the seed. Play the keys on screen (mouse or fingers), the computer
keys A W S E D F T G Y H U J K O L P ; (Z and X move an octave), or a MIDI keyboard:
Chrome, Edge, Firefox and Opera have Web MIDI (Safari does not), and it needs https or
localhost. *Record a seed*: Generate continues what you played. *Duet*: play a phrase
and pause; the model answers, then it is your turn. Download either as MIDI.

### Key, register and density
A model trained to read them (see the Models table) is told, beside every event, the key,
register and density the next 10 seconds should have. In training these came from the
music that really followed; here they are the seed's own, so the continuation keeps the
seed's key, how high it plays and how many notes it plays a second. *Key* picks another
key (say D minor), *Density* sparser or denser, *Register* (under Advanced) lower or
higher; *free* leaves that part to the model.

### Run it yourself
```bash
make demo     # sets up .venv and serves http://127.0.0.1:7860
make test     # the whole test suite
.venv/bin/python -m musicgen generate --example "Beethoven: Ode to Joy" --seconds 30 --audio out.wav
```
The code's README has the rest (training, evaluation, the command line).
Weights are trained on MAESTRO v3.0.0 (CC BY-NC-SA 4.0): non-commercial use, share alike.
Ratings you submit are stored with the clip's recipe (model, settings, variation) and a
random id for your browser session; votes in Listen with a random id this browser keeps in
a cookie, a keyed hash of your network address (to keep scripts out) and their times,
nothing else."""


# --- wiring helpers ---

def connect(event, handler, studio: Studio, ui: dict, outputs: list[str],
            status: str = "status", kind: str = "other", **kwargs):
    """Attach `handler` to an event; its parameter names pick its inputs from `ui`.

    The handler returns (or yields) a dict by widget name. A `UserError` it
    raises becomes a message in `ui[status]` and leaves every other output as
    it was, so the last good result stays and no error badge covers an input.
    Parameters named `progress`, `request` and `profile` get Gradio's progress, the
    request and the signed-in Hugging Face profile (or None).
    `kind` names the queue the event waits in (`QUEUE_LIMITS`).
    """
    bound = functools.partial(handler, studio)
    names = [name for name in inspect.signature(bound).parameters
             if name not in ("progress", "request", "profile")]
    targets = [ui[name] for name in dict.fromkeys([*outputs, status])]

    def by_component(values: dict) -> dict:
        # Every output the handler leaves out is skipped by name: Gradio reads an
        # empty dict as one value and puts an "Error" badge on every output.
        return {**dict.fromkeys(targets, gr.skip()),
                **{ui[name]: value for name, value in values.items()}}

    def problem(error: UserError) -> dict:
        return {ui[status]: f"⚠️ {error}."}

    # Stopped: the page went away (`Studio.page_closed`); there is nobody left to tell.
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(bound)
        def run(*args, **kw):
            try:
                for values in bound(*args, **kw):
                    yield by_component(values)
            except UserError as error:
                yield problem(error)
            except Stopped:
                return
    else:
        @functools.wraps(bound)
        def run(*args, **kw):
            try:
                return by_component(bound(*args, **kw))
            except UserError as error:
                return problem(error)
            except Stopped:
                return by_component({})
    # Gradio finds these parameters by their types; the wrapper has no annotations.
    special = {"request": gr.Request, "profile": gr.OAuthProfile | None}
    run.__annotations__ = {name: annotation for name, annotation in special.items()
                           if name in inspect.signature(bound).parameters}
    dependency = event(run, inputs=[ui[name] for name in names], outputs=targets, **kwargs)
    ui.setdefault("kinds", {})[dependency["id"]] = kind
    return dependency


def _settings(seconds, temperature, top_k, top_p, min_p, variation, n, include_seed,
              max_silence, paired_notes, keep_timing, release_held_keys, key, register,
              density, new_variation) -> Settings:
    return Settings.from_user(seconds=seconds, temperature=temperature, top_k=top_k,
                              top_p=top_p, min_p=min_p, seed=variation, n=n,
                              include_prompt=include_seed,
                              max_silence=max_silence, paired_notes=paired_notes,
                              keep_timing=keep_timing, release_held_keys=release_held_keys,
                              key=key, register=register, density=density,
                              new_seed=new_variation)


def _slider(name: str, step: float, **kwargs) -> gr.Slider:
    """A slider whose range, default, label and help come from `musicgen.settings.LIMITS`."""
    limit = LIMITS[name]
    return gr.Slider(limit.low, limit.high, value=getattr(DEFAULTS, name), step=step,
                     label=limit.label, info=limit.help or None, **kwargs)


def _choice(name: str, helped: bool = True, **kwargs) -> gr.Dropdown:
    """A dropdown whose options, default, label and help come from `musicgen.settings.CHOICES`."""
    choice = CHOICES[name]
    return gr.Dropdown(list(choice.options), value=getattr(DEFAULTS, name), label=choice.label,
                       info=choice.help if helped else None, **kwargs)


def player_html(clip: Clip) -> str:
    """The clip's piano roll over its audio player; the cursor follows playback."""
    url = "gradio_api/file=" + urllib.parse.quote(clip.audio)
    return (f'<div class="mg-player"><div class="mg-title">{clip.title}</div>{clip.roll_svg}'
            f'<audio controls preload="metadata" aria-label="{html.escape(clip.title)}: audio, '
            f'{clip.seconds:.0f} s" src="{url}"></audio></div>')


def _clip_text(clip: Clip) -> str:
    text = f"**{clip.stats}**  \n<small>{clip.recipe}</small>"
    return text + (f"  \n_{clip.engine_note}_" if clip.engine_note else "")


def _slot_updates(clips: list[Clip]) -> dict:
    """Show these clips in the result slots, and hide the rest."""
    values = {}
    for i in range(SLOTS):
        clip = clips[i] if i < len(clips) else None
        values |= {f"slot{i}": gr.update(visible=clip is not None),
                   f"player{i}": player_html(clip) if clip else "",
                   f"files{i}": [clip.midi, clip.audio] if clip else None,
                   f"info{i}": _clip_text(clip) if clip else "",
                   f"rating{i}": None}
    return values


def _chosen_prompt(studio: Studio, seed_kind, example, upload, played, seed_seconds,
                   seed_start):
    """The seed MIDI chosen on the Generate tab, as a prompt."""
    return studio.prompt(seed_kind, example, played if seed_kind == "played" else upload,
                         seed_seconds, seed_start if seed_kind == "upload" else None)


def _page_stop(studio: Studio, request: gr.Request | None):
    """What stops this request's sampling when its page goes away (None: no page known)."""
    page = getattr(request, "session_hash", None)
    return studio.page_stop(page) if page else None


def _browser(studio: Studio, request: gr.Request | None) -> str | None:
    """This browser's id: the signed cookie `musicgen.web.ListenerCookie` gives every page."""
    headers = request.headers if request is not None else {}
    return listener_of(studio.listening.keys, headers.get("cookie"))


def on_page_opened(studio: Studio, session, request: gr.Request):
    """A page (re)opened: show the result its link shares, else what this browser
    generated last, while it is kept."""
    token = request.query_params.get(SHARE_PARAM) if request is not None else None
    clips, said = (studio.shared(token), "A result shared with you.") if token else ([], "")
    if token and not clips:
        return {"status": "That link's result is no longer kept (results last an hour)."}
    if not clips:
        clips, said = (studio.last_result(_browser(studio, request) or ""),
                       "Your last result is back (kept for an hour).")
    if not clips:
        return {}
    return {**_slot_updates(clips), "session": {**_new_session(session), "clips": clips},
            "status": said}


def on_page_closed(studio: Studio, request: gr.Request) -> None:
    """A page was closed or reloaded: stop what is being sampled for it."""
    if request is not None and request.session_hash:
        studio.page_closed(request.session_hash)


def _new_session(session: dict | None) -> dict:
    return session or {"id": uuid.uuid4().hex, "clips": [], "history": [], "confidence": None}


# --- the Generate tab ---

def build_generate_tab(studio: Studio, ui: dict) -> None:
    """The main page: the button first, the seed MIDI beside it, results below."""
    models = studio.model_choices()
    soundfonts = studio.soundfont_choices()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            ui["model"] = gr.Dropdown(models, value=models[0][1], label="Model")
            ui["preset"] = gr.Radio(list(PRESETS), value=DEFAULT_PRESET, label="How it plays")
            # Shown where a model reads them: the others would ignore them.
            with gr.Row(visible=studio.takes_controls()):
                # Without help lines: above Generate, on a phone, every line counts.
                ui["key"] = _choice("key", helped=False, min_width=120)
                ui["density"] = _choice("density", helped=False, min_width=120)
            ui["seconds"] = _slider("seconds", 1)
            ui["generate"] = gr.Button("Generate", variant="primary", elem_id="generate-button")
            ui["status"] = gr.Markdown(elem_classes=["mg-status"])
        with gr.Column(scale=2, min_width=280):
            ui["seed_kind"] = gr.Radio(SEED_KINDS, value="example", label="Seed MIDI")
            ui["played"] = gr.State(None)  # the MIDI file of what was played as the seed
            ui["duet"] = gr.State(None)  # `musicgen.duet.Duet`: the model's part is kept here
            ui["keyboard"] = gr.HTML("", html_template=KEYBOARD_HTML, js_on_load=KEYBOARD_JS,
                                     elem_id="mg-keyboard", visible=False)
            ui["played_file"] = gr.File(label="What you played (MIDI)", interactive=False,
                                        visible=False, height=60)
            ui["example"] = gr.Dropdown(studio.examples, value=studio.examples[0],
                                        label="Example")
            ui["upload"] = gr.File(label=f"Your MIDI file (.mid/.midi, up to "
                                         f"{MAX_UPLOAD_BYTES // 2**20} MB)",
                                   file_types=[".mid", ".midi"], type="filepath", height=120)
            ui["seed_info"] = gr.Markdown()
            ui["seed_status"] = gr.Markdown()  # what is wrong with the seed MIDI, beside it
            ui["silence_note"] = gr.Markdown("The model starts from nothing and plays what it "
                                             "likes.", visible=False)
            with gr.Row():
                # A number, not a slider: a slider's maximum, updated per file,
                # is not what Gradio checks the value against on the server.
                ui["seed_start"] = gr.Number(0, minimum=0, precision=0, visible=False,
                                             label="Excerpt starts at (seconds)")
                ui["seed_seconds"] = gr.Slider(PROMPT_SECONDS.low, PROMPT_SECONDS.high,
                                               value=DEFAULT_PROMPT_SECONDS, step=1,
                                               label=PROMPT_SECONDS.label)
            ui["preview"] = gr.Audio(label="The excerpt the model continues", type="filepath",
                                     interactive=False)
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            ui["temperature"] = _slider("temperature", 0.05)
            ui["top_p"] = _slider("top_p", 0.01)
            ui["top_k"] = _slider("top_k", 1)
            ui["min_p"] = _slider("min_p", 0.01)
        with gr.Row():
            ui["n"] = _slider("n", 1)
            ui["max_silence"] = _slider("max_silence", 0.5)
            ui["variation"] = gr.Number(DEFAULTS.seed, precision=0, label=LIMITS["seed"].label,
                                        info=LIMITS["seed"].help + "; empty = a new one",
                                        minimum=0)
            ui["soundfont"] = gr.Dropdown(soundfonts, value=soundfonts[0][1] if soundfonts
                                          else None, label="Soundfont", min_width=220)
        # Two checkboxes a row: with more, a phone squeezed their help texts
        # into slivers a word wide.
        with gr.Row():
            ui["new_variation"] = gr.Checkbox(True, label="New variation each time",
                                              min_width=220)
            ui["include_seed"] = gr.Checkbox(DEFAULTS.include_prompt, min_width=220,
                                             label="Start the result with the excerpt")
        with gr.Row():
            ui["keep_timing"] = gr.Checkbox(DEFAULTS.keep_timing, min_width=220,
                                            label=LIMITS["keep_timing"].label,
                                            info=LIMITS["keep_timing"].help)
            ui["paired_notes"] = gr.Checkbox(DEFAULTS.paired_notes, min_width=220,
                                             label=LIMITS["paired_notes"].label,
                                             info=LIMITS["paired_notes"].help)
        with gr.Row():
            ui["register"] = _choice("register", min_width=220,
                                     visible=studio.takes_controls())
            ui["release_held_keys"] = gr.Checkbox(DEFAULTS.release_held_keys, min_width=220,
                                                  label=LIMITS["release_held_keys"].label,
                                                  info=LIMITS["release_held_keys"].help)
    for row in range(0, SLOTS, 2):
        with gr.Row(equal_height=False):
            for i in (row, row + 1):
                with gr.Column(visible=False, min_width=300) as ui[f"slot{i}"]:
                    ui[f"player{i}"] = gr.HTML(js_on_load=PLAYER_JS, elem_id=(
                        "mg-first-player" if i == 0 else None))
                    ui[f"info{i}"] = gr.Markdown()
                    ui[f"files{i}"] = gr.File(label="Download (MIDI with its recipe, MP3)",
                                              file_count="multiple", interactive=False)
                    with gr.Row():
                        ui[f"rating{i}"] = gr.Radio(["1", "2", "3", "4", "5"],
                                                    label="Your rating (5 = best)", scale=2)
                        ui[f"continue{i}"] = gr.Button("Continue from this", scale=1)
    with gr.Row():
        ui["rate"] = gr.Button("Save my ratings")
        ui["undo"] = gr.Button("Undo continue", interactive=False)
    ui["rate_status"] = gr.Markdown()


def on_seed_kind(studio: Studio, seed_kind, played):
    """Show only the inputs of the chosen kind of seed MIDI (the drop zone always: a file
    dropped there chooses "your MIDI file")."""
    return {"example": gr.update(visible=seed_kind == "example"),
            "keyboard": gr.update(visible=seed_kind == "played"),
            "played_file": gr.update(visible=seed_kind == "played" and played is not None),
            "seed_start": gr.update(visible=seed_kind == "upload"),
            "seed_seconds": gr.update(visible=seed_kind != "silence"),
            "preview": gr.update(visible=seed_kind not in ("silence", "played")),
            "silence_note": gr.update(visible=seed_kind == "silence")}


def on_upload(studio: Studio, upload, seed_seconds):
    """A dropped file selects "your MIDI file" (even one that cannot be used: then Generate
    says why, instead of quietly continuing the example), and shows its length."""
    yield {"seed_kind": "upload", "example": gr.update(visible=False), "seed_info": "",
           "seed_status": ""}
    seed = studio.seed_file(upload, seed_seconds)
    yield {"seed_info": seed.summary,
           "seed_start": gr.update(value=round(seed.default_start), visible=True,
                                   info=f"0 to {seed.seconds:.0f}")}


# Hidden, not only emptied: an emptied gr.Audio went on showing the old waveform.
NO_PREVIEW = gr.update(value=None, visible=False)


def on_upload_cleared(studio: Studio):
    """The file was taken away: so is what was said about it."""
    return {"seed_info": "", "seed_status": "", "seed_start": gr.update(visible=False),
            "preview": NO_PREVIEW}


def on_preview(studio: Studio, seed_kind, example, upload, played, seed_seconds, seed_start,
               soundfont):
    """Render the excerpt the model will continue."""
    if (seed_kind == "upload" and not upload) or seed_kind == "played":
        return {"preview": NO_PREVIEW}
    prompt = _chosen_prompt(studio, seed_kind, example, upload, played, seed_seconds,
                            seed_start)
    excerpt = studio.preview(prompt, soundfont)
    return {"preview": gr.update(value=excerpt, visible=excerpt is not None), "seed_status": ""}


def on_keyboard(studio: Studio, keyboard, duet, played, model, seed_seconds, temperature, top_k,
                top_p, min_p, paired_notes, keep_timing, release_held_keys, key, register,
                density):
    """A message from the page's keyboard (`page/keyboard.js`), answered through the
    keyboard's own value: "seed" (what was played becomes the seed MIDI), "duet" (the
    model answers the player's phrase), "stop" (the player cut the answer short) or
    "clear". A message that cannot be used is answered with what is wrong, beside the
    keyboard and in it; nothing played before is lost."""
    reply = {"reply": True, "id": None}  # no id: the message could not be read
    try:
        message = _keyboard_message(keyboard)
        reply["id"] = message.get("id")
        action = message.get("action")
        if action == "seed":
            path, summary = studio.played_seed(message.get("notes"), seed_seconds, played)
            # No preview: the keyboard plays it back (one still on its way from the
            # page's load, of the example, is taken away).
            return {"keyboard": json.dumps({**reply, "ok": True}), "played": path,
                    "played_file": gr.update(value=path, visible=True), "seed_kind": "played",
                    "seed_info": summary, "seed_status": "", "preview": NO_PREVIEW}
        if action == "duet":
            settings = _settings(message.get("seconds"), temperature, top_k, top_p, min_p,
                                 None, 1, False, None, paired_notes, keep_timing,
                                 release_held_keys, key, register, density, True)
            turn = studio.duet_turn(model, duet, message.get("phrase"), settings,
                                    message.get("turns"), message.get("answered"), played)
            turns = len(turn.duet.turns)
            return {"keyboard": json.dumps({**reply, "answer": turn.answer, "turn": turns - 1,
                                            "turns": turns}),
                    "duet": turn.duet, "played_file": gr.update(value=turn.midi, visible=True),
                    "played": turn.midi, "seed_kind": "played",  # Generate goes on from it
                    "seed_info": f"The model answered: {turn.recipe}.", "seed_status": ""}
        if action == "stop":
            duet, midi = studio.duet_stopped(duet, message.get("turns"),
                                             message.get("answered"),
                                             _clock_time(message.get("seconds")) or 0.0, played)
            return {"keyboard": json.dumps({**reply, "ok": True}), "duet": duet,
                    "played_file": midi, "played": midi}
        if action == "clear":
            return {"keyboard": json.dumps({**reply, "ok": True}), "duet": None,
                    "played": None, "played_file": gr.update(value=None, visible=False),
                    "seed_info": "", "seed_status": ""}
        raise UserError("the keyboard sent a message this page does not know; reload it")
    except UserError as error:
        return {"keyboard": json.dumps({**reply, "error": f"{error}."}),
                "seed_status": f"⚠️ {error}."}


def _keyboard_message(value) -> dict:
    """The keyboard's message as a dict, or a `UserError` (too long, or not JSON)."""
    if not isinstance(value, str) or len(value) > MAX_KEYBOARD_MESSAGE:
        raise UserError("the keyboard sent more than a played phrase can hold; press Clear "
                        "and play a shorter one")
    try:
        message = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        message = None
    if not isinstance(message, dict):
        raise UserError("the keyboard's message was damaged on the way; play it again")
    return message


def _clock_time(value) -> float | None:
    """A time on the duet's clock from the page: a finite number of seconds, or None."""
    if value is None:
        return None
    if not is_finite_number(value):
        raise UserError("the keyboard's clock sent something that is not a time; press Clear")
    return float(value)


def on_variation_typed(studio: Studio):
    """A number typed in means "this variation": stop picking new ones."""
    return {"new_variation": False}


def on_sampling_typed(studio: Studio):
    """A sampling slider moved by hand: the settings are no longer a preset's."""
    return {"preset": None}


def on_preset(studio: Studio, preset):
    """Set the sampling sliders to a preset's values (none chosen: leave them)."""
    return dict(PRESETS.get(preset, {}))


def locked_run(event, button: str, handler, studio: Studio, ui: dict, outputs: list[str],
               status: str, api_name, kind: str, **kwargs) -> None:
    """Run `handler` with its button disabled and saying so, then give the button back
    (whatever happened: a second click is not silently dropped, it cannot be made)."""
    label = ui[button].value

    def lock(studio: Studio):
        return {button: gr.update(value="Working…" if label != "Generate" else "Generating…",
                                  interactive=False)}

    def unlock(studio: Studio):
        return {button: gr.update(value=label, interactive=True)}

    locked = connect(event, lock, studio, ui, [button], status=status, api_name=False)
    done = connect(locked.then, handler, studio, ui, outputs, status=status, api_name=api_name,
                   kind=kind, concurrency_limit=studio.concurrent_requests,
                   show_progress_on=[ui[status]], **kwargs)
    connect(done.then, unlock, studio, ui, [button], status=status, api_name=False)


def on_generate(studio: Studio, seed_kind, example, upload, played, seed_seconds, seed_start,
                model,
                soundfont, seconds, temperature, top_k, top_p, min_p, variation, n, include_seed,
                max_silence, paired_notes, keep_timing, release_held_keys, key, register,
                density, new_variation, session, request: gr.Request,
                progress=gr.Progress()):
    """Validate, sample, and show each candidate as soon as its audio is ready; stop
    sampling if the page goes away (`on_page_closed`)."""
    session = _new_session(session)
    prompt = _chosen_prompt(studio, seed_kind, example, upload, played, seed_seconds,
                            seed_start)
    settings = _settings(seconds, temperature, top_k, top_p, min_p, variation, n, include_seed,
                         max_silence, paired_notes, keep_timing, release_held_keys, key,
                         register, density, new_variation)
    pairs = []
    for clip, candidate in studio.generate_each(
            model, prompt, settings, soundfont,
            on_progress=lambda f: progress(f, desc="sampling"), stop=_page_stop(studio, request)):
        if not pairs:
            session = {**session, "confidence": (candidate.entropy, candidate.chosen_probability,
                                                 f"{model}, T={settings.temperature:g}")}
        pairs.append((clip, candidate))
        yield {**_slot_updates([clip for clip, _ in pairs]), "variation": settings.seed,
               "status": f"{len(pairs)} of {settings.n} ready.", "session": session}
    clips = studio.on_one_axis(pairs)
    browser = _browser(studio, request)
    if browser:
        studio.remember(browser, clips)
    share = f" [A link to share it](?{SHARE_PARAM}={studio.share(clips)}) (for an hour)."
    yield {**_slot_updates(clips), "variation": settings.seed, "rate_status": "",
           "session": {**session, "clips": clips},
           "status": f"Done: variation {settings.seed}." + share + (
               f" {settings.n} candidates, variations {settings.seed}-"
               f"{settings.seed + settings.n - 1}." if settings.n > 1 else "")
           + " (A variation number gives the same notes again: type it under Advanced.)"}


GENERATE_OUTPUTS = [*(f"{kind}{i}" for i in range(SLOTS)
                      for kind in ("slot", "player", "files", "info", "rating")),
                    "variation", "session", "rate_status"]


def on_continue(studio: Studio, slot, seed_kind, example, upload, seed_start, seed_seconds,
                session):
    """Make a result the seed MIDI (its last part the excerpt), keeping the old one for undo."""
    session = _new_session(session)
    if slot >= len(session["clips"]):
        raise UserError("generate something first, then continue from it")
    path, start = studio.continuation_seed(session["clips"][slot], seed_seconds)
    history = [*session["history"], {"seed_kind": seed_kind, "example": example,
                                     "upload": upload, "seed_start": seed_start,
                                     "clips": session["clips"]}]
    seed = studio.seed_file(path, seed_seconds)
    return {"session": {**session, "history": history}, "seed_kind": "upload",
            "upload": path, "example": gr.update(visible=False),
            "seed_start": gr.update(value=round(start), visible=True,
                                    info=f"0 to {seed.seconds:.0f}"),
            "seed_info": f"Continuing from candidate {slot + 1}. " + seed.summary.split(". ")[0]
                         + ".", "status": "", "undo": gr.update(interactive=True)}


def on_undo(studio: Studio, session):
    """Go back to the seed MIDI and the results before the last "Continue from this"."""
    session = _new_session(session)
    if not session["history"]:
        raise UserError("there is nothing to undo")
    *history, last = session["history"]
    return {**_slot_updates(last["clips"]),
            "session": {**session, "history": history, "clips": last["clips"]},
            "seed_kind": last["seed_kind"], "example": gr.update(
                value=last["example"], visible=last["seed_kind"] == "example"),
            "upload": last["upload"],
            "seed_start": gr.update(value=last["seed_start"],
                                    visible=last["seed_kind"] == "upload"),
            "seed_info": "", "status": "Back to the seed MIDI before your last continue.",
            "rate_status": "", "undo": gr.update(interactive=bool(history))}


def on_rate(studio: Studio, rating0, rating1, rating2, rating3, session):
    """Store this person's ratings of the clips shown (again: replaced, not added)."""
    session = _new_session(session)
    recipes = [clip.recipe_data for clip in session["clips"]]
    return {"rate_status": studio.rate(session["id"], recipes,
                                       [rating0, rating1, rating2, rating3]),
            "session": session}


def wire_generate_tab(studio: Studio, ui: dict) -> None:
    # Not "played": the keyboard plays what was played back itself, and a preview after
    # every pause would queue renders behind each other for everyone.
    preview_inputs = ("seed_kind", "example", "upload", "seed_seconds", "seed_start",
                      "soundfont")
    connect(ui["seed_kind"].change, on_seed_kind, studio, ui,
            ["example", "keyboard", "played_file", "seed_start", "seed_seconds", "preview",
             "silence_note"], api_name=False)
    # No progress shown on the keyboard: it stays playable while the server answers.
    connect(ui["keyboard"].submit, on_keyboard, studio, ui,
            ["keyboard", "played", "duet", "played_file", "seed_kind", "seed_info", "preview"],
            status="seed_status", api_name="keyboard", kind="keyboard",
            concurrency_limit=studio.concurrent_requests, concurrency_id="keyboard",
            show_progress="hidden",
            # Not "once": a message sent as the last reply is applied would be dropped.
            trigger_mode="multiple")
    # A message beside Generate is about what was asked; once the seed or a setting
    # changes, it no longer is. The browser clears it (no request for so little).
    forget = "(status) => (status || '').startsWith('⚠️') ? '' : status"
    changed = [ui[name].input for name in (
        "seed_kind", "example", "seed_seconds", "seed_start", "model", "seconds", "key",
        "density", "preset", "temperature", "top_p", "top_k", "min_p", "n", "max_silence",
        "variation", "soundfont", "include_seed", "keep_timing", "paired_notes", "register",
        "release_held_keys", "new_variation")]
    for event in [*changed, ui["upload"].upload, ui["upload"].clear]:
        event(None, inputs=[ui["status"]], outputs=[ui["status"]], js=forget, queue=False,
              show_progress="hidden", api_name=False)
    connect(ui["upload"].clear, on_upload_cleared, studio, ui,
            ["seed_info", "seed_start", "preview"], status="seed_status", api_name=False)
    connect(ui["upload"].upload, on_upload, studio, ui,
            ["seed_kind", "seed_info", "seed_start", "example"], status="seed_status",
            api_name=False)
    for name in preview_inputs:
        connect(ui[name].change, on_preview, studio, ui, ["preview"], status="seed_status",
                api_name=False, show_progress="hidden")
    connect(ui["variation"].input, on_variation_typed, studio, ui, ["new_variation"],
            api_name=False)
    for name in PRESETS[DEFAULT_PRESET]:
        connect(ui[name].input, on_sampling_typed, studio, ui, ["preset"], api_name=False)
    connect(ui["preset"].change, on_preset, studio, ui, list(PRESETS[DEFAULT_PRESET]),
            api_name=False)

    def generate_chain(event, api_name):
        locked_run(event, "generate", on_generate, studio, ui, GENERATE_OUTPUTS, "status",
                   api_name, "generate", scroll_to_output=True)

    generate_chain(ui["generate"].click, "generate")
    for i in range(SLOTS):
        continued = connect(ui[f"continue{i}"].click, _continue_from(i), studio, ui,
                            ["session", "seed_kind", "upload", "example", "seed_start",
                             "seed_info", "undo"], api_name=f"continue_{i + 1}",
                            scroll_to_output=True)
        generate_chain(continued.success, False)
    connect(ui["undo"].click, on_undo, studio, ui,
            [*GENERATE_OUTPUTS, "seed_kind", "example", "upload", "seed_start", "seed_info",
             "undo"], api_name="undo")
    connect(ui["rate"].click, on_rate, studio, ui, ["rate_status", "session"],
            status="rate_status", api_name="rate")


def _continue_from(slot: int):
    """`on_continue` for one result slot."""
    def handler(studio: Studio, seed_kind, example, upload, seed_start, seed_seconds, session):
        return on_continue(studio, slot, seed_kind, example, upload, seed_start, seed_seconds,
                           session)
    return handler


# --- the other tabs ---

def build_compare_tab(studio: Studio, ui: dict) -> None:
    gr.Markdown("The same seed MIDI, settings and variation continued by each model, on one "
                "pitch axis. The seed is the one chosen on the Generate tab." +
                (" You can also use a MAESTRO test-split excerpt and hear how the pianist "
                 "went on." if studio.maestro_dir else ""))
    with gr.Row():
        ui["use_maestro"] = gr.Checkbox(False, label="Use a MAESTRO test-split excerpt",
                                        visible=studio.maestro_dir is not None)
        pieces = studio.maestro_pieces()
        # The range in words, not as Number's minimum/maximum: out of range, Gradio
        # would answer in its own words and mark the field; `Studio.reference` says why.
        ui["maestro_piece"] = gr.Number(0, precision=0, label="Test piece number",
                                        info=(f"0 to {len(pieces) - 1}; 0 is {pieces[0]}"
                                              if pieces else None),
                                        visible=studio.maestro_dir is not None)
        ui["maestro_start"] = gr.Number(30, label="Excerpt start (s)",
                                        visible=studio.maestro_dir is not None)
    ui["compare"] = gr.Button("Continue with every model", variant="primary")
    ui["compare_status"] = gr.Markdown(elem_classes=["mg-status"])
    with gr.Row(equal_height=False):
        for i in range(len(studio.model_names()) + 1):
            with gr.Column(visible=False, min_width=300) as ui[f"compared{i}"]:
                ui[f"compared_player{i}"] = gr.HTML(js_on_load=PLAYER_JS)
                ui[f"compared_info{i}"] = gr.Markdown()


def on_compare(studio: Studio, seed_kind, example, upload, played, seed_seconds, seed_start,
               soundfont,
               seconds, temperature, top_k, top_p, min_p, variation, include_seed, max_silence,
               paired_notes, keep_timing, release_held_keys, key, register, density,
               new_variation, use_maestro,
               maestro_piece,
               maestro_start, request: gr.Request, progress=gr.Progress()):
    """Every model on the same seed MIDI (or a MAESTRO excerpt, with the pianist's version)."""
    settings = _settings(seconds, temperature, top_k, top_p, min_p, variation, 1,
                         include_seed, max_silence, paired_notes, keep_timing,
                         release_held_keys, key, register, density, new_variation)
    human = None
    if use_maestro:
        prompt, clip, notes = studio.reference(maestro_piece, maestro_start, seed_seconds,
                                               settings.seconds, soundfont)
        human = (notes, clip)
    else:
        prompt = _chosen_prompt(studio, seed_kind, example, upload, played, seed_seconds,
                                seed_start)
    clips = studio.compare(prompt, settings, soundfont,
                           on_progress=lambda f: progress(f, desc="sampling"), human=human,
                           stop=_page_stop(studio, request))
    values = {"compare_status": f"Variation {settings.seed}."}
    for i in range(len(studio.model_names()) + 1):
        clip = clips[i] if i < len(clips) else None
        values |= {f"compared{i}": gr.update(visible=clip is not None),
                   f"compared_player{i}": player_html(clip) if clip else "",
                   f"compared_info{i}": _clip_text(clip) if clip else ""}
    return values


def build_temperature_tab(studio: Studio, ui: dict) -> None:
    gr.Markdown(
        "Greedy decoding (temperature 0) always takes the most likely next event; "
        "a performance model then falls into loops, repeating a figure or a note. "
        "Sampling keeps the music moving. The plots show, for every generated event, "
        "how unsure the model was (the entropy of its prediction) and the probability of "
        "the event actually chosen.")
    with gr.Row():
        ui["plot"] = gr.Button("Plot my last generated clip (candidate 1)")
        ui["versus"] = gr.Button("Greedy vs sampled, same variation and seed MIDI",
                                 variant="primary")
    ui["versus_status"] = gr.Markdown(elem_classes=["mg-status"])
    # No label or buttons: Gradio lays them over the picture, on the axis titles. The
    # plot's own title says what it shows.
    ui["last_plot"] = gr.Image(type="filepath", interactive=False, visible=False,
                               show_label=False, buttons=[], elem_id="mg-last-plot")
    with gr.Row(equal_height=False):
        for i in range(2):
            with gr.Column(min_width=300):
                ui[f"versus_player{i}"] = gr.HTML(js_on_load=PLAYER_JS)
                ui[f"versus_plot{i}"] = gr.Image(type="filepath", interactive=False,
                                                 show_label=False, buttons=[], visible=False)
                ui[f"versus_info{i}"] = gr.Markdown()


def on_plot(studio: Studio, session):
    session = _new_session(session)
    if not session["confidence"]:
        raise UserError("generate a clip on the Generate tab first")
    entropy, chosen, title = session["confidence"]
    return {"last_plot": gr.update(value=studio.confidence_plot(entropy, chosen, title),
                                   visible=True)}


def on_versus(studio: Studio, seed_kind, example, upload, played, seed_seconds, seed_start,
              model,
              soundfont, seconds, temperature, top_k, top_p, min_p, variation, include_seed,
              max_silence, paired_notes, keep_timing, release_held_keys, key, register,
              density, new_variation):
    prompt = _chosen_prompt(studio, seed_kind, example, upload, played, seed_seconds,
                            seed_start)
    settings = _settings(seconds, temperature, top_k, top_p, min_p, variation, 1, include_seed,
                         max_silence, paired_notes, keep_timing, release_held_keys, key,
                         register, density, new_variation)
    values = {"versus_status": f"Variation {settings.seed}."}
    for i, (clip, plot) in enumerate(studio.greedy_and_sampled(model, prompt, settings,
                                                               soundfont)):
        values |= {f"versus_player{i}": player_html(clip),
                   f"versus_plot{i}": gr.update(value=plot, visible=True),
                   f"versus_info{i}": f"**{clip.title}**: {clip.stats}"}
    return values


# --- the listening test ---

def pair_html(pair: ServedPair) -> str:
    """The excerpt and the two clips of a pair, each behind a link made for this pair and
    listener (`musicgen.web.clip_route`); nothing in it tells their conditions."""
    clips = "".join(
        f'<div class="mg-clip-box"><div class="mg-title">{side.upper()}</div>'
        f'<audio class="mg-clip" data-clip="{side}" controls preload="auto" '
        f'aria-label="Clip {side.upper()}" src="{CLIP_PATH}{pair.links[side]}"></audio>'
        f'<div class="mg-listened" data-clip="{side}">played 0.0 of '
        f'{pair.min_listen_s:g} s</div></div>'
        for side in ("a", "b"))
    return (f'<div class="mg-pair" data-min-listen="{pair.min_listen_s:g}" '
            f'data-pair="{pair.links["a"][:8]}"><div class="mg-title">The excerpt both go on '
            f'from (A and B start where it ends)</div><audio controls preload="metadata" '
            f'aria-label="The excerpt" src="{CLIP_PATH}{pair.links["prompt"]}"></audio>'
            f'{clips}</div>')


def build_listen_tab(studio: Studio, ui: dict) -> None:
    gr.Markdown(LISTEN_INTRO)
    if studio.listening.require_account:  # the owner asked for one voice per account
        gr.LoginButton()
    with gr.Row():
        # A text box, not a number: an empty answer must stay empty, not become 0.
        ui["training_years"] = gr.Textbox(label="Years of musical training (optional)",
                                          placeholder="e.g. 0, 3 or 12", max_length=3)
        ui["listening_setup"] = gr.Radio(LISTENING_SETUP, value=None,
                                         label="Listening on (optional)")
    ui["listen_next"] = gr.Button("Next pair", variant="primary")
    ui["listen_status"] = gr.Markdown(elem_classes=["mg-status"])
    ui["pair_player"] = gr.HTML(LISTEN_START, js_on_load=LISTEN_JS)
    ui["listen_unlock"] = gr.Button("unlock", elem_id="listen-unlock",
                                    elem_classes=["mg-hidden"])
    gr.Markdown("Optional, before you vote:")
    with gr.Row():
        for side in ("a", "b"):
            with gr.Column(min_width=200):
                ui[f"musical_{side}"] = gr.Radio(["1", "2", "3", "4", "5"],
                                                 label=f"How musical is {side.upper()}? "
                                                       "(optional, 5 = very)")
                ui[f"guess_{side}"] = gr.Radio(["human", "computer"],
                                               label=f"Did a human or a computer play "
                                                     f"{side.upper()}? (optional)")
    with gr.Row():
        for label, choice in VOTES:
            ui[f"vote_{choice}"] = gr.Button(label, interactive=False,
                                             elem_id=f"vote-{choice.replace('_', '-')}")
    ui["reveal"] = gr.Markdown()
    with gr.Accordion("Results so far", open=False):
        build_results(studio, ui)


def _votes_enabled(enabled: bool) -> dict:
    return {f"vote_{choice}": gr.update(interactive=enabled) for _, choice in VOTES}


SCORES = ["musical_a", "musical_b", "guess_a", "guess_b"]


def _scores(value, interactive: bool) -> dict:
    """The optional answers: cleared and open for a new pair, locked once it is voted on
    (an answer changed after the vote would not be stored)."""
    return {name: gr.update(value=value, interactive=interactive) for name in SCORES}


LISTEN_OUTPUTS = ["pair_player", "listener", "musical_a", "musical_b", "guess_a", "guess_b",
                  "reveal", *(f"vote_{choice}" for _, choice in VOTES)]


def _listener(studio: Studio, request: gr.Request | None) -> tuple[str, str | None]:
    """The listener (their signed cookie) and network address of a request.

    Raises:
        UserError: No valid listener cookie came with it.
    """
    listener = _browser(studio, request)
    if listener is None:
        raise UserError("this browser has no listener id yet: reload the page (the listening "
                        "test keeps one in a cookie)")
    host = getattr(getattr(request, "client", None), "host", None)
    return listener, client_address(request.headers, host)


def _account(profile) -> str | None:
    """The Hugging Face account a listener signed in with (None: not signed in): its
    never-changing id where the profile has one (a user name can be renamed)."""
    if profile is None:
        return None
    sub = profile.get("sub") if isinstance(profile, dict) else None
    return f"hf:{sub or profile.username}"


def on_listen_next(studio: Studio, training_years, listening_setup, listener,
                   request: gr.Request, profile: gr.OAuthProfile | None = None):
    """Serve the next pair, with the vote locked until both clips have been heard.

    The pair's token lives in the Listen tab's own state, which only its
    handlers write: a Generate run that ends later cannot put back an older
    pair's token (its vote would then count for clips not heard).
    """
    rater, address = _listener(studio, request)
    pair = studio.next_pair(rater, training_years, listening_setup, address, _account(profile))
    guesses = {name: gr.update(visible=pair.has_real) for name in ("guess_a", "guess_b")}
    return {"pair_player": pair_html(pair), "listener": {"token": pair.token},
            **_scores(None, True), **guesses, "reveal": "", **_votes_enabled(False),
            "listen_status": f"Play A and B, at least {pair.min_listen_s:g} s each; "
                             "the vote opens then."}


def on_listen_unlock(studio: Studio, listener, request: gr.Request):
    """Both clips have played long enough in the browser: open the vote (server checks too)."""
    rater, _ = _listener(studio, request)
    if not studio.may_vote(rater, (listener or {}).get("token")):
        return {"listen_status": "Keep listening a little longer."}
    return {**_votes_enabled(True), "listen_status": "Which continues the excerpt better?"}


def _vote_for(choice: str):
    """The vote handler of one button."""
    def handler(studio: Studio, musical_a, musical_b, guess_a, guess_b, listener,
                request: gr.Request, profile: gr.OAuthProfile | None = None):
        rater, address = _listener(studio, request)
        reveal = studio.vote(rater, (listener or {}).get("token"), choice, musical_a,
                             musical_b, guess_a, guess_b, address, _account(profile))
        saved = ("**Saved** (it had reached us already)." if reveal.again
                 else "**Saved, thank you.**")
        return {"reveal": f"{saved} {reveal.text}", **_votes_enabled(False),
                **{name: gr.update(interactive=False) for name in SCORES},
                "listen_status": "Press **Next pair** for another."}
    return handler


def wire_listen_tab(studio: Studio, ui: dict) -> None:
    connect(ui["listen_next"].click, on_listen_next, studio, ui, LISTEN_OUTPUTS,
            status="listen_status", api_name="listen_next", kind="listen")
    connect(ui["listen_unlock"].click, on_listen_unlock, studio, ui,
            [f"vote_{choice}" for _, choice in VOTES], status="listen_status",
            api_name="listen_unlock", kind="listen")
    for _, choice in VOTES:
        connect(ui[f"vote_{choice}"].click, _vote_for(choice), studio, ui,
                ["reveal", *(f"vote_{c}" for _, c in VOTES), *SCORES], status="listen_status",
                api_name=f"listen_vote_{choice}", concurrency_limit=None, kind="listen")


def build_results(studio: Studio, ui: dict) -> None:
    """What listeners said in the blind test: aggregates only, never single votes."""
    ui["results_refresh"] = gr.Button("Show the latest results")
    ui["results_status"] = gr.Markdown()
    ui["results"] = gr.Markdown()
    ui["results_chart"] = gr.Image(type="filepath", interactive=False, show_label=False,
                                   visible=False)


def on_results(studio: Studio):
    text, chart = studio.results()
    return {"results": text, "results_chart": gr.update(value=chart, visible=chart is not None)}


def build_about_tab(studio: Studio, ui: dict) -> None:
    rows = ["| model | architecture | parameters | tokens seen | test NLL [95% CI] | "
            "bigram NLL | accuracy |", "|---|---|---:|---:|---:|---:|---:|"]
    for card in studio.cards():
        test = card.get("evaluation", {}).get("test")
        if test:
            model, (low, high) = test["model"], test["model"]["ci"]["nll"]
            nll = f"{model['nll']:.3f} [{low:.3f}, {high:.3f}]"
            bigram = f"{test['baselines']['bigram']['nll']:.3f}"
            accuracy = f"{model['accuracy']:.3f}"
        else:
            nll = bigram = accuracy = "not evaluated"
        rows.append(f"| {card.get('name', '?')} | {card.get('architecture', '?')} | "
                    f"{card.get('parameters', 0):,} | "
                    f"{tokens_seen(card):,} | {nll} | {bigram} | "
                    f"{accuracy} |")
    gr.Markdown("### Models\n" + "\n".join(rows) + "\n\n" + studio.samples_against_real()
                + ABOUT)


def build_app(studio: Studio) -> gr.Blocks:
    """The Blocks app around one `Studio`."""
    ui: dict = {}
    with gr.Blocks(title="musicgen", delete_cache=(3600, 3600)) as demo:
        ui["session"] = gr.State(None)
        ui["listener"] = gr.State(None)  # the Listen tab's own: its id and the pair served
        gr.Markdown(INTRO)
        with gr.Tab("Generate"):
            build_generate_tab(studio, ui)
        with gr.Tab("Compare"):
            build_compare_tab(studio, ui)
        with gr.Tab("Temperature"):
            build_temperature_tab(studio, ui)
        with gr.Tab("Listen"):
            build_listen_tab(studio, ui)
        with gr.Tab("About"):
            build_about_tab(studio, ui)
        wire_generate_tab(studio, ui)
        wire_listen_tab(studio, ui)
        connect(ui["results_refresh"].click, on_results, studio, ui,
                ["results", "results_chart"], status="results_status", api_name="results",
                kind="results")
        compared = [f"{kind}{i}" for i in range(len(studio.model_names()) + 1)
                    for kind in ("compared", "compared_player", "compared_info")]
        locked_run(ui["compare"].click, "compare", on_compare, studio, ui, compared,
                   "compare_status", "compare", "compare")
        connect(ui["plot"].click, on_plot, studio, ui, ["last_plot"], status="versus_status",
                api_name="plot")
        versus = [f"{kind}{i}" for i in range(2)
                  for kind in ("versus_player", "versus_plot", "versus_info")]
        locked_run(ui["versus"].click, "versus", on_versus, studio, ui, versus,
                   "versus_status", "versus", "versus")
        connect(demo.load, on_preview, studio, ui, ["preview"], status="seed_status",
                api_name=False)

        def page_closed(request: gr.Request) -> None:
            on_page_closed(studio, request)

        # Gradio finds the request by this type; the module's annotations are strings.
        page_closed.__annotations__ = {"request": gr.Request}
        demo.unload(page_closed)
        connect(demo.load, on_page_opened, studio, ui, [*GENERATE_OUTPUTS, "status"],
                api_name=False)
    demo.queue_kinds = ui["kinds"]  # event index -> kind, for `launch`'s fair queue
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
    try:
        if os.environ.get(SIGN_IN_ENV) == "1" and not os.environ.get("OAUTH_CLIENT_ID"):
            raise UserError(f"{SIGN_IN_ENV}=1 needs a Hugging Face Space with `hf_oauth: true` "
                            "in its README's front matter (OAUTH_CLIENT_ID is not set)")
        studio = Studio(args.checkpoints, output_dir=ROOT / "tmp" / "outputs",
                        maestro_dir=os.environ.get("MUSICGEN_MAESTRO_DIR"),
                        require_account=os.environ.get(SIGN_IN_ENV) == "1")
        launch(build_app(studio), studio, server_name=args.host, server_port=args.port,
               share=args.share)
    except UserError as error:  # a setting of whoever starts the app: said, not traced
        raise SystemExit(f"musicgen app: {error}") from None


# "1": listening-test votes only from people signed in with Hugging Face (on a Space, with
# `hf_oauth: true` in the README's front matter).
SIGN_IN_ENV = "MUSICGEN_LISTEN_SIGN_IN"
# Jobs that may wait at once, per kind, and per browser session (`musicgen.web.FairQueue`):
# no kind can fill the queue of the others. A Generate job is one person's click (the
# button is locked while it runs), so a session waits for one at a time.
QUEUE_LIMITS = {"generate": 48, "compare": 16, "versus": 16, "results": 16, "listen": 64,
                "keyboard": 64, "other": 128}
# The keyboard sends one message at a time and waits for its answer (`page/keyboard.js`).
QUEUE_PER_SESSION = {"generate": 1, "compare": 1, "versus": 1, "results": 1, "listen": 4,
                     "keyboard": 2}
# A script chooses its own session ids but not its address; a classroom shares one.
QUEUE_PER_ADDRESS = {kind: limit // 2 for kind, limit in QUEUE_LIMITS.items()}


def launch(demo: gr.Blocks, studio: Studio, **kwargs) -> None:
    """Queue and serve the app as `main` does (the tests and benchmarks call this too).

    Raises:
        UserError: The ratings database lies in a folder Gradio would serve.
    """
    # Gradio serves its temp folder to anyone; on a Space it may be pointed at /data.
    gradio_cache = Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))
    studio.refuse_to_serve_the_database([gradio_cache])
    studio.start_pruning([gradio_cache])
    studio.start_sample_bank()
    kinds = demo.queue_kinds  # event index -> kind
    kinds |= {fn.api_name: kinds.get(index, "other") for index, fn in demo.fns.items()
              if fn.api_name}  # the API's /call/<name> routes name the event

    def waiting(kind: str) -> list:
        # Gradio's own waiting lines: no public API tells their length per event.
        return [event for line in list(demo._queue.event_queue_per_concurrency_id.values())
                for event in list(line.queue) if kinds.get(event.fn._id, "other") == kind]

    # api_open=False: off Spaces, Gradio leaves /gradio_api/run/... open, skipping the queue
    # and every concurrency limit; clients (gradio_client too) go through the queue.
    demo.queue(default_concurrency_limit=1, max_size=sum(QUEUE_LIMITS.values()),
               api_open=False)
    # No max_file_size: Gradio's check would answer in its words; `UploadLimit` does in ours.
    demo.launch(theme=gr.themes.Soft(), css=CSS + KEYBOARD_CSS, show_error=True,
                allowed_paths=[str(path) for path in studio.served_dirs()],
                app_kwargs=server_additions(studio.listening, {
                    "waiting": waiting, "kind_of": lambda index: kinds.get(index, "other"),
                    "limits": QUEUE_LIMITS, "per_session": QUEUE_PER_SESSION,
                    "per_address": QUEUE_PER_ADDRESS},
                    sample_bank_routes(studio.sample_bank, studio.sample_bank_tried),
                    MAX_UPLOAD_BYTES), **kwargs)


if __name__ == "__main__":
    main()
