"""TinyLLaVA-Video and LLaMA-VID through every road VideoLLaMA3 takes, on their tiny models: `vidlab serve` over HTTP
(the openai client) answering as in-process `Chat`, `vidlab model merge` of a LoRA adapter, full fine-tuning, the
web page's backend, and quantized loading (8-bit through torchao on the CPU; 4-bit refused in one line off a GPU)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from openai import OpenAI
from serve_support import make_adapter, one_thread_torch, running

from vidlab.chat import Chat
from vidlab.conversation import parse_record
from vidlab.data.synthetic import Scene, write_scene
from vidlab.errors import ModelLoadError
from vidlab.inputs import build_inputs, load_media
from vidlab.models.load import load_model
from vidlab.prefix_cache import PrefixCache
from vidlab.settings import GenerationOptions, MediaSettings

QUESTION = "What happens?"
GENERATION = GenerationOptions(max_new_tokens=6)
# Each family's own frame rule (TinyLLaVA-Video: uniform, LLaMA-VID: stride), few frames to stay cheap.
FAMILIES = {
    "tinyllava-video": MediaSettings(frame_rule="uniform", num_frames=4),
    "llama-vid": MediaSettings(frame_rule="stride"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread_torch():
        yield


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_scene(path, Scene(shape="square", colour="red", direction="left", seconds=3))
    return path


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family name, tiny model folder, its media settings), built with `vidlab model tiny --family`."""
    from typer.testing import CliRunner

    from vidlab.cli import app

    folder = tmp_path_factory.mktemp(request.param) / "tiny"
    built = CliRunner().invoke(app, ["model", "tiny", str(folder), "--family", request.param])
    assert built.exit_code == 0, built.output
    return request.param, folder, FAMILIES[request.param]


def _in_process(model, settings: MediaSettings, clip: Path) -> str:
    return Chat(model, settings=settings, generation=GENERATION).ask(QUESTION, video=clip).answer


def _logits(model, processor, settings: MediaSettings, clip: Path) -> torch.Tensor:
    record = parse_record({"video": [str(clip)], "conversations": [{"from": "human", "value": f"<video>\n{QUESTION}"}]})
    loaded = load_media(record, processor, settings)
    batch = build_inputs(record, loaded, processor, settings)
    with torch.no_grad():
        return model(**batch.tensors).logits


def test_serve_over_http_answers_as_chat(family, clip):
    from vidlab.serve import ServeOptions, create_app

    _, folder, settings = family
    loaded = load_model(folder, dtype="fp32", device="cpu")
    expected = _in_process(loaded, settings, clip)
    app = create_app(str(folder), name="tiny", device="cpu",
                     options=ServeOptions(api_key="sk-test", media=settings, generation=GENERATION))
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    with running(app) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]}])
        from vidlab.web.backend import MediaChoice
        from vidlab.web.remote import RemoteBackend

        page = RemoteBackend(base, "sk-test")  # the web page as a client of this server (`vidlab web --api`)
        try:
            through_page = "".join(page.conversation("tiny", None, settings, GENERATION).stream(
                QUESTION, MediaChoice(video=clip)))
        finally:
            page.close()
    assert answer.choices[0].message.content == expected == through_page
    assert answer.model_extra["vidlab"]["visual_tokens"] > 0 and answer.usage.completion_tokens >= 1


def test_merge_of_a_lora_adapter_equals_the_adapter_applied(family, clip, tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app

    _, folder, settings = family
    adapter = make_adapter(folder, tmp_path / "adapter", seed=1)
    merged = CliRunner().invoke(app, ["model", "merge", str(tmp_path / "merged"), "--base", str(folder),
                                       "--adapter", str(adapter)])
    assert merged.exit_code == 0, merged.output
    base, processor = load_model(folder, dtype="fp32", device="cpu")
    tuned, _ = load_model(folder, adapter=adapter, dtype="fp32", device="cpu")
    together, _ = load_model(tmp_path / "merged", dtype="fp32", device="cpu")
    with_adapter = _logits(tuned, processor, settings, clip)
    assert not torch.allclose(_logits(base, processor, settings, clip), with_adapter, atol=1e-3)
    assert torch.allclose(_logits(together, processor, settings, clip), with_adapter, atol=1e-5)


def test_full_fine_tuning_moves_the_loss(family, clip, tmp_path):
    from vidlab import train
    from vidlab.training.config import load_config

    _, folder, settings = family
    rows = [{"video": [str(clip)], "conversations": [{"from": "human", "value": "<video>\nDescribe the video."},
                                                     {"from": "gpt", "value": "A red square moves left."}]}] * 2
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    frames = [f"data.frame_rule={settings.frame_rule}"] + (
        [f"data.num_frames={settings.num_frames}"] if settings.num_frames else [])
    config = load_config(None, [
        "method=full", f"model.path={folder}", f"data.train=[{tmp_path / 'train.jsonl'}]",
        f"output.dir={tmp_path / 'full'}", "data.workers=0", *frames, "learning_rates.llm=0.003",
        "train.batch_size=2", "train.max_steps=3", "optim.warmup_ratio=0", "optim.scheduler=constant",
        "output.log_steps=1", "output.tensorboard=false", "output.progress=false", "output.save_steps=100",
        "train.seed=3"])
    losses = [row["loss"] for row in train(config).log if "loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
    base, processor = load_model(folder, dtype="fp32", device="cpu")
    tuned, _ = load_model(tmp_path / "full", dtype="fp32", device="cpu")  # a whole model of the family, no adapter
    assert type(tuned) is type(base)
    assert not torch.allclose(_logits(tuned, processor, settings, clip), _logits(base, processor, settings, clip))


def test_web_backend_loads_the_family_and_answers_as_chat(family, clip, tmp_path):
    from vidlab.web.app import build_app, make_backend
    from vidlab.web.backend import MediaChoice

    _, folder, settings = family
    backend = make_backend(folder, dtype="fp32", device="cpu")  # what `vidlab web --model FOLDER` builds
    try:
        assert build_app(backend, temp_dir=tmp_path) is not None  # the page's blocks, around this family's backend
        talk = backend.conversation("base", None, settings, GENERATION)
        answer = "".join(talk.stream(QUESTION, MediaChoice(video=clip)))
        follow_up = "".join(talk.stream("And then?", None))  # continues the cached prompt: no pixels sent again
        uncached = Chat((backend.model, backend.processor), settings=settings, generation=GENERATION,
                        prefix_cache=PrefixCache(max_bytes=1))  # keeps nothing: every turn from its first token
        expected = uncached.ask(QUESTION, video=clip).answer
        expected_follow_up = uncached.ask("And then?").answer
    finally:
        backend.close()
    assert answer == expected and talk.last.visual_tokens > 0
    assert follow_up == expected_follow_up


def test_quantized_loading_8bit_on_the_cpu_and_4bit_refused_in_one_line(family, clip):
    _, folder, settings = family
    with pytest.raises(ModelLoadError) as refused:
        load_model(folder, device="cpu", quantize="4bit")
    message = str(refused.value)
    assert "\n" not in message and "CUDA GPU" in message and "--quantize 8bit" in message
    said = subprocess.run([sys.executable, "-m", "vidlab.cli", "chat", "--model", str(folder), "--video", str(clip),
                           "--device", "cpu", "--quantize", "4bit", QUESTION], capture_output=True, text=True,
                          timeout=300)
    lines = said.stderr.strip().splitlines()
    assert said.returncode == 2 and lines[-1].startswith("error: --quantize 4bit") and "--quantize 8bit" in lines[-1]
    pytest.importorskip("torchao")
    model, processor = load_model(folder, dtype="fp32", device="cpu", quantize="8bit")
    full, _ = load_model(folder, dtype="fp32", device="cpu")
    llm = dict(model.named_modules())
    quantized = [name for name, module in llm.items() if isinstance(module, torch.nn.Linear)
                 and "language_model" in name and type(module.weight).__name__ != "Parameter"]
    assert quantized, "the LLM's Linear weights should be int8"
    assert not any("vision_model" in name or "projector" in name for name in quantized)
    got, want = _logits(model, processor, settings, clip), _logits(full, processor, settings, clip)
    assert float((got - want).abs().max() / want.abs().max()) < 0.05  # int8 weights: close, not equal
    assert _in_process((model, processor), settings, clip)


def test_qlora_off_a_gpu_is_refused_in_one_line_naming_lora(family, clip, tmp_path):
    from vidlab import train
    from vidlab.errors import VidlabError
    from vidlab.training.config import load_config

    _, folder, _ = family
    (tmp_path / "train.jsonl").write_text(json.dumps({"video": [str(clip)], "conversations": [
        {"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": "A square."}]}) + "\n")
    config = load_config(None, ["method=qlora", f"model.path={folder}", f"data.train=[{tmp_path / 'train.jsonl'}]",
                                f"output.dir={tmp_path / 'qlora'}", "data.workers=0", "train.max_steps=1",
                                "learning_rates.llm=0.001",
                                "output.tensorboard=false", "output.progress=false"])
    with pytest.raises(VidlabError) as refused:
        train(config)
    assert "\n" not in str(refused.value) and "CUDA GPU" in str(refused.value) and "method lora" in str(refused.value)
