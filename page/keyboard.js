// The page's piano (Gradio runs this as the keyboard's js_on_load: `element`, `props`,
// `trigger` and `watch` are given). Keys are played by mouse, touch, the computer keyboard
// and any Web MIDI input, and sound at once from piano samples FluidSynth rendered on the
// server (`musicgen/sample_bank.py`). What is played is kept on one clock, from the first
// note after Clear: as the seed MIDI ("Record a seed"), or as a duet, where each pause
// sends the phrase and the model's answer is played back. Python hears a message through
// `props.value` and trigger('submit') and answers through the same value (app.py,
// `on_keyboard`); one message is in flight at a time.
//
// State lives on `window`, not in this mount: Gradio unmounts a hidden component, and
// hiding the keyboard (another kind of seed) must not lose what was played.

const COMPUTER_KEYS = 'awsedftgyhujkolp;';  // C C# D D# E F F# G G# A A# B C C# D D# E
const BLACK = new Set([1, 3, 6, 8, 10]);
const ROLL_SECONDS = 12;
const SEED_SEND_MS = 300;  // a seed is sent this long after the last key went up
const SLOW_REPLY_MS = 20000;  // then the page says it is still waiting,
const REPLY_TIMEOUT_MS = 120000;  // and after this gives up (the next message finds out)
const COMPUTER_CODES = ['KeyA', 'KeyW', 'KeyS', 'KeyE', 'KeyD', 'KeyF', 'KeyT', 'KeyG', 'KeyY',
  'KeyH', 'KeyU', 'KeyJ', 'KeyK', 'KeyO', 'KeyL', 'KeyP', 'Semicolon'];  // where the keys are
const NAMES = ['C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B'];

const kb = window.mgKeyboard ??= {
  // [pitch, velocity, start, end, who ('you' | 'model'), in the duet: false (not yet sent),
  // 'pending' (on its way) or true (the server has it)]
  notes: [],
  held: new Map(),    // pitch -> {velocity, start, voice, source}
  keys: new Map(),    // a computer key's code -> the pitch it holds down
  t0: null,           // performance.now() of the clock's zero
  mode: 'seed', low: 48, octaves: 2, pauseS: 1, answerS: 4,
  pauseTimer: null, seedTimer: null, pauseEnded: null,
  turns: 0,           // the duet's turns the server has told of
  lastAnswer: null,   // [its turn, where on the clock it began to sound]: told to the server
  answer: null,       // the answer playing: {voices, lights, midi, turn, began, ends}
  playback: null,     // the recording playing back: {voices, timer}
  epoch: 0,           // Clear begins a new one: answers to messages from before are dropped
  queue: [], inFlight: null, inFlightTimer: null, nextId: 1,
  midiOut: null, sendOut: false, midiNote: '',
  pressTimings: [],   // ms from an input event to its sound starting: this code's own work
  duetTimings: [],    // ms from the end of a pause to the answer's first sound
  messages: [],       // what the server answered, newest last (for tests)
};
kb.io = {props, trigger};  // this mount's: the messages go through it
kb.root = element;

const piano = window.mgPiano ??= makePiano();
if (piano.state === 'idle') {
  piano.state = 'loading';
  // After the page has appeared: the samples are 0.7 MB.
  setTimeout(() => piano.load().then(say), 300);
}

function makePiano() {
  const p = {state: 'idle', ctx: null, master: null, buffer: null, bank: null, delay: 0};
  p.context = () => {
    if (!p.ctx) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) return null;
      p.ctx = new Context({latencyHint: 'interactive'});
      p.master = p.ctx.createGain();
      p.master.gain.value = 0.8;
      p.master.connect(p.ctx.destination);
    }
    if (p.ctx.state === 'suspended') p.ctx.resume();  // browsers start it on a gesture
    return p.ctx;
  };
  p.load = async () => {
    try {
      for (let attempt = 0; attempt < 40; attempt++) {
        const manifest = await fetch('piano/bank.json');
        if (manifest.status === 503) {  // still being made as the server starts
          await new Promise((resolve) => setTimeout(resolve, 1500));
          continue;
        }
        if (!manifest.ok) break;
        p.bank = await manifest.json();
        const audio = await (await fetch('piano/bank.mp3')).arrayBuffer();
        const ctx = p.context();
        if (!ctx) break;
        p.buffer = await ctx.decodeAudioData(audio);
        // The MP3 decoder adds a fixed delay before the first sample; the first slot
        // has silence before its note, so its first sound measures it for every slot.
        const data = p.buffer.getChannelData(0);
        let i = 0;
        while (i < data.length && Math.abs(data[i]) < 1e-3) i++;
        p.delay = Math.min(i / p.buffer.sampleRate, 0.2);
        p.state = 'ready';
        return;
      }
    } catch (error) {
      console.warn('musicgen: the piano samples did not load', error);
    }
    p.state = 'none';
  };
  // A note from the nearest sample key (at most a semitone away, pitch-shifted) and
  // velocity layer (its level scaled between the layers).
  p.start = (pitch, velocity, when) => {
    if (p.state !== 'ready') return null;
    const ctx = p.context(), bank = p.bank;
    let k = 0;
    bank.pitches.forEach((q, j) => {
      if (Math.abs(q - pitch) < Math.abs(bank.pitches[k] - pitch)) k = j;
    });
    const layers = bank.velocities;
    const layer = velocity < (layers[0] + layers[1]) / 2 ? 0 : 1;
    const source = ctx.createBufferSource();
    source.buffer = p.buffer;
    source.playbackRate.value = 2 ** ((pitch - bank.pitches[k]) / 12);
    const gain = ctx.createGain();
    gain.gain.value = Math.min(1.6, (velocity / layers[layer]) ** 1.3);
    source.connect(gain).connect(p.master);
    const slot = k * layers.length + layer;
    source.start(when ?? ctx.currentTime, slot * bank.slot_seconds + p.delay,
                 bank.slot_seconds - 0.05);
    return {source, gain};
  };
  p.stop = (voice, when) => {
    if (!voice) return;
    const at = Math.max(when ?? 0, p.ctx.currentTime);
    voice.gain.gain.setTargetAtTime(0, at, 0.06);  // a damper: silent in about 0.3 s
    voice.source.stop(at + 0.4);
  };
  p.silence = (voices) => {
    const now = p.ctx ? p.ctx.currentTime : 0;
    for (const voice of voices) {
      if (!voice) continue;
      voice.gain.gain.cancelScheduledValues(now);
      voice.gain.gain.setTargetAtTime(0, now, 0.03);
      voice.source.stop(now + 0.2);
    }
  };
  return p;
}

// --- the clock, the notes, and what Python hears ---

const clock = (now = performance.now()) => (kb.t0 === null ? 0 : (now - kb.t0) / 1000);
const round3 = (x) => Math.round(x * 1000) / 1000;
const rows = (notes) => notes.map((n) => n.slice(0, 4)).sort((a, b) => a[2] - b[2] || a[0] - b[0]);
const $ = (selector) => kb.root.querySelector(selector);

function say(text) {
  const status = $('.mg-kb-status');
  if (!status) return;
  const sound = {loading: 'Loading the piano sound…', none: 'No piano sound on this server: '
    + 'what you play is still recorded.', ready: '', idle: ''}[piano.state];
  status.textContent = [typeof text === 'string' ? text : '', sound, kb.midiNote]
    .filter(Boolean).join(' ');
}

function press(pitch, velocity, source, eventTime) {
  if (pitch < 0 || pitch > 127) return;
  if (kb.held.has(pitch)) release(pitch);
  const now = performance.now();
  if (kb.t0 === null) kb.t0 = now;
  clearTimeout(kb.pauseTimer);
  clearTimeout(kb.seedTimer);
  const voice = piano.start(pitch, velocity);
  if (voice && eventTime !== undefined) kb.pressTimings.push(performance.now() - eventTime);
  kb.held.set(pitch, {velocity, start: clock(now), voice, source});
  keyOf(pitch)?.classList.add('mg-down');
  draw();
}

function release(pitch, source) {
  const held = kb.held.get(pitch);
  if (!held || (source && held.source !== source)) return;
  kb.held.delete(pitch);
  piano.stop(held.voice);
  const end = Math.max(clock(), held.start + 0.02);
  kb.notes.push([pitch, held.velocity, round3(held.start), round3(end), 'you', false]);
  keyOf(pitch)?.classList.remove('mg-down');
  if (kb.held.size) return;
  if (kb.mode === 'seed') {
    kb.seedTimer = setTimeout(sendSeed, SEED_SEND_MS);
  } else {
    kb.pauseTimer = setTimeout(askForAnswer, kb.pauseS * 1000);
  }
  draw();
}

function sendSeed() {
  // The model's notes still to sound are not played yet: not part of the seed.
  send(() => {
    const now = clock();
    const notes = kb.notes.filter((n) => n[2] <= now);
    return notes.length ? {action: 'seed', notes: rows(notes)} : null;
  }, 'seed');
}

function askForAnswer() {
  if (kb.held.size || !kb.notes.some((n) => n[4] === 'you' && n[5] === false)) return;
  kb.pauseEnded = performance.now();
  say('The model is answering…');
  send(() => {
    // Built when it goes, not when asked for: notes played meanwhile go with it, and
    // notes on their way in a message before it do not go twice.
    const phrase = kb.notes.filter((n) => n[4] === 'you' && n[5] === false);
    if (!phrase.length) return null;
    phrase.forEach((n) => { n[5] = 'pending'; });
    return {action: 'duet', phrase: rows(phrase), seconds: kb.answerS, turns: kb.turns,
            answered: kb.lastAnswer, phrase_notes: phrase};
  }, 'duet');
}

// One message at a time, each built as it goes; a newer seed replaces one still waiting.
function send(build, kind) {
  if (kind === 'seed') kb.queue = kb.queue.filter((m) => m.kind !== 'seed');
  kb.queue.push({build, kind, epoch: kb.epoch});
  // Later, not now: called while Gradio applies a reply (in `watch`), a new value and
  // trigger were lost in that update.
  setTimeout(dispatch, 0);
}

kb.send = (message) => send(() => message, message.action);  // for tests: as the page sends

function dispatch() {
  while (kb.queue.length && !kb.inFlight) {
    const next = kb.queue.shift();
    const message = next.build();
    if (!message) continue;
    const {phrase_notes: phrase, ...sent} = message;
    sent.id = kb.nextId++;
    kb.inFlight = {...next, message: sent, phrase: phrase || []};
    const id = sent.id;
    kb.inFlightTimer = setTimeout(() => {
      say('The server is slow to answer; still waiting…');
      kb.inFlightTimer = setTimeout(() => received({reply: true, id,
        error: 'The server did not answer; play on'}), REPLY_TIMEOUT_MS - SLOW_REPLY_MS);
    }, SLOW_REPLY_MS);
    kb.io.props.value = JSON.stringify(sent);
    kb.io.trigger('submit');
  }
}

function received(reply) {
  // A reply without an id answers a message the server could not read: ours in flight.
  if (!kb.inFlight || (reply.id !== null && reply.id !== kb.inFlight.message.id)) return;
  clearTimeout(kb.inFlightTimer);
  const {message, phrase, epoch} = kb.inFlight;
  kb.inFlight = null;
  kb.messages.push(reply);
  if (epoch !== kb.epoch) {
    // Sent before Clear: what it answers is gone.
  } else if (reply.error) {
    phrase.forEach((n) => { n[5] = false; });  // not taken: they go with the next phrase
    say('⚠️ ' + reply.error);
  } else if (message.action === 'duet') {
    phrase.forEach((n) => { n[5] = true; });
    kb.turns = reply.turns;
    playAnswer(reply.answer, reply.turn);
  } else if (message.action === 'seed') {
    say(`${message.notes.length} notes recorded: Generate continues them.`);
  }
  setTimeout(dispatch, 0);
}

watch('value', () => {
  let reply;
  try { reply = JSON.parse(props.value); } catch (error) { return; }
  if (reply && reply.reply) received(reply);
});

// --- the duet ---

function playAnswer(answer, turn) {
  if (kb.answer) stopAnswer(true);  // the player played over it, and a new answer comes
  const ctx = piano.context();
  const lead = 0.01;  // seconds ahead, so the first note is not scheduled in the past
  const startsAt = performance.now() + lead * 1000;
  const began = round3(clock(startsAt));
  const voices = [], lights = [], midi = [];
  for (const [pitch, velocity, start, end] of answer) {
    if (ctx) {
      const voice = piano.start(pitch, velocity, ctx.currentTime + lead + start);
      piano.stop(voice, ctx.currentTime + lead + end);
      voices.push(voice);
    }
    kb.notes.push([pitch, velocity, round3(began + start), round3(began + end), 'model', true]);
    // The model's keys go down on screen as they sound.
    lights.push(setTimeout(() => keyOf(pitch)?.classList.add('mg-model'), start * 1000),
                setTimeout(() => keyOf(pitch)?.classList.remove('mg-model'), end * 1000));
    // To a MIDI output note by note as they come (not scheduled ahead: Stop must be
    // able to take back what has not sounded, and outputs cannot all do that).
    if (kb.sendOut && kb.midiOut) {
      midi.push(setTimeout(() => kb.midiOut?.send([0x90, pitch, velocity]), start * 1000),
                setTimeout(() => kb.midiOut?.send([0x80, pitch, 0]), end * 1000));
    }
  }
  const last = answer.length ? Math.max(...answer.map((n) => n[3])) : 0;
  kb.lastAnswer = [turn, began];
  if (answer.length) {
    const latency = ctx ? (ctx.outputLatency || ctx.baseLatency || 0) * 1000 : 0;
    kb.duetTimings.push(startsAt + answer[0][2] * 1000 + latency - kb.pauseEnded);
  }
  kb.answer = {voices, lights, midi, turn, began, ends: startsAt + last * 1000};
  $('.mg-stop-model').disabled = false;
  say(answer.length ? 'The model answers. Your turn when it ends.'
    : 'The model had nothing to add; play on.');
  setTimeout(() => {
    if (kb.answer?.began === began) stopAnswer(false);
  }, last * 1000 + 50);
  animate();
}

function silenceAnswer(answer) {
  piano.silence(answer.voices);
  answer.lights.forEach(clearTimeout);
  answer.midi.forEach(clearTimeout);
  kb.root.querySelectorAll('.mg-model').forEach((key) => key.classList.remove('mg-model'));
  if (kb.midiOut && answer.midi.length) kb.midiOut.send([0xB0, 123, 0]);  // all notes off
}

// Ends the answer: at its end (cut=false), or cut short by the player, which the
// server hears, so the duet's MIDI holds only what sounded.
function stopAnswer(cut) {
  const answer = kb.answer;
  if (!answer) return;
  kb.answer = null;
  $('.mg-stop-model').disabled = true;
  if (!cut) {
    say('Your turn.');
    return;
  }
  silenceAnswer(answer);
  const cutAt = round3(Math.max(answer.began, clock()));
  kb.notes = kb.notes.filter((n) => n[4] !== 'model' || n[2] < cutAt)
    .map((n) => (n[4] === 'model' && n[3] > cutAt ? [n[0], n[1], n[2], cutAt, n[4], n[5]] : n));
  send(() => ({action: 'stop', turns: kb.turns, answered: [answer.turn, answer.began],
               seconds: round3(cutAt - answer.began)}), 'stop');
  say('Stopped. Your turn.');
  draw();
}

// --- playing back, clearing ---

function playBack() {
  const button = $('.mg-playback');
  if (kb.playback) {
    piano.silence(kb.playback.voices);
    clearTimeout(kb.playback.timer);
    kb.playback = null;
    button.textContent = '▶ Play back';
    return;
  }
  const ctx = piano.context();
  if (!kb.notes.length || !ctx) return;
  const first = Math.min(...kb.notes.map((n) => n[2]));
  const last = Math.max(...kb.notes.map((n) => n[3]));
  const at = ctx.currentTime + 0.05;
  const voices = kb.notes.map(([pitch, velocity, start, end]) => {
    const voice = piano.start(pitch, velocity, at + start - first);
    piano.stop(voice, at + end - first);
    return voice;
  });
  const timer = setTimeout(() => {
    kb.playback = null;
    button.textContent = '▶ Play back';
  }, (last - first) * 1000 + 400);
  kb.playback = {voices, timer};
  button.textContent = '■ Stop';
}

function clearAll() {
  kb.epoch++;  // a reply on its way now answers for what is cleared: it is dropped
  if (kb.answer) silenceAnswer(kb.answer);
  kb.answer = null;
  $('.mg-stop-model').disabled = true;
  if (kb.playback) playBack();
  for (const pitch of [...kb.held.keys()]) release(pitch);
  clearTimeout(kb.pauseTimer);
  clearTimeout(kb.seedTimer);
  kb.notes = [];
  kb.t0 = null;
  kb.turns = 0;
  kb.lastAnswer = null;
  kb.queue = [];
  send(() => ({action: 'clear'}), 'clear');
  say('Cleared.');
  draw();
}

// Keys held when the page loses the keyboard (another window, a hidden tab) would never
// come up: they are let go.
function releaseAll() {
  for (const pitch of [...kb.held.keys()]) release(pitch);
  kb.keys.clear();
}

// --- the keys on screen ---

function keyOf(pitch) {
  return kb.root.querySelector(`.mg-keys [data-pitch="${pitch}"]`);
}

function build() {
  const box = $('.mg-keys');
  const width = box.clientWidth || 360;
  // Two octaves on a phone, up to four on a wide screen: white keys at least 25 px.
  kb.octaves = Math.max(2, Math.min(4, Math.floor(width / 230)));
  kb.low = Math.max(12, Math.min(kb.low, 108 - 12 * kb.octaves));
  const whites = [];
  box.replaceChildren();
  for (let pitch = kb.low; pitch <= kb.low + 12 * kb.octaves; pitch++) {
    if (!BLACK.has(pitch % 12)) whites.push(pitch);
  }
  const share = 100 / whites.length;
  const letter = (pitch) => {
    const i = pitch - kb.low;
    return i >= 0 && i < COMPUTER_KEYS.length ? COMPUTER_KEYS[i].toUpperCase() : '';
  };
  whites.forEach((pitch) => {
    const key = document.createElement('div');
    key.className = 'mg-white';
    key.dataset.pitch = pitch;
    const name = pitch % 12 === 0 ? `C${pitch / 12 - 1}` : '';
    key.innerHTML = `<span>${letter(pitch)}</span><span>${name}</span>`;
    key.setAttribute('aria-label', `${NAMES[pitch % 12]}${Math.floor(pitch / 12) - 1}`);
    box.append(key);
  });
  for (let pitch = kb.low; pitch < kb.low + 12 * kb.octaves; pitch++) {
    if (!BLACK.has(pitch % 12)) continue;
    const key = document.createElement('div');
    key.className = 'mg-black';
    key.dataset.pitch = pitch;
    key.textContent = letter(pitch);
    key.setAttribute('aria-label', `${NAMES[pitch % 12]}${Math.floor(pitch / 12) - 1}`);
    const left = whites.indexOf(pitch + 1) * share;
    key.style.left = `calc(${left}% - ${share * 0.3}%)`;
    key.style.width = `${share * 0.6}%`;
    box.append(key);
  }
  const top = kb.low + 12 * kb.octaves;
  $('.mg-range').textContent = `C${kb.low / 12 - 1}–C${top / 12 - 1}`;
  for (const pitch of kb.held.keys()) keyOf(pitch)?.classList.add('mg-down');
}

function shift(octaves) {
  kb.low = Math.max(12, Math.min(108 - 12 * kb.octaves, kb.low + 12 * octaves));
  build();
}

function setMode(mode) {
  if (mode !== kb.mode) {
    clearTimeout(kb.pauseTimer);
    clearTimeout(kb.seedTimer);
    if (kb.answer) stopAnswer(true);
  }
  kb.mode = mode;
  for (const button of kb.root.querySelectorAll('.mg-mode')) {
    button.setAttribute('aria-pressed', String(button.dataset.mode === mode));
  }
  $('.mg-duet-settings').hidden = mode !== 'duet';
  $('.mg-playback').hidden = mode === 'duet';
  $('.mg-stop-model').hidden = mode !== 'duet';
  say(mode === 'duet' ? 'Play a phrase, then pause: the model answers.'
    : 'Play: what you play becomes the seed MIDI.');
}

// --- the live roll ---

function draw() {
  const canvas = $('.mg-live-roll');
  if (!canvas) return;
  const width = canvas.clientWidth || 300;
  if (canvas.width !== width) canvas.width = width;
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  const now = clock();
  const notes = [...kb.notes, ...[...kb.held].map(([pitch, h]) => [pitch, h.velocity, h.start,
    now, 'you'])];
  canvas.setAttribute('aria-label', notes.length ? `${notes.length} notes played`
    : 'Nothing played yet');
  if (!notes.length) return;
  const end = Math.max(now, ...notes.map((n) => n[3]));
  const span = Math.min(ROLL_SECONDS, Math.max(4, end));  // a short phrase fills the width
  const from = Math.max(0, end - span);
  const low = Math.min(...notes.map((n) => n[0])) - 3;
  const high = Math.max(...notes.map((n) => n[0])) + 3;
  const y = (pitch) => canvas.height - ((pitch - low) / (high - low)) * canvas.height;
  const x = (t) => ((t - from) / span) * canvas.width;
  const h = Math.max(3, canvas.height / (high - low));
  for (const [pitch, , start, stop, who] of notes) {
    if (stop < from) continue;
    g.fillStyle = who === 'model' ? (start > now ? '#f3c08a' : '#e08a2e') : '#3a6fd8';
    g.fillRect(x(start), y(pitch) - h / 2, Math.max(2, x(stop) - x(start)), h);
  }
  g.fillStyle = '#888';
  g.fillRect(x(now), 0, 1, canvas.height);
}

function animate() {
  draw();
  if (kb.held.size || kb.answer) requestAnimationFrame(animate);
}

// --- inputs ---

function wireScreen() {
  const box = $('.mg-keys');
  const pointers = new Map();  // pointerId -> the pitch it holds down (null: between keys)
  const keyAt = (x, y) => document.elementFromPoint(x, y)?.closest?.('.mg-keys [data-pitch]');
  // Louder towards the front of the key, as a harder stroke lands there.
  const velocityAt = (key, y) => {
    const box = key.getBoundingClientRect();
    return Math.round(45 + 70 * Math.min(1, Math.max(0, (y - box.top) / box.height)));
  };
  box.addEventListener('pointerdown', (e) => {
    const key = keyAt(e.clientX, e.clientY);
    if (!key) return;
    e.preventDefault();
    box.focus({preventScroll: true});  // and the computer keys play from here on
    box.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, +key.dataset.pitch);
    press(+key.dataset.pitch, velocityAt(key, e.clientY), `pointer${e.pointerId}`, e.timeStamp);
    animate();
  });
  box.addEventListener('pointermove', (e) => {  // sliding along the keys plays each
    if (!pointers.has(e.pointerId)) return;
    const key = keyAt(e.clientX, e.clientY);
    const pitch = key ? +key.dataset.pitch : null;
    if (pitch === pointers.get(e.pointerId)) return;
    if (pointers.get(e.pointerId) !== null) release(pointers.get(e.pointerId), `pointer${e.pointerId}`);
    pointers.set(e.pointerId, pitch);
    if (pitch !== null) press(pitch, velocityAt(key, e.clientY), `pointer${e.pointerId}`, e.timeStamp);
  });
  const lift = (e) => {
    if (!pointers.has(e.pointerId)) return;
    if (pointers.get(e.pointerId) !== null) release(pointers.get(e.pointerId), `pointer${e.pointerId}`);
    pointers.delete(e.pointerId);
  };
  box.addEventListener('pointerup', lift);
  box.addEventListener('pointercancel', lift);
  for (const button of kb.root.querySelectorAll('.mg-mode')) {
    button.addEventListener('click', () => setMode(button.dataset.mode));
  }
  $('.mg-playback').addEventListener('click', playBack);
  $('.mg-stop-model').addEventListener('click', () => stopAnswer(true));
  $('.mg-clear').addEventListener('click', clearAll);
  $('.mg-lower').addEventListener('click', () => shift(-1));
  $('.mg-higher').addEventListener('click', () => shift(1));
  const slider = (name, key, unit) => {
    const input = $(`.mg-${name}`);
    input.value = kb[key];
    const show = () => { $(`.mg-${name}-shown`).textContent = `${input.value} ${unit}`; };
    input.addEventListener('input', () => { kb[key] = +input.value; show(); });
    show();
  };
  slider('pause', 'pauseS', 's');
  slider('answer', 'answerS', 's');
  $('.mg-send-out').addEventListener('change', (e) => { kb.sendOut = e.target.checked; });
  new ResizeObserver(() => { build(); draw(); }).observe(box);
}

// The computer keyboard and Web MIDI are the page's, not this mount's: wired once.
function wirePage() {
  if (window.mgKeyboardWired) return;
  window.mgKeyboardWired = true;
  // Letters typed into a text field are not notes; a focused radio or slider is no field.
  const typing = (e) => {
    const target = e.target;
    if (target.isContentEditable || ['TEXTAREA', 'SELECT'].includes(target.tagName)) return true;
    return target.tagName === 'INPUT'
      && !['radio', 'checkbox', 'range', 'button', 'submit', 'file'].includes(target.type);
  };
  const shown = () => kb.root.isConnected && kb.root.offsetParent !== null;
  // By where the key is (e.code), not what it types: Shift and keyboard layouts change e.key.
  document.addEventListener('keydown', (e) => {
    if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || typing(e) || !shown()) return;
    if (e.code === 'KeyZ' || e.code === 'KeyX') {
      shift(e.code === 'KeyZ' ? -1 : 1);
      return;
    }
    const i = COMPUTER_CODES.indexOf(e.code);
    if (i < 0) return;
    e.preventDefault();
    kb.keys.set(e.code, kb.low + i);  // the pitch it sounds, whatever the octave becomes
    press(kb.low + i, 80, e.code, e.timeStamp);
    animate();
  });
  document.addEventListener('keyup', (e) => {
    if (!kb.keys.has(e.code)) return;
    release(kb.keys.get(e.code), e.code);
    kb.keys.delete(e.code);
  });
  window.addEventListener('blur', releaseAll);
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) releaseAll();
  });
  if (!navigator.requestMIDIAccess) {
    kb.midiNote = 'This browser has no Web MIDI: play on the screen or the computer keys.';
    return;
  }
  navigator.requestMIDIAccess().then((access) => {
    const listen = () => {
      const inputs = [...access.inputs.values()];
      const outputs = [...access.outputs.values()];
      for (const input of inputs) {
        input.onmidimessage = (e) => {
          const [status, pitch, velocity] = e.data;
          const kind = status & 0xF0;
          if (kind === 0x90 && velocity > 0) {
            if (!shown()) return;  // a key let go while hidden must still come up
            press(pitch, velocity, 'midi', e.timeStamp);
            animate();
          } else if (kind === 0x80 || (kind === 0x90 && velocity === 0)) {
            release(pitch, 'midi');
          }
        };
      }
      // Not a "Midi Through" port: what goes out there comes back in as the player's.
      kb.midiOut = outputs.find((port) => !/through/i.test(port.name)) || null;
      showOutput();
      kb.midiNote = inputs.length ? `MIDI keyboard: ${inputs.map((i) => i.name).join(', ')}.`
        : 'No MIDI keyboard found (connect one and it is used at once).';
      say();
    };
    access.onstatechange = listen;
    listen();
  }, () => {
    kb.midiNote = 'Web MIDI was not allowed: play on the screen or the computer keys.';
    say();
  });
}

// What this mount shows of the state it finds (the keyboard was hidden and shown again).
function showOutput() {
  $('.mg-out').hidden = !kb.midiOut;
  if (kb.midiOut) $('.mg-out-name').textContent = kb.midiOut.name;
  $('.mg-send-out').checked = kb.sendOut;
}

wireScreen();
wirePage();
build();
setMode(kb.mode);
showOutput();
$('.mg-stop-model').disabled = !kb.answer;
if (kb.playback) $('.mg-playback').textContent = '■ Stop';
draw();
