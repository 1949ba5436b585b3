"""What the vidlab serve tests share: a real uvicorn server on 127.0.0.1 in a thread, LoRA adapters for the tiny
model, media files, and raw HTTP calls (for status codes, headers and SSE bytes the openai client hides)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import torch
import uvicorn


@contextmanager
def running(app, *, timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) in a thread; yields the base URL; always stops it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "the test server did not stop"


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter on the tiny model's LLM with random (non-zero) weights, so its answers differ."""
    from peft import LoraConfig, get_peft_model

    from vidlab.models import load_model

    model, _ = load_model(model_dir, device="cpu")
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj)",
                        init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


def post(url: str, body: dict | bytes, key: str | None = "sk-test", timeout: float = 60.0,
         **headers) -> httpx2.Response:
    """POST to /v1/chat/completions, raw."""
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx2.post(f"{url}/v1/chat/completions", headers=headers, timeout=timeout, **kwargs)


def metric(url: str, name: str, key: str | None = "sk-test", **labels) -> float:
    """One sample of /metrics (0 when absent)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    text = httpx2.get(f"{url}/metrics", headers=headers, timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        base, _, rest = series.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and found == wanted:
            return float(value)
    return 0.0


def wait_for(condition, timeout: float = 20.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


@contextmanager
def one_thread_torch() -> Iterator[None]:
    """The tiny model runs fastest on one thread on a shared 2-core machine (no spinning worker threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
