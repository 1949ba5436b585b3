"""64 clients at once against a real server with a small queue: each request is answered or refused with 429 and
Retry-After; none is lost or answered twice; every answer is the one the same request gets alone (greedy), although
the server generated them in batches."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import OpenAI
from serve_support import metric, one_thread_torch, running

from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions

CLIENTS = 64
QUEUE = 12


@pytest.fixture(scope="module")
def server(tiny_model_dir, sample_video, tmp_path_factory):
    root = tmp_path_factory.mktemp("load-media")
    shutil.copy(sample_video, root / "moving.mp4")
    options = ServeOptions(media_root=root, max_batch=8, max_queue=QUEUE, batch_wait_ms=20,
                           generation=GenerationOptions(max_new_tokens=10))
    with one_thread_torch():
        app = create_app(str(tiny_model_dir), name="tiny", device="cpu", options=options)
        with running(app) as url:
            yield url


def request(i: int) -> list[dict]:
    """Requests of different lengths, half of them about the video."""
    question = {"type": "text", "text": f"Question {i}: " + "what happens next " * (i % 5)}
    if i % 2:
        return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "moving.mp4"}}, question]}]
    return [{"role": "user", "content": [question]}]


def test_64_concurrent_clients_are_answered_or_told_to_retry_and_none_is_lost(server):
    client = OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)
    alone = [client.chat.completions.create(model="tiny", messages=request(i)) for i in range(CLIENTS)]
    assert {a.model_extra["vidlab"]["batch_size"] for a in alone} == {1}

    start = threading.Barrier(CLIENTS)

    def send(i: int):
        start.wait(timeout=30)
        try:
            return i, client.chat.completions.create(model="tiny", messages=request(i))
        except openai.RateLimitError as err:
            return i, err

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(send, range(CLIENTS)))

    answered = {i: r for i, r in results if not isinstance(r, Exception)}
    refused = {i: r for i, r in results if isinstance(r, Exception)}
    assert len(answered) + len(refused) == CLIENTS  # every client got exactly one outcome
    assert refused, "the queue of 12 should have refused some of 64 simultaneous requests"
    assert len(answered) >= QUEUE
    for err in refused.values():
        assert err.status_code == 429 and int(err.response.headers["retry-after"]) >= 1
        assert err.body["code"] == "queue_full"
    assert len({r.id for r in answered.values()}) == len(answered)  # no answer twice
    for i, reply in answered.items():
        assert reply.choices[0].message.content == alone[i].choices[0].message.content, i
    assert max(r.model_extra["vidlab"]["batch_size"] for r in answered.values()) > 1  # they were batched

    # Sent again, the refused ones are answered too, the same as alone.
    for i in refused:
        again = client.chat.completions.create(model="tiny", messages=request(i))
        assert again.choices[0].message.content == alone[i].choices[0].message.content
    served = metric(server, "vidlab_serve_requests_total", key=None, route="/v1/chat/completions", model="tiny",
                    status="200")
    assert served == 2 * CLIENTS  # alone, together (answered), again (refused): each once
    assert metric(server, "vidlab_serve_errors_total", key=None, kind="queue_full") == len(refused)
    assert metric(server, "vidlab_serve_queue_depth", key=None) == 0
