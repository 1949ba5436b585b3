"""Continuous batching (`--batching continuous`, the default) against a real server on 127.0.0.1: every greedy
answer is the one a sequential server (static batching, max_batch 1) gives, with mixed answer lengths, requests
joining a batch that is already decoding, a client that leaves midway, and two LoRA adapters beside the base model
in one batch. Also the running batch alone: a prompt prefilled in chunks gives `generate`'s answer, and a seeded
sampled answer does not depend on its companions."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from openai import OpenAI
from serve_support import make_adapter, metric, one_thread_torch, post, running, wait_for

from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread_torch():
        yield


@pytest.fixture(scope="module")
def media(tmp_path_factory, sample_video):
    root = tmp_path_factory.mktemp("continuous-media")
    shutil.copy(sample_video, root / "moving.mp4")
    return root


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("continuous-adapters")
    return {"alpha": make_adapter(tiny_model_dir, folder / "alpha", 1),
            "beta": make_adapter(tiny_model_dir, folder / "beta", 2)}


def serve_with(tiny_model_dir, media, adapters, **changes):
    options = ServeOptions(media_root=media, max_model_len=2048, generation=GenerationOptions(max_new_tokens=8),
                           **changes)
    return running(create_app(str(tiny_model_dir), adapters=adapters, name="tiny", device="cpu", options=options))


@pytest.fixture(scope="module")
def sequential(tiny_model_dir, media, adapters):
    with serve_with(tiny_model_dir, media, adapters, batching="static", max_batch=1) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def server(tiny_model_dir, media, adapters):
    # 3 rows, so later requests wait and join while others decode; 24 prompt tokens per step, so a video prompt
    # (about 70 tokens) is prefilled in chunks between decoding steps.
    with serve_with(tiny_model_dir, media, adapters, batching="continuous", max_batch=3, prefill_tokens=24) as url:
        yield url


def messages(i: int) -> list[dict]:
    question = {"type": "text", "text": f"Question {i}: " + "and then " * (i % 4)}
    if i % 2:
        return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "moving.mp4"}}, question]}]
    return [{"role": "user", "content": [question]}]


MODELS = ("tiny", "alpha", "beta")
LENGTHS = (3, 41, 7, 26, 4, 60, 12, 33, 5)  # answers of very different lengths


def ask(client: OpenAI, i: int, **kwargs):
    return client.chat.completions.create(model=MODELS[i % 3], messages=messages(i), max_tokens=LENGTHS[i], **kwargs)


def test_answers_equal_sequential_ones_with_mixed_lengths_joiners_and_adapters(server, sequential):
    replies = [ask(sequential, i) for i in range(len(LENGTHS))]
    alone = [reply.choices[0].message.content for reply in replies]
    assert len({alone[0], alone[1], alone[2]} | {alone[3], alone[4], alone[5]}) == 6  # the adapters answer differently
    client = OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)

    # The longest answer starts alone; the others arrive while it decodes and join its batch.
    first = ask(client, 5, stream=True, stream_options={"include_usage": True})
    pieces = iter(first)
    head = [next(pieces) for _ in range(3)]  # the role, then text: it is decoding
    assert any(c.choices and c.choices[0].delta.content for c in head)
    with ThreadPoolExecutor(8) as pool:
        others = list(pool.map(lambda i: (i, ask(client, i)), [i for i in range(len(LENGTHS)) if i != 5]))
    rest = list(pieces)
    streamed = "".join(c.choices[0].delta.content or "" for c in [*head, *rest] if c.choices)
    assert streamed == alone[5]
    finish = next(c for c in rest if c.choices and c.choices[0].finish_reason)
    assert finish.model_extra["vidlab"]["batch_size"] > 1  # others joined it mid-answer
    assert rest[-1].usage.completion_tokens == replies[5].usage.completion_tokens
    for i, reply in others:
        assert reply.choices[0].message.content == alone[i], i
        assert reply.usage.completion_tokens == replies[i].usage.completion_tokens
    assert max(r.model_extra["vidlab"]["batch_size"] for _, r in others) == 3  # the batch was full at times
    assert metric(server, "vidlab_serve_running", key=None) == 0
    assert metric(server, "vidlab_serve_queue_depth", key=None) == 0
    assert 0 < metric(server, "vidlab_serve_batch_occupancy", key=None) <= 1
    assert metric(server, "vidlab_serve_tokens_per_second", key=None) > 0
    assert metric(server, "vidlab_serve_generated_tokens_total", key=None) >= sum(LENGTHS) - 10


def test_a_cancelled_request_leaves_and_the_others_keep_their_answers(server, sequential):
    expected = {i: ask(sequential, i).choices[0].message.content for i in (1, 3, 6)}
    client = OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)
    stopped = metric(server, "vidlab_serve_stopped_batches_total", key=None)
    cancelled = metric(server, "vidlab_serve_cancelled_total", key=None)
    results = {}

    def others() -> None:
        with ThreadPoolExecutor(3) as pool:
            results.update(pool.map(lambda i: (i, ask(client, i).choices[0].message.content), expected))

    # A stream of ~1,900 tokens in the same batch: its client leaves after the first piece.
    stream = client.chat.completions.create(model="alpha", messages=messages(0), max_tokens=1900, stream=True)
    for item in stream:
        if item.choices and item.choices[0].delta.content:
            break
    worker = threading.Thread(target=others)
    worker.start()
    stream.close()
    assert wait_for(lambda: metric(server, "vidlab_serve_stopped_batches_total", key=None) == stopped + 1, 30)
    # Not streamed: this client gives up after 0.5 s.
    with pytest.raises(httpx2.TimeoutException):
        post(server, {"model": "beta", "messages": messages(2), "max_tokens": 1900}, key=None, timeout=0.5)
    # (it leaves the queue, or the batch if it had joined already)
    assert wait_for(lambda: metric(server, "vidlab_serve_cancelled_total", key=None) == cancelled + 2, 30)
    worker.join(120)
    assert results == expected
    assert metric(server, "vidlab_serve_stopped_batches_total", key=None) in (stopped + 1, stopped + 2)
    assert wait_for(lambda: metric(server, "vidlab_serve_running", key=None) == 0)


def test_stop_strings_end_an_answer_early(server, sequential):
    whole = ask(sequential, 5).choices[0].message.content
    stop = whole[10:13]
    client = OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)
    cut = ask(client, 5, stop=[stop])
    assert cut.choices[0].message.content == whole[: whole.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < LENGTHS[5]  # generation ended at the stop string, not at max_tokens


def test_chunked_prefill_and_seeded_sampling_in_the_running_batch(tiny_model, sample_video):
    from vidlab.conversation import Conversation, MediaPart, TextPart, Turn
    from vidlab.generate import generate
    from vidlab.inputs import build_inputs, load_media
    from vidlab.running_batch import Request, RunningBatch

    model, processor = tiny_model

    def inputs(i: int):
        parts = [MediaPart(type="video", path=str(sample_video))] if i % 2 else []
        conversation = Conversation(turns=[Turn(role="user", parts=[*parts, TextPart(text=f"Say {i}.")])],
                                    source="test")
        return build_inputs(conversation, load_media(conversation), processor)

    def run(requests: list[Request], prefill_tokens: int) -> None:
        batch = RunningBatch(model, processor, max_rows=2, prefill_tokens=prefill_tokens)
        waiting = list(requests)
        while waiting or len(batch):
            while waiting and batch.accepts(waiting[0]):
                batch.add(waiting.pop(0))
            for request in batch.step():
                assert request.error is None

    greedy = [GenerationOptions(max_new_tokens=n) for n in (20, 6, 14)]
    requests = [Request(inputs(i), options) for i, options in enumerate(greedy)]
    run(requests, prefill_tokens=8)  # every prompt in several chunks
    for i, (request, options) in enumerate(zip(requests, greedy)):
        assert request.result.token_ids == generate(model, processor, inputs(i), options).token_ids, i
        assert request.peak_rows == 2

    sampled = GenerationOptions(max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=0)
    alone = Request(inputs(1), sampled, seed=7)
    run([alone], prefill_tokens=512)
    beside = [Request(inputs(0), greedy[0]), Request(inputs(1), sampled, seed=7)]
    run(beside, prefill_tokens=512)
    assert beside[1].result.token_ids == alone.result.token_ids
    other = Request(inputs(1), sampled, seed=8)
    run([other], prefill_tokens=512)
    assert other.result.token_ids != alone.result.token_ids


def test_a_request_whose_prefill_fails_gets_a_500_alone(server, sequential, monkeypatch):
    from vidlab.running_batch import RunningBatch

    expected = {i: ask(sequential, i).choices[0].message.content for i in (1, 2, 3)}
    original = RunningBatch._start

    def poisoned(self, request):
        if "poison" in request.inputs.texts[0]:
            raise RuntimeError("/srv/secret/weights.bin in pid 4242")
        return original(self, request)

    monkeypatch.setattr(RunningBatch, "_start", poisoned)
    client = OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)
    with ThreadPoolExecutor(4) as pool:
        bad = pool.submit(post, server, {"messages": [{"role": "user", "content": "poison"}]}, key=None)
        others = {i: pool.submit(lambda i: ask(client, i).choices[0].message.content, i) for i in expected}
        response = bad.result(timeout=120)
        assert {i: future.result(timeout=120) for i, future in others.items()} == expected
    assert response.status_code == 500
    error = response.json()["error"]
    assert "secret" not in error["message"] and "4242" not in error["message"] and error["code"] == "internal_error"
    assert wait_for(lambda: metric(server, "vidlab_serve_running", key=None) == 0)


def test_joiners_waiting_ahead_are_prefilled_together_and_answer_as_alone(tiny_model, sample_video, monkeypatch):
    """Requests beyond the rows wait inside the batch; short prompts go in together, also those continuing a stored
    prompt start (the prefix cache), and every greedy answer is still `generate`'s."""
    from vidlab.conversation import Conversation, MediaPart, TextPart, Turn
    from vidlab.generate import generate
    from vidlab.inputs import build_inputs, load_media
    from vidlab.prefix_cache import PrefixCache
    from vidlab.running_batch import Request, RunningBatch

    model, processor = tiny_model

    def inputs(i: int):
        parts = [MediaPart(type="video", path=str(sample_video))] if i % 2 else []
        conversation = Conversation(turns=[Turn(role="user", parts=[*parts, TextPart(text=f"Say {i} now.")])],
                                    source="test")
        return build_inputs(conversation, load_media(conversation), processor)

    store = PrefixCache(1 << 30)
    batch = RunningBatch(model, processor, max_rows=2)
    groups = []
    original = RunningBatch._prefill_group

    def spy(self, group):
        groups.append((len(group), group[0].cache is not None))
        return original(self, group)

    monkeypatch.setattr(RunningBatch, "_prefill_group", spy)
    for i in (0, 1):  # alone first: their prompt starts are kept
        batch.add(Request(inputs(i), GenerationOptions(max_new_tokens=3), prefix_cache=store))
        while len(batch):
            batch.step()
    lengths = (9, 3, 12, 5, 7, 4, 10, 6)
    requests = [Request(inputs(i), GenerationOptions(max_new_tokens=n, ignore_eos=True), prefix_cache=store)
                for i, n in enumerate(lengths)]
    waiting, done = list(requests), []
    while waiting or len(batch):
        while waiting and batch.accepts(waiting[0]):
            batch.add(waiting.pop(0))
        assert len(batch) <= 4  # 2 rows and 2 ahead
        done += batch.step()
    assert len(done) == len(requests) and all(r.error is None for r in done)
    assert any(size > 1 and reused for size, reused in groups)  # prompts continuing a stored start, together
    for i, request in enumerate(requests):
        assert request.peak_rows <= 2
        expected = generate(model, processor, inputs(i), GenerationOptions(max_new_tokens=lengths[i], ignore_eos=True))
        assert request.result.token_ids == expected.token_ids, i
