"""What a server allows and how it batches: limits, security, queue, and the defaults requests start from.

One typed object with its defaults and one-line docs; `vidlab serve` builds it from its options (an
option that is not given keeps the default written here), and `create_app` takes it. The media and
decoding defaults are `vidlab.settings` objects: a request field that is not given means these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vidlab.settings import GenerationOptions, MediaSettings

MIB = 1 << 20


class ServeOptions(BaseModel):
    """Everything about a server but the model it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    media_root: Path | None = Field(
        None, description="Folder whose files requests may name by path or file:// URL (symlinks are followed and "
        "must stay inside); none: no local file is ever read.",
    )
    allow_remote_media: bool = Field(False, description="Fetch http(s) media URLs (size and time limited).")
    max_media_mb: float = Field(
        100.0, gt=0, allow_inf_nan=False, description="Largest upload (data: URL) or download, per media part, in MiB."
    )
    max_video_seconds: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Longest video a request may send, in seconds (none: no limit)."
    )
    max_media_parts: int = Field(8, ge=1, description="Most images and videos one request may hold.")
    max_body_mb: float = Field(
        256.0, gt=0, allow_inf_nan=False, description="Largest request body in MiB, base64 media included (the "
        "body is also never larger than max_media_parts uploads of max_media_mb).",
    )
    remote_timeout: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="Seconds a remote media download may take in all."
    )
    api_key: str | None = Field(
        None, description="Every route but /health needs `Authorization: Bearer KEY` (none: no key needed)."
    )
    batching: Literal["continuous", "static"] = Field(
        "continuous", description="continuous: a request joins the running batch at the next decoding step and "
        "leaves it when it ends; static: a batch of same-settings requests runs until its longest answer ends.",
    )
    max_batch: int = Field(8, ge=1, description="Most requests generated together in one batch (1: no batching).")
    prefill_tokens: int = Field(
        512, ge=1, description="continuous batching: most prompt tokens prefilled between two decoding steps (a "
        "longer prompt goes in over several steps while the others decode).",
    )
    max_queue: int = Field(
        64, ge=1, description="Most requests waiting for the model; one more is answered 429 with Retry-After."
    )
    batch_wait_ms: float = Field(
        10.0, ge=0, allow_inf_nan=False, description="static batching: how long a ready request waits for others "
        "to share its batch (longer while other requests are still being decoded, at most 4x).",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context length: prompt (text and visual tokens) plus answer (none: the model's own)."
    )
    decode_workers: int = Field(2, ge=1, description="Threads that fetch, decode and encode requests' media.")
    clip_cache_mb: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Decoded frames kept across requests, in MiB (none: ClipCache's own bound).",
    )
    vision_cache_mb: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Vision-encoder outputs kept across requests, in MiB, shared by "
        "the base model and its adapters (none: VisionCache's own bound).",
    )
    prefix_cache_mb: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Key/value caches of prompt starts (system, media and the text "
        "before the question) kept for later requests about the same media, in MiB, on the model's device (none: "
        "PrefixCache's own bound; 0: off).",
    )
    max_fps: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="Most frames decoded per second of video; a request's fps above "
        "the file's own rate is taken as that rate first (it costs nothing), above this it is a 400.",
    )
    max_video_frames: int = Field(
        256, ge=1, description="Most frames one video may be sampled to (a request's num_frames, max_frames, "
        "min_frames above it are a 400).",
    )
    max_request_frames: int = Field(
        512, ge=1, description="Most video frames one request may hold, all its videos together (counted from each "
        "file's header before decoding).",
    )
    max_request_video_seconds: float = Field(
        3600.0, gt=0, allow_inf_nan=False, description="Most seconds of video one request may send, all its videos "
        "(or their clip windows) together.",
    )
    max_request_visual_tokens: int = Field(
        32768, ge=1, description="Most visual tokens (before DiffFP pruning) one request may hold, all its media "
        "together.",
    )
    max_request_text_chars: int = Field(
        262144, ge=1, description="Most characters of text one request may hold, all its messages together (checked "
        "before tokenizing).",
    )
    shrink_to_fit: bool = Field(
        False, description="Give a prompt that does not fit the context with its max_tokens fewer, smaller video "
        "frames instead of refusing it with a 400 (vLLM refuses).",
    )
    allowed_media_domains: tuple[str, ...] | None = Field(
        None, description="Host names remote media URLs may name (exactly, or a subdomain of one); none: any "
        "public host.",
    )
    allow_private_media_addresses: bool = Field(
        False, description="Fetch remote media from private, loopback and link-local addresses too (after DNS "
        "resolution these are refused by default).",
    )
    trust_media_uuids: bool = Field(
        False, description="A part with a url and a uuid the server has seen is answered from the cache without "
        "reading the url (faster, but a client can then see another's media by reusing its uuid).",
    )
    media: MediaSettings = Field(
        default_factory=MediaSettings,
        description="Frame sampling and visual-token settings of a request that sets none.",
    )
    generation: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Decoding settings of a request that sets none."
    )

    @model_validator(mode="after")
    def _defaults_within_ceilings(self) -> ServeOptions:
        frames = max(self.media.max_frames, self.media.min_frames, self.media.num_frames or 0)
        if frames > self.max_video_frames:
            raise ValueError(f"the default frames per video ({frames}) are above max_video_frames "
                             f"({self.max_video_frames})")
        if self.media.fps > self.max_fps:
            raise ValueError(f"the default fps ({self.media.fps:g}) is above max_fps ({self.max_fps:g})")
        return self

    @property
    def max_media_bytes(self) -> int:
        return int(self.max_media_mb * MIB)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: every media part at its limit, base64-encoded, plus 1 MiB of text; at most
        `max_body_mb`."""
        return min(self.max_media_parts * self.max_media_bytes * 4 // 3 + MIB, int(self.max_body_mb * MIB))
