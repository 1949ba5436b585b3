"""TinyLLaVA-Video's configuration in vidlab: a SigLIP vision config, an LLM config (Qwen2 or Phi) and the resampler."""

from __future__ import annotations

from typing import Any

from transformers import CONFIG_MAPPING, PretrainedConfig, SiglipVisionConfig

MODEL_TYPE = "vidlab_tinyllava_video"
RESAMPLERS = ("group", "naive")
TEMPLATES = ("qwen2_base", "phi")


def text_config_from(value: PretrainedConfig | dict[str, Any] | None) -> PretrainedConfig:
    """An LLM config (Qwen2, Phi, ...) from a config or its dict (its own class's defaults fill what is missing)."""
    if isinstance(value, PretrainedConfig):
        return value
    value = dict(value or {"model_type": "qwen2"})
    return CONFIG_MAPPING[value.pop("model_type", "qwen2")](**value)


class TinyLlavaVideoConfig(PretrainedConfig):
    """TinyLLaVA-Video (arXiv 2501.15513): SigLIP patches of every frame -> a Perceiver resampler -> an LLM.

    Args:
        vision_config: the SigLIP vision tower (`SiglipVisionModel`).
        text_config: the LLM's config (`model_type` qwen2 or phi), built with `AutoModelForCausalLM`.
        resampler: "group" (the video's patches split into `group` consecutive groups, each read by
            num_queries / group shared latents, then a sinusoidal position code) or "naive" (one set of
            num_queries latents over all patches, the position code added to the patches first).
        num_queries: visual tokens the LLM sees for a video (512 in the released models).
        group: groups of the group resampler (16 released).
        num_resampler_layers: Perceiver layers (3 released).
        vision_feature_layer: which hidden state of the tower is read (-2: the second to last).
        vision_feature_select_strategy: "patch" drops the first token (the original does so on SigLIP too,
            which has no class token: 728 of its 729 patches are used), "cls_patch" keeps all.
        image_aspect_ratio: "square" (resize) or "pad" (pad to a square with the processor's mean first) for images.
        template: the conversation template, "qwen2_base" or "phi" (the same text; the tokenizers differ).
        image_token_id: the placeholder token the processor repeats num_queries times (never embedded).
    """

    model_type = MODEL_TYPE
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": PretrainedConfig}

    def __init__(
        self,
        vision_config: SiglipVisionConfig | dict | None = None,
        text_config: PretrainedConfig | dict | None = None,
        resampler: str = "group",
        num_queries: int = 512,
        group: int = 16,
        num_resampler_layers: int = 3,
        resampler_heads: int = 8,
        resampler_head_dim: int = 64,
        vision_feature_layer: int = -2,
        vision_feature_select_strategy: str = "patch",
        image_aspect_ratio: str = "square",
        template: str = "qwen2_base",
        image_token_id: int | None = None,
        **kwargs,
    ):
        if resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, not {resampler!r}")
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, not {template!r}")
        if resampler == "group" and num_queries % group:
            raise ValueError(f"num_queries ({num_queries}) must be a multiple of group ({group})")
        if isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        self.vision_config = vision_config or SiglipVisionConfig()
        self.text_config = text_config_from(text_config)
        self.resampler = resampler
        self.num_queries = num_queries
        self.group = group
        self.num_resampler_layers = num_resampler_layers
        self.resampler_heads = resampler_heads
        self.resampler_head_dim = resampler_head_dim
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_aspect_ratio = image_aspect_ratio
        self.template = template
        self.image_token_id = image_token_id
        kwargs.setdefault("tie_word_embeddings", getattr(self.text_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    def get_text_config(self, *args, **kwargs) -> PretrainedConfig:
        return self.text_config
