"""A tiny LLaMA-VID built offline: vidlab's classes, the real template, small sizes, random weights.

The LLM's tokenizer is a SentencePiece BPE in Llama's form (byte fallback, <unk> <s> </s>) trained on
the spot on the tiny VideoLLaMA3's corpus; the Q-Former's is an uncased WordPiece vocabulary of
letters, digits and that corpus's words.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import torch
from transformers import BertTokenizer, Blip2VisionConfig, GenerationConfig, InstructBlipQFormerConfig, LlamaTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vidlab.errors import VidlabError
from vidlab.folders import staged_folder
from vidlab.models.llama_vid.config import LlamaVidConfig
from vidlab.models.llama_vid.convert import CLIP_MEAN, CLIP_STD
from vidlab.models.llama_vid.model import LlamaVidForConditionalGeneration
from vidlab.models.llama_vid.processor import LlamaVidProcessor

IMAGE_SIZE, PATCH = 56, 14  # 16 patches a frame


def _llama_tokenizer(corpus: list[str], folder: Path) -> LlamaTokenizer:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=600, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": True,
                                                                    "add_bos_token": True, "add_eos_token": False}))
    return LlamaTokenizer.from_pretrained(folder)  # converts tokenizer.model as for a released checkpoint


def _bert_tokenizer(corpus: list[str], folder: Path) -> BertTokenizer:
    words = sorted({w for line in corpus for w in re.findall(r"[a-z]+", line.lower())})[:300]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("?.,!-:'()")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # as LLaMA-VID adds it
    return tokenizer


def build_tiny_llama_vid(out_dir: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a tiny random LLaMA-VID (about 0.3 M parameters, 2 tokens a frame) to `out_dir`.

    The same seed gives the same weights. The folder appears complete or not at all.
    """
    from vidlab.models.tiny import tokenizer_corpus

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise VidlabError(f"{out_dir}: folder exists and is not empty. Choose a new folder or pass --overwrite.")
    corpus = tokenizer_corpus()
    with tempfile.TemporaryDirectory() as scratch:  # the tokenizers save from their files: kept until written
        tokenizer = _llama_tokenizer(corpus, Path(scratch))
        bert = _bert_tokenizer(corpus, Path(scratch))
        return _write(out_dir, seed, overwrite, tokenizer, bert)


def _write(out_dir: Path, seed: int, overwrite: bool, tokenizer, bert) -> Path:
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                           image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = LlamaVidProcessor(tokenizer, bert, image_processor, tokens_per_frame=2, patch_size=PATCH)
    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=IMAGE_SIZE, patch_size=PATCH)
    qformer = InstructBlipQFormerConfig(vocab_size=len(bert), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32)
    text = {"vocab_size": len(tokenizer) - 1, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5}  # the vocabulary without the <image> placeholder, as in a converted one
    config = LlamaVidConfig(vision_config=vision, qformer_config=qformer, text_config=text, num_query=4,
                            qformer_input_width=32, image_token_id=processor.image_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaVidForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    with staged_folder(out_dir, replace=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "vidlab_tiny.json").write_text(json.dumps({"seed": seed, "family": "llama_vid"}, indent=2) + "\n")
    return out_dir
