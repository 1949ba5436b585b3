"""VideoLLaMA3 with a video compressor: the native transformers classes, subclassed.

`CompressedVideoLlama3ForConditionalGeneration` is `VideoLlama3ForConditionalGeneration` whose
inner model runs the vision encoder in chunks of frames and passes each video's projected
features through a compressor (`model.video_compressor`) before they replace the `<|video_pad|>`
tokens. Everything else (images, the LLM, generation, caching, peft) is the native code: the
compressed features go in as the precomputed `mm_encoder_outputs` the native forward accepts.

The compressor's setting is kept in config.json (`video_compressor`, model_type
`vidlab_video_llama_3`), so the folder says what it is:
- `vidlab.load_model(folder)` (and `import vidlab.models.compressors`, which registers the
  classes with transformers' Auto classes) rebuild it;
- a plain `AutoModelForImageTextToText.from_pretrained(folder)` without vidlab stops with
  transformers' "needs trust_remote_code" error; with `trust_remote_code=True` the folder's
  `vidlab_compressor.py` asks for `pip install vidlab` if vidlab is missing, else loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from transformers import (
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3Model,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.video_llama_3.modeling_video_llama_3 import VideoLlama3PreTrainedModel

from vidlab.models.compressors.base import VideoCompressorModule
from vidlab.models.compressors.build import build_compressor
from vidlab.settings import VideoCompressor

MODEL_TYPE = "vidlab_video_llama_3"
SHIM_FILE = "vidlab_compressor.py"
AUTO_MAP = {
    "AutoConfig": "vidlab_compressor.CompressedVideoLlama3Config",
    "AutoModel": "vidlab_compressor.CompressedVideoLlama3Model",
    "AutoModelForImageTextToText": "vidlab_compressor.CompressedVideoLlama3ForConditionalGeneration",
}
# The folder's remote-code entry: transformers checks its imports, so without vidlab installed the
# user reads "requires the following packages ...: vidlab. Run `pip install vidlab`".
SHIM = '''"""This VideoLLaMA3 checkpoint has a vidlab video compressor (config.json: video_compressor).

Load it with vidlab (pip install vidlab):

    import vidlab
    model, processor = vidlab.load_model("this folder")

vidlab's loader also gives the processor the compressor's prompt layout (how many <|video_pad|>
tokens each frame or group gets), which a plain AutoProcessor does not know.
"""

from vidlab.models.compressors.model import (  # noqa: F401
    CompressedVideoLlama3Config,
    CompressedVideoLlama3ForConditionalGeneration,
    CompressedVideoLlama3Model,
)
'''


@strict
class CompressedVideoLlama3Config(VideoLlama3Config):
    """VideoLlama3Config plus the compressor's setting (`vidlab.settings.VideoCompressor` as a dict)."""

    model_type = MODEL_TYPE

    video_compressor: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.video_compressor = VideoCompressor(**(self.video_compressor or {})).model_dump()
        self.auto_map = dict(AUTO_MAP)

    @property
    def compressor(self) -> VideoCompressor:
        return VideoCompressor(**self.video_compressor)


@dataclass
class VideoFeatures(BaseModelOutputWithPooling):
    """The projector's output per video (`pooler_output`), with the grids the compressor needs.

    Generation computes the vision features before the first forward and drops the grids from the
    inputs, so they travel with the features.
    """

    video_grid_thw: torch.LongTensor | None = None
    video_merge_sizes: torch.LongTensor | None = None


def _chunks(grids: torch.Tensor, frames_per_chunk: int) -> list[list[tuple[int, int, int]]]:
    """Runs of (video, first frame, frames) holding at most `frames_per_chunk` frames each, in order."""
    chunks, current, size = [], [], 0
    for video, frames in enumerate(grids[:, 0].tolist()):
        start = 0
        while start < frames:
            take = min(frames - start, frames_per_chunk - size)
            current.append((video, start, take))
            size += take
            start += take
            if size == frames_per_chunk:
                chunks.append(current)
                current, size = [], 0
    if current:
        chunks.append(current)
    return chunks


class CompressedVideoLlama3Model(VideoLlama3Model):
    config_class = CompressedVideoLlama3Config

    def __init__(self, config: CompressedVideoLlama3Config):
        super().__init__(config)
        self.video_compressor = build_compressor(config.compressor, config.text_config.hidden_size)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, VideoCompressorModule):
            module.init_weights(init)

    def get_video_features(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.LongTensor,
                           video_merge_sizes: torch.LongTensor, **kwargs) -> VideoFeatures:
        """The projector's output per video, the vision encoder run on at most `encoder_chunk_frames`
        frames at a time (frames attend only within themselves, so the result is the same as in one go).

        A frozen vision encoder runs without autograd, so a long video's encoder activations are never kept.
        """
        spec = self.config.compressor
        grids, merges = video_grid_thw, video_merge_sizes
        patches_per_frame = (grids[:, 1] * grids[:, 2]).tolist()
        offsets = [0, *torch.cumsum(grids.prod(-1), 0).tolist()]
        keep_graph = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_model.parameters())
        pieces: list[list[torch.Tensor]] = [[] for _ in range(len(grids))]
        for chunk in _chunks(grids, spec.encoder_chunk_frames):
            pixels = torch.cat([
                pixel_values_videos[offsets[v] + s * patches_per_frame[v]: offsets[v] + (s + n) * patches_per_frame[v]]
                for v, s, n in chunk
            ])
            chunk_grids = grids.new_tensor([[n, int(grids[v, 1]), int(grids[v, 2])] for v, _, n in chunk])
            chunk_merges = torch.stack([merges[v] for v, _, _ in chunk])
            with torch.set_grad_enabled(keep_graph):
                hidden = self.vision_model(pixel_values=pixels, grid_thw=chunk_grids, merge_sizes=chunk_merges,
                                           return_dict=True).last_hidden_state
            embeddings = self.projector(hidden)
            sizes = (chunk_grids.prod(-1) // chunk_merges**2).tolist()
            for (video, _, _), part in zip(chunk, embeddings.split(sizes)):
                pieces[video].append(part)
        return VideoFeatures(pooler_output=tuple(torch.cat(p) for p in pieces), video_grid_thw=grids,
                             video_merge_sizes=merges)

    def _questions(self, ids: torch.Tensor | None, lengths: torch.Tensor | None) -> list[torch.Tensor] | None:
        if ids is None or lengths is None:
            return None
        embedded = self.get_input_embeddings()(ids.to(self.get_input_embeddings().weight.device))
        return list(embedded.split(lengths.tolist()))

    def compress_videos(self, features: BaseModelOutputWithPooling, video_grid_thw=None, video_merge_sizes=None,
                        video_query_ids=None, video_query_lengths=None) -> BaseModelOutputWithPooling:
        """Projected features per video -> the compressor's tokens per video."""
        grids = getattr(features, "video_grid_thw", None)
        merges = getattr(features, "video_merge_sizes", None)
        grids = video_grid_thw if grids is None else grids
        merges = video_merge_sizes if merges is None else merges
        if grids is None or merges is None:
            raise ValueError("the video compressor needs each video's video_grid_thw and video_merge_sizes")
        token_grids = [(int(t), int(h // m), int(w // m)) for (t, h, w), m in zip(grids.tolist(), merges.tolist())]
        questions = self._questions(video_query_ids, video_query_lengths)
        compressed = self.video_compressor(list(features.pooler_output), token_grids, questions)
        return BaseModelOutputWithPooling(pooler_output=tuple(compressed))

    def forward(self, input_ids=None, pixel_values_videos=None, video_grid_thw=None, video_merge_sizes=None,
                video_compression_mask=None, mm_encoder_outputs=None, video_query_ids=None, video_query_lengths=None,
                **kwargs):
        """The native forward, with each video's features compressed before they replace its <|video_pad|> tokens.

        video_query_ids / video_query_lengths: the token ids of the question each video came with,
        concatenated, and their count per video (llamavid's context tokens attend with them).
        DiffFP's video_compression_mask does not apply: the compressor decides the tokens.
        """
        outputs = dict(mm_encoder_outputs or {})
        if outputs.get("video") is None and pixel_values_videos is not None:
            outputs["video"] = self.get_video_features(pixel_values_videos, video_grid_thw, video_merge_sizes)
        if outputs.get("video") is not None and self.video_compressor is not None:
            outputs["video"] = self.compress_videos(outputs["video"], video_grid_thw, video_merge_sizes,
                                                    video_query_ids, video_query_lengths)
        return super().forward(input_ids=input_ids, mm_encoder_outputs=outputs or None, **kwargs)


class CompressedVideoLlama3ForConditionalGeneration(VideoLlama3ForConditionalGeneration):
    config_class = CompressedVideoLlama3Config

    def __init__(self, config: CompressedVideoLlama3Config):
        VideoLlama3PreTrainedModel.__init__(self, config)  # the native __init__, with the compressing inner model
        self.model = CompressedVideoLlama3Model(config)
        self.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, VideoCompressorModule):
            module.init_weights(init)

    @property
    def video_compressor(self) -> VideoCompressor:
        return self.config.compressor

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=None, pixel_values=None, image_grid_thw=None, image_merge_sizes=None,
                pixel_values_videos=None, video_grid_thw=None, video_merge_sizes=None, video_compression_mask=None,
                mm_encoder_outputs=None, video_query_ids: torch.LongTensor | None = None,
                video_query_lengths: torch.LongTensor | None = None, **kwargs):
        """The native forward; video_query_ids / video_query_lengths (the questions) go to the compressor.

        The arguments are spelled out because generation checks its inputs against this signature.
        """
        if video_query_ids is not None:
            kwargs.update(video_query_ids=video_query_ids, video_query_lengths=video_query_lengths)
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, pixel_values=pixel_values,
            image_grid_thw=image_grid_thw, image_merge_sizes=image_merge_sizes, pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw, video_merge_sizes=video_merge_sizes,
            video_compression_mask=video_compression_mask, mm_encoder_outputs=mm_encoder_outputs, **kwargs,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """The native save, plus the folder's `vidlab_compressor.py` (see the module docstring)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            (Path(save_directory) / SHIM_FILE).write_text(SHIM, encoding="utf-8")


def register() -> None:
    """Make transformers' Auto classes build these from a config of model_type vidlab_video_llama_3."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    try:
        AutoConfig.register(MODEL_TYPE, CompressedVideoLlama3Config)
    except ValueError:  # registered already (a second import of this module under another name)
        return
    AutoModel.register(CompressedVideoLlama3Config, CompressedVideoLlama3Model)
    AutoModelForImageTextToText.register(CompressedVideoLlama3Config, CompressedVideoLlama3ForConditionalGeneration)


register()
