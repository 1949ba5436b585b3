"""The page's model access without a browser: in-process (LocalBackend) and as a client of a real `vidlab serve`
(RemoteBackend through the openai client); both answer alike, stream, follow up without decoding again, compare
base and adapters in one mixed-adapter batch, and turn bad input into one-line errors."""

from __future__ import annotations

import pytest
from serve_support import make_adapter, running
from web_support import write_clip

from vidlab.errors import MediaError, VidlabError
from vidlab.media import load_video
from vidlab.media.writer import write_video
from vidlab.settings import GenerationOptions, MediaSettings
from vidlab.web.backend import MediaChoice
from vidlab.web.local import ContextError, LocalBackend
from vidlab.web.remote import RemoteBackend, ServerError

QUESTION = "Which direction does the shape move?"
GENERATION = GenerationOptions(max_new_tokens=8)
SETTINGS = MediaSettings()


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web-adapters")
    return {"a": make_adapter(tiny_model_dir, folder / "a", seed=1), "b": make_adapter(tiny_model_dir, folder / "b",
                                                                                     seed=2)}


@pytest.fixture(scope="module")
def backend(tiny_model_dir, adapters):
    loaded = LocalBackend(tiny_model_dir, adapters, device="cpu")
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("web-clips") / "clip.mp4")


def _consume(pieces):
    """All (index, piece) items of a compare stream, and what it returned."""
    items = []
    while True:
        try:
            items.append(next(pieces))
        except StopIteration as stop:
            return items, stop.value


def test_compare_streams_each_model_as_it_answers_alone(backend, clip):
    media = MediaChoice(video=clip)
    names = backend.model_names()
    assert names == ["base", "a", "b"] and backend.mixed_batches
    items, infos = _consume(backend.compare(names, QUESTION, media, None, SETTINGS, GENERATION))
    together = ["".join(p for i, p in items if i == k) for k in range(len(names))]
    alone = ["".join(backend.conversation(name, None, SETTINGS, GENERATION).stream(QUESTION, media))
             for name in names]
    assert together == alone
    assert len(set(alone)) == 3, "the adapters should change the answers"
    assert len(items) > len(names), "answers arrive in pieces"
    assert len({i for i, _ in items[: len(names)]}) > 1, "the models' answers grow together, not one after another"
    assert infos[0].visual_tokens < infos[0].visual_tokens_before_pruning  # DiffFP on by default
    backend.mixed_batches = False  # adapters that change the vision encoder answer in turn
    try:
        items, _ = _consume(backend.compare(names, QUESTION, media, None, SETTINGS, GENERATION))
    finally:
        backend.mixed_batches = True
    assert ["".join(p for i, p in items if i == k) for k in range(len(names))] == alone


def test_preview_is_what_the_answer_used_and_follow_ups_do_not_decode(backend, clip):
    media = MediaChoice(video=clip, start=1.0)
    preview = backend.preview(media, SETTINGS)
    expected = load_video(clip, SETTINGS.sampling(), start=1.0)
    assert preview.stamps == expected.stamps == [1.0, 2.0, 3.0]
    talk = backend.conversation("a", "Be brief.", SETTINGS, GENERATION)
    first = "".join(talk.stream(QUESTION, media))
    assert first and talk.last.frames == preview.stamps
    assert (talk.last.visual_tokens, talk.last.visual_tokens_before_pruning) == \
        (preview.visual_tokens, preview.visual_tokens_before_pruning)
    misses = backend.cache.clips.misses
    vision_hits = backend.vision_caches["a"].hits
    second = "".join(talk.stream("And the colour?", None))
    assert second and backend.cache.clips.misses == misses
    assert backend.vision_caches["a"].hits == vision_hits  # the conversation's key/value cache covered the video
    assert talk.last.prompt_tokens > first.count(" ") + talk.last.visual_tokens


def test_one_question_is_decoded_once_and_encoded_once_and_checked_on_those_tensors(backend, tmp_path, monkeypatch):
    import vidlab.media as media
    from vidlab.inputs.processing import ProcessorCall

    calls = {"decoded": 0, "encoded": 0}
    decode, processor_call = media.load_video, ProcessorCall.__call__

    def counting_decode(*args, **kwargs):
        calls["decoded"] += 1
        return decode(*args, **kwargs)

    def counting_call(self, *args, **kwargs):
        calls["encoded"] += 1
        return processor_call(self, *args, **kwargs)

    monkeypatch.setattr(media, "load_video", counting_decode)
    monkeypatch.setattr(ProcessorCall, "__call__", counting_call)
    fresh = write_clip(tmp_path / "fresh.mp4")  # not in the page's clip cache yet
    talk = backend.conversation("b", None, SETTINGS, GENERATION)
    checked = []
    check = backend.check_context
    monkeypatch.setattr(backend, "check_context", lambda prepared, *rest: checked.append(prepared) or check(
        prepared, *rest))
    assert "".join(talk.stream(QUESTION, MediaChoice(video=fresh)))
    assert calls == {"decoded": 1, "encoded": 1}
    assert checked[-1].prompt_tokens == talk.last.prompt_tokens  # the context was checked on what was answered
    assert "".join(talk.stream("And the colour?", None))
    assert calls == {"decoded": 1, "encoded": 2}  # a follow-up: encoded (and checked) once, nothing decoded
    assert checked[-1].prompt_tokens == talk.last.prompt_tokens
    _consume(backend.compare(["base", "b"], QUESTION, MediaChoice(video=fresh), None, SETTINGS, GENERATION))
    assert calls == {"decoded": 1, "encoded": 3}  # the clip came from the page's cache
    with pytest.raises(VidlabError, match="model 'nope': not loaded. Pick one of base, a, b"):
        backend.conversation("nope", None, SETTINGS, GENERATION)


def test_bad_input_is_one_line(backend, clip, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are notes, not a video")
    with pytest.raises(MediaError, match="notes.mp4"):
        backend.preview(MediaChoice(video=fake), SETTINGS)
    talk = backend.conversation("base", None, SETTINGS, GenerationOptions(max_new_tokens=5000))
    with pytest.raises(ContextError, match="over the model's context: .* holds 4096"):
        list(talk.stream(QUESTION, MediaChoice(video=clip)))
    cut = tmp_path / "cut.mp4"
    write_video(cut, load_video(clip, MediaSettings(num_frames=32).sampling()).frames, fps=8, faststart=True)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    preview = backend.preview(MediaChoice(video=cut), SETTINGS)
    assert preview.frames and any("cut short" in w for w in preview.warnings)
    with pytest.raises(MediaError, match="longer than the page's limit of 2s"):
        LocalBackend.preview(_limited(backend, 2.0), MediaChoice(video=clip), SETTINGS)


def _limited(backend: LocalBackend, seconds: float) -> LocalBackend:
    limited = object.__new__(LocalBackend)
    limited.__dict__.update(backend.__dict__, max_video_seconds=seconds)
    return limited


def test_client_of_vidlab_serve_answers_as_in_process(backend, tiny_model_dir, adapters, clip):
    from vidlab.serve.app import create_app

    media = MediaChoice(video=clip)
    app = create_app(tiny_model_dir, adapters={"a": adapters["a"]}, name="tiny", device="cpu")
    with running(app) as url:
        remote = RemoteBackend(url)
        assert remote.model_names() == ["tiny", "a"] and remote.mode == f"client of {url}/v1"
        talk = remote.conversation("a", None, SETTINGS, GENERATION)
        local = backend.conversation("a", None, SETTINGS, GENERATION)
        assert "".join(talk.stream(QUESTION, media)) == "".join(local.stream(QUESTION, media))
        assert talk.last.frames == [0.0, 1.0, 2.0, 3.0]
        assert talk.last.visual_tokens == local.last.visual_tokens
        assert talk.last.prompt_tokens == local.last.prompt_tokens
        # the follow-up sends the video by uuid only: the server answers from its cache
        assert "".join(talk.stream("And the colour?", None)) == "".join(local.stream("And the colour?", None))
        prompt = talk.last.prompt_tokens
        talk.forget_last(), local.forget_last()  # Regenerate: the last answer forgotten, asked again
        assert "".join(talk.stream("And the colour?", None)) == "".join(local.stream("And the colour?", None))
        assert talk.last.prompt_tokens == local.last.prompt_tokens == prompt
        items, infos = _consume(remote.compare(["tiny", "a"], QUESTION, media, None, SETTINGS, GENERATION))
        local_items, _ = _consume(backend.compare(["base", "a"], QUESTION, media, None, SETTINGS, GENERATION))
        assert ["".join(p for i, p in items if i == k) for k in (0, 1)] == \
            ["".join(p for i, p in local_items if i == k) for k in (0, 1)]
        assert infos[1].generated_tokens is not None
        preview = remote.preview(MediaChoice(video=clip, start=1.0), SETTINGS)
        assert preview.stamps == [1.0, 2.0, 3.0] and preview.visual_tokens is None
        with pytest.raises(ServerError, match="the server answered 400: .*max_tokens"):
            list(remote.conversation("a", None, SETTINGS, GenerationOptions(max_new_tokens=10**9)).stream(
                QUESTION, media))
        remote.close()
    with pytest.raises(ServerError, match="cannot reach the server"):
        RemoteBackend(url)
