"""A released LLaMA-VID checkpoint (the original's `LlavaLlamaAttForCausalLM` folder) -> vidlab's folder.

The original's files: config.json (`model_type: llava` with `bert_type`, `num_query`, `compress_type`,
`mm_vision_tower` naming LAVIS's `eva_vit_g.pth`, `image_processor` naming a CLIP processor folder),
sharded weights (`model.embed_tokens/layers/norm`, `lm_head`, `model.mm_projector.*`,
`model.vlm_att_*`: the BERT Q-Former, its queries, norm and heads), the Llama tokenizer; the EVA tower
is a separate file its loader reads at start, and the Q-Former's tokenizer and config are
bert-base-uncased's (fetched by name). vidlab's folder: the same tensors renamed (`model.language_model.*`,
`model.projector.*`, `model.vision_model.*` in BLIP-2's names, the q/v biases as one qkv bias),
a `vidlab_llama_vid` config, both tokenizers, CLIP's image processor and vidlab_conversion.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Blip2VisionConfig, GenerationConfig, InstructBlipQFormerConfig, LlamaConfig
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vidlab.errors import CheckpointConversionError
from vidlab.files import write_json
from vidlab.folders import staged_folder
from vidlab.models.convert.shards import ShardWriter, parse_size
from vidlab.models.convert.weights import find_weight_files
from vidlab.models.hub import CHECKPOINT_FILES, is_hub_id, local_folder
from vidlab.models.llama_vid.config import LlamaVidConfig
from vidlab.models.llama_vid.processor import LlamaVidProcessor

ORIGINAL_MODEL_TYPE = "llava"
RECORD_FILE = "vidlab_conversion.json"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
EVA_DEPTH = 39  # LLaMA-VID builds its tower with 39 blocks (EVA-CLIP-g's file has 40: the last is left out)
EVA_HEAD_WIDTH, EVA_MLP_RATIO = 88, 4.3637  # its heads = width // 88, MLP width int(width * 4.3637)
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_LLM_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act",
             "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "attention_bias")
_RENAMES = [  # (original key pattern, vidlab's); keys matching none are refused, those in _DROPPED left out
    (re.compile(r"^model\.(embed_tokens|layers|norm)\."), r"model.language_model.\1."),
    (re.compile(r"^model\.mm_projector\."), "model.projector.content."),
    (re.compile(r"^model\.vlm_att_query$"), "model.projector.query_tokens"),
    (re.compile(r"^model\.vlm_att_ln\."), "model.projector.qformer_norm."),
    (re.compile(r"^model\.vlm_att_bert_proj\."), "model.projector.qformer_input."),
    (re.compile(r"^model\.vlm_att_projector\."), "model.projector.text_queries."),
    (re.compile(r"^model\.vlm_att_key_projector\."), "model.projector.context_keys."),
    (re.compile(r"^model\.vlm_att_val_projector\."), "model.projector.context_value."),
    (re.compile(r"^model\.vlm_att_encoder\.bert\.embeddings\.LayerNorm\."),
     "model.projector.qformer.embeddings.layernorm."),
    (re.compile(r"^model\.vlm_att_encoder\.bert\.(.*)\.(attention|crossattention)\.self\."),
     r"model.projector.qformer.\1.\2.attention."),
    (re.compile(r"^model\.vlm_att_encoder\.bert\."), "model.projector.qformer."),
    (re.compile(r"^lm_head\."), "lm_head."),
]
# buffers the original saves (recomputed here), and its tower's copy (the original reloads it from eva_vit_g.pth)
_DROPPED = re.compile(r"(rotary_emb\.inv_freq|embeddings\.position_ids)$|^model\.vision_tower\.")
_EVA = [
    (re.compile(r"^cls_token$"), "embeddings.class_embedding"),
    (re.compile(r"^pos_embed$"), "embeddings.position_embedding"),
    (re.compile(r"^patch_embed\.proj\."), "embeddings.patch_embedding."),
    (re.compile(r"^blocks\.(\d+)\.norm1\."), r"encoder.layers.\1.layer_norm1."),
    (re.compile(r"^blocks\.(\d+)\.norm2\."), r"encoder.layers.\1.layer_norm2."),
    (re.compile(r"^blocks\.(\d+)\.attn\.qkv\.weight$"), r"encoder.layers.\1.self_attn.qkv.weight"),
    (re.compile(r"^blocks\.(\d+)\.attn\.proj\."), r"encoder.layers.\1.self_attn.projection."),
    (re.compile(r"^blocks\.(\d+)\.mlp\."), r"encoder.layers.\1.mlp."),
]


def native_key(key: str) -> str | None:
    for pattern, replacement in _RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return None


def is_original_llama_vid(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return config.get("model_type") == ORIGINAL_MODEL_TYPE and "bert_type" in config


def is_original_llama_vid_source(src: str | Path) -> bool:
    """Whether a folder, or a hub id (its config.json fetched), holds an original LLaMA-VID checkpoint."""
    path = Path(str(src)).expanduser()
    if path.exists() or not is_hub_id(str(src)):
        return is_original_llama_vid(path)
    try:
        return is_original_llama_vid(local_folder(src, "checkpoint", ["config.json"]))
    except CheckpointConversionError:
        return False


def _near(folder: Path, name: str | None) -> Path | None:
    """A path the original's config names (relative to its working folder): as given, or beside the checkpoint."""
    if not name:
        return None
    for candidate in (Path(name).expanduser(), folder / name, folder.parent / name):
        if candidate.exists():
            return candidate
    return None


def _eva_tensors(path: Path, size: int, problems: list[str]) -> tuple[dict[str, torch.Tensor], Blip2VisionConfig]:
    """eva_vit_g.pth in BLIP-2's names: its first 39 blocks, position code resized to `size` as in the original."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    width = int(state["cls_token"].shape[-1])
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    depth = min(EVA_DEPTH, blocks)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("blocks.") and int(key.split(".")[1]) >= depth:
            continue  # the original's strict=False load leaves them out
        for pattern, replacement in _EVA:
            if pattern.match(key):
                out[pattern.sub(replacement, key, count=1)] = tensor
                break
    for i in range(depth):  # BLIP-2's attention keeps its q and v biases as one qkv bias, k's part zero
        q, v = state[f"blocks.{i}.attn.q_bias"], state[f"blocks.{i}.attn.v_bias"]
        out[f"encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    grid, wanted = int((state["pos_embed"].shape[1] - 1) ** 0.5), size // patch
    if grid != wanted:  # its interpolate_pos_embed: bicubic over the grid, in float32
        pos = state["pos_embed"].float()
        grid_part = pos[:, 1:].reshape(1, grid, grid, width).permute(0, 3, 1, 2)
        grid_part = F.interpolate(grid_part, size=(wanted, wanted), mode="bicubic", align_corners=False)
        out["embeddings.position_embedding"] = torch.cat([pos[:, :1], grid_part.permute(0, 2, 3, 1).flatten(1, 2)],
                                                         dim=1).to(state["pos_embed"].dtype)
    dtype = state["cls_token"].dtype
    out["post_layernorm.weight"] = torch.ones(width, dtype=dtype)  # unused (LLaMA-VID reads the last block as is)
    out["post_layernorm.bias"] = torch.zeros(width, dtype=dtype)
    if width % EVA_HEAD_WIDTH:
        problems.append(f"{path}: tower width {width} is not a multiple of {EVA_HEAD_WIDTH} (LLaMA-VID's head width)")
    config = Blip2VisionConfig(hidden_size=width, intermediate_size=int(width * EVA_MLP_RATIO), num_hidden_layers=depth,
                               num_attention_heads=max(1, width // EVA_HEAD_WIDTH), image_size=size, patch_size=patch,
                               layer_norm_eps=1e-6, qkv_bias=True)
    return {f"model.vision_model.{k}": v for k, v in out.items()}, config


def _image_processor(folder: Path, original: dict) -> CLIPImageProcessorPil:
    found = _near(folder, original.get("image_processor"))
    if found is not None and (found / "preprocessor_config.json").is_file():
        return CLIPImageProcessorPil.from_pretrained(found)
    # the repository's llamavid/processor/clip-patch14-224: CLIP's settings at 224 (the released video models')
    return CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                 image_mean=CLIP_MEAN, image_std=CLIP_STD)


def _bert(bert: str | Path | None):
    """bert-base-uncased's tokenizer (+[DEC], as the original adds) and config, from a folder or the Hub."""
    source = str(bert or "bert-base-uncased")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = json.loads(Path(source, "config.json").read_text()) if Path(source).is_dir() else {}
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointConversionError(
            f"{source}: cannot read the Q-Former's BERT tokenizer ({err}). LLaMA-VID builds it from "
            "bert-base-uncased: pass a download of it with --bert DIR (its vocab.txt and config.json).") from err
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer, config


def _long_context(original: dict, where: Path, problems: list[str]) -> dict:
    """The long-video model's stretched positions: its training sets rope_scaling {"type": "linear", "factor":
    ceil(model_max_length / max_position_embeddings)} (64K tokens on Vicuna's 4096). Kept as the LLM's rope
    parameters, and the context it holds (what vidlab's limits read) is max_position_embeddings x factor."""
    scaling = original.get("rope_scaling")
    if not scaling:
        return {}
    kind = scaling.get("type") or scaling.get("rope_type") if isinstance(scaling, dict) else None
    if kind != "linear" or not isinstance(scaling.get("factor"), (int, float)) or scaling["factor"] < 1:
        problems.append(f"{where}: rope_scaling {scaling!r}: vidlab converts LLaMA-VID's linear scaling only "
                        '({"type": "linear", "factor": F}, as its long-video training writes it)')
        return {}
    factor = float(scaling["factor"])
    positions = int(original.get("max_position_embeddings") or 4096)
    return {"rope_parameters": {"rope_type": "linear", "factor": factor},
            "max_position_embeddings": int(positions * factor)}


def native_config(original: dict, bert_config: dict, weights: dict[str, tuple], vision: Blip2VisionConfig,
                  where: Path, problems: list[str]) -> LlamaVidConfig:
    """vidlab's config from the original's config.json, the BERT config and the Q-Former's tensor shapes."""
    bert_type = str(original.get("bert_type"))
    if "qformer" not in bert_type:
        problems.append(f"{where}: bert_type {bert_type!r}: vidlab converts the Q-Former kinds ('qformer...'), "
                        "not LLaMA-VID's 'raw_bert' experiments")
    text = LlamaConfig(**{**{k: original[k] for k in _LLM_KEYS if original.get(k) is not None},
                          **_long_context(original, where, problems)})
    prefix = "model.vlm_att_encoder.bert."
    layers = {int(k[len(prefix):].split(".")[2]) for k in weights if k.startswith(prefix + "encoder.layer.")}
    cross = [k for k in weights if ".crossattention.self.key.weight" in k]
    try:
        words, hidden = weights[prefix + "embeddings.word_embeddings.weight"]
        positions = weights[prefix + "embeddings.position_embeddings.weight"][0]
        intermediate = weights[prefix + "encoder.layer.0.intermediate.dense.weight"][0]
    except KeyError as err:
        problems.append(f"{where}: no Q-Former tensor {err} (model.vlm_att_encoder.*)")
        words, hidden, positions, intermediate = 30523, 768, 512, 3072
    qformer = InstructBlipQFormerConfig(
        vocab_size=words, hidden_size=hidden, num_hidden_layers=len(layers) or 12,
        num_attention_heads=int(bert_config.get("num_attention_heads", 12)), intermediate_size=intermediate,
        max_position_embeddings=positions, layer_norm_eps=float(bert_config.get("layer_norm_eps", 1e-12)),
        cross_attention_frequency=int(original.get("cross_attention_freq", 2)),
        encoder_hidden_size=weights[cross[0]][1] if cross else 1408)
    compress = original.get("compress_type") or "mean"
    if compress not in ("mean",) and not str(compress).startswith("grid:"):
        problems.append(f"{where}: compress_type {compress!r} is not 'mean' or 'grid:N'")
        compress = "mean"
    return LlamaVidConfig(
        vision_config=vision, qformer_config=qformer, text_config=text, num_query=int(original.get("num_query", 32)),
        compress=compress, qformer_layer_norm="pretrain" in bert_type,
        qformer_input_width=qformer.encoder_hidden_size,
        select_feature=original.get("mm_vision_select_feature") or "patch")


def _expected(config: LlamaVidConfig) -> dict[str, tuple[int, ...]]:
    from vidlab.models.llama_vid.model import LlamaVidForConditionalGeneration

    with torch.device("meta"):
        model = LlamaVidForConditionalGeneration(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def convert_llama_vid(src: str | Path, out_dir: str | Path, *, dtype: str | None = None,
                      vision_tower: str | Path | None = None, bert: str | Path | None = None,
                      max_shard_size: int | str = "4GB") -> Path:
    """`vidlab model convert` for a LLaMA-VID checkpoint (folder or hub id, e.g.
    YanweiLi/llama-vid-7b-full-224-video-fps-1).

    Args:
        vision_tower: LAVIS's eva_vit_g.pth (default: the path in its config.json, as given or beside the checkpoint).
        bert: a bert-base-uncased folder (tokenizer + config.json; default: bert-base-uncased from the Hub).

    Every tensor is checked against the native model's names and shapes before anything is written.

    Raises:
        CheckpointConversionError: not a LLaMA-VID checkpoint, no tower file, or tensors missing,
            unexpected or of the wrong shape (all listed).
    """
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointConversionError(f"{out_dir}: already exists and is not empty. Choose a new folder.")
    if dtype is not None and dtype not in DTYPES:
        raise CheckpointConversionError(f"dtype {dtype!r}: use bf16, fp16 or fp32 (or leave it out to keep the "
                                        "checkpoint's).")
    folder = local_folder(src, "checkpoint", CHECKPOINT_FILES)
    original = json.loads((folder / "config.json").read_text())
    if not is_original_llama_vid(folder):
        raise CheckpointConversionError(f"{folder}: not a LLaMA-VID checkpoint (config.json needs model_type "
                                        f"{ORIGINAL_MODEL_TYPE!r} and bert_type).")
    tower = Path(vision_tower).expanduser() if vision_tower else _near(folder, original.get("mm_vision_tower"))
    if tower is None or not tower.is_file():
        raise CheckpointConversionError(
            f"{folder}: the EVA tower file {str(vision_tower or original.get('mm_vision_tower'))!r} is not there. "
            "LLaMA-VID loads it apart from the checkpoint: pass LAVIS's eva_vit_g.pth with --vision-tower FILE.")
    image_processor = _image_processor(folder, original)
    problems: list[str] = []
    vision_tensors, vision = _eva_tensors(tower, int(image_processor.crop_size["height"]), problems)
    files = find_weight_files(folder)
    infos = {key: (file, tuple(info.shape)) for file in files for key, info in file.infos().items()}
    bert_tokenizer, bert_config = _bert(bert)
    config = native_config(original, bert_config, {k: s for k, (_, s) in infos.items()}, vision, folder, problems)
    processor = LlamaVidProcessor(AutoTokenizer.from_pretrained(folder), bert_tokenizer, image_processor,
                                  tokens_per_frame=config.tokens_per_frame,
                                  qformer_max_length=config.qformer_max_length,
                                  image_aspect_ratio=original.get("image_aspect_ratio") or "square",
                                  patch_size=vision.patch_size)
    config.image_token_id = processor.image_token_id

    renamed = {native_key(key): (key, shape) for key, (_, shape) in infos.items() if not _DROPPED.search(key)}
    problems += [f"unexpected tensor {key}" for key, (_, _) in infos.items()
                 if not _DROPPED.search(key) and native_key(key) is None]
    renamed.pop(None, None)
    shapes = {k: tuple(v.shape) for k, v in vision_tensors.items()} | {k: s for k, (_, s) in renamed.items()}
    expected = _expected(config)
    problems += [f"unexpected tensor {key}" for key in shapes if key not in expected]
    problems += [f"missing tensor {key}" for key in expected if key not in shapes]
    problems += [f"{key}: shape {list(shapes[key])}, the config makes {list(shape)}"
                 for key, shape in expected.items() if key in shapes and shapes[key] != shape]
    if problems:
        raise CheckpointConversionError(f"{folder}: {len(problems)} problem(s), nothing written: "
                                        + "; ".join(problems[:20]))

    wanted = DTYPES.get(dtype) if dtype else None

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(wanted) if wanted is not None and tensor.is_floating_point() else tensor

    with staged_folder(out_dir, "converting") as staging:
        writer = ShardWriter(staging, parse_size(max_shard_size))
        for key, tensor in vision_tensors.items():
            writer.add(key, cast(tensor))
        for file in files:
            for key, tensor in file.tensors():
                name = None if _DROPPED.search(key) else native_key(key)
                if name is not None:
                    writer.add(name, cast(tensor))
        writer.close()
        if wanted is not None:
            config.dtype = str(wanted).removeprefix("torch.")
        config.save_pretrained(staging)
        tokenizer = processor.tokenizer
        GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         do_sample=False).save_pretrained(staging)
        processor.save_pretrained(staging)
        write_json(staging / RECORD_FILE, {
            "source": str(src) if is_hub_id(str(src)) else str(folder.resolve()),
            "family": "llama_vid", "tensors": len(renamed) + len(vision_tensors),
            "vision_tower": str(tower.resolve()), "vision_blocks": vision.num_hidden_layers,
            "renamed": [f"{p.pattern} -> {r}" for p, r in _RENAMES],
        })
    return out_dir
