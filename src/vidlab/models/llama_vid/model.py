"""LLaMA-VID on transformers' own parts: EVA-ViT-G (Blip2VisionModel) -> per frame a context token (the
question's Q-Former queries attending over the patches) and content token(s) (the patches pooled) -> Llama.

Laid out as transformers' native VideoLLaMA3 is (`model.vision_model`, `model.projector`,
`model.language_model`, `lm_head`), so that vidlab's training, LoRA and merging find the same parts:
the Q-Former, its queries and the token heads all live in `model.projector` (they turn the tower's
features into the LLM's tokens).

Inputs: `input_ids` in which each picture (a video, or an image as a one-frame video) is
frames x tokens_per_frame copies of `config.image_token_id`; `pixel_values_frames` (all frames of all
pictures: frames x 3 x H x W); `frame_counts` (frames of each picture); `qformer_input_ids` (each
picture's Q-Former text, BERT word pieces, one after another) and `qformer_lengths` (word pieces of
each picture's text); `movie_pictures` (optional, per picture): read as LLaMA-VID's long-video path reads
a movie's frames. Flat, so that a batch's samples concatenate without padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2VisionModel, GenerationMixin, InstructBlipQFormerModel, LlamaModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from vidlab.errors import SampleError
from vidlab.models.llama_vid.config import LlamaVidConfig

PICTURE_INPUTS = ("pixel_values_frames", "frame_counts", "qformer_input_ids", "qformer_lengths", "movie_pictures")


class FrameTokens(nn.Module):
    """LLaMA-VID's `vlm_attention` + `token_generation`: a frame's features and its picture's question -> its tokens.

    Own module: transformers has the Q-Former (used here) but not LLaMA-VID's heads around it. Names
    say what each original part does (original name in brackets for the converter):
    qformer [vlm_att_encoder.bert], query_tokens [vlm_att_query], qformer_norm [vlm_att_ln],
    qformer_input [vlm_att_bert_proj], text_queries [vlm_att_projector], context_keys
    [vlm_att_key_projector], context_value [vlm_att_val_projector], content [mm_projector].
    """

    def __init__(self, config: LlamaVidConfig):
        super().__init__()
        width, hidden = config.vision_config.hidden_size, config.text_config.hidden_size
        q_width = config.qformer_config.hidden_size
        self.config = config
        self.qformer = InstructBlipQFormerModel(config.qformer_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query, q_width))
        self.qformer_norm = nn.LayerNorm(config.qformer_input_width) if config.qformer_layer_norm else None
        self.qformer_input = (nn.Linear(width, config.qformer_input_width)
                              if config.qformer_layer_norm and width != config.qformer_input_width else None)
        self.text_queries = nn.Linear(q_width, width)
        self.context_keys = nn.Linear(width, width)
        self.context_value = nn.Linear(width, hidden)
        # LLaVA's mlp2x_gelu (Linear, GELU, Linear), indices as the original's nn.Sequential for its weights
        self.content = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, features: torch.Tensor, text_ids: torch.Tensor, movie: bool = False) -> torch.Tensor:
        """(frames, 1 + patches, width) of a picture, its (pieces,) question -> (frames * tokens_per_frame, hidden).

        `movie`: as LLaMA-VID's long-video path, which reads features saved beforehand (float16, the class
        token cut off: `feats[:, 1:]`), so that the Q-Former sees the patches only, rounded through float16.
        """
        if movie:
            features = features[:, 1:].to(torch.float16).to(features.dtype)
        frames = features.shape[0]
        qformer_in = features if self.qformer_input is None else self.qformer_input(features)
        if self.qformer_norm is not None:
            qformer_in = self.qformer_norm(qformer_in)
        patches = features
        if self.config.select_feature == "patch" and features.shape[1] % 2 == 1:  # the original's class-token test
            patches = features[:, 1:]
        queries = self.query_tokens.expand(frames, -1, -1).to(qformer_in.dtype)
        ids = text_ids.unsqueeze(0).expand(frames, -1)
        mask = torch.ones(frames, queries.shape[1] + ids.shape[1], dtype=torch.long, device=ids.device)
        read = self.qformer(input_ids=ids, attention_mask=mask, query_embeds=queries,
                            encoder_hidden_states=qformer_in).last_hidden_state[:, : queries.shape[1]]
        text_q = self.text_queries(read)
        scores = text_q @ self.context_keys(patches).transpose(-1, -2) / (patches.shape[-1] ** 0.5)
        context = self.context_value((scores.softmax(-1) @ patches).mean(1)[:, None])
        if self.config.compress == "mean":
            pooled = patches.mean(dim=1, keepdim=True)
        else:  # grid:N, average pooling over the square of patches
            side, grid = int(patches.shape[1] ** 0.5), int(self.config.compress.split(":")[1])
            square = patches.reshape(frames, side, side, -1).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(square, kernel_size=side // grid, stride=side // grid)
            pooled = pooled.permute(0, 2, 3, 1).flatten(1, 2)
        return torch.cat([context, self.content(pooled)], dim=1).flatten(0, 1)


class LlamaVidPreTrainedModel(PreTrainedModel):
    config_class = LlamaVidConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["Blip2EncoderLayer", "LlamaDecoderLayer", "InstructBlipQFormerLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FrameTokens):
            init.normal_(module.query_tokens, std=self.config.qformer_config.initializer_range)


class LlamaVidModel(LlamaVidPreTrainedModel):
    """The vision tower, the frame-token heads and the LLM's decoder (no output head)."""

    def __init__(self, config: LlamaVidConfig):
        super().__init__(config)
        # EVA-ViT-G is BLIP-2's tower (q/v biases, no k bias, pre-norm blocks); its final norm is unused here
        self.vision_model = Blip2VisionModel(config.vision_config)
        self.projector = FrameTokens(config)
        self.language_model = LlamaModel(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def frame_features(self, pixel_values_frames: torch.Tensor) -> torch.Tensor:
        """The last block's output for every token of every frame (LLaMA-VID reads it before any final norm)."""
        tower = self.vision_model
        embeddings = tower.embeddings(pixel_values_frames.to(tower.dtype))
        return tower.encoder(inputs_embeds=embeddings).last_hidden_state

    def picture_tokens(self, pixel_values_frames, frame_counts, qformer_input_ids, qformer_lengths,
                       movie_pictures=None) -> list:
        """Per picture, its (frames * tokens_per_frame, hidden) tokens for the LLM."""
        features = self.frame_features(pixel_values_frames)
        pictures = features.split([int(n) for n in frame_counts.tolist()], dim=0)
        texts = qformer_input_ids.split([int(n) for n in qformer_lengths.tolist()], dim=0)
        if len(texts) != len(pictures):
            raise SampleError(f"{len(pictures)} pictures but {len(texts)} Q-Former texts came with them")
        movies = [False] * len(pictures) if movie_pictures is None else [bool(m) for m in movie_pictures.tolist()]
        return [self.projector(frames, text, movie) for frames, text, movie in zip(pictures, texts, movies)]

    def embed(self, input_ids, pixel_values_frames=None, frame_counts=None, qformer_input_ids=None,
              qformer_lengths=None, movie_pictures=None) -> torch.Tensor:
        """The LLM's input embeddings, the pictures' tokens in their placeholders' places."""
        slots = input_ids == self.config.image_token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(slots, 0))  # the placeholder is never embedded
        if pixel_values_frames is None:
            if slots.any():
                raise SampleError("the prompt has picture placeholders but no pixel_values_frames came with it")
            return embeds
        tokens = torch.cat(self.picture_tokens(pixel_values_frames, frame_counts, qformer_input_ids,
                                               qformer_lengths, movie_pictures), dim=0)
        if int(slots.sum()) != tokens.shape[0]:
            raise SampleError(f"the prompt has {int(slots.sum())} picture placeholders but the pictures make "
                              f"{tokens.shape[0]} tokens ({self.config.tokens_per_frame} a frame)")
        return embeds.masked_scatter(slots.unsqueeze(-1), tokens.to(embeds.dtype))

    def forward(self, input_ids=None, pixel_values_frames=None, frame_counts=None, qformer_input_ids=None,
                qformer_lengths=None, movie_pictures=None, inputs_embeds=None, **kwargs) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values_frames, frame_counts, qformer_input_ids,
                                       qformer_lengths, movie_pictures)
        return self.language_model(inputs_embeds=inputs_embeds, **kwargs)


class LlamaVidForConditionalGeneration(LlamaVidPreTrainedModel, GenerationMixin):
    def __init__(self, config: LlamaVidConfig):
        super().__init__(config)
        self.model = LlamaVidModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
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
        qformer_input_ids: torch.Tensor | None = None,
        qformer_lengths: torch.Tensor | None = None,
        movie_pictures: torch.Tensor | None = None,
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
                             qformer_input_ids=qformer_input_ids, qformer_lengths=qformer_lengths,
                             movie_pictures=movie_pictures, inputs_embeds=inputs_embeds,
                             attention_mask=attention_mask, position_ids=position_ids,
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
