"""`vidlab eval run --api`: against a real `vidlab serve` of the tiny model (the same predictions as in-process
greedy evaluation) and against a stand-in OpenAI-compatible server written here (frames mode, 429 then 200, a
timeout, kill -9 and resume)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from serve_support import one_thread_torch, running, wait_for

from vidlab.data.synthetic import Scene, write_scene
from vidlab.errors import EvaluationError
from vidlab.evaluation.api import evaluate
from vidlab.evaluation.api_usage import REQUESTS_LOG, endpoint_usage
from vidlab.evaluation.endpoint import ApiOptions, stamp_text
from vidlab.evaluation.report import compare_runs
from vidlab.evaluation.run import RunOptions
from vidlab.media import load_video
from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions, MediaSettings

KEY = "sk-eval"
SHORT = GenerationOptions(max_new_tokens=6)
OPTIONS = RunOptions(generation=SHORT, workers=0, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread_torch():
        yield


def record(rid: str, question: str, video: str | None = None, **extra) -> dict:
    value = f"<video>\n{question}" if video else question
    return {"id": rid, **({"video": [video]} if video else {}), **extra,
            "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "a shape moves"}]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("apidata")
    write_scene(root / "red.mp4", Scene(colour="red", size=64, seconds=3, fps=4))
    write_scene(root / "blue.mp4", Scene(colour="blue", shape="square", direction="up", size=64, seconds=2, fps=4))
    (root / "broken.mp4").write_bytes(b"this is not a video")
    records = [record("red", "What happens?", "red.mp4"),
               record("text", "Say something."),
               record("blue-clip", "Which way?", "blue.mp4", start=0.5, end=2.0),
               record("missing", "What?", "nowhere.mp4"),
               record("broken", "What?", "broken.mp4"),
               record("red-again", "What colour is it?", "red.mp4")]
    (root / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (root / "red.srt").write_text("1\n00:00:00,000 --> 00:00:01,500\nhello there\n\n"
                                  "2\n00:00:01,500 --> 00:00:03,000\ngoodbye now\n")
    choices = [{"id": "q1", "video": "red.mp4", "question": "What moves?", "options": ["a circle", "a square"],
                "answer": "A", "subtitles": "red.srt"},
               {"id": "q2", "video": "blue.mp4", "question": "Which colour?", "options": ["red", "blue", "green"],
                "answer": "B"}]
    (root / "choice.jsonl").write_text("\n".join(json.dumps(c) for c in choices) + "\n")
    return root


@pytest.fixture(scope="module")
def serve_url(tiny_model_dir, data_dir):
    options = ServeOptions(api_key=KEY, media_root=data_dir, generation=GenerationOptions(max_new_tokens=20),
                           media=MediaSettings(fps=2, num_frames=3))  # server defaults the requests must override
    app = create_app(str(tiny_model_dir), name="tiny", device="cpu", options=options)
    with running(app) as url:
        yield f"{url}/v1"


def rows(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())}


SAME = ("prediction", "prompt", "frames", "visual_tokens", "visual_tokens_before_pruning", "prompt_tokens",
        "generated_tokens", "references", "kind")


def test_api_through_vidlab_serve_gives_in_process_predictions(tiny_model, serve_url, data_dir, tmp_path):
    local = evaluate(tiny_model, data_dir / "eval.jsonl", tmp_path / "local", options=OPTIONS)
    api = ApiOptions(serve_url, "tiny", key=KEY, concurrency=3)
    remote = evaluate(api, data_dir / "eval.jsonl", tmp_path / "api", options=OPTIONS)
    here, there = rows(tmp_path / "local"), rows(tmp_path / "api")
    assert set(here) == set(there) == {"red", "text", "blue-clip", "red-again"}
    for rid in here:
        assert {k: there[rid][k] for k in SAME} == {k: here[rid][k] for k in SAME}, rid
    assert list(there) == list(here)  # written in data-set order after the merge
    assert {s.id for s in remote.skipped} == {s.id for s in local.skipped} == {"missing", "broken"}
    assert "answered 422" in next(s.reason for s in remote.skipped if s.id == "broken")  # the server refused it
    assert remote.metrics["bleu4"] == pytest.approx(local.metrics["bleu4"])

    info = json.loads((tmp_path / "api" / "run.json").read_text())
    assert info["api"]["url"] == serve_url and info["api"]["model"] == "tiny" and info["model"] == "tiny"
    assert KEY not in "".join(p.read_text() for p in (tmp_path / "api").iterdir() if p.suffix in (".json", ".jsonl",
                                                                                                  ".md"))
    usage = endpoint_usage(tmp_path / "api")
    assert usage.requests == 5 and usage.failed == 1  # 4 answers and the broken video; the missing one is not sent
    assert usage.prompt_tokens == sum(r["prompt_tokens"] for r in there.values())
    assert usage.completion_tokens == sum(r["generated_tokens"] for r in there.values())
    report = remote.report.read_text()
    assert "## Endpoint" in report and f"| {usage.requests} | 0 | 1 | {usage.prompt_tokens} |" in report

    comparison = compare_runs([tmp_path / "local", tmp_path / "api"], tmp_path / "cmp")
    assert comparison["versus_baseline"][0]["ties"] == comparison["versus_baseline"][0]["common"] == 4
    from vidlab.web.results import read_run

    run = read_run(tmp_path / "api")
    assert run.order == list(here) and not run.problems and run.info["api"]["model"] == "tiny"

    again = evaluate(api, data_dir / "eval.jsonl", tmp_path / "api", options=OPTIONS)  # resume: only the skipped
    assert again.answered == 0 and again.predictions == 4
    assert endpoint_usage(tmp_path / "api").requests == 6  # the broken video asked again, nothing else


def test_api_file_paths_and_timed_subtitles_match_in_process(tiny_model, serve_url, data_dir, tmp_path):
    """A multiple-choice set with subtitles put at the sampled frames; videos sent as file:// paths."""
    local = evaluate(tiny_model, data_dir / "choice.jsonl", tmp_path / "local", subtitles=True, options=OPTIONS)
    api = ApiOptions(serve_url, "tiny", key=KEY, video_source="path")
    remote = evaluate(api, data_dir / "choice.jsonl", tmp_path / "api", subtitles=True, options=OPTIONS)
    here, there = rows(tmp_path / "local"), rows(tmp_path / "api")
    assert "hello there" in here["q1"]["prompt"]
    for rid in ("q1", "q2"):
        assert {k: there[rid][k] for k in (*SAME, "options", "answer")} == \
            {k: here[rid][k] for k in (*SAME, "options", "answer")}
    assert remote.metrics["accuracy"] == local.metrics["accuracy"]


def test_api_refuses_a_wrong_model_or_key_before_any_request(serve_url, data_dir, tmp_path):
    with pytest.raises(EvaluationError, match="serves no model 'nope'. Use one of: tiny"):
        evaluate(ApiOptions(serve_url, "nope", key=KEY), data_dir / "eval.jsonl", tmp_path / "a", options=OPTIONS)
    with pytest.raises(EvaluationError, match="refused the API key"):
        evaluate(ApiOptions(serve_url, "tiny", key="wrong"), data_dir / "eval.jsonl", tmp_path / "b", options=OPTIONS)
    assert not (tmp_path / "a" / "predictions.jsonl").exists()


# ---- a stand-in OpenAI-compatible server ----------------------------------------------------------------------

class StandIn:
    """Answers every question with the number of images it was sent; "RATE" is refused once with a 429, "SLOW"
    answers after `slow` seconds, everything after `delay` seconds."""

    def __init__(self, delay: float = 0.0, slow: float = 3.0):
        self.bodies: list[dict] = []
        self.refused: set[str] = set()
        self.delay, self.slow = delay, slow
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/chat/completions")(self.complete)

    async def models(self):
        return {"object": "list", "data": [{"id": "stand-in", "object": "model", "created": 0, "owned_by": "test"}]}

    async def complete(self, request: Request):
        body = await request.json()
        with self.lock:
            self.bodies.append(body)
        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        if "RATE" in text and text not in self.refused:
            self.refused.add(text)
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, status_code=429,
                                headers={"retry-after": "0"})
        await asyncio.sleep(self.slow if "SLOW" in text else self.delay)
        images = 0 if isinstance(content, str) else sum(p["type"] == "image_url" for p in content)
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{images} images"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10 + images, "completion_tokens": 2, "total_tokens": 12 + images}}


def test_frames_mode_sends_each_frame_after_its_time(data_dir, tmp_path):
    stand_in = StandIn()
    with running(stand_in.app) as url:
        api = ApiOptions(f"{url}/v1", "stand-in", media="frames", image_format="png", frame_side=32)
        result = evaluate(api, data_dir / "eval.jsonl", tmp_path / "frames", options=OPTIONS)
    got = rows(tmp_path / "frames")
    settings = MediaSettings(precise_time=True)
    red = load_video(data_dir / "red.mp4", settings)
    clip = load_video(data_dir / "blue.mp4", settings, 0.5, 2.0)
    assert got["red"]["prediction"] == f"{len(red)} images" and len(red) == 3
    assert got["blue-clip"]["prediction"] == f"{len(clip)} images"
    assert got["red"]["frames"] == [[round(t, 3) for t in red.stamps]]
    assert {s.id for s in result.skipped} == {"missing", "broken"}  # decoded here: refused before any request
    body = next(b for b in stand_in.bodies if "What happens?" in json.dumps(b))
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"] * 3 + ["text"]
    assert [p["text"] for p in parts[0:6:2]] == [stamp_text(t) for t in red.stamps] == \
        ["Time 0.0s:", "Time 1.0s:", "Time 2.0s:"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[-1]["text"] == "What happens?"
    assert "mm_processor_kwargs" not in body and "top_k" not in body  # only OpenAI's own fields for hosted models
    assert body["max_tokens"] == SHORT.max_new_tokens and body["temperature"] == 0


def test_video_mode_sends_settings_and_retries_429_and_reports_a_timeout(data_dir, tmp_path):
    records = [record("rate", "RATE me", "red.mp4"), record("slow", "SLOW please"), record("fine", "Fine?")]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    stand_in = StandIn(slow=3.0)
    with running(stand_in.app) as url:
        api = ApiOptions(f"{url}/v1", "stand-in", concurrency=3, timeout=1.0, retries=1)
        result = evaluate(api, tmp_path / "data.jsonl", tmp_path / "run", data_root=data_dir,
                          options=RunOptions(generation=SHORT, settings=MediaSettings(fps=2), progress=False))
    got = rows(tmp_path / "run")
    assert set(got) == {"rate", "fine"} and got["rate"]["requests"] == 2  # 429, then the answer
    assert [s.id for s in result.skipped] == ["slow"]
    assert "within 1 s" in result.skipped[0].reason and "tried 2 times" in result.skipped[0].reason
    log = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / REQUESTS_LOG).read_text().splitlines())}
    assert log["rate"]["requests"] == 2 and log["slow"]["requests"] == 2 and log["slow"]["error"]
    sent = next(b for b in stand_in.bodies if "RATE" in json.dumps(b))
    part = sent["messages"][0]["content"][0]
    assert part["type"] == "video_url" and part["video_url"]["url"].startswith("data:video/mp4;base64,")
    kwargs = sent["mm_processor_kwargs"]
    assert kwargs["fps"] == 2 and kwargs["max_frames"] == 180 and kwargs["precise_time"] is True
    assert "## Endpoint" in result.report.read_text()


def test_kill_9_then_resume_gives_one_prediction_per_record(data_dir, tmp_path):
    records = [record(f"r{i:02d}", f"Question {i}?") for i in range(16)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "run"
    stand_in = StandIn(delay=0.25)
    with running(stand_in.app) as url:
        command = [sys.executable, "-m", "vidlab.evaluation.cli", "run", "--api", f"{url}/v1", "--api-model",
                   "stand-in", "--concurrency", "3", "--data", str(tmp_path / "data.jsonl"), "--out", str(out),
                   "--max-new-tokens", "4", "--no-progress"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIDLAB_API_KEY": "sk-secret"}
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        predictions = out / "predictions.jsonl"
        assert wait_for(lambda: predictions.exists() and predictions.read_text().count("\n") >= 4, timeout=120)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        before = len(stand_in.bodies)
        assert before < 16
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "requests" in second.stdout and "sk-secret" not in second.stdout
    ids = [json.loads(line)["id"] for line in predictions.read_text().splitlines()]
    assert ids == [r["id"] for r in records]  # one each, in data-set order
    # the rerun asked only about what the killed run had not written (in-flight answers are asked again)
    assert len(stand_in.bodies) - before <= 16 - 4
    assert "sk-secret" not in (out / "run.json").read_text()


def test_cli_asks_for_one_model_source_in_one_line(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "vidlab.evaluation.cli", "run", "--data", str(tmp_path / "d.jsonl"),
                   "--out", str(tmp_path / "o"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})

    both = run("--model", "m", "--api", "http://127.0.0.1:9/v1", "--api-model", "x")
    assert both.returncode == 2 and "give --model (a local checkpoint) or --api URL" in both.stderr
    nameless = run("--api", "http://127.0.0.1:9/v1")
    assert nameless.returncode == 2 and "--api needs --api-model" in nameless.stderr
    (tmp_path / "d.jsonl").write_text(json.dumps(record("a", "Hi?")) + "\n")
    unreachable = run("--api", "http://127.0.0.1:9/v1", "--api-model", "x", "--api-retries", "0")
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert "http://127.0.0.1:9/v1: cannot reach the endpoint" in unreachable.stderr
    assert not (tmp_path / "o" / "predictions.jsonl").exists()
