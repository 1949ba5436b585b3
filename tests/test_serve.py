"""vidlab serve against a real uvicorn server on 127.0.0.1, called with the openai client (and raw HTTP where the
status, headers or SSE bytes matter): text, image, video, uploads, uuid reuse, streaming, adapters, auth, every
client error, path escapes, remote media, stop strings, seeds, disconnects, metrics."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import numpy as np
import openai
import pytest
from conftest import coded, gradient_frames
from openai import OpenAI
from PIL import Image
from serve_support import make_adapter, metric, one_thread_torch, post, running, wait_for

from vidlab.conversation import parse_messages
from vidlab.generate import generate_batch
from vidlab.inputs import collate, encode, load_media
from vidlab.media.writer import write_video
from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions, MediaSettings

KEY = "sk-test"
ANSWER_TOKENS = 12


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread_torch():
        yield


@pytest.fixture(scope="module")
def media(tmp_path_factory, sample_video):
    root = tmp_path_factory.mktemp("media")
    shutil.copy(sample_video, root / "moving.mp4")
    still = root / "still"  # a video as a folder of frames (lossless, so DiffFP sees no change at all)
    still.mkdir()
    for i, frame in enumerate(gradient_frames(9, moving=False)):  # 3 s at the default 3 frames a second
        Image.fromarray(frame).save(still / f"{i:03d}.png")
    Image.fromarray(np.tile(coded(5, 56, 56), (1, 1, 1))).save(root / "image.png")
    whole = write_video(root / "whole.mp4", gradient_frames(60), fps=10, faststart=True)
    (root / "cut.mp4").write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    write_video(root / "long.mp4", gradient_frames(24, 32, 32), fps=2)  # 12 s, over the 10 s limit below
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(sample_video, outside / "secret.mp4")
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    (root / "inside_link.mp4").symlink_to(root / "moving.mp4")
    return root, outside


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("adapters")
    return {"alpha": make_adapter(tiny_model_dir, folder / "alpha", 1),
            "beta": make_adapter(tiny_model_dir, folder / "beta", 2)}


def options(**changes) -> ServeOptions:
    values = {"api_key": KEY, "allow_remote_media": True, "allow_private_media_addresses": True, "max_media_mb": 0.5,
              "remote_timeout": 2.5,
              "max_video_seconds": 10, "max_media_parts": 3, "max_model_len": 2048,
              "generation": GenerationOptions(max_new_tokens=ANSWER_TOKENS)}
    return ServeOptions(**{**values, **changes})


@pytest.fixture(scope="module")
def server(tiny_model_dir, media, adapters):
    app = create_app(str(tiny_model_dir), adapters=adapters, name="tiny", device="cpu",
                     options=options(media_root=media[0]))
    with running(app) as url:
        yield url, app
    assert not app.state.engine.temp_dir.exists()  # uploads' temporary folder goes with the server


@pytest.fixture
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client: OpenAI, content, model: str = "tiny", **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)


def video(url: str, **part) -> dict:
    return {"type": "video_url", "video_url": {"url": url}, **part}


def image(url: str, **part) -> dict:
    return {"type": "image_url", "image_url": {"url": url}, **part}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def data_url(path: Path, kind: str) -> str:
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def direct(tiny_model, messages: list[dict], root: Path, settings: MediaSettings = MediaSettings()) -> str:
    """The answer of the library itself (parse_messages, load_media, encode, collate, generate_batch), greedy."""
    model, processor = tiny_model
    conversation = parse_messages(messages)
    loaded = load_media(conversation, processor, settings, data_root=root)
    batch = collate([encode(conversation, loaded, processor, settings)], processor.tokenizer.pad_token_id, "left")
    return generate_batch(model, processor, batch, GenerationOptions(max_new_tokens=ANSWER_TOKENS))[0].text


def test_text_image_and_video_answers_are_the_librarys(client, server, media, tiny_model):
    root, _ = media
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["tiny", "alpha", "beta"]
    assert [m.model_extra["parent"] for m in listed.data] == [None, "tiny", "tiny"]

    plain = ask(client, "Say something.")
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.system_fingerprint.startswith("vidlab-")
    assert plain.usage.completion_tokens <= ANSWER_TOKENS  # the server's default max_tokens
    assert plain.choices[0].message.content == direct(tiny_model, [
        {"role": "user", "content": "Say something."}], root)

    pictured = ask(client, [image("image.png"), text("What is shown?")])
    assert pictured.model_extra["vidlab"]["visual_tokens"] > 0
    assert pictured.choices[0].message.content == direct(tiny_model, [
        {"role": "user", "content": [{"type": "image", "image": "image.png"}, text("What is shown?")]}], root)

    seen = ask(client, [video(f"file://{root}/moving.mp4"), text("What happens?")], max_tokens=ANSWER_TOKENS)
    extra = seen.model_extra["vidlab"]
    assert extra["frames"] == [[0.0, 1.0, 2.0, 3.0]]  # 4 s at 1 fps, VideoLLaMA3's rule
    without = ask(client, [text("What happens?")])
    # The prompt's tokens count its visual tokens too.
    assert seen.usage.prompt_tokens - without.usage.prompt_tokens >= extra["visual_tokens"] > 0
    assert seen.choices[0].message.content == direct(tiny_model, [
        {"role": "user", "content": [{"type": "video", "video": "moving.mp4"}, text("What happens?")]}], root)

    # A symlink that stays inside the media root is fine; a system message and a developer message too.
    linked = client.chat.completions.create(model="tiny", messages=[
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [video("inside_link.mp4"), text("What happens?")]}])
    assert linked.choices[0].message.content


def test_uploads_and_uuid_reuse_hit_the_cache_without_sending_the_video_again(client, server, media):
    root, _ = media
    upload = data_url(root / "moving.mp4", "video/mp4")
    first = ask(client, [video(upload, uuid="clip-1"), text("What happens?")])
    assert first.model_extra["vidlab"]["media"] == [{"source": "upload", "cached": False}]
    again = ask(client, [{"type": "video_url", "uuid": "clip-1"}, text("What happens?")])
    assert again.model_extra["vidlab"]["media"] == [{"source": "cache", "cached": True}]
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.model_extra["vidlab"]["frames"] == first.model_extra["vidlab"]["frames"]

    # The same bytes without a uuid: found by their content hash (the uuid named these bytes too).
    hashed = [ask(client, [video(upload), text("Describe it.")]).model_extra["vidlab"]["media"] for _ in range(2)]
    assert hashed == [[{"source": "upload", "cached": True}], [{"source": "upload", "cached": True}]]

    # Images too, and a file named with a uuid is found again by the uuid alone.
    picture = data_url(root / "image.png", "image/png")
    assert ask(client, [image(picture, uuid="img-1"), text("?")]).model_extra["vidlab"]["media"][0]["cached"] is False
    assert ask(client, [{"type": "image_url", "uuid": "img-1"}, text("?")]).model_extra["vidlab"]["media"][0][
        "cached"] is True
    ask(client, [video("moving.mp4", uuid="file-1"), text("?")])
    assert ask(client, [{"type": "video_url", "uuid": "file-1"}, text("?")]).model_extra["vidlab"]["media"][0][
        "source"] == "cache"

    # A uuid never sent, or sent with other frame settings, asks for the video again.
    for body in ([{"type": "video_url", "uuid": "never-sent"}, text("?")],):
        with pytest.raises(openai.BadRequestError) as err:
            ask(client, body)
        assert err.value.body["code"] == "uuid_not_cached" and "never-sent" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, [{"type": "video_url", "uuid": "clip-1"}, text("?")],
            extra_body={"mm_processor_kwargs": {"num_frames": 2}})
    assert err.value.body["code"] == "uuid_not_cached"
    engine = server[1].state.engine
    assert list(engine.temp_dir.iterdir()) == []  # uploads are deleted once decoded


def test_frame_settings_per_request_in_vllms_shapes(client, media):
    moving = [video("moving.mp4"), text("What happens?")]
    frames = ask(client, moving, extra_body={"mm_processor_kwargs": {"num_frames": 3}}).model_extra["vidlab"]["frames"]
    assert len(frames[0]) == 3
    frames = ask(client, moving, extra_body={"media_io_kwargs": {"video": {"fps": 2}}}).model_extra["vidlab"]["frames"]
    assert frames == [[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]]
    frames = ask(client, moving, extra_body={"mm_processor_kwargs": {"fps": 2, "max_frames": 4}}).model_extra[
        "vidlab"]["frames"]
    assert len(frames[0]) == 4

    still = [video("still"), text("What happens?")]
    pruned = ask(client, still).model_extra["vidlab"]  # DiffFP on (the server's default)
    kept = ask(client, still, extra_body={"mm_processor_kwargs": {"use_token_compression": False}}).model_extra[
        "vidlab"]
    per_frame = pruned["visual_tokens_before_pruning"] // 3
    assert pruned["visual_tokens"] == per_frame + 2  # the first frame whole, one token for each later frame
    assert kept["visual_tokens"] == kept["visual_tokens_before_pruning"] == pruned["visual_tokens_before_pruning"]

    for extra, where in [({"mm_processor_kwargs": {"fps": -1}}, "mm_processor_kwargs.fps"),
                         ({"mm_processor_kwargs": {"frames_per_second": 2}}, "mm_processor_kwargs.frames_per_second"),
                         ({"mm_processor_kwargs": {"fps": 1}, "media_io_kwargs": {"video": {"fps": 2}}},
                          "media_io_kwargs.video.fps"),
                         ({"media_io_kwargs": {"video": {"backend": "opencv"}}}, "media_io_kwargs.video.backend")]:
        with pytest.raises(openai.BadRequestError) as err:
            ask(client, moving, extra_body=extra)
        assert where in err.value.body["message"], err.value.body


def test_streaming_sends_openai_chunks_ending_with_done(client, server):
    whole = ask(client, [video("moving.mp4"), text("What happens?")])
    chunks = list(ask(client, [video("moving.mp4"), text("What happens?")], stream=True,
                      stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens

    # Streams that arrive together are generated together, each as it would be alone.
    questions = [[video("moving.mp4"), text(f"Question {i}: what happens?" + " Then?" * i)] for i in range(6)]
    alone = [ask(client, question).choices[0].message.content for question in questions]
    start = threading.Barrier(len(questions))

    def streamed(question):
        start.wait(timeout=30)
        return list(ask(client, question, stream=True))

    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(streamed, questions))
    assert ["".join(c.choices[0].delta.content or "" for c in chunks) for chunks in together] == alone
    assert max(chunks[-1].model_extra["vidlab"]["batch_size"] for chunks in together) > 1

    raw = post(server[0], {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_adapters_are_picked_by_model_name(client, adapters, tiny_model_dir, media):
    from vidlab.chat import Chat

    question = [video("moving.mp4"), text("What happens?")]
    answers = {name: ask(client, question, model=name).choices[0].message.content for name in ("tiny", "alpha", "beta")}
    assert len(set(answers.values())) == 3, answers
    # The same as that adapter loaded alone, and the base model is untouched by the adapters beside it.
    alone = Chat(str(tiny_model_dir), adapters["alpha"], device="cpu",
                 generation=GenerationOptions(max_new_tokens=ANSWER_TOKENS))
    assert alone.ask("What happens?", video=media[0] / "moving.mp4").answer == answers["alpha"]
    assert ask(client, question, model="tiny").choices[0].message.content == answers["tiny"]
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, question, model="gamma")
    assert err.value.body["code"] == "model_not_found" and "tiny, alpha, beta" in err.value.body["message"]


def test_api_key_protects_every_route_but_health(server):
    url, _ = server
    assert httpx2.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    for key in (None, "wrong"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for response in (httpx2.get(f"{url}/v1/models", headers=headers, timeout=10),
                         httpx2.get(f"{url}/metrics", headers=headers, timeout=10),
                         post(url, {"messages": [{"role": "user", "content": "Hi"}]}, key=key)):
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def big_text(words: int) -> str:
    return " ".join(f"word{i % 50}" for i in range(words))


@pytest.mark.parametrize("case, status, code, where", [
    ("not json", 400, "invalid_json", "JSON"),
    ("n=2", 400, "unsupported_parameter", "n:"),
    ("unknown model", 404, "model_not_found", "model:"),
    ("no messages", 400, "invalid_value", "messages"),
    ("bad role", 400, "invalid_request", "messages[0].role"),
    ("audio part", 400, "invalid_request", "messages[0].content[0]"),
    ("too many media", 400, "too_many_media_parts", "messages"),
    ("temperature", 400, "invalid_settings", "temperature"),
    ("ftp url", 400, "invalid_media", "messages[0].content[0].video_url.url"),
    ("not base64", 400, "invalid_media", "messages[0].content[0].video_url.url"),
    ("missing file", 400, "invalid_media", "messages[0].content[0].video_url.url"),
    ("prompt over context", 400, "context_length_exceeded", "messages"),
    ("max_tokens over context", 400, "context_length_exceeded", "max_tokens"),
    ("undecodable video", 422, "unprocessable_media", "messages[0].content[0].video_url.url"),
    ("truncated video", 422, "unprocessable_media", "cut short"),
    ("video too long", 413, "video_too_long", "10 s"),
    ("upload too large", 413, "media_too_large", "messages[0].content[0].video_url.url"),
    ("body too large", 413, "request_too_large", "max_media_mb"),
])
def test_each_client_error_is_an_openai_error_naming_the_part(server, media, case, status, code, where):
    root, _ = media
    user = {"role": "user", "content": [video("moving.mp4"), text("?")]}
    bodies = {
        "n=2": {"model": "tiny", "messages": [user], "n": 2},
        "unknown model": {"model": "nope", "messages": [user]},
        "no messages": {"model": "tiny", "messages": []},
        "bad role": {"model": "tiny", "messages": [{"role": "tool", "content": "x"}]},
        "audio part": {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        "too many media": {"messages": [{"role": "user", "content": [video("moving.mp4")] * 4 + [text("?")]}]},
        "temperature": {"messages": [user], "temperature": -1},
        "ftp url": {"messages": [{"role": "user", "content": [video("ftp://example.invalid/v.mp4")]}]},
        "not base64": {"messages": [{"role": "user", "content": [video("data:video/mp4;base64,@@@@")]}]},
        "missing file": {"messages": [{"role": "user", "content": [video("nothing-here.mp4")]}]},
        "prompt over context": {"messages": [{"role": "user", "content": big_text(2100)}]},
        "max_tokens over context": {"messages": [user], "max_tokens": 2048},
        "undecodable video": {"messages": [{"role": "user", "content": [video("garbage.mp4"), text("?")]}]},
        "truncated video": {"messages": [{"role": "user", "content": [video("cut.mp4"), text("?")]}]},
        "video too long": {"messages": [{"role": "user", "content": [video("long.mp4"), text("?")]}]},
        "upload too large": {"messages": [{"role": "user", "content": [
            video("data:video/mp4;base64," + base64.b64encode(os.urandom(600_000)).decode())]}]},
    }
    if case == "not json":
        response = post(server[0], b"{not json", **{"Content-Type": "application/json"})
    elif case == "body too large":
        response = post(server[0], b"x" * (4 << 20), **{"Content-Type": "application/json"})
    else:
        response = post(server[0], bodies[case])
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert where in error["message"], error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert "/tmp/vidlab-serve" not in error["message"]  # never the temporary file's name
    # The server is still up and answering.
    assert httpx2.get(f"{server[0]}/health", timeout=10).status_code == 200


@pytest.mark.parametrize("url", ["../outside/secret.mp4", "{outside}/secret.mp4", "escape.mp4", "file:///etc/passwd",
                                 "file://{outside}/secret.mp4", "/etc/passwd"])
def test_paths_outside_the_media_root_are_refused(server, media, url):
    root, outside = media
    url = url.format(outside=outside).replace("../outside", f"../{outside.name}")
    response = post(server[0], {"messages": [{"role": "user", "content": [video(url), text("?")]}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "media_outside_root"
    assert "outside the server's media root" in response.json()["error"]["message"]


def test_without_a_media_root_no_local_file_is_read_and_remote_media_stay_off(tiny_model, sample_video):
    app = create_app(tiny_model, name="tiny", options=ServeOptions(generation=GenerationOptions(max_new_tokens=4)))
    with running(app) as url:
        for where in (str(sample_video), f"file://{sample_video}", "moving.mp4"):
            response = post(url, {"messages": [{"role": "user", "content": [video(where), text("?")]}]}, key=None)
            assert response.status_code == 400 and response.json()["error"]["code"] == "local_media_disabled"
            assert "media root" in response.json()["error"]["message"]
        response = post(url, {"messages": [{"role": "user", "content": [video("http://127.0.0.1:9/v.mp4")]}]},
                        key=None)
        assert response.status_code == 400 and response.json()["error"]["code"] == "remote_media_disabled"
        assert post(url, {"messages": [{"role": "user", "content": "Hi"}]}, key=None).status_code == 200


class _MediaHost:
    """An http server on 127.0.0.1: /v.mp4 (a video), /big.mp4 (over the size limit), /slow.mp4 (answers in 5 s;
    `arrived` is set once it is asked for)."""

    def __init__(self, video_bytes: bytes):
        release = self.release = threading.Event()
        arrived = self.arrived = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                if self.path == "/slow.mp4":
                    arrived.set()
                    release.wait(5)
                body = {"/v.mp4": video_bytes, "/slow.mp4": video_bytes, "/big.mp4": b"\0" * 700_000}.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                try:
                    self.wfile.write(body or b"")
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_remote_media_within_size_and_time_while_other_requests_go_on(client, server, media):
    root, _ = media
    with _MediaHost((root / "moving.mp4").read_bytes()) as host:
        fetched = ask(client, [video(f"{host.url}/v.mp4"), text("What happens?")])
        local = ask(client, [video("moving.mp4"), text("What happens?")])
        # The same bytes were uploaded before (test above): downloaded, then found by their content hash.
        assert fetched.model_extra["vidlab"]["media"] == [{"source": "remote", "cached": True}]
        assert fetched.choices[0].message.content == local.choices[0].message.content
        for path, status, code in [("/big.mp4", 413, "media_too_large"), ("/missing.mp4", 400, "remote_media_failed")]:
            response = post(server[0], {"messages": [{"role": "user", "content": [video(host.url + path)]}]})
            assert response.status_code == status and response.json()["error"]["code"] == code

        # A download that hangs runs on a decode thread: health and other requests are answered meanwhile.
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(post, server[0], {"messages": [{"role": "user", "content": [
                video(f"{host.url}/slow.mp4")]}]})
            assert host.arrived.wait(30)
            assert httpx2.get(f"{server[0]}/health", timeout=10).status_code == 200
            assert ask(client, "Hi").choices[0].message.content is not None
            assert not slow.done()  # answered before the download gives up, not held up behind it
            response = slow.result(timeout=30)
        assert response.status_code == 400 and "did not download within 2.5 s" in response.json()["error"]["message"]


def test_stop_strings_cut_the_answer_whole_and_streamed(client):
    question = [video("moving.mp4"), text("What happens?")]
    full = ask(client, question, max_tokens=ANSWER_TOKENS).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop and full.find(stop) > 0
    cut = ask(client, question, stop=[stop, "never-there"])
    assert cut.choices[0].message.content == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, question, stop=stop, stream=True)
                       if c.choices)
    assert streamed == full[: full.find(stop)]


def test_a_seed_repeats_a_sampled_answer(client):
    def sampled(seed: int) -> str:
        return ask(client, "Tell me a story.", temperature=1.0, top_p=1.0, seed=seed, max_tokens=10).choices[0] \
            .message.content

    assert sampled(7) == sampled(7)
    assert len({sampled(seed) for seed in (1, 2, 3)}) > 1


def test_a_client_that_disconnects_cancels_its_generation(client, server):
    url, _ = server
    stopped = metric(url, "vidlab_serve_stopped_batches_total")
    cancelled = metric(url, "vidlab_serve_cancelled_total")
    # About 1,900 tokens would take several seconds; the client leaves after the first piece.
    stream = ask(client, "Go on forever.", max_tokens=1900, stream=True)
    for item in stream:
        if item.choices and item.choices[0].delta.content:
            break
    stream.close()
    assert wait_for(lambda: metric(url, "vidlab_serve_stopped_batches_total") == stopped + 1, timeout=10)
    assert metric(url, "vidlab_serve_cancelled_total") == cancelled + 1

    # Not streamed: the client gives up after 0.5 s.
    with pytest.raises(httpx2.TimeoutException):
        post(url, {"messages": [{"role": "user", "content": "Go on forever."}], "max_tokens": 1900}, timeout=0.5)
    assert wait_for(lambda: metric(url, "vidlab_serve_stopped_batches_total") == stopped + 2, timeout=10)
    assert ask(client, "Hi").choices[0].message.content is not None  # the model is free again


def test_a_bad_request_does_not_disturb_the_others(client, server):
    good = [video("moving.mp4"), text("What happens?")]
    alone = ask(client, good).choices[0].message.content
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(ask, client, good) for _ in range(3)]
        bad = [pool.submit(post, server[0], {"messages": [{"role": "user", "content": [video(name), text("?")]}]})
               for name in ("garbage.mp4", "cut.mp4", "../x.mp4")]
        assert [f.result().choices[0].message.content for f in futures] == [alone] * 3
        assert [f.result().status_code for f in bad] == [422, 422, 400]


def test_metrics_count_requests_errors_batches_tokens_and_cache_hits(client, server):
    url, _ = server
    ask(client, [video("moving.mp4"), text("What happens?")])
    ask(client, [video("moving.mp4"), text("What happens?")])
    assert metric(url, "vidlab_serve_requests_total", route="/v1/chat/completions", model="tiny", status="200") >= 2
    assert metric(url, "vidlab_serve_batch_size_count") >= 2
    assert metric(url, "vidlab_serve_generated_tokens_total") > 0
    assert metric(url, "vidlab_serve_prompt_tokens_total") > 0
    assert metric(url, "vidlab_serve_generation_seconds_total") > 0
    assert metric(url, "vidlab_serve_cache_hits_total", cache="clip") >= 1
    assert metric(url, "vidlab_serve_cache_hits_total", cache="vision") >= 1
    assert metric(url, "vidlab_serve_queue_depth") == 0
    post(url, {"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})
    assert metric(url, "vidlab_serve_errors_total", kind="model_not_found") >= 1


def test_cli_serves_until_interrupted_and_refuses_bad_options(tiny_model_dir, media, tmp_path):
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from vidlab.cli import app as cli

    def refused(*flags: str):
        return CliRunner().invoke(cli, ["serve", "--model", str(tiny_model_dir), *flags], env={"COLUMNS": "400"})

    for flags, message in [(["--adapter", "no-equals-sign"], "NAME=DIR"), (["--replicas", "2"], "need --ray"),
                           (["--media-root", str(tmp_path / "missing")], "no such folder")]:
        bad = refused(*flags)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    # A value out of range is a one-line vidlab error naming the flag (the command prints it as `error: ...`).
    assert "--max-batch: input should be greater than or equal to 1" in str(refused("--max-batch", "0").exception)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "vidlab.cli", "serve", "--model", str(tiny_model_dir), "--name", "tiny", "--port",
         str(port), "--media-root", str(media[0]), "--max-new-tokens", "4", "--num-frames", "2", "--log-level",
         "warning"], env={**os.environ, "VIDLAB_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx2.get(f"{url}/health", timeout=2).status_code == 200
            except httpx2.HTTPError:
                return process.poll() is None and False

        assert wait_for(up, timeout=90, every=0.25), process.stderr.read() if process.poll() is not None else ""
        answer = post(url, {"messages": [{"role": "user", "content": [video("moving.mp4"), text("?")]}]}).json()
        assert answer["usage"]["completion_tokens"] <= 4 and len(answer["vidlab"]["frames"][0]) == 2
        assert post(url, {"messages": [{"role": "user", "content": "Hi"}]}, key=None).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0


def test_ray_options_become_the_replica_deployments_settings():
    from vidlab.serve.ray_serve import RayOptions

    served = ServeOptions(max_batch=4, max_queue=20)
    fixed = RayOptions(replicas=3, gpus_per_replica=1, cpus_per_replica=2).deployment_options(served)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}
    assert fixed["max_ongoing_requests"] == 24  # the replica sees its whole queue: it batches and answers 429 itself
    scaled = RayOptions(replicas=2, min_replicas=1, max_replicas=5).deployment_options(served)
    assert "num_replicas" not in scaled and scaled["ray_actor_options"] == {"num_cpus": 1.0}
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 5, "initial_replicas": 2,
                                            "target_ongoing_requests": 4}


def test_replica_metrics_merge_by_replica_and_forget_a_silent_one():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from vidlab.serve import metrics as serve_metrics

    now = [100.0]
    gathered = serve_metrics.ReplicaMetrics(stale_seconds=10, clock=lambda: now[0])
    gateway = CollectorRegistry()
    gateway.register(gathered)
    sent = {}
    for replica, tokens in (("vidlab-a-1", 5), ("vidlab-a-2", 7)):  # two replicas' own registries, as sent
        registry = CollectorRegistry()
        engine = serve_metrics.EngineMetrics(registry)
        engine.generated_tokens.inc(tokens)
        engine.batch_size.observe(2)
        sent[replica] = list(registry.collect())
        gathered.update(replica, sent[replica])

    def values(name: str) -> dict[str, float]:
        families = text_string_to_metric_families(generate_latest(gateway).decode())
        return {s.labels["replica"]: s.value for f in families for s in f.samples if s.name == name}

    assert values("vidlab_serve_generated_tokens_total") == {"vidlab-a-1": 5, "vidlab-a-2": 7}
    assert values("vidlab_serve_batch_size_count") == {"vidlab-a-1": 1, "vidlab-a-2": 1}
    now[0] += 6
    gathered.update("vidlab-a-2", sent["vidlab-a-2"])  # a-2 checks in again; a-1 is silent
    now[0] += 6
    assert values("vidlab_serve_generated_tokens_total") == {"vidlab-a-2": 7}
