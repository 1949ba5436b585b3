"""Record what TinyLLaVA-Video's own code computes, for tests/test_seeds_tinyllava_video.py.

Runs in a scratch environment with the original's pins (never vidlab's; see tools/seeds/README.md):
it builds two tiny random checkpoints with the original's classes (group and naive resampler, a tiny
Qwen2 LLM and SigLIP tower, saved by the original's `save_pretrained`, in the released layout), then
records on fixed inputs: the prompts and token ids of its qwen2_base / phi templates (eval and train
modes, labels included), its SigLIP pixels of fixed frames and images, its logits for a video
question, its greedy answer, what it does with an image, and which frames its video readers pick.

Only the outputs are written (tests/data/seeds/tinyllava_video/); none of the original's code.

What is changed to run it on a CPU, and why:
- `deepspeed` and `peft.tuners.lora` are stubbed: only its training helpers use them (imported by
  tinyllava.utils), and nothing recorded calls those. So is `torchvision.datasets.folder`, which
  pytorchvideo imports for labelled data sets only (no torchvision build matches the CPU torch here);
  its video reading (decord) is real.
- Python 3.11 refuses dataclass instances as field defaults unless hashable (3.10 let them
  through); its templates use formatter instances as defaults, so its formatter classes get
  object's hash before the templates are defined. Nothing else about them changes.
- Its resamplers build their position code with `device='cuda'` written into the code; the
  connector modules get a `torch` whose `zeros` / `arange` make CPU tensors and whose tensors'
  `.to(device=...)` stays on the CPU. The arithmetic (float16 position code included) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

PINNED_COMMIT = "2f02c9704903346bfda2eb3c75f707b892410c07"  # ZhangXJ199/TinyLLaVA-Video, main on 2026-12-07
REPO = "https://github.com/ZhangXJ199/TinyLLaVA-Video"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "seeds" / "tinyllava_video"
MEDIA = ROOT / "tests" / "data" / "fidelity" / "media"  # frames show their index in binary (frames_corpus.py)

QUESTION = "What colour is the shape that moves left?"
ANSWERS = ["A red circle moves left.", "It moves quickly."]


def _stub_training_imports() -> None:
    import transformers  # noqa: F401  (first: it looks the real packages up, and stubs have no import spec)

    for name in ("deepspeed", "deepspeed.runtime", "deepspeed.runtime.zero",
                 "deepspeed.runtime.zero.partition_parameters", "peft", "peft.tuners", "peft.tuners.lora",
                 "torchvision", "torchvision.datasets", "torchvision.datasets.folder"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["deepspeed"].zero = types.SimpleNamespace(GatheredParameters=None)
    sys.modules["deepspeed.runtime.zero.partition_parameters"].ZeroParamStatus = None
    sys.modules["peft.tuners.lora"].LoraLayer = type("LoraLayer", (), {})
    sys.modules["torchvision.datasets.folder"].make_dataset = None


class _CpuTensor(torch.Tensor):
    """A tensor whose `.to(device=...)` keeps it on the CPU (the original names 'cuda' in its code)."""

    def to(self, *args, **kwargs):
        kwargs.pop("device", None)
        args = tuple(a for a in args if not isinstance(a, (str, torch.device)))
        return super().to(*args, **kwargs).as_subclass(torch.Tensor)


def _cpu_torch() -> types.ModuleType:
    shim = types.ModuleType("torch_on_cpu")
    shim.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})

    def on_cpu(make):
        def made(*args, **kwargs):
            kwargs["device"] = "cpu"
            return make(*args, **kwargs).as_subclass(_CpuTensor)
        return made

    shim.zeros, shim.arange = on_cpu(torch.zeros), on_cpu(torch.arange)
    return shim


def _hashable_formatters(source: Path) -> None:
    """Its formatter module, loaded ahead of its package (whose templates need the hash) with hashable classes."""
    import importlib.util

    name = "tinyllava.data.template.formatter"
    spec = importlib.util.spec_from_file_location(name, source / "tinyllava/data/template/formatter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for cls in (module.Formatter, module.EmptyFormatter, module.StringFormatter):
        cls.__hash__ = object.__hash__
    sys.modules[name] = module


def _checkout(path: Path | None) -> Path:
    if path is not None:
        return path
    target = Path(tempfile.mkdtemp()) / "TinyLLaVA-Video"
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "fetch", "-q", "--depth", "1", REPO, PINNED_COMMIT], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", "FETCH_HEAD"], check=True)
    return target


def _tokenizer_folder(folder: Path):
    """A tiny byte-level BPE in Qwen2's format (vocab.json + merges.txt, <|endoftext|> as eos and pad)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    corpus = [QUESTION, *ANSWERS, "A chat between a curious user and an artificial intelligence assistant.",
              "The assistant gives helpful, detailed, and polite answers to the user's questions.",
              "USER: ASSISTANT: Describe the video. What happens? Which shape is shown?"] * 5
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = Qwen2Tokenizer(folder / "vocab.json", folder / "merges.txt", eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>", unk_token=None)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _parts(work: Path):
    """The tiny LLM and vision tower folders the original's config points at (it loads configs and the
    tokenizer / image processor from these paths, as from hub ids)."""
    from transformers import Qwen2Config, SiglipImageProcessor, SiglipVisionConfig

    llm = work / "tiny-qwen2"
    tokenizer = _tokenizer_folder(llm)
    Qwen2Config(vocab_size=len(tokenizer) + 8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                tie_word_embeddings=True).save_pretrained(llm)
    vision = work / "tiny-siglip"
    SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       image_size=32, patch_size=8).save_pretrained(vision)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vision)
    return llm, vision


def _build(work: Path, llm: Path, vision: Path, connector: str, layers: int, seed: int) -> Path:
    """A random checkpoint saved by the original (float16 weights, so that both sides read the same numbers)."""
    from tinyllava.model import TinyLlavaConfig, TinyLlavaForConditionalGeneration

    config = TinyLlavaConfig(llm_model_name_or_path=str(llm), vision_model_name_or_path=str(vision),
                             connector_type=connector, num_queries=8, group=4, num_resampler_layers=layers,
                             image_aspect_ratio="square")
    torch.manual_seed(seed)
    model = TinyLlavaForConditionalGeneration(config)
    with torch.no_grad():  # large enough weights that the logits depend on every part
        for name, parameter in model.named_parameters():
            if "lm_head" not in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    folder = work / f"checkpoint-{connector}"
    model.half().save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder


def _load(folder: Path):
    from tinyllava.model import TinyLlavaForConditionalGeneration

    return TinyLlavaForConditionalGeneration.from_pretrained(folder, torch_dtype=torch.float32).eval()


def _frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 40, 48, 3), dtype=np.uint8)


def _image():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8))


def record_templates(tokenizer) -> dict:
    """Prompts, ids and labels of both templates (eval: a question; train: two turns, labels)."""
    from tinyllava.data.template import TemplateFactory

    out = {}
    for name in ("qwen2_base", "phi"):
        template = TemplateFactory(name)()
        cases = {  # the original writes <image> for a video too
            "picture_prompt": ([{"from": "human", "value": "<image>\n" + QUESTION}, {"from": "gpt", "value": None}],
                             "eval"),
            "text_prompt": ([{"from": "human", "value": QUESTION}, {"from": "gpt", "value": None}], "eval"),
            "two_turns": ([{"from": "human", "value": "<image>\n" + QUESTION}, {"from": "gpt", "value": ANSWERS[0]},
                           {"from": "human", "value": "How fast?"}, {"from": "gpt", "value": ANSWERS[1]}], "train"),
        }
        for case, (messages, mode) in cases.items():
            result = template.encode(messages, tokenizer, mode=mode)
            entry = {"input_ids": result["input_ids"].tolist()}
            if mode == "eval":
                entry["prompt"] = result["prompt"]
            else:
                entry["labels"] = result["labels"].tolist()
                entry["prompt"] = template.prompt(*template.get_list_from_message(messages))
            out[f"{name}/{case}"] = entry
    return out


def record_model(model, tokenizer, frames: np.ndarray) -> tuple[dict, dict]:
    """The original's pixels for the frames, and its logits and greedy answer for the video question."""
    from tinyllava.data import TextPreprocess, VideoPreprocess
    from tinyllava.utils import DEFAULT_IMAGE_TOKEN, Message

    preprocess = VideoPreprocess(model.vision_tower._image_processor, model.config)
    # as its evaluation and training loaders do: each frame a (3, H, W) uint8 tensor
    video = torch.stack([preprocess(frame) for frame in torch.from_numpy(frames).permute(0, 3, 1, 2)])
    message = Message()
    message.add_message(DEFAULT_IMAGE_TOKEN + "\n" + QUESTION)
    ids = TextPreprocess(tokenizer, "qwen2_base")(message.messages, mode="eval")["input_ids"].unsqueeze(0)
    with torch.inference_mode():
        logits = model(input_ids=ids, video=video.unsqueeze(0)).logits[0]
        answer = model.generate(ids, video=video.unsqueeze(0), do_sample=False, max_new_tokens=6,
                                pad_token_id=tokenizer.pad_token_id, use_cache=True)
    return {"pixel_values": video, "logits": logits}, {"input_ids": ids[0].tolist(), "answer": answer[0].tolist()}


def record_image(model) -> tuple[dict, dict]:
    """Its image pixels (square and pad), and what its model does with an image (it has no image branch)."""
    from tinyllava.data import ImagePreprocess

    tensors = {}
    for ratio in ("square", "pad"):
        tensors[f"image_{ratio}"] = ImagePreprocess(model.vision_tower._image_processor,
                                                    types.SimpleNamespace(image_aspect_ratio=ratio))(_image())
    ids = torch.tensor([[1, 2, -200, 3]])
    try:
        model(input_ids=ids, images=tensors["image_square"].unsqueeze(0))
        outcome = "ran"
    except Exception as err:  # what a user of the original meets
        outcome = f"{type(err).__name__}: {err}"
    return tensors, {"image_forward": outcome}


def record_frame_choice() -> dict:
    """Which frames its video reader picks (16 uniform frames; its 1 fps rule, at most 16), read off the pixels."""
    try:
        from tinyllava.eval.eval_mvbench import MVBench_dataset
    except ImportError as err:
        return {"skipped": f"{type(err).__name__}: {err}"}
    out = {}
    for name in ("cfr25.mp4", "short.mp4", "long5fps.mp4", "ntsc2997.mp4", "vfr.mp4"):
        for num_frames, max_frames in ((16, 16), (0, 16), (0, 64)):
            reader = MVBench_dataset.__new__(MVBench_dataset)
            reader.video_processor = lambda frame: frame  # the decoded frame itself, to read its index
            reader.num_frames, reader.max_num_frames = num_frames, max_frames
            video = reader.read_video(str(MEDIA / name))[0]  # (frames, 3, H, W) uint8
            bar = video.shape[-1] // 10
            indices = [sum(1 << b for b in range(10) if float(f[:, :, b * bar:(b + 1) * bar].float().mean()) > 127)
                       for f in video]
            out[f"{name}/{num_frames}/{max_frames}"] = indices
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, help="a checkout of the pinned commit (default: fetch it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    source = _checkout(args.checkout)
    sys.path.insert(0, str(source))
    _stub_training_imports()
    import tinyllava.model.connector.groupresampler as group
    import tinyllava.model.connector.naiveresampler as naive
    from safetensors.torch import save_file

    group.torch = naive.torch = _cpu_torch()
    _hashable_formatters(source)

    work = Path(tempfile.mkdtemp())
    llm, vision = _parts(work)
    tensors, record = {}, {"commit": PINNED_COMMIT, "question": QUESTION, "answers": ANSWERS}
    for connector, layers, seed in (("groupresampler", 2, 0), ("naiveresampler", 1, 1)):
        folder = _build(work, llm, vision, connector, layers, seed)
        model = _load(folder)
        if connector == "groupresampler":
            record["templates"] = record_templates(model.tokenizer)
            image_tensors, record["image"] = record_image(model)
            tensors.update(image_tensors)
            tensors["frames"] = torch.from_numpy(_frames())
        model_tensors, model_record = record_model(model, model.tokenizer, _frames())
        tensors.update({f"{connector}/{k}": v.float().contiguous() for k, v in model_tensors.items()})
        record[connector] = model_record
        target = args.out / connector
        target.mkdir(parents=True, exist_ok=True)
        for file in folder.iterdir():  # the checkpoint as the original saved it
            (target / file.name).write_bytes(file.read_bytes())
    record["frame_choice"] = record_frame_choice()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / "recorded.safetensors"))
    (args.out / "recorded.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
