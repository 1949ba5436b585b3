"""TinyLLaVA-Video on transformers' own parts: SiglipVisionModel -> Resampler -> AutoModelForCausalLM (no remote code).

Inputs: `input_ids` in which each picture (a video, or an image as a one-frame video) is
`num_queries` copies of `config.image_token_id`, `pixel_values_frames` (all frames of all pictures,
in order: frames x 3 x H x W) and `frame_counts` (frames of each picture). Each picture goes through
the tower and the resampler on its own, as in the original (the group resampler splits one picture's
patches), and its tokens take the places of its placeholders.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel, SiglipVisionModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from vidlab.errors import SampleError
from vidlab.models.tinyllava_video.config import TinyLlavaVideoConfig
from vidlab.models.tinyllava_video.resampler import Resampler

PICTURE_INPUTS = ("pixel_values_frames", "frame_counts")  # dropped after the prompt's first pass


class TinyLlavaVideoPreTrainedModel(PreTrainedModel):
    config_class = TinyLlavaVideoConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer", "PhiDecoderLayer", "PerceiverLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Resampler):
            init.normal_(module.latents, std=1.0)  # the original draws its latents with torch.randn


class TinyLlavaVideoForConditionalGeneration(TinyLlavaVideoPreTrainedModel, GenerationMixin):
    def __init__(self, config: TinyLlavaVideoConfig):
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.connector = Resampler(
            config.resampler, config.vision_config.hidden_size, config.text_config.hidden_size, config.num_queries,
            config.group, config.num_resampler_layers, config.resampler_heads, config.resampler_head_dim,
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self):
        return self.language_model.get_decoder()

    def picture_features(self, pixel_values_frames: torch.Tensor, frame_counts: torch.Tensor) -> list[torch.Tensor]:
        """Per picture, its (num_queries, hidden) tokens for the LLM."""
        states = self.vision_tower(pixel_values_frames.to(self.vision_tower.dtype), output_hidden_states=True)
        patches = states.hidden_states[self.config.vision_feature_layer]
        if self.config.vision_feature_select_strategy == "patch":
            patches = patches[:, 1:]
        pictures = patches.split([int(n) for n in frame_counts.tolist()], dim=0)
        return [self.connector(frames.reshape(1, -1, frames.shape[-1]))[0] for frames in pictures]

    def embed(self, input_ids: torch.Tensor, pixel_values_frames: torch.Tensor | None = None,
              frame_counts: torch.Tensor | None = None) -> torch.Tensor:
        """The LLM's input embeddings, the pictures' tokens in their placeholders' places."""
        token = self.config.image_token_id
        slots = input_ids == token
        embeds = self.get_input_embeddings()(input_ids.masked_fill(slots, 0))  # the placeholder is never embedded
        if pixel_values_frames is None:
            if slots.any():
                raise SampleError("the prompt has picture placeholders but no pixel_values_frames came with it")
            return embeds
        features = torch.cat(self.picture_features(pixel_values_frames, frame_counts), dim=0)
        if int(slots.sum()) != features.shape[0]:
            raise SampleError(f"the prompt has {int(slots.sum())} picture placeholders but the pictures make "
                              f"{features.shape[0]} tokens ({self.config.num_queries} each)")
        return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_frames: torch.Tensor | None = None,
        frame_counts: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values_frames, frame_counts)
        return self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels,
            use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids, *args, is_first_iteration: bool | None = False, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, *args, is_first_iteration=is_first_iteration,
                                                       **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in PICTURE_INPUTS:  # the pictures are in the cache after the prompt's pass
                inputs.pop(name, None)
        return inputs
