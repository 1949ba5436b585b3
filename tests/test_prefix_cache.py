"""The prefix cache (vidlab.prefix_cache): a reused prompt start gives the logits of a cold prefill (a second
question about a video, a chat follow-up, other text after the same media), the stored entry is never changed by
the request that reuses it, least recently used entries go first under a small bound, other media with the same
tokens are never reused, and a real server counts its hits in /metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gradient_frames
from serve_support import metric, one_thread_torch, post, running

from vidlab.chat import Chat
from vidlab.conversation import Conversation, MediaPart, TextPart, Turn
from vidlab.generate import GenerationOptions, generate, keep_prefix, prepare
from vidlab.inputs import MediaLoad, build_inputs
from vidlab.media.cache import MediaCache
from vidlab.media.writer import write_video
from vidlab.prefix_cache import PrefixCache, vision_end
from vidlab.serve import ServeOptions, create_app
from vidlab.settings import MediaSettings

SETTINGS = MediaSettings(fps=1)
TOLERANCE = 1e-5  # fp32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread_torch():
        yield


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three 4-second videos of the same size and length (so their prompts have the same tokens), other pixels."""
    folder = tmp_path_factory.mktemp("prefix")
    frames = gradient_frames(40)
    return [write_video(folder / "moving.mp4", frames, fps=10),
            write_video(folder / "flipped.mp4", [np.ascontiguousarray(f[::-1]) for f in frames], fps=10),
            write_video(folder / "dark.mp4", [f // 3 for f in frames], fps=10)]


@pytest.fixture(scope="module")
def encoder(tiny_model):
    _, processor = tiny_model
    load = MediaLoad(processor, SETTINGS, cache=MediaCache())

    def inputs(video, *texts: str, system: str | None = None):
        """A batch of one: [system], a user turn with the video then `texts[0]`, and more turns after."""
        part = MediaPart(type="video", path=str(video))
        turns = [Turn(role="system", parts=[TextPart(text=system)])] if system else []
        turns.append(Turn(role="user", parts=[part, TextPart(text=texts[0])]))
        for i, text in enumerate(texts[1:]):
            turns.append(Turn(role="assistant" if i % 2 == 0 else "user", parts=[TextPart(text=text)]))
        return build_inputs(Conversation(turns=turns, source="test"), [load(part)], processor, SETTINGS)

    return inputs


def run(tiny_model, inputs, store: PrefixCache | None, steps: int = 4) -> tuple[torch.Tensor, int]:
    """The logits of `steps` greedy steps (the prompt's last one first) through `prepare` and `keep_prefix`,
    and the prompt tokens reused."""
    model, processor = tiny_model
    prepared = prepare(model, inputs, prefix_cache=store)
    out = model.generate(**prepared.tensors, max_new_tokens=steps, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=processor.tokenizer.pad_token_id)
    keep_prefix(store, model, prepared, out.cache)
    return torch.stack(out.logits), prepared.reused


def _snapshot(store: PrefixCache) -> list[torch.Tensor]:
    return [t.clone() for entry in store._values.values() for layer in entry.layers for t in layer]


def test_a_second_question_about_the_video_gives_the_logits_of_a_cold_prefill(tiny_model, encoder, videos):
    model, _ = tiny_model
    store = PrefixCache()
    first = encoder(videos[0], "What happens?", system="Be brief.")
    second = encoder(videos[0], "Which colour is the square at the end?", system="Be brief.")
    _, reused = run(tiny_model, first, store)
    assert reused == 0 and len(store) == 1 and store.misses == 1
    kept = _snapshot(store)
    warm, reused = run(tiny_model, second, store)
    ids = second.tensors["input_ids"][0]
    assert reused == vision_end(model, ids) > 50  # the system message and every video token
    assert (store.hits, store.tokens_saved) == (1, reused)
    cold, _ = run(tiny_model, second, None)
    assert (warm - cold).abs().max() < TOLERANCE
    assert all(torch.equal(a, b) for a, b in zip(kept, _snapshot(store)))  # the reused entry did not change
    again, reused = run(tiny_model, second, store)  # and it serves the next request the same way
    assert reused == vision_end(model, ids) and (again - cold).abs().max() < TOLERANCE


def test_other_text_after_the_same_media_reuses_the_media_only(tiny_model, encoder, videos):
    model, _ = tiny_model
    store = PrefixCache()
    run(tiny_model, encoder(videos[0], "Context: a red square. What happens?"), store)
    other = encoder(videos[0], "Context: a blue circle. What happens?")
    warm, reused = run(tiny_model, other, store)
    assert reused == vision_end(model, other.tensors["input_ids"][0])
    cold, _ = run(tiny_model, other, None)
    assert (warm - cold).abs().max() < TOLERANCE
    # The same prompt again reuses its whole stored start; generate's answer is the cold one.
    model, processor = tiny_model
    short = GenerationOptions(max_new_tokens=6)
    assert generate(model, processor, other, short, prefix_cache=store).token_ids == \
        generate(model, processor, other, short).token_ids


def test_a_chat_follow_up_gives_the_logits_of_a_cold_prefill(tiny_model, videos):
    store = PrefixCache()
    chat = Chat(tiny_model, settings=SETTINGS, generation=GenerationOptions(max_new_tokens=6), prefix_cache=store)
    first = chat.ask("What happens?", video=videos[0])
    assert len(store) == 1  # the conversation with its answer
    prepared = chat.prepare("And then?")
    batch = chat._batch(prepared)
    warm, reused = run(tiny_model, batch, store)
    # The whole first prompt and the answer's tokens as far as they are tokenized again the same way (the tiny
    # model's answers hold broken characters, which come back as other tokens).
    assert reused > first.prompt_tokens
    cold, _ = run(tiny_model, batch, None)
    assert (warm - cold).abs().max() < TOLERANCE
    hits = store.hits
    follow = chat.ask(prepared)  # through the chat: the same store, the same reuse, the cold answer
    assert store.hits == hits + 1
    cold_chat = Chat(tiny_model, settings=SETTINGS, generation=GenerationOptions(max_new_tokens=6),
                     prefix_cache=PrefixCache(0))  # a bound of 0 keeps nothing: every prompt runs whole
    cold_chat.ask("What happens?", video=videos[0])
    assert cold_chat.ask("And then?").answer == follow.answer
    assert len(store) == 1  # the longer conversation replaced the one it continues


def test_other_media_with_the_same_tokens_are_not_reused(tiny_model, encoder, videos):
    store = PrefixCache()
    one, other = encoder(videos[0], "What happens?"), encoder(videos[1], "What happens?")
    assert torch.equal(one.tensors["input_ids"], other.tensors["input_ids"])
    run(tiny_model, one, store)
    _, reused = run(tiny_model, other, store)
    assert reused == 0 and store.hits == 0 and len(store) == 2


def test_the_least_recently_used_prefix_goes_first(tiny_model, encoder, videos):
    model, _ = tiny_model
    size = PrefixCache()
    run(tiny_model, encoder(videos[0], "What happens?"), size)
    one_entry = size.bytes
    store = PrefixCache(int(one_entry * 2.5))  # room for two
    a, b, c = (encoder(video, "What happens?") for video in videos)
    run(tiny_model, a, store)
    run(tiny_model, b, store)
    assert run(tiny_model, encoder(videos[0], "Why?"), store)[1] > 0  # a is now the most recently used
    run(tiny_model, c, store)  # a third entry: b goes
    assert len(store) == 2 and store.bytes <= store.max_bytes
    assert run(tiny_model, encoder(videos[1], "Why?"), store)[1] == 0  # b was forgotten (and is kept again)
    assert run(tiny_model, encoder(videos[2], "Why?"), store)[1] > 0  # c is still there
    assert run(tiny_model, encoder(videos[0], "Why?"), store)[1] == 0  # a went when b came back
    assert vision_end(model, a.tensors["input_ids"][0]) > 0


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_the_server_counts_prefix_hits_in_metrics(tiny_model_dir, videos, batching):
    root = videos[0].parent
    options = ServeOptions(media_root=root, prefix_cache_mb=64, batching=batching,
                           generation=GenerationOptions(max_new_tokens=6))
    app = create_app(str(tiny_model_dir), name="tiny", device="cpu", options=options)

    def ask(question: str, stream: bool = False):
        body = {"model": "tiny", "stream": stream, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "moving.mp4"}}, {"type": "text", "text": question}]}]}
        response = post(url, body, key=None)
        assert response.status_code == 200, response.text
        return response

    with running(app) as url:
        first = ask("What happens?").json()["choices"][0]["message"]["content"]
        assert metric(url, "vidlab_serve_cache_misses_total", key=None, cache="prefix") == 1
        assert metric(url, "vidlab_serve_cache_bytes", key=None, cache="prefix") > 0
        ask("Which colour is it?")
        ask("Which way does it move?", stream=True)
        assert metric(url, "vidlab_serve_cache_hits_total", key=None, cache="prefix") == 2
        saved = metric(url, "vidlab_serve_prefix_tokens_saved_total", key=None)
        assert saved > 100  # two requests' system message and video tokens
        assert ask("What happens?").json()["choices"][0]["message"]["content"] == first


def test_the_base_model_and_an_adapter_do_not_share_prefixes(tiny_model_dir, tmp_path, videos):
    from serve_support import make_adapter

    from vidlab.models import load_model
    from vidlab.models.adapters import BASE, active_adapter

    model, processor = load_model(tiny_model_dir, adapters={"alpha": make_adapter(tiny_model_dir, tmp_path / "a", 1)},
                                  device="cpu")
    load = MediaLoad(processor, SETTINGS, cache=MediaCache())
    part = MediaPart(type="video", path=str(videos[0]))
    conversation = Conversation(turns=[Turn(role="user", parts=[part, TextPart(text="What happens?")])], source="t")
    inputs = build_inputs(conversation, [load(part)], processor, SETTINGS)
    store = PrefixCache()
    with active_adapter(model, BASE):  # peft keeps the adapter's name while its layers are off
        run((model, processor), inputs, store)
    with active_adapter(model, "alpha"):
        warm, reused = run((model, processor), inputs, store)
        cold, _ = run((model, processor), inputs, None)
    assert reused == 0 and len(store) == 2 and torch.equal(warm, cold)
    with active_adapter(model, BASE):
        assert run((model, processor), inputs, store)[1] > 0
