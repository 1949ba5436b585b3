"""TinyLLaVA-Video on transformers' own parts: SiglipVisionModel -> Resampler -> an LLM (AutoModel + lm_head).

Laid out as transformers' native VideoLLaMA3 is (`model.vision_model`, `model.projector`,
`model.language_model`, `lm_head`), so that vidlab's training, LoRA and merging find the same parts.

Inputs: `input_ids` in which each picture (a video, or an image as a one-frame video) is
`num_queries` copies of `config.image_token_id`, `pixel_values_frames` (all frames of all pictures,
in order: frames x 3 x H x W) and `frame_counts` (frames of each picture). Each picture goes through
the tower and the resampler on its own, as in the original (the group resampler splits one picture's
patches), and its tokens take the places of its placeholders.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel, SiglipVisionModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from vidlab.errors import SampleError
from vidlab.models.tinyllava_video.config import TinyLlavaVideoConfig
from vidlab.models.tinyllava_video.resampler import Resampler

PICTURE_INPUTS = ("pixel_values_frames", "frame_counts")  # dropped after the prompt's first pass


class TinyLlavaVideoPreTrainedModel(PreTrainedModel):
    config_class = TinyLlavaVideoConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer", "PhiDecoderLayer", "PerceiverLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Resampler):
            init.normal_(module.latents, std=1.0)  # the original draws its latents with torch.randn


class TinyLlavaVideoModel(TinyLlavaVideoPreTrainedModel):
    """The vision tower, the resampler and the LLM's decoder (no output head)."""

    def __init__(self, config: TinyLlavaVideoConfig):
        super().__init__(config)
        self.vision_model = SiglipVisionModel(config.vision_config)
        self.projector = Resampler(
            config.resampler, config.vision_config.hidden_size, config.text_config.hidden_size, config.num_queries,
            config.group, config.num_resampler_layers, config.resampler_heads, config.resampler_head_dim,
        )
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def picture_features(self, pixel_values_frames: torch.Tensor, frame_counts: torch.Tensor) -> list[torch.Tensor]:
        """Per picture, its (num_queries, hidden) tokens for the LLM."""
        states = self.vision_model(pixel_values_frames.to(self.vision_model.dtype), output_hidden_states=True)
        patches = states.hidden_states[self.config.vision_feature_layer]
        if self.config.vision_feature_select_strategy == "patch":
            patches = patches[:, 1:]
        pictures = patches.split([int(n) for n in frame_counts.tolist()], dim=0)
        return [self.projector(frames.reshape(1, -1, frames.shape[-1]))[0] for frames in pictures]

    def embed(self, input_ids: torch.Tensor, pixel_values_frames: torch.Tensor | None = None,
              frame_counts: torch.Tensor | None = None) -> torch.Tensor:
        """The LLM's input embeddings, the pictures' tokens in their placeholders' places."""
        slots = input_ids == self.config.image_token_id
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

    def forward(self, input_ids=None, pixel_values_frames=None, frame_counts=None, inputs_embeds=None,
                **kwargs) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values_frames, frame_counts)
        return self.language_model(inputs_embeds=inputs_embeds, **kwargs)


class TinyLlavaVideoForConditionalGeneration(TinyLlavaVideoPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: TinyLlavaVideoConfig):
        super().__init__(config)
        self.model = TinyLlavaVideoModel(config)
        text = config.text_config
        # Phi-2's output head has a bias, Qwen2.5's has none
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=text.model_type == "phi")
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_frames: torch.Tensor | None = None,
        frame_counts: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache=None,  # named here so that generate() accepts a prompt's key/value cache (a prefix-cache hit)
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(input_ids=input_ids, pixel_values_frames=pixel_values_frames, frame_counts=frame_counts,
                             inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=use_cache, **kwargs)
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def prepare_inputs_for_generation(self, input_ids, *args, is_first_iteration: bool | None = False, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, *args, is_first_iteration=is_first_iteration,
                                                       **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in PICTURE_INPUTS:  # the pictures are in the cache after the prompt's pass
                inputs.pop(name, None)
        return inputs
