"""Chat in Python and `vidlab chat` end to end on the tiny model and generated videos."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidlab.chat import Chat
from vidlab.generate import GenerationOptions
from vidlab.settings import MediaSettings

GREEDY_SHORT = GenerationOptions(max_new_tokens=8)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    vidlab = Path(sys.executable).parent / "vidlab"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [str(vidlab), *args], input=stdin, capture_output=True, text=True, timeout=300, env=env
    )


def test_follow_up_keeps_the_video_and_the_history(tiny_model, sample_video):
    chat = Chat(tiny_model, generation=GREEDY_SHORT, settings=MediaSettings(fps=1))
    first = chat.ask("What happens?", video=sample_video)
    assert first.frames == [0.0, 1.0, 2.0, 3.0]
    assert 0 < first.generated_tokens <= 8
    second = chat.ask("And then?")
    assert [t.role for t in chat.history] == ["user", "assistant", "user", "assistant"]
    assert chat.history[1].text == first.answer
    # The follow-up sees the same video again plus the first exchange.
    assert second.visual_tokens == first.visual_tokens
    assert second.prompt_tokens > first.prompt_tokens + first.generated_tokens
    chat.reset()
    assert chat.history == []
    again = chat.ask("What happens?")  # reset keeps the video: no need to give it again
    assert (again.answer, again.frames, again.prompt_tokens) == (first.answer, first.frames, first.prompt_tokens)
    chat.reset(keep_media=False)
    assert chat.ask("What happens?").frames == []
    assert chat.ask("And this?", video=sample_video).frames == first.frames  # a video brought in a follow-up


def test_stream_gives_the_same_answer_as_ask(tiny_model, sample_video):
    asked = Chat(tiny_model, generation=GREEDY_SHORT).ask("Describe the video.", video=sample_video)
    streaming = Chat(tiny_model, generation=GREEDY_SHORT)
    pieces = list(streaming.stream("Describe the video.", video=sample_video))
    assert len(pieces) >= 1
    assert "".join(pieces) == asked.answer == streaming.last_reply.answer
    assert streaming.last_reply.generated_tokens == asked.generated_tokens


def test_system_message_opens_the_conversation(tiny_model):
    chat = Chat(tiny_model, system="Answer in one word.", generation=GREEDY_SHORT)
    chat.ask("Hello?")
    assert [t.role for t in chat.history] == ["system", "user", "assistant"]


def test_sampling_with_temperature_varies(tiny_model):
    chat = Chat(tiny_model, generation=GenerationOptions(max_new_tokens=12, temperature=5.0, top_p=1.0))
    answers = set()
    for _ in range(4):
        chat.reset()
        answers.add(chat.ask("Say something.").answer)
    assert len(answers) > 1


def test_cli_tiny_model_and_chat_json_end_to_end(tmp_path):
    model_dir, video = tmp_path / "tiny", tmp_path / "clip.mp4"
    assert run_cli("model", "tiny", str(model_dir), "--seed", "3").returncode == 0
    assert run_cli("data", "sample-video", str(video), "--seconds", "3").returncode == 0
    result = run_cli(
        "chat", "--model", str(model_dir), "--video", str(video), "--json", "--max-new-tokens", "6",
        "What happens in the video?",
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert set(reply) == {
        "answer", "frames", "visual_tokens", "visual_tokens_before_pruning", "prompt_tokens",
        "generated_tokens", "seconds", "warnings",
    }
    assert reply["warnings"] == []
    assert reply["frames"] == [0.0, 1.0, 2.0]
    assert 0 < reply["visual_tokens"] <= reply["visual_tokens_before_pruning"]
    assert reply["prompt_tokens"] > reply["visual_tokens"]
    assert 1 <= reply["generated_tokens"] <= 6

    unpruned = run_cli(
        "chat", "--model", str(model_dir), "--video", str(video), "--json", "--max-new-tokens", "1",
        "--no-compression", "--num-frames", "2", "What?",
    )
    reply = json.loads(unpruned.stdout)
    assert reply["frames"] == [0.0, 3.0]  # VideoLLaMA3 stamps num_frames picks over the length: linspace(0, 3)
    assert reply["visual_tokens"] == reply["visual_tokens_before_pruning"]


def test_cli_interactive_session_through_stdin(tiny_model_dir, sample_video):
    result = run_cli(
        "chat", "--model", str(tiny_model_dir), "--video", str(sample_video), "--json", "--max-new-tokens", "5",
        stdin="What happens?\nAnd then?\n/reset\nWhat happens?\n/quit\nnever asked\n",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[2] == "(history cleared)"
    replies = [json.loads(line) for line in lines[:2] + lines[3:]]
    assert len(replies) == 3  # the line after /quit is not answered
    assert replies[1]["prompt_tokens"] > replies[0]["prompt_tokens"]  # history grew
    assert replies[2] == {**replies[0], "seconds": replies[2]["seconds"]}  # reset: same state as the start


def test_cli_streams_plain_text(tiny_model_dir, sample_video):
    result = run_cli(
        "chat", "--model", str(tiny_model_dir), "--video", str(sample_video), "--max-new-tokens", "5", "Hi?"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and not result.stdout.lstrip().startswith("{")


def test_cli_user_errors_are_one_clear_line(tiny_model_dir, tmp_path):
    missing = tmp_path / "missing.mp4"
    result = run_cli("chat", "--model", str(tiny_model_dir), "--video", str(missing), "Hi?")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: no such file or folder. " \
        "Check the path; annotation paths are relative to the data root."
    result = run_cli("chat", "--model", str(tmp_path), "Hi?")
    assert result.returncode == 2 and "not a model folder" in result.stderr and "Traceback" not in result.stderr
    both = run_cli("chat", "--model", str(tiny_model_dir), "--max-frames", "4", "--num-frames", "2", "Hi?")
    assert both.returncode == 2 and "not both" in both.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["chat"], ["model"], ["model", "tiny"], ["model", "convert"], ["model", "info"], ["data", "sample-video"],
     ["data", "synth"],
     ["eval"], ["eval", "run"], ["eval", "score"], ["eval", "compare"], ["quickstart"], ["train"], ["model", "merge"]],
)
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout
    assert len(result.stdout.split()) > 10


def test_chat_about_images_by_path_and_in_memory(tiny_model, tmp_path):
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8))
    picture.save(tmp_path / "a.png")
    chat = Chat(tiny_model, generation=GREEDY_SHORT)
    reply = chat.ask("Same pictures?", image=[tmp_path / "a.png", picture])
    assert reply.frames == []
    assert reply.visual_tokens == reply.visual_tokens_before_pruning == 2 * 16  # two 4x4-patch images
    assert [p.type for p in chat.history[0].media] == ["image", "image"]


def test_a_follow_up_runs_neither_the_decoder_nor_the_vision_encoder(tiny_model, sample_video, monkeypatch):
    from vidlab.conversation import Conversation, MediaPart, TextPart, Turn
    from vidlab.generate import generate
    from vidlab.inputs import build_inputs, load_media
    from vidlab.vision_cache import _base

    model, processor = tiny_model
    calls = {"encoder": 0, "decoder": 0}
    encoder = _base(model).model.get_video_features

    @functools.wraps(encoder)  # generate inspects the signature
    def counting_encoder(*args, **kwargs):
        calls["encoder"] += 1
        return encoder(*args, **kwargs)

    import vidlab.media as media

    decoder = media.load_video

    @functools.wraps(decoder)
    def counting_decoder(*args, **kwargs):
        calls["decoder"] += 1
        return decoder(*args, **kwargs)

    monkeypatch.setattr(_base(model).model, "get_video_features", counting_encoder)
    monkeypatch.setattr(media, "load_video", counting_decoder)
    chat = Chat(tiny_model, generation=GREEDY_SHORT)
    first = chat.ask("What happens?", video=sample_video)
    assert calls == {"encoder": 1, "decoder": 1}
    second = chat.ask("And then?")
    third = chat.ask("Why?")
    assert calls == {"encoder": 1, "decoder": 1}  # both follow-ups: from the kept clip and key/value cache
    chat.reset()
    again = chat.ask("What happens?", video=sample_video)  # a new conversation about the same video
    # ... continues the first one's stored start (its video and question): no vision encoder, no prefill of the video
    assert calls == {"encoder": 1, "decoder": 1} and chat.cache.clips.hits >= 1 and chat.prefix_cache.hits == 3
    assert again.answer == first.answer

    # The same answers as the whole conversation encoded and generated from scratch, without any cache.
    turns = []
    for question, reply in [("What happens?", first), ("And then?", second), ("Why?", third)]:
        parts = [MediaPart(type="video", path=str(sample_video))] if not turns else []
        turns.append(Turn(role="user", parts=[*parts, TextPart(text=question)]))
        conversation = Conversation(turns=turns, source="test")
        fresh = generate(model, processor, build_inputs(conversation, load_media(conversation), processor),
                         GREEDY_SHORT)
        assert fresh.text == reply.answer and len(fresh.token_ids) == reply.generated_tokens
        turns.append(Turn(role="assistant", parts=[TextPart(text=reply.answer)]))


def test_clip_cache_keys_on_the_file_and_the_settings_and_stays_bounded(tmp_path):
    import os

    from conftest import gradient_frames

    from vidlab.media.cache import ClipCache
    from vidlab.media.writer import write_video
    from vidlab.settings import Sampling

    path = write_video(tmp_path / "v.mp4", gradient_frames(20), fps=10)
    cache = ClipCache()
    first = cache.load(path, Sampling(fps=1))
    assert cache.load(path, Sampling(fps=1)) is first and (cache.hits, cache.misses) == (1, 1)
    assert cache.load(path, Sampling(fps=2)) is not first  # other settings, other frames
    assert cache.load(path, Sampling(fps=1), start=0.5) is not first
    write_video(path, gradient_frames(30), fps=10)  # the file changes: decoded again
    os.utime(path, ns=(first.key[3] + 10**9, first.key[3] + 10**9))
    assert len(cache.load(path, Sampling(fps=1))) == 3
    small = ClipCache(max_bytes=first.frames.nbytes * 2)
    for fps in (1, 2, 3):
        small.load(path, Sampling(fps=fps))
    assert small.bytes <= first.frames.nbytes * 2 and len(small) < 3  # the oldest went first


def test_cli_warns_about_a_cut_file_and_refuses_bad_clip_bounds(tiny_model_dir, tmp_path):
    from conftest import gradient_frames

    from vidlab.media.writer import write_video

    whole = write_video(tmp_path / "whole.mp4", gradient_frames(60), fps=10, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    result = run_cli("chat", "--model", str(tiny_model_dir), "--video", str(cut), "--json", "--max-new-tokens", "2",
                     "What?")
    assert result.returncode == 0, result.stderr
    [warning] = json.loads(result.stdout)["warnings"]
    assert str(cut) in warning and "cut short" in warning
    result = run_cli("chat", "--model", str(tiny_model_dir), "--video", str(cut), "--max-new-tokens", "2", "What?")
    assert result.returncode == 0 and "warning: " in result.stderr and "cut short" in result.stderr
    for flag, value in [("--start", "nan"), ("--end", "inf"), ("--fps", "nan")]:
        result = run_cli("chat", "--model", str(tiny_model_dir), "--video", str(whole), flag, value, "What?")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error: ") and ("finite" in result.stderr)
