"""vidlab serve under careless and hostile clients, each case on a real uvicorn server on 127.0.0.1: the status the
client gets, that requests running beside it get the answers they get alone, and (where memory is the risk) that the
server's resident memory after the case is within a bound of before. Bounded loops only; no wall-time asserts."""

from __future__ import annotations

import base64
import os
import resource
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import gradient_frames
from serve_support import metric, one_thread_torch, post, running, wait_for

from vidlab.media.writer import write_video
from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions, MediaSettings

MEMORY_BOUND = 300 << 20  # what one refused or clamped request may leave held (the 1 GB goal, with room for the rest)
TOKENS = 6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread_torch():
        yield


def options(**changes) -> ServeOptions:
    values = {"allow_remote_media": True, "allow_private_media_addresses": True, "max_media_mb": 0.5,
              "remote_timeout": 1.5, "max_fps": 30, "max_video_frames": 16, "max_request_frames": 24,
              "max_request_video_seconds": 100, "max_request_text_chars": 20_000, "max_media_parts": 3,
              "max_model_len": 2048, "media": MediaSettings(max_frames=16), "batch_wait_ms": 50,
              "generation": GenerationOptions(max_new_tokens=TOKENS)}
    return ServeOptions(**{**values, **changes})


@pytest.fixture(scope="module")
def media(tmp_path_factory, sample_video) -> Path:
    root = tmp_path_factory.mktemp("hostile-media")
    (root / "moving.mp4").write_bytes(sample_video.read_bytes())  # 4 s at 10 fps
    write_video(root / "long.mp4", gradient_frames(400, 32, 32), fps=10)  # 40 s at 10 fps
    return root


@pytest.fixture(scope="module")
def server(tiny_model, media):
    app = create_app(tiny_model, name="tiny", options=options(media_root=media))
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def static_server(tiny_model, media):
    """Static batching, whose batch runner the tests below replace (test_serve_continuous.py has the same for
    continuous batching)."""
    app = create_app(tiny_model, name="tiny", options=options(media_root=media, batching="static"))
    with running(app) as url:
        yield url, app


def chat(content, **fields) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **fields}


def video(url: str, **part) -> dict:
    return {"type": "video_url", "video_url": {"url": url}, **part}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def answer(url: str, body: dict) -> str:
    response = post(url, body, key=None)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


BYSTANDERS = [chat("Say something."), chat([video("moving.mp4"), text("What happens?")])]


def beside(url: str, hostile, rounds: int = 2) -> object:
    """Run `hostile()` while ordinary requests go on beside it; they must get their answers alone. Its result."""
    alone = [answer(url, body) for body in BYSTANDERS]
    with ThreadPoolExecutor(1 + len(BYSTANDERS) * rounds) as pool:
        outcome = pool.submit(hostile)
        others = [pool.submit(answer, url, body) for _ in range(rounds) for body in BYSTANDERS]
        result = outcome.result(timeout=120)
        assert [f.result(timeout=120) for f in others] == alone * rounds
    return result


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Memory:
    """Resident memory (now and at its peak) before and after a case."""

    def __enter__(self):
        self.now, self.peak = resident(), peak()
        return self

    def __exit__(self, *exc):
        self.grew, self.peak_grew = resident() - self.now, peak() - self.peak
        if exc[0] is None:
            assert self.grew < MEMORY_BOUND, f"resident memory grew {self.grew >> 20} MiB"
            assert self.peak_grew < MEMORY_BOUND, f"peak resident memory grew {self.peak_grew >> 20} MiB"


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"], error
    assert "/tmp/" not in error["message"] and " --" not in error["message"], error["message"]
    return error


# ---- ceilings ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [1e6, 1e8])
def test_an_fps_far_beyond_the_files_rate_costs_nothing(server, fps):
    url, _ = server
    body = chat([video("long.mp4"), text("?")], mm_processor_kwargs={"fps": fps, "max_frames": 10})
    with Memory():
        response = beside(url, lambda: post(url, body, key=None))
    assert response.status_code == 200, response.text
    frames = response.json()["vidlab"]["frames"][0]
    assert len(frames) == 10 and frames[-1] <= 40  # thinned from the file's own 10 frames a second


def test_frame_second_and_fps_ceilings_answer_4xx_naming_the_limit(server):
    url, _ = server
    cases = [
        (chat([video("long.mp4"), text("?")], mm_processor_kwargs={"num_frames": 17}), 400, "too_many_frames",
         "max_video_frames"),
        (chat([video("long.mp4"), text("?")], media_io_kwargs={"video": {"max_frames": 1000}}), 400,
         "too_many_frames", "max_video_frames"),
        (chat([video("long.mp4"), video("long.mp4"), text("?")], mm_processor_kwargs={"num_frames": 16}), 400,
         "too_many_frames", "max_request_frames"),
        (chat([video("long.mp4"), video("long.mp4"), video("long.mp4"), text("?")],
              mm_processor_kwargs={"num_frames": 2}), 413, "video_seconds_over_limit", "max_request_video_seconds"),
        (chat([video("long.mp4"), text("?")], mm_processor_kwargs={"max_visual_tokens": 40_000}), 400,
         "too_many_visual_tokens", "max_request_visual_tokens"),
    ]
    for body, status, code, limit in cases:
        error = error_of(beside(url, lambda body=body: post(url, body, key=None), rounds=1), status, code)
        assert limit in error["message"], error["message"]


def test_fps_over_the_servers_limit_within_the_files_rate(tiny_model, media):
    app = create_app(tiny_model, name="tiny", options=options(media_root=media, max_fps=5,
                                                              media=MediaSettings(max_frames=16, fps=1)))
    with running(app) as url:
        error = error_of(post(url, chat([video("moving.mp4"), text("?")], mm_processor_kwargs={"fps": 8}), key=None),
                         400, "fps_over_limit")
        assert "max_fps" in error["message"]
        # 1e6 is brought down to the file's 10 frames a second first: over 5, refused the same way.
        assert post(url, chat([video("moving.mp4")], mm_processor_kwargs={"fps": 1e6}), key=None).status_code == 400
        assert post(url, chat([video("moving.mp4")], mm_processor_kwargs={"fps": 4}), key=None).status_code == 200


def test_text_is_bounded_before_it_is_tokenized(server):
    url, _ = server
    with Memory():
        long = beside(url, lambda: post(url, chat("word " * 30_000), key=None))
        huge = beside(url, lambda: post(url, chat("word " * 2_000_000), key=None))
    error = error_of(long, 400, "text_too_long")
    assert "max_request_text_chars" in error["message"]
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"


def test_max_tokens_that_would_shrink_the_video_is_a_400_unless_the_server_shrinks(server, tiny_model, media):
    url, _ = server
    question = [video("moving.mp4"), text("What happens?")]
    prompt = post(url, chat(question), key=None).json()["usage"]["prompt_tokens"]
    error = error_of(post(url, chat(question, max_tokens=2048 - prompt + 4), key=None), 400,
                     "context_length_exceeded")
    assert "max_tokens" in error["message"] and error["param"] == "max_tokens"

    app = create_app(tiny_model, name="tiny", options=options(media_root=media, max_model_len=prompt + 2,
                                                              shrink_to_fit=True))
    with running(app) as shrinking:
        response = post(shrinking, chat(question, max_tokens=6), key=None)
        assert response.status_code == 200, response.text
        assert "made to fit" in " ".join(response.json()["vidlab"]["warnings"])
        assert response.json()["usage"]["prompt_tokens"] <= prompt + 2 - 6


# ---- isolation -----------------------------------------------------------------------------------------------------

def test_a_seed_out_of_range_is_a_400_and_seeded_requests_do_not_change_their_neighbours(server):
    url, _ = server
    for seed in (1 << 64, -(1 << 63) - 1):
        assert error_of(post(url, chat("Hi", seed=seed), key=None), 400, "invalid_value")["param"] == "seed"
    sampled = chat("Tell me a story.", temperature=1.0, seed=11, max_tokens=8)
    alone = answer(url, sampled)
    greedy = [chat(f"Question {i}?", seed=i) for i in range(4)]
    greedy_alone = [answer(url, body) for body in greedy]
    with ThreadPoolExecutor(8) as pool:
        together = [pool.submit(answer, url, body) for body in [sampled, *greedy, sampled]]
        results = [f.result(timeout=120) for f in together]
    assert results == [alone, *greedy_alone, alone]


class _Host:
    """An http server on 127.0.0.1: /v.mp4 (a video), /drip.mp4 (a byte every 0.1 s, for at most 20 s),
    /flood.mp4 (2 MB without a Content-Length), /redirect (to /v.mp4 on 127.0.0.1)."""

    def __init__(self, video_bytes: bytes):
        stop = self.stop = threading.Event()
        dripping = self.dripping = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                try:
                    if self.path == "/redirect":
                        self.send_response(302)
                        self.send_header("Location", f"http://127.0.0.1:{host.port}/v.mp4")
                        self.end_headers()
                    elif self.path == "/v.mp4":
                        self.send_response(200)
                        self.send_header("Content-Type", "video/mp4")
                        self.send_header("Content-Length", str(len(video_bytes)))
                        self.end_headers()
                        self.wfile.write(video_bytes)
                    elif self.path == "/drip.mp4":
                        self.send_response(200)
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                        dripping.set()
                        for _ in range(200):
                            if stop.wait(0.1):
                                break
                            self.wfile.write(b"\0")
                            self.wfile.flush()
                    elif self.path == "/flood.mp4":
                        self.send_response(200)
                        self.end_headers()
                        for _ in range(32):
                            self.wfile.write(b"\0" * 65536)
                    else:
                        self.send_response(404)
                        self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_a_dripping_download_ends_at_its_deadline_and_holds_up_no_one(server, media):
    url, _ = server
    with _Host((media / "moving.mp4").read_bytes()) as host, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, url, chat([video(f"{host.url}/drip.mp4"), text("?")]), key=None)
        assert host.dripping.wait(30)
        # Text-only requests are prepared apart from media, and downloads hold no worker thread.
        assert answer(url, chat("Say something.")) is not None
        assert answer(url, chat([video("moving.mp4"), text("What happens?")])) is not None
        assert not slow.done()
        error = error_of(slow.result(timeout=60), 400, "remote_media_failed")
        assert "did not download within 1.5 s" in error["message"]
        flood = error_of(post(url, chat([video(f"{host.url}/flood.mp4")]), key=None), 413, "media_too_large")
        assert "max_media_mb" in flood["message"]


def test_remote_media_refuses_private_addresses_credentials_and_other_domains(tiny_model, media):
    with _Host((media / "moving.mp4").read_bytes()) as host:
        closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        closed_port = closed.server_address[1]
        closed.server_close()  # nothing listens there now
        app = create_app(tiny_model, name="tiny", options=options(allow_private_media_addresses=False))
        with running(app) as url:
            messages = []
            for where in (f"{host.url}/v.mp4", f"http://127.0.0.1:{closed_port}/v.mp4",
                          f"http://0x7f000001:{host.port}/v.mp4", f"http://localhost:{host.port}/v.mp4",
                          f"http://[::1]:{host.port}/v.mp4", "http://169.254.169.254/latest/meta-data",
                          "http://10.0.0.1/v.mp4"):
                error = error_of(post(url, chat([video(where)]), key=None), 400, "remote_media_failed")
                messages.append(error["message"].replace(where, "URL"))
            assert len(set(messages)) == 1, messages  # the same answer whatever listens there
            error = error_of(post(url, chat([video(f"http://user:pw@{host.url[7:]}/v.mp4")]), key=None), 400,
                             "invalid_media")
            assert "pw" not in error["message"] or "credentials" in error["message"]
            assert answer(url, chat("Say something.")) is not None

        app = create_app(tiny_model, name="tiny", options=options(allowed_media_domains=("localhost",)))
        with running(app) as url:
            fetched = post(url, chat([video(f"http://localhost:{host.port}/v.mp4"), text("?")]), key=None)
            assert fetched.status_code == 200, fetched.text
            assert fetched.json()["vidlab"]["media"] == [{"source": "remote", "cached": False}]
            error_of(post(url, chat([video(f"{host.url}/v.mp4")]), key=None), 400, "media_domain_not_allowed")
            # A redirect is checked as the first URL was: 127.0.0.1 is not an allowed domain.
            error_of(post(url, chat([video(f"http://localhost:{host.port}/redirect")]), key=None), 400,
                     "media_domain_not_allowed")


def test_a_uuid_reused_with_other_media_gets_that_media(server, media):
    url, _ = server

    def upload(name: str) -> str:
        return "data:video/mp4;base64," + base64.b64encode((media / name).read_bytes()).decode()

    settings = {"mm_processor_kwargs": {"num_frames": 4}}
    first = post(url, chat([video(upload("moving.mp4"), uuid="shared"), text("?")], **settings), key=None).json()
    other = post(url, chat([video(upload("long.mp4"), uuid="shared"), text("?")], **settings), key=None).json()
    alone = post(url, chat([video("long.mp4"), text("?")], **settings), key=None).json()
    assert other["vidlab"]["frames"] == alone["vidlab"]["frames"] != first["vidlab"]["frames"]
    assert other["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
    # The uuid alone now names the media last sent with it.
    again = post(url, chat([{"type": "video_url", "uuid": "shared"}, text("?")], **settings), key=None).json()
    assert again["vidlab"]["frames"] == alone["vidlab"]["frames"] and again["vidlab"]["media"][0]["cached"]


# ---- the wire ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, fields, code, param", [
    ("max_tokens true", {"max_tokens": True}, "invalid_value", "max_tokens"),
    ("stream yes", {"stream": "yes"}, "invalid_value", "stream"),
    ("temperature text", {"temperature": "1"}, "invalid_value", "temperature"),
    ("guided_json", {"guided_json": {"type": "object"}}, "unsupported_parameter", "guided_json"),
    ("response_format", {"response_format": {"type": "json_object"}}, "unsupported_parameter", "response_format"),
    ("best_of", {"best_of": 2}, "unsupported_parameter", "best_of"),
])
def test_wrong_types_and_unsupported_fields_are_400s_naming_the_field(server, case, fields, code, param):
    url, _ = server
    assert error_of(post(url, chat("Hi", **fields), key=None), 400, code)["param"] == param


def test_deeply_nested_json_is_a_400(server):
    url, _ = server
    with Memory():
        response = beside(url, lambda: post(url, b"[" * 100_000, key=None, **{"Content-Type": "application/json"}))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_vllm_decoding_extras_are_applied(server):
    url, _ = server
    free = post(url, chat("Hi", max_tokens=8, ignore_eos=True), key=None).json()
    assert free["usage"]["completion_tokens"] == 8 and free["choices"][0]["finish_reason"] == "length"
    assert post(url, chat("Hi", max_tokens=5, min_tokens=5), key=None).json()["usage"]["completion_tokens"] == 5
    for fields in ({"top_k": -1, "temperature": 1.0, "seed": 3}, {"repetition_penalty": 1.3}):
        assert post(url, chat("Hi", **fields), key=None).status_code == 200
    penalized = [answer(url, chat("Tell me more.", max_tokens=8, ignore_eos=True, repetition_penalty=p))
                 for p in (1.0, 5.0)]
    assert penalized[0] != penalized[1]  # the penalty is applied, not ignored


def test_a_500_is_counted_and_shows_no_internals(static_server):
    url, app = static_server
    scheduler = app.state.engine.scheduler
    original = scheduler.run_batch

    def broken(jobs):
        raise RuntimeError("/srv/secret/weights.bin in pid 4242")

    before = metric(url, "vidlab_serve_requests_total", key=None, route="/v1/chat/completions", model="",
                    status="500")
    scheduler.run_batch = broken
    try:
        response = post(url, chat("Hi"), key=None)
    finally:
        scheduler.run_batch = original
    assert response.status_code == 500
    error = response.json()["error"]
    assert "secret" not in error["message"] and "4242" not in error["message"] and error["code"] == "internal_error"
    assert wait_for(lambda: metric(url, "vidlab_serve_requests_total", key=None, route="/v1/chat/completions",
                                   model="", status="500") == before + 1)
    assert answer(url, chat("Say something.")) is not None


def test_a_request_that_breaks_its_batch_fails_alone(static_server):
    url, app = static_server
    scheduler = app.state.engine.scheduler
    original = scheduler.run_batch
    shared = []

    def poisoned(jobs):
        if any("poison" in job.payload.sample.text for job in jobs):
            shared.append(len(jobs))
            raise RuntimeError("this request breaks generation")
        return original(jobs)

    good = [chat(f"Question {i}?") for i in range(4)]
    alone = [answer(url, body) for body in good]
    start = threading.Barrier(5)

    def send(body):
        start.wait(timeout=30)
        return post(url, body, key=None)

    scheduler.run_batch = poisoned
    try:
        for _ in range(3):  # until the poisoned request shares a batch (bounded)
            with ThreadPoolExecutor(5) as pool:
                bad = pool.submit(send, chat("poison"))
                others = [pool.submit(send, body) for body in good]
                assert bad.result(timeout=60).status_code == 500
                assert [f.result(timeout=60).json()["choices"][0]["message"]["content"] for f in others] == alone
            if max(shared) > 1:
                break
    finally:
        scheduler.run_batch = original
    assert max(shared) > 1  # it did share a batch, and its neighbours were answered as alone


def test_a_ray_task_error_is_not_shown_raw():
    from vidlab.serve.app import _bug_body

    class RayTaskError(Exception):  # Ray's wrapper: the replica's error as `cause`, and its traceback as text
        def __init__(self, cause):
            super().__init__("\x1b[36mray::VidlabReplica.complete()\x1b[39m (pid=4242, ip=10.0.0.3, actor_id=abc)")
            self.cause = cause

    body = _bug_body(RayTaskError(KeyError("/srv/model")))
    assert body["error"]["message"].startswith("internal error (KeyError)")
    assert "pid" not in body["error"]["message"] and "\x1b" not in body["error"]["message"]


def test_cached_clips_are_reported_and_library_wording_is_the_apis(server):
    url, _ = server
    settings = {"mm_processor_kwargs": {"num_frames": 3}}
    media = [post(url, chat([video("moving.mp4"), text("?")], **settings), key=None).json()["vidlab"]["media"]
             for _ in range(2)]
    assert media == [[{"source": "file", "cached": False}], [{"source": "file", "cached": True}]]
    error = error_of(post(url, chat([video("moving.mp4", start=30), text("?")]), key=None), 400, "invalid_media")
    assert "--start" not in error["message"] and "start and end" in error["message"]
    assert "hostile-media" not in error["message"]  # no server path


def test_memory_settles_after_a_round_of_every_hostile_request(server, media):
    """Every case once more, back to back: resident memory returns near where it was."""
    url, _ = server
    bodies = [chat([video("long.mp4")], mm_processor_kwargs={"fps": 1e7, "max_frames": 16}),
              chat("word " * 30_000), chat("Hi", seed=1 << 70),
              chat([video("long.mp4")] * 3, mm_processor_kwargs={"num_frames": 8})]
    post(url, bodies[0], key=None)  # the clip is cached once, before measuring
    with Memory():
        statuses = [post(url, body, key=None).status_code for body in bodies for _ in range(3)]
    assert statuses == [200] * 3 + [400] * 6 + [413] * 3


def test_library_wording_for_the_command_line_is_left_out_of_api_errors():
    from vidlab.serve.errors import client_text

    assert client_text("a.mp4: cut short (allow_partial: --allow-partial). Get it again. Or pass --decoder pyav.") == \
        "a.mp4: cut short. Get it again."
    assert client_text("a.mp4: too long. Shorten it.") == "a.mp4: too long. Shorten it."


def test_trusted_uuids_skip_reading_the_url(tiny_model, media):
    with _Host((media / "moving.mp4").read_bytes()) as host:
        app = create_app(tiny_model, name="tiny", options=options(trust_media_uuids=True))
        with running(app) as url:
            first = post(url, chat([video(f"{host.url}/v.mp4", uuid="t"), text("?")]), key=None)
            assert first.status_code == 200 and first.json()["vidlab"]["media"][0]["cached"] is False
            # The operator trusts uuids: a known one is answered from the cache, the url is not fetched at all.
            again = post(url, chat([video(f"{host.url}/missing.mp4", uuid="t"), text("?")]), key=None)
            assert again.status_code == 200, again.text
            assert again.json()["vidlab"]["media"] == [{"source": "remote", "cached": True}]
            assert again.json()["vidlab"]["frames"] == first.json()["vidlab"]["frames"]
            # Other frame settings are not cached: the url is read, and this one does not exist.
            error_of(post(url, chat([video(f"{host.url}/missing.mp4", uuid="t")],
                                    mm_processor_kwargs={"num_frames": 2}), key=None), 400, "remote_media_failed")
