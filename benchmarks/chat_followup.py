"""A follow-up question in Chat: time to the first answer token, against the first question about the video.

    python benchmarks/chat_followup.py [--seconds 120] [--size 1280x720] [--cache DIR]

On the tiny model, a 2-minute 720p video (generated once into --cache): the first question decodes
the video, runs the vision encoder and the whole prefill; a follow-up should run none of them
again (the decoded clip, the vision-encoder outputs and the key/value cache are kept). Also
measured in the same run, as the reference: the same follow-up asked in a new Chat that has to
start over. Prints the times, their ratios, how often the decoder and the vision encoder ran, and
the process's peak memory.
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "vidlab-benchmarks"


def first_token(chat, question: str, **media) -> tuple[float, object]:
    """Seconds until the first piece of the answer arrives, and the reply."""
    started = time.perf_counter()
    first = None
    for _ in chat.stream(question, **media):
        if first is None:
            first = time.perf_counter() - started
    return first if first is not None else time.perf_counter() - started, chat.last_reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    import numpy as np

    import vidlab.media as media
    from vidlab.chat import Chat
    from vidlab.media.writer import write_video
    from vidlab.models import load_model
    from vidlab.models.tiny import build_tiny_model
    from vidlab.settings import GenerationOptions
    from vidlab.vision_cache import _base

    width, height = map(int, args.size.split("x"))
    video = args.cache / f"chat-{args.seconds}s-{width}x{height}.mp4"
    if not video.exists():
        rows, columns = np.mgrid[0:height, 0 : 2 * width]
        wide = np.stack([columns % 256, rows % 256, (columns + rows) // 3 % 256], -1).astype(np.uint8)
        frames = (np.ascontiguousarray(wide[:, (3 * i) % width : (3 * i) % width + width])
                  for i in range(args.seconds * 30))
        print(f"writing {video}; once", file=sys.stderr, flush=True)
        video.parent.mkdir(parents=True, exist_ok=True)
        write_video(video, frames, fps=30, encoder_options={"preset": "ultrafast", "g": "250"})

    with tempfile.TemporaryDirectory() as tmp:
        model, processor = load_model(build_tiny_model(Path(tmp) / "tiny"), device="cpu")
    calls = {"decoder": 0, "encoder": 0}

    def counted(name, function):
        @functools.wraps(function)
        def wrapper(*a, **k):
            calls[name] += 1
            return function(*a, **k)
        return wrapper

    media.load_video = counted("decoder", media.load_video)
    base = _base(model)
    # The inner model's: every road to the vision encoder goes through it (the outer one calls it).
    base.model.get_video_features = counted("encoder", base.model.get_video_features)
    options = GenerationOptions(max_new_tokens=8)

    chat = Chat((model, processor), generation=options)
    first_s, first = first_token(chat, "What happens in the video?", video=video)
    first_calls = dict(calls)
    follow_s, follow = first_token(chat, "And what happens next?")
    follow_calls = {k: calls[k] - first_calls[k] for k in calls}
    fresh = Chat((model, processor), generation=options)  # the reference: a chat that starts over
    fresh_s, _ = first_token(fresh, "And what happens next?", video=video)

    print(f"video: {args.seconds} s, {width}x{height}, 30 fps; {len(first.frames)} frames, "
          f"{first.visual_tokens} visual tokens, prompt {first.prompt_tokens} -> {follow.prompt_tokens} tokens")
    print(f"first question: {first_s * 1000:8.1f} ms to the first token (decoder {first_calls['decoder']}, "
          f"vision encoder {first_calls['encoder']})")
    print(f"follow-up:      {follow_s * 1000:8.1f} ms to the first token (decoder {follow_calls['decoder']}, "
          f"vision encoder {follow_calls['encoder']})")
    print(f"a new chat:     {fresh_s * 1000:8.1f} ms (the reference: everything again)")
    print(f"follow-up speed-up: {first_s / follow_s:.1f}x against the first question, "
          f"{fresh_s / follow_s:.1f}x against starting over")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
