"""Record what LLaMA-VID's own code computes, for tests/test_seeds_llama_vid.py.

Runs in a scratch environment with the original's pins (never vidlab's; see tools/seeds/README.md):
it builds one tiny random checkpoint with the original's classes (a tiny Llama, its EVA ViT saved as
the separate `eva_vit_g.pth` it loads at start, its BERT Q-Former built from a tiny
`bert-base-uncased` folder, all saved by the original's `save_pretrained` in the released sharded
layout), loads it back as its `load_pretrained_model` does, then records on fixed inputs: prompts and
token ids of its vicuna_v1 template (through LLaVA's `tokenizer_image_token`), the Q-Former's BERT
ids (truncated from the left at 256), its CLIP pixels of non-square frames and of an image, its
logits for a video question, a long question and an image, its greedy answer, and which frames its
1 fps video reader (decord) picks. And its long-video (movie) path (`movie.json`, `movie.safetensors`; alone
with --only-movie, on the checkpoint already in the output folder): its SRT reader and `load_video_input` on
awkward subtitle files, the prompt and ids of run_llamavid_movie.py's `run_inference`, and long-video logits.

Only the outputs and the tiny checkpoint are written (tests/data/seeds/llama_vid/); none of its code.

What is changed to run it on a CPU, and why:
- `timm` is stubbed with the four helpers its EVA ViT imports (to_2tuple, trunc_normal_, drop_path,
  register_model): timm 0.6.13 needs a torchvision build that does not exist for the CPU torch here.
  drop_path only acts in training with a drop rate (0 here).
- Its EVA tower is built at the released widths (1408, 39 blocks, 16 heads) written into its code;
  here `VisionTransformer` gets depth 2 and the tower width 88 (one 88-wide head, as 1408 // 88
  heads of 88): the same classes and arithmetic, smaller.
- `load_pretrained_model` is followed step by step, but in float32 on the CPU (it asks for float16
  and CUDA), and `initialize_attention_modules(for_eval=False)` (True only casts the Q-Former to
  float16 on the GPU).
- LLaVA (its dependency, pinned commit) is read as a namespace package so that `llava.mm_utils` and
  `llava.constants` load without LLaVA's own model classes.
- The tiny Q-Former's feature width is LLaMA-VID's fixed 1408 ('qformer_pretrain'), so with the
  88-wide tower its `vlm_att_bert_proj` (88 -> 1408) exists; at the released width (1408) it does not.
- The movie path: `run_inference` runs as written with its loader returning the tiny tokenizer and an object
  that keeps what `update_prompt` and `generate` are given (the prompt, ids and features it would send);
  `whisper` (speech-to-text, not used by the functions recorded) and its flash-attention patch (CUDA only) are
  stubbed, `Tensor.cuda` leaves tensors on the CPU. For the logits, its long-video switch
  (`images[0].shape[-1] > 1000`: EVA's 1408-wide features against 224-px pixels) is made at the tiny width
  (> 87) in a copy of that one method, and `vlm_att_query`, which its loader leaves in float16, is given in
  float32 (the same values) so that the long path's float32 buffer matches the rest of the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

PINNED_COMMIT = "b3d3ae2b1c116c1c0ce364197609133fa3df2d9b"  # dvlab-research/LLaMA-VID, main on 2026-12-07
LLAVA_COMMIT = "1619889c712e347be1cb4f78ec66e7cf414ac1a6"  # haotian-liu/LLaVA, as its pyproject pins
REPO = "https://github.com/dvlab-research/LLaMA-VID"
LLAVA_REPO = "https://github.com/haotian-liu/LLaVA"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "seeds" / "llama_vid"
MEDIA = ROOT / "tests" / "data" / "fidelity" / "media"  # frames show their index in binary (frames_corpus.py)

QUESTION = "What colour is the shape that moves left?"
AWKWARD = "  Où va-t-il?\n\nDescribe   the 2 shapes, 3.5 s in <b>bold</b> 🙂 漢字 ASSISTANT: "
ANSWER = "A red circle moves left."
LONG = " ".join(f"word{i} shape moves left" for i in range(120))  # more than 256 BERT word pieces
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
TOWER_WIDTH, TOWER_DEPTH, IMAGE_SIZE = 88, 2, 56


def _stub_timm() -> None:
    import transformers  # noqa: F401  (first: it looks the real packages up, and stubs have no import spec)

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def drop_path(x, drop_prob=0.0, training=False):
        if not drop_prob or not training:
            return x
        raise RuntimeError("drop_path with a drop rate is not stubbed")

    layers = types.ModuleType("timm.models.layers")
    layers.to_2tuple, layers.drop_path, layers.trunc_normal_ = to_2tuple, drop_path, torch.nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    sys.modules.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                        "timm.models.layers": layers, "timm.models.registry": registry})


def _llava_namespace(llava: Path) -> None:
    package = types.ModuleType("llava")
    package.__path__ = [str(llava / "llava")]
    sys.modules["llava"] = package


def _checkout(path: Path | None, repo: str, commit: str, name: str) -> Path:
    if path is not None:
        return path
    target = Path(tempfile.mkdtemp()) / name
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "fetch", "-q", "--depth", "1", repo, commit], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", "FETCH_HEAD"], check=True)
    return target


def _small_tower() -> None:
    """Its EVA ViT class at depth 2 and its tower at width 88 (the released 1408 and 39 are literals in its code)."""
    from llamavid.model.multimodal_encoder import eva_vit

    full = eva_vit.VisionTransformer

    def small(**kwargs):
        kwargs["depth"] = TOWER_DEPTH
        return full(**kwargs)

    eva_vit.VisionTransformer = small
    init = eva_vit.EVAVisionTowerLavis.__init__

    def narrow(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.out_channel = TOWER_WIDTH

    eva_vit.EVAVisionTowerLavis.__init__ = narrow


def _llama_tokenizer(folder: Path):
    """A tiny SentencePiece BPE in Llama's form (byte fallback, <unk> <s> </s> = 0 1 2, a dummy prefix)."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    corpus = [SYSTEM, QUESTION, ANSWER, AWKWARD, "USER: ASSISTANT: Describe the video. What happens? Which shape?",
              "A green triangle moves right. The square is blue."] * 20
    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "sp"), vocab_size=420, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
        character_coverage=1.0, hard_vocab_limit=False, allow_whitespace_only_pieces=True, minloglevel=2)
    return LlamaTokenizer(str(folder / "sp.model"))


def _bert_folder(folder: Path) -> None:
    """A tiny uncased WordPiece vocabulary and BERT config where its code reads `bert-base-uncased`."""
    from transformers import BertConfig

    words = ["what", "colour", "is", "the", "shape", "that", "moves", "left", "describe", "word", "bold"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("?.,!-<>/:'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words,
             *(f"##{w}" for w in words)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512).save_pretrained(folder)


def _processor_folder(folder: Path, source: Path) -> None:
    """Its clip-patch14-224 processor folder, at the tiny image size."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = json.loads((source / "llamavid/processor/clip-patch14-224/preprocessor_config.json").read_text())
    settings.update(size=IMAGE_SIZE, crop_size=IMAGE_SIZE)
    (folder / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))
    vision = json.loads((source / "llamavid/processor/clip-patch14-224/config.json").read_text())
    vision.update(image_size=IMAGE_SIZE)
    (folder / "config.json").write_text(json.dumps(vision, indent=2))


def _noise(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Large enough random weights that the logits depend on every part."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if not any(s in name for s in skip):
                parameter.add_(torch.randn_like(parameter) * 0.1)


def _build(work: Path, seed: int, bert_type: str = "qformer_pretrain", compress: str = "mean",
           name: str = "llama-vid-tiny") -> Path:
    """A random checkpoint saved by the original (float16 weights, so that both sides read the same numbers)."""
    from llamavid.model import LlavaLlamaAttForCausalLM
    from llamavid.model.language_model.llava_llama_vid import LlavaConfig
    from llamavid.model.multimodal_encoder.eva_vit import VisionTransformer
    from llamavid.model.qformer import BertConfig as QFormerBertConfig
    from llamavid.model.qformer import BertLMHeadModel as QFormer
    from transformers import BertLMHeadModel  # noqa: F401  (its qformer module expects transformers loaded)

    torch.manual_seed(seed)
    # the tower file its config names (as ./model_zoo/LAVIS/eva_vit_g.pth in the released ones)
    from functools import partial
    if not (work / "eva_vit_g.pth").exists():  # one tower file for both checkpoints
        tower = VisionTransformer(img_size=IMAGE_SIZE, patch_size=14, use_mean_pooling=False, embed_dim=TOWER_WIDTH,
                                  num_heads=TOWER_WIDTH // 88, mlp_ratio=4.3637, qkv_bias=True,
                                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
        _noise(tower)
        torch.save({k: v.half() for k, v in tower.state_dict().items()}, work / "eva_vit_g.pth")
    # the BERT weights its init_bert reads from "bert-base-uncased" (the cross-attention layers are new there)
    bert_config = QFormerBertConfig.from_pretrained(work / "bert-base-uncased")
    width = 1408 if "pretrain" in bert_type else TOWER_WIDTH  # its init: 1408 for the pretrained Q-Former kinds
    bert_config.encoder_width, bert_config.add_cross_attention, bert_config.cross_attention_freq = width, True, 2
    QFormer(bert_config).save_pretrained(work / "bert-base-uncased")

    tokenizer = _llama_tokenizer(work / "sp")
    config = LlavaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5,
        mm_vision_tower="./eva_vit_g.pth", image_processor="./processor", mm_projector_type="mlp2x_gelu",
        mm_hidden_size=TOWER_WIDTH, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, image_aspect_ratio="square",
        bert_type=bert_type, num_query=4, compress_type=compress, max_token=2048)
    model = LlavaLlamaAttForCausalLM(config)
    (work / "base").mkdir(exist_ok=True)
    (work / "base" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {}}))
    args = types.SimpleNamespace(bert_type=bert_type, num_query=4, compress_type=compress,
                                 model_path=str(work / "base"), pretrain_mm_mlp_adapter=None, pretrain_qformer=None)
    model.get_model().initialize_attention_modules(args)  # a new Q-Former and projections (training's stage 1)
    model.config.bert_type, model.config.num_query, model.config.compress_type = bert_type, 4, compress
    _noise(model, skip=("lm_head",))
    folder = work / name
    model.half().save_pretrained(folder, max_shard_size="300KB", safe_serialization=False)
    tokenizer.save_pretrained(folder)
    return folder


def _load(folder: Path):
    """Its load_pretrained_model for a 'vid' model, step by step, in float32 on the CPU."""
    from llamavid.model import LlavaLlamaAttForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)
    model = LlavaLlamaAttForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    if getattr(model.config, "mm_use_im_patch_token", True):
        tokenizer.add_tokens(["<im_patch>"], special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    vision_tower = model.get_vision_tower()
    if not vision_tower.is_loaded:
        vision_tower.load_model()
    model.config.model_path = str(folder)
    model.get_model().initialize_attention_modules(model.config, for_eval=False)
    return tokenizer, model.eval(), vision_tower.image_processor


def _prompt(messages: list[tuple[str, str | None]]) -> str:
    from llamavid.conversation import conv_templates

    conv = conv_templates["vicuna_v1"].copy()
    for role, text in messages:
        conv.append_message(conv.roles[0] if role == "user" else conv.roles[1], text)
    return conv.get_prompt()


def record_prompts(tokenizer, model) -> dict:
    """vicuna_v1 prompts and ids (LLaVA's tokenizer_image_token), and the Q-Former's BERT ids."""
    from llava.mm_utils import tokenizer_image_token

    cases = {
        "video_question": [("user", "<image>\n" + QUESTION), ("assistant", None)],
        "awkward_question": [("user", "<image>\n" + AWKWARD), ("assistant", None)],
        "text_question": [("user", QUESTION), ("assistant", None)],
        "follow_up": [("user", "<image>\n" + QUESTION), ("assistant", ANSWER), ("user", AWKWARD),
                      ("assistant", None)],
    }
    out = {}
    for case, messages in cases.items():
        prompt = _prompt(messages)
        out[case] = {"prompt": prompt, "input_ids": tokenizer_image_token(prompt, tokenizer, -200)}
    bert = model.get_model().vlm_att_tokenlizer
    for case, text in {"question": QUESTION, "awkward": AWKWARD, "long": LONG}.items():
        out[f"qformer/{case}"] = {"text": text, "input_ids": bert([text], padding="longest", truncation=True,
                                                                  max_length=256).input_ids[0]}
    return out


def _frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 48, 72, 3), dtype=np.uint8)


def _image():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(70, 40, 3), dtype=np.uint8))


def record_model(tokenizer, model, processor, runs: tuple[str, ...] = ("video", "long", "image")) -> tuple[dict, dict]:
    """Pixels, logits (video question, long question, image) and a greedy answer."""
    from llava.mm_utils import tokenizer_image_token

    video = processor.preprocess(_frames(), return_tensors="pt")["pixel_values"]
    image = processor.preprocess(_image(), return_tensors="pt")["pixel_values"]
    tensors, record = {"video_pixels": video, "image_pixels": image}, {}
    cases = {"video": (QUESTION, [video]), "long": (LONG, [video]), "image": (QUESTION, image)}
    with torch.inference_mode():
        for name in runs:
            question, images = cases[name]
            ids = tokenizer_image_token(_prompt([("user", "<image>\n" + question), ("assistant", None)]),
                                        tokenizer, -200, return_tensors="pt").unsqueeze(0)
            model.update_prompt([[question]])
            logits = model(input_ids=ids, images=images).logits[0]
            tensors[f"{name}/logits"] = logits[-16:] if name == "long" else logits  # the last rows see it all
            record[name] = {"input_ids": ids[0].tolist()}
        ids = tokenizer_image_token(_prompt([("user", "<image>\n" + QUESTION), ("assistant", None)]),
                                    tokenizer, -200, return_tensors="pt").unsqueeze(0)
        model.update_prompt([[QUESTION]])
        answer = model.generate(ids, images=[video], do_sample=False, max_new_tokens=6, use_cache=True)
        record["answer"] = answer[0, ids.shape[1]:].tolist()
    return tensors, record


def record_frame_choice() -> dict:
    """Which frames its evaluation's load_video (decord, every round(average fps)-th frame) picks, read off pixels."""
    try:
        from llamavid.eval.model_msvd_qa import load_video
    except ImportError as err:
        return {"skipped": f"{type(err).__name__}: {err}"}
    out = {}
    for name in ("cfr25.mp4", "short.mp4", "long5fps.mp4", "ntsc2997.mp4", "vfr.mp4", "bframes.mp4",
                 "late_start.mp4"):
        video = load_video(str(MEDIA / name))  # (frames, H, W, 3) uint8
        bar = video.shape[2] // 10
        out[name] = [sum(1 << b for b in range(10) if float(f[:, b * bar:(b + 1) * bar].mean()) > 127)
                     for f in video]
    return out


# LLaMA-VID's long-video (movie) path on awkward subtitle files: (name, file name, its text, a twin with what
# vidlab reads it as where vidlab differs on purpose (None: the same), frame indices, average rate, duration).
MOVIE_QUESTION = "Who says hello?"
MOVIE_CASES = [
    ("basic", "basic.srt",
     "1\n00:00:00,500 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,600 --> 00:00:01,900\nShort one\n\n"
     "3\n00:00:02,000 --> 00:00:03,200\nTwo\nlines\n\n4\n00:00:04,200 --> 00:00:04,800\nLast words\n",
     None, [0, 25, 50, 75, 100], 25.0, 5.0),
    ("overlapping", "overlapping.srt",
     "1\n00:00:00,000 --> 00:00:03,500\nA long line\n\n2\n00:00:01,000 --> 00:00:02,000\ninside it\n\n"
     "3\n00:00:02,500 --> 00:00:04,500\noverlaps the first\n\n4\n00:00:00,200 --> 00:00:00,900\nout of order\n",
     None, [0, 25, 50, 75, 100], 25.0, 5.0),
    ("empty", "empty.srt",
     "1\n00:00:00,100 --> 00:00:00,400\n\n2\n00:00:00,500 --> 00:00:01,200\n...\n\n"
     "3\n00:00:01,300 --> 00:00:02,200\nWait... what?\x00\n...and then\n\n"
     "4\n00:00:02,300 --> 00:00:02,600\n   spaced   out  \n",
     None, [0, 25, 50, 75], 25.0, 4.0),
    ("non_ascii", "non_ascii.srt",
     "1\n00:00:00,100 --> 00:00:00,900\nOù va-t-il ? naïve café\n\n2\n00:00:01,100 --> 00:00:01,900\n漢字とかな\n\n"
     "3\n00:00:02,100 --> 00:00:02,900\n🙂 Ça va ?\n",
     None, [0, 25, 50], 25.0, 3.0),
    ("past_end", "past_end.srt",
     "1\n00:00:00,000 --> 00:00:00,000\nat zero\n\n2\n00:00:00,100 --> 00:00:00,200\nearly\n\n"
     "3\n00:00:02,500 --> 00:00:02,900\nafter the last frame\n\n4\n00:00:03,500 --> 00:00:04,000\npast the end\n",
     "1\n00:00:00,100 --> 00:00:00,200\nearly\n\n2\n00:00:02,500 --> 00:00:02,900\nafter the last frame\n",
     [0, 30, 60], 29.97, 3.0),
    ("vtt_styling", "styled.vtt",
     "WEBVTT\n\nNOTE a comment\n\n00:00.500 --> 00:01.500 align:start position:10%\n<v Bob><c.yellow>Hello</c> "
     "<i>there</i>\n\nsecond\n00:00:02.000 --> 00:00:03.200\n<b>Bold</b> words\n",
     "1\n00:00:00,500 --> 00:00:01,500\nHello there\n\n2\n00:00:02,000 --> 00:00:03,200\nBold words\n",
     [0, 25, 50, 75], 25.0, 4.0),
    ("srt_tags", "tags.srt",
     "1\n00:00:00,500 --> 00:00:01,500\n<i>Hello</i> there\n\n2\n00:00:02,000 --> 00:00:03,200\n{\\an8}On top\n",
     "1\n00:00:00,500 --> 00:00:01,500\nHello there\n\n2\n00:00:02,000 --> 00:00:03,200\nOn top\n",
     [0, 25, 50, 75], 25.0, 4.0),
]


def _script(source: Path, relative: str, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, source / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _long_video_switch_at_tiny_width() -> None:
    """Its long-video switch is `images[0].shape[-1] > 1000` (EVA's 1408-wide features, not 224-px pixels);
    the tiny tower is 88 wide, so the same test is made at 87. Nothing else in the method changes."""
    import inspect
    import textwrap

    from llamavid.model import llamavid_arch

    cls = llamavid_arch.LLaMAVIDMetaForCausalLM
    text = textwrap.dedent(inspect.getsource(cls.prepare_inputs_labels_for_multimodal))
    assert text.count("images[0].shape[-1] > 1000") == 1
    namespace: dict = {}
    exec(text.replace("images[0].shape[-1] > 1000", f"images[0].shape[-1] > {TOWER_WIDTH - 1}"),
         llamavid_arch.__dict__, namespace)
    cls.prepare_inputs_labels_for_multimodal = namespace["prepare_inputs_labels_for_multimodal"]


def record_movie(tokenizer, model, folder: Path, source: Path, work: Path) -> tuple[dict, dict]:
    """Its long-video path: its SRT reader and `load_video_input` (extract_movienet_features.py; the same function
    in extract_video_features_subtitles.py), the prompt and ids of run_llamavid_movie.py's `run_inference` (run
    with its model call captured), and logits of the long-video path for one movie (also with
    its long model's linear rope scaling)."""
    import pickle

    sys.modules["whisper"] = types.ModuleType("whisper")  # only its speech-to-text step uses it
    flash = types.ModuleType("llamavid.train.llama_flash_attn_monkey_patch")  # flash-attn: CUDA only
    flash.replace_llama_attn_with_flash_attn = lambda inference=False: None
    sys.modules["llamavid.train.llama_flash_attn_monkey_patch"] = flash
    movienet = _script(source, "scripts/extra_tool/extract_movienet_features.py", "extract_movienet_features")
    custom = _script(source, "scripts/extra_tool/extract_video_features_subtitles.py", "extract_video_features")
    import inspect

    assert inspect.getsource(movienet.load_video_input) == inspect.getsource(custom.load_video_input)
    sys.path.insert(0, str(source / "llamavid" / "serve"))
    import run_llamavid_movie as movie

    captured: dict = {}

    class Captured:  # stands in for its model: takes what run_inference gives it
        config = types.SimpleNamespace(mm_use_im_start_end=False)

        def update_prompt(self, prompts):
            captured["prompts"] = prompts

        def generate(self, input_ids, images=None, **kwargs):
            captured["input_ids"], captured["images"] = input_ids, images
            return torch.cat([input_ids, torch.tensor([[tokenizer.eos_token_id]])], dim=1)

    movie.load_pretrained_model = lambda *args: (tokenizer, Captured(), None, 2048)
    tokenize = movie.tokenizer_image_token

    def keep_prompt(prompt, *args, **kwargs):
        captured["prompt"] = prompt
        return tokenize(prompt, *args, **kwargs)

    movie.tokenizer_image_token = keep_prompt
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # its tensors go to the GPU; here they stay

    def infer(feats, video_input: str) -> None:
        """Its movie script on saved features and their interleaved subtitles, as it reads them from disk."""
        with open(work / "movie.pkl", "wb") as f:
            pickle.dump({"feats": feats, "inputs": video_input}, f)
        args = types.SimpleNamespace(model_path="movie", model_base=None, video_file=str(work / "movie.pkl"),
                                     video_token=2, question=MOVIE_QUESTION, conv_mode="vicuna_v1",
                                     pure_text=False, load_8bit=False, load_4bit=False)
        movie.run_inference(args)

    def run(video_input: str, frames: int) -> dict:
        infer(np.random.default_rng(2).standard_normal((frames, 257, 4)).astype("float16"), video_input)
        ids = captured["input_ids"][0].tolist()
        assert captured["images"][0].shape == (frames, 256, 4)  # feats[:, 1:]
        return {"prompt": captured["prompt"], "input_ids": ids, "prompts": captured["prompts"]}

    def outcome(text: str, file_name: str, indices, fps) -> dict:
        path = work / file_name
        path.write_bytes(text.encode("utf-8"))
        try:
            cues = movienet.load_subtitles(str(path))
        except Exception as err:  # noqa: BLE001  (what its reader does with the file is the record)
            return {"error": type(err).__name__}
        times = [x / fps for x in indices]
        video_input = movienet.load_video_input(cues, times)
        return {"cues": cues, "frame_time": times, "video_input": video_input,
                **run(video_input, len(indices))}

    cases = {}
    for name, file_name, text, twin, indices, fps, duration in MOVIE_CASES:
        case = {"file": file_name, "text": text, "indices": indices, "fps": fps, "duration": duration,
                "original": outcome(text, file_name, indices, fps)}
        if twin is not None:
            case["twin"] = twin
            case["original_on_twin"] = outcome(twin, "twin_" + file_name.rsplit(".", 1)[0] + ".srt", indices, fps)
        cases[name] = case
    torch.Tensor.cuda = cuda

    # logits of its long-video path: the features its extractor saves (tower output, float16), the basic case's
    # prompt; frames: the recorded 3 frames at 0, 1, 2 s
    _long_video_switch_at_tiny_width()
    name, file_name, text, _, _, _, _ = MOVIE_CASES[0]
    pixels = model.get_model().get_vision_tower().image_processor.preprocess(_frames(), return_tensors="pt")[
        "pixel_values"]
    with torch.inference_mode():
        feats = model.get_model().get_vision_tower()(pixels).numpy().astype("float16")  # as it saves them
        cues = movienet.load_subtitles(str(work / file_name))
        video_input = movienet.load_video_input(cues, [0.0, 1.0, 2.0])
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        infer(feats, video_input)
        torch.Tensor.cuda = cuda
        ids, video = captured["input_ids"], captured["images"]
        # its loader leaves `vlm_att_query` in float16 (the rest is float32 here), and the long path makes its
        # embedding buffer in the model's dtype, read off the first such parameter: the same values, in float32
        model.get_model().vlm_att_query.data = model.get_model().vlm_att_query.data.float()
        model.update_prompt(captured["prompts"])
        logits = model(input_ids=ids, images=[v.float() for v in video]).logits[0]  # float32 here, half there
    # the long-video model's stretched positions (its training writes rope_scaling linear, factor
    # ceil(model_max_length / max_position_embeddings)): the same checkpoint with factor 4 in its config
    stretched = work / "llama-vid-tiny-rope4"
    stretched.mkdir(exist_ok=True)
    for file in folder.iterdir():
        (stretched / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (stretched / "config.json").write_text(json.dumps({**config, "rope_scaling": {"type": "linear", "factor": 4.0}}))
    _, long_model, _ = _load(stretched)
    long_model.get_model().vlm_att_query.data = long_model.get_model().vlm_att_query.data.float()
    with torch.inference_mode():
        long_model.update_prompt(captured["prompts"])
        stretched_logits = long_model(input_ids=ids, images=[v.float() for v in video]).logits[0]
    record = {"question": MOVIE_QUESTION, "cases": cases,
              "logits_case": {"file": file_name, "frame_time": [0.0, 1.0, 2.0], "video_input": video_input,
                              "prompt": captured["prompt"], "input_ids": ids[0].tolist(),
                              "prompts": captured["prompts"]}}
    return record, {"movie/logits": logits, "movie/rope_linear_4/logits": stretched_logits[-16:],
                    "movie/features": torch.from_numpy(feats.astype("float32"))}


def _write_movie(out: Path, record: dict, tensors: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / "movie.safetensors"))
    (out / "movie.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, help="a checkout of the pinned LLaMA-VID commit (default: fetch it)")
    parser.add_argument("--llava", type=Path, help="a checkout of the pinned LLaVA commit (default: fetch it)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only-movie", action="store_true",
                        help="write only the long-video recordings (movie.json, movie.safetensors)")
    args = parser.parse_args()
    source = _checkout(args.checkout, REPO, PINNED_COMMIT, "LLaMA-VID")
    llava = _checkout(args.llava, LLAVA_REPO, LLAVA_COMMIT, "LLaVA")
    _stub_timm()
    sys.path.insert(0, str(source))
    _llava_namespace(llava)
    _small_tower()
    from safetensors.torch import save_file

    work = Path(tempfile.mkdtemp())
    os.chdir(work)  # its config names the tower, processor and BERT by paths from the working folder
    _bert_folder(work / "bert-base-uncased")
    _processor_folder(work / "processor", source)
    folder = _build(work, seed=0)
    if args.only_movie:  # the very checkpoint the other recordings were made with (another sentencepiece
        # version may train another tokenizer.model), over the one just built
        for file in (args.out / "checkpoint").iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        (work / "eva_vit_g.pth").write_bytes((args.out / "eva_vit_g.pth").read_bytes())
    tokenizer, model, processor = _load(folder)
    _write_movie(args.out, *record_movie(tokenizer, model, folder, source, work))
    if args.only_movie:
        print(f"wrote {args.out / 'movie.json'}")
        return
    record = {"commit": PINNED_COMMIT, "llava_commit": LLAVA_COMMIT, "question": QUESTION, "awkward": AWKWARD,
              "answer": ANSWER, "long": LONG, "templates": record_prompts(tokenizer, model)}
    tensors, record["model"] = record_model(tokenizer, model, processor)
    tensors["frames"] = torch.from_numpy(_frames())
    tensors["image"] = torch.from_numpy(np.array(_image()))
    record["frame_choice"] = record_frame_choice()
    # the other Q-Former kind (no LayerNorm, reading the tower's width) and grid:2 content tokens (4 a frame)
    grid = _build(work, seed=1, bert_type="qformer", compress="grid:2", name="llama-vid-tiny-grid")
    tokenizer, model, processor = _load(grid)
    grid_tensors, record["grid"] = record_model(tokenizer, model, processor, runs=("video",))
    tensors["grid/video/logits"] = grid_tensors["video/logits"]
    out = args.out
    for part, files in (("checkpoint", sorted(folder.iterdir())), ("checkpoint-grid", sorted(grid.iterdir())),
                        ("", [work / "eva_vit_g.pth"]),
                        ("bert-base-uncased", [work / "bert-base-uncased" / "vocab.txt",
                                               work / "bert-base-uncased" / "tokenizer_config.json",
                                               work / "bert-base-uncased" / "config.json"]),
                        ("processor", sorted((work / "processor").iterdir()))):
        (out / part).mkdir(parents=True, exist_ok=True)
        for file in files:  # as the original saved them
            (out / part / file.name).write_bytes(file.read_bytes())
    save_file({k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in tensors.items()},
              str(out / "recorded.safetensors"))
    (out / "recorded.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
