"""A tiny VideoLLaMA3 built offline: real classes, real template, small sizes, random weights.

Everything vidlab does is tested on it, and `vidlab quickstart` trains it. The folder it writes is
an ordinary native checkpoint: `VideoLlama3ForConditionalGeneration.from_pretrained` and
`AutoProcessor.from_pretrained` load it with no vidlab code.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2Tokenizer,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from vidlab.errors import VidlabError
from vidlab.folders import staged_folder
from vidlab.models.template import (
    CHAT_TEMPLATE,
    END_OF_TURN,
    IMAGE_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    VIDEO_TOKEN,
)

PATCH = 14


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model. The defaults give about 0.3 M parameters."""

    vocab_size: int = 1024
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 192
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 64
    max_positions: int = 4096
    model_vocab: int | None = None  # rows of the embedding and LM head (None: the tokenizer's size)
    tie_word_embeddings: bool = False
    rope_theta: float | None = None  # None: transformers' Qwen2 default
    rms_norm_eps: float | None = None
    dtype: str = "float32"  # of the saved weights (the real-size shapes are saved in bf16, as released)
    # Visual token budgets (one token = a 28x28 block for video, 14x14 for images).
    video_tokens_per_video: int = 256
    video_min_tokens_per_frame: int = 1
    image_max_tokens: int = 64
    image_min_tokens: int = 4


_COLOURS = "red green blue yellow purple orange white black cyan pink gray brown".split()
_SHAPES = "circle square triangle star diamond cross ring rectangle".split()
_MOTIONS = ["moves left", "moves right", "moves up", "moves down", "stays still", "bounces", "turns"]
_QUESTIONS = [
    "What happens in the video?",
    "Describe the video.",
    "What colour is the shape?",
    "Which shape is shown?",
    "Which direction does the shape move?",
    "Is the shape moving quickly or slowly?",
    "Answer with the option's letter from the given choices directly.",
    "What is in this image? Describe it in detail.",
]
_COMMON = (
    "the a an is are was were be it this that there here what which who where when why how "
    "and or but not no yes of in on at to from with by for about into over under after before "
    "video image frame scene shape object person people man woman dog cat car ball time second "
    "first then next last moves move moving still left right up down top bottom middle corner "
    "quickly slowly fast slow small large big background plain textured answer option letter "
    "choices question describe detail color colour count number one two three four five six"
).split()


def tokenizer_corpus() -> list[str]:
    """Deterministic training text: the words and turns the tiny model will meet."""
    lines = [f"a {c} {s} {m}." for c, s, m in itertools.product(_COLOURS, _SHAPES, _MOTIONS)]
    lines += _QUESTIONS * 20
    lines += [" ".join(_COMMON[i : i + 12]) for i in range(0, len(_COMMON), 3)] * 5
    lines += [f"Time {t / 10:.1f}s:" for t in range(0, 2000, 5)]
    lines += [f"({x}) {x}. The answer is {x}." for x in "ABCDEFGH"] * 10
    lines += ["system user assistant"] * 20
    return lines


def train_tokenizer(vocab_size: int, max_length: int = 4096) -> Qwen2Tokenizer:
    """A byte-level BPE with Qwen2's pre-tokenizer and special tokens, trained on the spot."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(), trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=trained["vocab"], merges=merges, eos_token=END_OF_TURN, pad_token=PAD_TOKEN)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.model_max_length = max_length
    return tokenizer


def build_processor(tokenizer: Qwen2Tokenizer, spec: TinySpec) -> VideoLlama3Processor:
    """The native processor classes with small pixel budgets (merge 1 for images, 2 for video)."""
    image_processor = VideoLlama3ImageProcessor(
        min_pixels=spec.image_min_tokens * PATCH * PATCH,
        max_pixels=spec.image_max_tokens * PATCH * PATCH,
        merge_size=1,
        image_mean=OPENAI_CLIP_MEAN,  # the original processor's normalisation
        image_std=OPENAI_CLIP_STD,
    )
    block = (PATCH * 2) ** 2
    video_processor = VideoLlama3VideoProcessor(
        min_pixels=spec.video_min_tokens_per_frame * block,
        max_pixels=spec.video_tokens_per_video * block,
        merge_size=2,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        use_token_compression=True,
    )
    return VideoLlama3Processor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer: Qwen2Tokenizer, spec: TinySpec) -> VideoLlama3Config:
    text = {
        "model_type": "qwen2",
        "vocab_size": spec.model_vocab or len(tokenizer),
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_intermediate,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": spec.max_positions,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids(END_OF_TURN),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    }
    if spec.rope_theta is not None:
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.rms_norm_eps is not None:
        text["rms_norm_eps"] = spec.rms_norm_eps
    vision = {
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_intermediate,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "patch_size": PATCH,
    }
    return VideoLlama3Config(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0, spec: TinySpec = TinySpec(), overwrite: bool = False) -> Path:
    """Write a tiny random VideoLLaMA3 (weights, tokenizer, processor, template) to `out_dir`.

    The same seed gives the same files. The folder appears complete or not at all.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise VidlabError(f"{out_dir}: folder exists and is not empty. Choose a new folder or pass --overwrite.")
    tokenizer = train_tokenizer(spec.vocab_size, spec.max_positions)
    processor = build_processor(tokenizer, spec)
    config = build_config(tokenizer, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Built in the saved dtype: a 7b shape's 1.6 G parameters never exist in fp32.
        model = VideoLlama3ForConditionalGeneration._from_config(config, dtype=getattr(torch, spec.dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )

    with staged_folder(out_dir, replace=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "vidlab_tiny.json").write_text(json.dumps({"seed": seed, **asdict(spec)}, indent=2) + "\n")
    return out_dir
