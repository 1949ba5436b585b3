"""One road into media: a record, a chat and the server (a file and an upload) decode the same video into the
same tensors through `vidlab.inputs.load_media`; and the one bounded cache every cache is."""

from __future__ import annotations

import asyncio
import base64
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from vidlab.bounded_cache import BoundedCache
from vidlab.chat import Chat
from vidlab.conversation import Conversation, MediaPart, TextPart, Turn
from vidlab.inputs import encode, load_media
from vidlab.settings import MediaSettings

QUESTION = "What happens?"


def test_the_one_cache_evicts_the_least_recently_used_by_size():
    cache: BoundedCache[bytes] = BoundedCache(10, len)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # now the most recently used
    cache.put("c", b"cccc")  # 12 bytes would be over 10: the least recently used (b) goes
    assert "b" not in cache and "a" in cache and "c" in cache and cache.bytes == 8
    cache.put("a", b"aa")  # replacing a value counts its new size
    assert cache.bytes == 6 and len(cache) == 2
    cache.put("huge", b"x" * 11)  # over the whole bound: not kept, and nothing else is dropped for it
    assert "huge" not in cache and cache.bytes == 6 and len(cache) == 2
    cache.put("d", b"dddddddd")  # 8 bytes: c (the least recently used) goes, a fits beside d exactly
    assert "c" not in cache and cache.bytes == 10 and cache.get("d") == b"dddddddd"
    cache.put("e", b"e")  # a, then d, would be over by one: a (older) goes
    assert "a" not in cache and "d" in cache and cache.bytes == 9
    assert cache.get("b") is None and (cache.hits, cache.misses) == (2, 1)
    assert len(BoundedCache(0, len).put("x", b"x")) == 1 and BoundedCache(0, len).bytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        BoundedCache(-1, len)


def test_the_one_cache_holds_its_bound_under_threads():
    cache: BoundedCache[bytes] = BoundedCache(1000, len)

    def fill(offset: int) -> None:
        for i in range(500):
            cache.put((offset, i), bytes(7))
            cache.get((offset, i - 3))

    threads = [threading.Thread(target=fill, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.bytes == 7 * len(cache) <= 1000 and len(cache) == 1000 // 7


def test_every_cache_is_the_one_bounded_cache_counting_bytes(sample_video):
    from vidlab.media.cache import ClipCache, MediaCache
    from vidlab.vision_cache import VisionCache

    media = MediaCache()
    assert all(isinstance(cache, BoundedCache) for cache in (media.clips, media.images, VisionCache(), ClipCache()))
    clip = media.clips.load(sample_video, MediaSettings(fps=1).sampling())
    assert media.clips.bytes == clip.frames.nbytes
    picture = Image.new("RGB", (10, 20))
    media.images.put(("uuid", "x"), picture)
    assert media.images.bytes == 10 * 20 * 3
    vision = VisionCache(max_bytes=100)
    vision.put("small", torch.zeros(5, 5))  # 100 bytes of float32
    vision.put("next", torch.zeros(1))  # the first goes to make room
    assert list(vision._values) == ["next"] and vision.bytes == 4


def _record(path) -> Conversation:
    return Conversation(turns=[Turn(role="user", parts=[MediaPart(type="video", path=str(path)),
                                                        TextPart(text=QUESTION)])], source="test")


def _served_sample(model_pair, root, url: str, settings: MediaSettings):
    """The sample the server would generate from for one question about `url` (a file or an upload)."""
    from vidlab.serve import ServeOptions
    from vidlab.serve.engine import Engine
    from vidlab.serve.messages import read_messages
    from vidlab.serve.protocol import parse_request
    from vidlab.serve.request_settings import generation_options, media_settings

    engine = Engine(model_pair, options=ServeOptions(media_root=root, media=settings))
    try:
        request = parse_request({"model": "vidlab", "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]}]})
        messages, refs = read_messages(request.messages, engine.options.max_media_parts)
        prepared = engine._prepare(messages, refs, media_settings(request, engine.options.media), 10_000, None,
                                   generation_options(request, engine.options.generation), request)
        return prepared.sample
    finally:
        asyncio.run(engine.close())


def test_a_record_a_chat_and_the_server_make_the_same_tensors_from_the_same_video(tiny_model, sample_video,
                                                                                   monkeypatch):
    from vidlab.inputs import MediaLoad

    loads = []  # which media each road decoded through the one loader
    through = MediaLoad.__call__
    monkeypatch.setattr(MediaLoad, "__call__", lambda self, part, name=None: loads.append(part.type) or through(
        self, part, name))
    model, processor = tiny_model
    settings = MediaSettings(fps=2, max_visual_tokens=200)
    record = _record(sample_video)
    from_record = encode(record, load_media(record, processor, settings), processor, settings)
    from_chat = Chat(tiny_model, settings=settings).prepare(QUESTION, video=sample_video).sample
    assert loads == ["video", "video"]
    root = sample_video.parent
    from_file = _served_sample(tiny_model, root, sample_video.name, settings)
    upload = "data:video/mp4;base64," + base64.b64encode(sample_video.read_bytes()).decode()
    from_upload = _served_sample(tiny_model, root, upload, settings)
    assert loads == ["video"] * 4
    # Decoded straight to the processor's size: frames smaller than the video's 64x64, as every road decodes them.
    assert load_media(record, processor, settings)[0].frames.shape[1:3] != (64, 64)
    for sample in (from_chat, from_file, from_upload):
        assert sample.text == from_record.text and sample.stats == from_record.stats
        assert sample.tensors.keys() == from_record.tensors.keys()
        for key, tensor in from_record.tensors.items():
            assert torch.equal(sample.tensors[key], tensor), key


def test_interactive_use_accepts_a_cut_file_and_records_refuse_it(tiny_model, tmp_path):
    from conftest import gradient_frames

    from vidlab.errors import MediaError
    from vidlab.media.writer import write_video

    whole = write_video(tmp_path / "whole.mp4", gradient_frames(60), fps=10, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with pytest.raises(MediaError, match="allow_partial"):
        load_media(_record(cut), tiny_model[1])
    prepared = Chat(tiny_model).prepare(QUESTION, video=cut)
    assert any("cut short" in w for _, clip in prepared.media for w in clip.warnings)
    assert load_media(_record(cut), tiny_model[1], allow_partial=True)[0].frames.shape == \
        prepared.media[0][1].frames.shape


def test_a_chat_answers_exactly_what_it_prepared(tiny_model, sample_video):
    from vidlab.generate import GenerationOptions

    chat = Chat(tiny_model, generation=GenerationOptions(max_new_tokens=4))
    prepared = chat.prepare(QUESTION, video=sample_video)
    assert chat.history == []  # nothing is asked until it is answered
    reply = chat.ask(prepared)
    assert reply.prompt_tokens == prepared.prompt_tokens and len(chat.history) == 2
    with pytest.raises(ValueError, match="brings its media"):
        chat.ask(chat.prepare("And then?"), video=sample_video)
    assert np.array_equal(prepared.media[0][1].frames, chat.cache.clips.load(
        sample_video, MediaSettings().sampling().model_copy(update={"allow_partial": True}), None, None,
        prepared.media[0][1].key[-1]).frames)
