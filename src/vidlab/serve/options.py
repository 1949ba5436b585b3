"""What a server allows and how it batches: limits, security, queue, and the defaults requests start from.

One typed object with its defaults and one-line docs; `vidlab serve` builds it from its options (an
option that is not given keeps the default written here), and `create_app` takes it. The media and
decoding defaults are `vidlab.settings` objects: a request field that is not given means these.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

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
    remote_timeout: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="Seconds a remote media download may take in all."
    )
    api_key: str | None = Field(
        None, description="Every route but /health needs `Authorization: Bearer KEY` (none: no key needed)."
    )
    max_batch: int = Field(8, ge=1, description="Most requests generated together in one batch (1: no batching).")
    max_queue: int = Field(
        64, ge=1, description="Most requests waiting for the model; one more is answered 429 with Retry-After."
    )
    batch_wait_ms: float = Field(
        10.0, ge=0, allow_inf_nan=False, description="How long a ready request waits for others to share its batch "
        "(longer while other requests are still being decoded, at most 4x).",
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
    media: MediaSettings = Field(
        default_factory=MediaSettings,
        description="Frame sampling and visual-token settings of a request that sets none.",
    )
    generation: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Decoding settings of a request that sets none."
    )

    @property
    def max_media_bytes(self) -> int:
        return int(self.max_media_mb * MIB)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: every media part at its limit, base64-encoded, plus 1 MiB of text."""
        return self.max_media_parts * self.max_media_bytes * 4 // 3 + MIB
