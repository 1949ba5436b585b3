"""LLaMA-VID's configuration in vidlab: the EVA-ViT-G tower, the Q-Former, the token heads and a Llama LLM."""

from __future__ import annotations

import re

from transformers import Blip2VisionConfig, InstructBlipQFormerConfig, LlamaConfig, PretrainedConfig

MODEL_TYPE = "vidlab_llama_vid"
_COMPRESS = re.compile(r"^(mean|grid:\d+)$")


def _sub(cls, value):
    if isinstance(value, dict):
        return cls(**{k: v for k, v in value.items() if k != "model_type"})
    return value or cls()


class LlamaVidConfig(PretrainedConfig):
    """LLaMA-VID (arXiv 2311.17043): each frame becomes a context token (the frame's patches read through
    the question's queries) and content token(s) (the patches pooled), in a Vicuna (Llama) LLM.

    Args:
        vision_config: EVA-ViT-G, as BLIP-2 ships it in transformers (`Blip2VisionModel`: 1408 wide, 39
            blocks; its final norm is not used: LLaMA-VID reads the last block's output).
        qformer_config: the BERT Q-Former with text input (`InstructBlipQFormerModel`).
        text_config: the Llama LLM.
        num_query: the Q-Former's learned queries (32 released).
        compress: the content tokens: "mean" (one: the patches' mean; the released video models) or
            "grid:N" (N x N average-pooled patches).
        qformer_layer_norm: a LayerNorm on the tower's features before the Q-Former ("qformer_pretrain"
            checkpoints: BLIP-2's ln_vision).
        qformer_input_width: width the Q-Former reads; a linear map from the tower's width comes first
            when they differ (LLaMA-VID fixes 1408 for its pretrained Q-Former).
        select_feature: "patch" drops the class token for the context and content tokens (the Q-Former
            still reads it), "cls_patch" keeps it.
        qformer_max_length: the Q-Former's text is cut to this many word pieces, from the left.
        image_token_id: the placeholder token the processor repeats for each frame's tokens (never embedded).
    """

    model_type = MODEL_TYPE
    sub_configs = {"vision_config": Blip2VisionConfig, "qformer_config": InstructBlipQFormerConfig,
                   "text_config": LlamaConfig}

    def __init__(
        self,
        vision_config: Blip2VisionConfig | dict | None = None,
        qformer_config: InstructBlipQFormerConfig | dict | None = None,
        text_config: LlamaConfig | dict | None = None,
        num_query: int = 32,
        compress: str = "mean",
        qformer_layer_norm: bool = True,
        qformer_input_width: int = 1408,
        select_feature: str = "patch",
        qformer_max_length: int = 256,
        image_token_id: int | None = None,
        **kwargs,
    ):
        if not _COMPRESS.match(str(compress)):
            raise ValueError(f"compress must be 'mean' or 'grid:N', not {compress!r}")
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"select_feature must be 'patch' or 'cls_patch', not {select_feature!r}")
        self.vision_config = _sub(Blip2VisionConfig, vision_config)
        self.qformer_config = _sub(InstructBlipQFormerConfig, qformer_config)
        self.text_config = _sub(LlamaConfig, text_config)
        self.num_query = num_query
        self.compress = compress
        self.qformer_layer_norm = qformer_layer_norm
        self.qformer_input_width = qformer_input_width
        self.select_feature = select_feature
        self.qformer_max_length = qformer_max_length
        self.image_token_id = image_token_id
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def tokens_per_frame(self) -> int:
        """The context token and the content token(s)."""
        return 1 + (1 if self.compress == "mean" else int(self.compress.split(":")[1]) ** 2)

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    def get_text_config(self, *args, **kwargs) -> PretrainedConfig:
        return self.text_config
