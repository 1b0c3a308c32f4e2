"""Does the model release its held keys as pianists do? The release hazard by a note's age.

Three sets of music are scored teacher-forced by the model: real playing
(2,000 tokens of each of --real test pieces, after 700 tokens of context),
and the model's own 30 s continuations of the `evaluate-samples` prompts
(MAESTRO test split, 10 s prompts) at the app's settings, with paired
notes off and on, and without releasing held keys (so the releases are the
model's own). After every token of a continuation, each sounding key is put
in a bucket by how long it has sounded; the *predicted* hazard of a bucket
is the mean probability the model gives to that key's NOTE_OFF as the next
token, the *seen* hazard how often the next token is that NOTE_OFF.
On real playing the two should agree; on the model's own music the predicted
hazard shows whether the model still knows a key is down (exposure bias: it
was trained only on real pasts).

Also printed: the mean number of sounding keys, and the probability mass the
model puts on a NOTE_OFF of a silent key and a NOTE_ON of a sounding one.
Not a timing benchmark: it may run beside other work.

    .venv/bin/python bench/release_hazard.py --checkpoint checkpoints/lstm --n 24
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from musicgen.checkpoint import load_checkpoint  # noqa: E402 - after the sys.path fix above
from musicgen.data import open_split  # noqa: E402
from musicgen.events import VOCAB, held_ages  # noqa: E402
from musicgen.sample import generate  # noqa: E402
from musicgen.sample_report import MIN_N, prompt_excerpts  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

# Bucket edges of a key's age, in 10 ms steps: 0, 0.5, 1, 2, 3 and 4+ s.
AGE_EDGES = np.array([0, 50, 100, 200, 300, 400, 10**9])


def score(model: torch.nn.Module, prompt: np.ndarray, continuation: np.ndarray) -> dict:
    """Sums over the continuation's tokens of predicted and seen releases per age bucket,
    and the continuation's means of the other measures."""
    tokens = np.concatenate([prompt, continuation]).astype(np.int64)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(tokens[None]))
    # Row t predicts token t + 1; keep the rows that predict the continuation.
    first = len(prompt) - 1
    probs = torch.softmax(logits[0, first:-1].float(), -1).numpy()
    ages = held_ages(tokens)[first:-1]
    following = tokens[first + 1:]
    off, on = VOCAB["note_off"], VOCAB["note_on"]
    sounding = ages >= 0
    p_release = probs[:, off.offset:off.stop]
    released = np.zeros_like(sounding)
    is_off = (following >= off.offset) & (following < off.stop)
    released[np.nonzero(is_off)[0], following[is_off] - off.offset] = True
    bucket = np.digitize(ages, AGE_EDGES) - 1
    buckets = range(len(AGE_EDGES) - 1)
    return {
        "predicted": np.array([p_release[sounding & (bucket == b)].sum() for b in buckets]),
        "seen": np.array([released[sounding & (bucket == b)].sum() for b in buckets]),
        "count": np.array([(sounding & (bucket == b)).sum() for b in buckets]),
        "off_of_silent": float((p_release * ~sounding).sum(1).mean()),
        "on_of_sounding": float((probs[:, on.offset:on.stop] * sounding).sum(1).mean()),
        "sounding": float(sounding.sum(1).mean()),
    }


def summary(scores: list[dict]) -> dict:
    """Pooled hazards per bucket, and the per-clip means of the other measures."""
    count = sum(s["count"] for s in scores)
    return {"predicted": (sum(s["predicted"] for s in scores) / count).round(4).tolist(),
            "seen": (sum(s["seen"] for s in scores) / count).round(4).tolist(),
            "count": count.tolist(),
            **{key: round(float(np.mean([s[key] for s in scores])), 4)
               for key in ("off_of_silent", "on_of_sounding", "sounding")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/lstm"))
    parser.add_argument("--data", default="cache/maestro")
    parser.add_argument("--n", type=int, default=MIN_N, help="prompts")
    parser.add_argument("--seed", type=int, default=1000, help="prompt i samples with seed + i")
    parser.add_argument("--real", type=int, default=16, help="test pieces of the real set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.checkpoint)
    defaults = Settings()
    sets: dict[str, list[dict]] = {"real": [], "unpaired": [], "paired": []}
    pieces, _ = open_split(args.data, "test")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(pieces), args.real, replace=False):
        start = rng.integers(0, max(1, len(pieces[i]) - 3000))
        window = np.asarray(pieces[i][start:start + 2700])
        sets["real"].append(score(model, window[:700], window[700:]))
    for i, excerpt in enumerate(prompt_excerpts(args.data, n=args.n)):
        prompt = np.asarray(excerpt.prompt.tokens)
        for name, paired in (("unpaired", False), ("paired", True)):
            run = generate(model, prompt, seconds=defaults.seconds,
                           temperature=defaults.temperature, top_k=defaults.top_k,
                           top_p=defaults.top_p, min_p=defaults.min_p, seed=args.seed + i,
                           max_silence=defaults.max_silence, paired_notes=paired,
                           keep_timing=defaults.keep_timing,
                           paired_keeps_types=defaults.paired_keeps_types)
            sets[name].append(score(model, prompt, np.asarray(run.tokens[0])))
    print(f"{args.checkpoint}, {args.n} prompts; age buckets (s): "
          f"{(AGE_EDGES[:-1] / 100).tolist()}")
    for name, scores in sets.items():
        print(name, json.dumps(summary(scores)))


if __name__ == "__main__":
    main()
