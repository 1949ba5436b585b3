"""Training data: annotation records -> labelled samples within a token budget -> padded batches.

The steps, each usable on its own:
    load_records   annotation files -> TrainRecord list + SkipNote list (bad records, with file:line)
    encode_record  one record -> EncodedSample: processor tensors of the whole conversation, labels
                   on the assistant replies only, shrunk (never cut) to fit model_max_length
    TrainDataset   records -> samples; a record that fails is replaced by the next one, so every
                   batch is full and the order is the same on every run
    Collator       samples -> one right-padded batch for `model(**batch["inputs"])`

Nothing is ever truncated: a cut inside the vision tokens makes the model fail with "video features
and video tokens do not match". A sample too long for `model_max_length` instead gets smaller frames,
then fewer frames; if even one frame per video does not fit, it is skipped (SampleError).
"""

from __future__ import annotations

import bisect
import copy
import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers.image_utils import SizeDict

from vidlab.conversation import Conversation, parse_record
from vidlab.errors import ConversationError, DataFileError, MediaError, MediaNotFoundError, SampleError, VidlabError
from vidlab.files import iter_json_items, reason_of
from vidlab.inputs import InputStats, batch_stats, load_media, video_metadata
from vidlab.media import DEFAULT_FOLDER_FPS, Sampling, VideoClip
from vidlab.media.sampling import evenly_spaced
from vidlab.models.template import END_OF_TURN, IMAGE_TOKEN, VIDEO_TOKEN

IGNORE_INDEX = -100  # the label of a position that is not learned (PyTorch cross-entropy's ignore_index)
TEXT_KEYS = ("input_ids", "attention_mask", "labels")
# Shrinking a sample's frames stops after this many resolution steps and goes to the smallest frames.
_MAX_RESOLUTION_STEPS = 12


@dataclass(frozen=True)
class DataOptions:
    """How records become samples.

    Attributes:
        sampling: which frames to take from each video (fps, max_frames, num_frames).
        compression: DiffFP, VideoLLaMA3's pruning of video tokens that barely change from the
            previous frame (done by the processor; the sample's length is counted after it).
        model_max_length: most tokens in one sample, text and visual together. Longer samples get
            smaller, then fewer frames; they are never truncated.
        max_visual_tokens: most visual tokens one video may use (shared by its frames; None: the
            video processor's own budget). A video with more frames than this budget allows at the
            processor's smallest frame size (its min_pixels) keeps that many evenly spaced frames.
        image_merge_size: image tokens per 14x14 (1) or 28x28 (2) pixel block; None: the image
            processor's own (VideoLLaMA3 uses 1 in stages 1-3, 2 in stage 4). The image token budget
            stays the same: the processor's pixel limits scale with the block.
        folder_fps: frame rate of videos stored as folders of frame images.
        strict: raise on the first bad record or sample instead of skipping it.
    """

    sampling: Sampling = Sampling()
    compression: bool = True
    model_max_length: int = 16384
    max_visual_tokens: int | None = None
    image_merge_size: int | None = None
    folder_fps: float = DEFAULT_FOLDER_FPS
    strict: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.model_max_length < 1:
            problems.append(f"model_max_length must be at least 1 (got {self.model_max_length})")
        if self.max_visual_tokens is not None and self.max_visual_tokens < 1:
            problems.append(f"max_visual_tokens must be at least 1 or None (got {self.max_visual_tokens})")
        if self.image_merge_size not in (None, 1, 2):
            problems.append(f"image_merge_size must be 1, 2 or None (got {self.image_merge_size})")
        if self.folder_fps <= 0:
            problems.append(f"folder_fps must be above 0 (got {self.folder_fps})")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class SkipNote:
    """A record that was not trained on, and why: one line of skipped.jsonl."""

    file: str
    line: int
    id: str | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainRecord:
    """One usable annotation record.

    Attributes:
        file, line: where the record is (the line its JSON starts on).
        id: the record's "id", or "file.name:line" when it has none (ids need not be unique).
        index: position in the list `load_records` returned.
        conversation: the turns, with at least one assistant reply.
        data_root: the folder relative media paths are resolved against.
    """

    file: Path
    line: int
    id: str
    index: int
    conversation: Conversation
    data_root: Path

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


# ---------------------------------------------------------------------------------------------------------------------
# Reading records


def _place(file: Path | str, line: int, record_id: str | None) -> str:
    return f"{file}:{line}" + (f" (id {record_id})" if record_id is not None else "")


def _resolve(path: str, root: Path) -> Path:
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else root / resolved


def _usable_conversation(item: Any, where: str, root: Path) -> Conversation:
    """The record as a Conversation, or the VidlabError that says why it cannot be trained on."""
    if isinstance(item, Exception):
        raise item
    conversation = parse_record(item, where=where)
    if not any(turn.role == "assistant" for turn in conversation.turns):
        raise ConversationError(
            f'{where}: no assistant ("gpt") turn, so nothing to learn. Add the expected answer as a gpt turn.'
        )
    for part in conversation.media:
        path = _resolve(part.path, root)
        if not path.exists():
            raise MediaNotFoundError(
                f"{where}: {part.type} not found: {path}. Relative paths are resolved against the data root "
                f"({root}); fix the path or the data root."
            )
    return conversation


def load_records(
    files: list[Path], data_root: Path | None = None, strict: bool = False
) -> tuple[list[TrainRecord], list[SkipNote]]:
    """Read annotation files (JSON list or JSONL) into training records.

    A record is skipped (a SkipNote with file, line, id and reason) when its line is not valid JSON,
    it is not an object, its conversation does not validate, it has no assistant turn, or one of its
    media paths does not exist.

    Args:
        files: annotation files, read in order.
        data_root: folder that relative media paths are relative to (default: each annotation
            file's own folder).
        strict: raise on the first bad record instead of skipping it.

    Raises:
        DataFileError: an annotation file or the data root is missing, or a file cannot be read at
            all (empty, not UTF-8, a JSON list broken part way).
        SampleError: strict=True and a record is bad; names file:line, the id and the fix.
    """
    files = [Path(f) for f in files]
    problems = [f"{f}: no such annotation file" for f in files if not f.is_file()]
    if data_root is not None and not Path(data_root).is_dir():
        problems.append(f"{data_root}: the data root is not a folder")
    if problems:
        raise DataFileError(
            "; ".join(problems) + ". Check the paths: annotation files are JSON lists or JSONL of records, "
            "and media paths in them are relative to the data root (default: the annotation file's folder)."
        )
    records: list[TrainRecord] = []
    skipped: list[SkipNote] = []
    for file in files:
        root = Path(data_root) if data_root is not None else file.parent
        for line, item in iter_json_items(file):
            where = f"{file}:{line}"
            record_id = str(item["id"]) if isinstance(item, dict) and item.get("id") is not None else None
            try:
                conversation = _usable_conversation(item, where, root)
            except VidlabError as err:
                note = SkipNote(str(file), line, record_id, reason_of(err, where))
                if strict:
                    raise SampleError(
                        f"{_place(file, line, record_id)}: {note.reason} (strict mode stops at the first bad record: "
                        "fix or remove it, or turn strict off to skip bad records and list them in skipped.jsonl)"
                    ) from err
                skipped.append(note)
                continue
            records.append(
                TrainRecord(file, line, record_id or f"{file.name}:{line}", len(records), conversation, root)
            )
    return records, skipped


# ---------------------------------------------------------------------------------------------------------------------
# Labels


@functools.lru_cache(maxsize=8)
def _markers(tokenizer) -> tuple[int, tuple[int, ...], tuple[int, ...], int, frozenset[int]]:
    """Token ids the label mask looks for, tokenized once per tokenizer.

    Returns (<|im_start|>, tokens of "assistant\\n", tokens of "assistant", <|im_end|>, vision token ids).
    """
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    header = tuple(tokenizer("assistant\n", add_special_tokens=False)["input_ids"])
    role = tuple(tokenizer("assistant", add_special_tokens=False)["input_ids"])
    if header[: len(role)] != role:
        role = header  # the role name merged with the newline: only exact header matches count
    unknown = tokenizer.unk_token_id
    vision_ids = (tokenizer.convert_tokens_to_ids(token) for token in (VIDEO_TOKEN, IMAGE_TOKEN))
    vision = frozenset(i for i in vision_ids if i is not None and i != unknown)
    if start_id is None or start_id == unknown or end_id is None or end_id == unknown:
        raise VidlabError(
            "the tokenizer has no <|im_start|> / <|im_end|> tokens, so assistant replies cannot be found. "
            "Use the model's own (Qwen2) tokenizer."
        )
    return start_id, header, role, end_id, vision


def assistant_label_mask(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """True at the tokens that are learned: each assistant reply and its closing <|im_end|>.

    A reply starts after `<|im_start|>` + the tokens of "assistant\\n" and runs up to and including
    the next `<|im_end|>` (to the end when there is none). The prefix itself, system and user turns,
    vision tokens and anything after the last `<|im_end|>` (the template's trailing newline) are False.
    When the reply begins with whitespace the tokenizer may merge the role's newline with it (Qwen:
    "\\n\\n" is one token); then the reply starts at that merged token.

    Args:
        input_ids: (length,) token ids of one sample.
        tokenizer: the processor's tokenizer.
    """
    if input_ids.dim() != 1:
        raise ValueError(f"assistant_label_mask takes one sample's (length,) ids, got shape {tuple(input_ids.shape)}")
    start_id, header, role, end_id, vision = _markers(tokenizer)
    ids = input_ids.tolist()
    mask = torch.zeros(len(ids), dtype=torch.bool)
    ends = (input_ids == end_id).nonzero().flatten().tolist()
    for start in (input_ids == start_id).nonzero().flatten().tolist():
        body = start + 1
        if tuple(ids[body : body + len(header)]) == header:
            first = body + len(header)
        elif (
            role != header
            and tuple(ids[body : body + len(role)]) == role
            and body + len(role) < len(ids)
            and tokenizer.decode([ids[body + len(role)]]).startswith("\n")
        ):
            first = body + len(role)
        else:
            continue
        after = bisect.bisect_left(ends, first)
        last = ends[after] if after < len(ends) else len(ids) - 1
        mask[first : last + 1] = True
    for token in vision:
        mask &= input_ids != token
    return mask


def label_assistant_turns(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Labels for one sample: the token ids where `assistant_label_mask` is True, -100 elsewhere."""
    return torch.where(assistant_label_mask(input_ids, tokenizer), input_ids, torch.full_like(input_ids, IGNORE_INDEX))


# ---------------------------------------------------------------------------------------------------------------------
# One sample


@dataclass(eq=False)
class EncodedSample:
    """One record as model inputs.

    Attributes:
        tensors: input_ids, attention_mask, labels (each (length,)), plus the processor's vision
            tensors for this sample (pixel_values_videos, video_grid_thw, video_merge_sizes,
            video_compression_mask, pixel_values, image_grid_thw, image_merge_sizes), its videos and
            images concatenated in order.
        stats: frames per video and token counts (visual after DiffFP, text).
        record: where it came from.
        shrunk: None, or how the token budget was met, e.g. "frames 180->64, 96->24 tokens/frame".
    """

    tensors: dict[str, torch.Tensor]
    stats: InputStats
    record: TrainRecord
    shrunk: str | None = None

    def __len__(self) -> int:
        return int(self.tensors["input_ids"].shape[0])


def _decoder_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (MediaError, ValueError, RuntimeError, OSError, EOFError)
    try:
        import av

        errors += (av.error.FFmpegError,)
    except ImportError:  # pragma: no cover - av is a dependency, but decoding errors must not need it
        pass
    return errors


def _subclip(clip: VideoClip, count: int) -> VideoClip:
    """`count` evenly spaced frames of the clip, with their true times and indices."""
    if count >= len(clip):
        return clip
    keep = evenly_spaced(len(clip), count)
    return VideoClip(
        path=clip.path,
        frames=clip.frames[keep],
        timestamps=[clip.timestamps[i] for i in keep],
        frame_indices=[clip.frame_indices[i] for i in keep],
        source_fps=clip.source_fps,
        duration=clip.duration,
        start=clip.start,
        end=clip.end,
    )


def _share(counts: list[int], total: int) -> list[int]:
    """Frames per video when the sample may have `total` frames: in proportion, at least 1 each."""
    whole = sum(counts)
    shares = [max(1, count * total // whole) for count in counts]
    while sum(shares) > max(total, len(counts)):
        biggest = max(range(len(shares)), key=lambda i: shares[i])
        shares[biggest] -= 1
    return shares


class _SampleEncoder:
    """Runs the processor on one conversation with given frames and a per-video token budget."""

    def __init__(self, processor, text: str, images: list[Image.Image], compression: bool):
        self.processor = processor
        self.text = text
        self.images = images
        self.compression = compression
        video = getattr(processor, "video_processor", None)
        merge, patch = (int(video.merge_size), int(video.patch_size)) if video is not None else (2, 14)
        self.block = (patch * merge) ** 2  # pixels of one video token
        size = video.size if video is not None else {"shortest_edge": self.block, "longest_edge": self.block}
        self.shortest_edge = int(size["shortest_edge"])  # pixels of the smallest frame
        self.own_budget = int(size["longest_edge"]) // self.block  # tokens per video
        self.min_tokens_per_frame = max(1, self.shortest_edge // self.block)

    def __call__(self, clips: list[VideoClip], budget: int) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {}
        if clips:
            kwargs["videos"] = [clip.frames for clip in clips]
            kwargs["video_metadata"] = [video_metadata(clip) for clip in clips]
            # The video processor's size["longest_edge"] is the pixel budget of a whole video, divided
            # by its frame count inside; a per-call size overrides the processor's own for this call only.
            kwargs["videos_kwargs"] = {
                "size": {"shortest_edge": self.shortest_edge, "longest_edge": budget * self.block},
                "use_token_compression": self.compression,
            }
        if self.images:
            kwargs["images"] = self.images
        try:
            batch = self.processor(text=[self.text], return_tensors="pt", padding=False, **kwargs)
        except ValueError as err:  # e.g. an image or video with an aspect ratio above 200
            raise MediaError(f"the processor cannot use this sample's media ({err})") from err
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    @staticmethod
    def length(tensors: dict[str, torch.Tensor]) -> int:
        return int(tensors["input_ids"].shape[1])

    def tokens_per_frame(self, tensors: dict[str, torch.Tensor]) -> list[int]:
        """Tokens of each video's frames before DiffFP."""
        if "video_grid_thw" not in tensors:
            return []
        grid, merges = tensors["video_grid_thw"], tensors["video_merge_sizes"]
        return ((grid[:, 1] * grid[:, 2]) // merges**2).tolist()

    @staticmethod
    def video_tokens(tensors: dict[str, torch.Tensor]) -> int:
        mask = tensors.get("video_compression_mask")
        return 0 if mask is None else int(mask.sum())

    @staticmethod
    def image_tokens(tensors: dict[str, torch.Tensor]) -> int:
        if "image_grid_thw" not in tensors:
            return 0
        return int((tensors["image_grid_thw"].prod(-1) // tensors["image_merge_sizes"] ** 2).sum())


def _over_budget(length: int, limit: int, detail: str) -> str:
    return (
        f"over budget: {length} tokens > model_max_length {limit}; {detail}. Samples are never truncated (a cut "
        "inside the vision tokens breaks the model): shorten the conversation or raise model_max_length."
    )


def _fit(
    encode: _SampleEncoder, decoded: list[VideoClip], options: DataOptions
) -> tuple[dict[str, torch.Tensor], list[VideoClip], str | None]:
    """Encode within the budgets; returns (tensors, the clips used, how the sample was shrunk)."""
    limit = options.model_max_length
    floor = encode.min_tokens_per_frame
    budget = options.max_visual_tokens or encode.own_budget
    clips = list(decoded)
    if options.max_visual_tokens is not None:
        # Each frame keeps at least the processor's smallest frame: a video with more frames than the
        # budget pays for at that size keeps fewer (evenly spaced) frames.
        most = max(1, budget // floor)
        clips = [_subclip(clip, most) for clip in clips]
    tensors = encode(clips, budget)
    first_per_frame = max(encode.tokens_per_frame(tensors), default=0)
    length = encode.length(tensors)

    if length > limit and not clips:
        raise SampleError(_over_budget(length, limit, "the sample has no video, and only video frames are shrunk"))

    # 1. Smaller frames: lower the per-video budget until it fits or every frame is at the floor.
    smallest = floor * max((len(clip) for clip in clips), default=0)
    steps = 0
    while length > limit and budget > smallest:
        steps += 1
        if steps > _MAX_RESOLUTION_STEPS:
            budget = smallest
        else:
            # Scale the budget the video actually used by the share of its tokens that may stay.
            video = encode.video_tokens(tensors)
            used = max(len(clip) * tokens for clip, tokens in zip(clips, encode.tokens_per_frame(tensors)))
            ratio = max(video - (length - limit), 0) / video if video else 0.0
            budget = max(smallest, min(budget - 1, int(used * ratio)))
        tensors = encode(clips, budget)
        length = encode.length(tensors)

    # 2. Fewer frames (evenly spaced, true times), none larger than now, until it fits.
    if length > limit:
        unexpanded = len(encode.processor.tokenizer(encode.text, add_special_tokens=False)["input_ids"])
        # Tokens that do not change with the frames: the text, one placeholder per video, the images.
        fixed = unexpanded - len(clips) - len(encode.images) + encode.image_tokens(tensors)
        # Frames stay as small as they are now (at most the floor): fewer frames must not grow them.
        per_frame_cap = max(1, min(floor, budget // max(len(clip) for clip in clips)))
        while length > limit:
            frames = sum(len(clip) for clip in clips)
            if frames <= len(clips):
                raise SampleError(
                    _over_budget(
                        length, limit,
                        f"even 1 frame per video at {max(encode.tokens_per_frame(tensors))} token(s) per frame "
                        f"leaves {length - encode.video_tokens(tensors) - encode.image_tokens(tensors)} text tokens",
                    )
                )
            per_frame = max(length - fixed, 1) / frames
            wanted = max(len(clips), min(frames - 1, int((limit - fixed) / per_frame)))
            counts = _share([len(clip) for clip in clips], wanted)
            clips = [_subclip(clip, count) for clip, count in zip(decoded, counts)]
            budget = per_frame_cap * max(counts)
            tensors = encode(clips, budget)
            length = encode.length(tensors)

    notes = []
    before, after = sum(len(clip) for clip in decoded), sum(len(clip) for clip in clips)
    if after != before:
        notes.append(f"frames {before}->{after}")
    last_per_frame = max(encode.tokens_per_frame(tensors), default=0)
    if last_per_frame != first_per_frame:
        notes.append(f"{first_per_frame}->{last_per_frame} tokens/frame")
    return tensors, clips, ", ".join(notes) or None


def _with_image_merge(processor, merge_size: int | None):
    """The processor, or a shallow copy whose image processor merges `merge_size` x `merge_size` patches.

    A per-call `images_kwargs={"merge_size": 2}` is not enough: the processor counts the
    <|image_pad|> tokens it writes with its image processor's own merge size, so the text would get
    4x the tokens the model makes features for. The copy changes both, and scales the pixel limits
    so that the token limits stay as they were (VideoLLaMA3 budgets images in tokens).
    """
    images = getattr(processor, "image_processor", None)
    if merge_size is None or images is None or int(images.merge_size) == merge_size:
        return processor
    scale = (merge_size / int(images.merge_size)) ** 2
    images = copy.copy(images)
    images.size = SizeDict(
        shortest_edge=int(images.size["shortest_edge"] * scale), longest_edge=int(images.size["longest_edge"] * scale)
    )
    images.merge_size = merge_size
    processor = copy.copy(processor)
    processor.image_processor = images
    return processor


def encode_record(record: TrainRecord, processor, options: DataOptions) -> EncodedSample:
    """One record -> model inputs with labels, within the token budgets.

    The whole conversation is rendered (no generation prompt) and processed as one sample, with no
    padding. Labels cover the assistant replies only (`label_assistant_turns`).

    Budgets: each video gets at most `options.max_visual_tokens` visual tokens (or the processor's
    own budget). If the sample is then longer than `options.model_max_length` (counted after DiffFP),
    its frames are made smaller, down to the processor's smallest frame (min_pixels), then fewer,
    evenly spaced and keeping their true times, down to one per video. `shrunk` says what was done.

    Raises:
        SampleError: the media cannot be read or used, or the sample does not fit even with one
            frame per video at the smallest size. The message starts with the record's file:line.
    """
    where = record.source
    try:
        media = load_media(record.conversation, record.data_root, options.sampling, options.folder_fps)
    except _decoder_errors() as err:
        reason = str(err) if isinstance(err, MediaError) else (
            f"the media could not be decoded ({type(err).__name__}: {err}). Check the file or re-encode it"
        )
        raise SampleError(f"{where}: {reason}") from err
    text = processor.apply_chat_template(
        record.conversation.to_messages(), tokenize=False, add_generation_prompt=False
    )
    decoded = [m for m in media if isinstance(m, VideoClip)]
    images = [m for m in media if not isinstance(m, VideoClip)]
    encode = _SampleEncoder(_with_image_merge(processor, options.image_merge_size), text, images, options.compression)
    try:
        tensors, clips, shrunk = _fit(encode, decoded, options)
    except (SampleError, MediaError) as err:
        raise SampleError(f"{where}: {err}") from err
    stats = batch_stats(tensors, [clips], [len(images)])[0]
    tensors = {k: (v[0] if k in TEXT_KEYS else v) for k, v in tensors.items()}
    tensors["labels"] = label_assistant_turns(tensors["input_ids"], processor.tokenizer)
    return EncodedSample(tensors=tensors, stats=stats, record=record, shrunk=shrunk)


# ---------------------------------------------------------------------------------------------------------------------
# Data set and batches


class TrainDataset(torch.utils.data.Dataset):
    """Records -> encoded samples, replacing a sample that fails by the next records in order.

    Item `i` is record i if it encodes, else record i+1, i+2, ... (wrapping around) up to
    `max_retries` more; the failures come back in the item's "skipped". Every item is therefore a
    real sample, so all processes of a distributed run step together, and the same data gives the
    same items on every run. A record seen to fail once is not retried or reported again by the
    same process (each DataLoader worker may report it once: deduplicate skipped.jsonl on
    file and line).

    Works in DataLoader worker processes: all state is plain data and the processor.
    """

    def __init__(
        self, records: list[TrainRecord], processor, options: DataOptions = DataOptions(), max_retries: int = 8
    ):
        if not records:
            raise VidlabError(
                "no training records to use: the annotation files hold none, or every record was skipped "
                "(see skipped.jsonl for why)."
            )
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more (got {max_retries})")
        self.records = records
        self.processor = processor
        self.options = options
        self.max_retries = max_retries
        self._failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        skipped: list[SkipNote] = []
        reasons: list[str] = []
        attempts = min(self.max_retries + 1, len(self.records))
        for step in range(attempts):
            position = (index + step) % len(self.records)
            record = self.records[position]
            if position in self._failed:
                continue
            try:
                sample = encode_record(record, self.processor, self.options)
            except SampleError as err:
                if self.options.strict:
                    raise
                self._failed.add(position)
                note = SkipNote(str(record.file), record.line, record.id, reason_of(err, record.source))
                skipped.append(note)
                reasons.append(f"{record.source}: {note.reason}")
                continue
            return {"sample": sample, "skipped": skipped}
        raise VidlabError(
            f"records {index} to {index + attempts - 1} (of {len(self.records)}) all failed; the data seems broken. "
            f"Last reasons: {'; '.join(reasons[-3:]) or 'failed before in this process'}. Check the media files "
            "and the data root, or run with strict on to stop at the first bad record."
        )


VISION_KEYS = (
    "pixel_values_videos",
    "video_grid_thw",
    "video_merge_sizes",
    "video_compression_mask",
    "pixel_values",
    "image_grid_thw",
    "image_merge_sizes",
)


class Collator:
    """Items of TrainDataset -> one batch, padded on the right.

    The vision tensors of all samples are concatenated in sample order, as the processor lays out a
    batched call: the model matches them to the <|video_pad|> / <|image_pad|> tokens in that order.
    """

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise VidlabError("the tokenizer has no pad token; set tokenizer.pad_token (Qwen: <|endoftext|>).")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict]) -> dict:
        """Returns:
        inputs: tensors for `model(**inputs)`, labels included.
        skipped: every item's SkipNotes.
        num_samples: samples in the batch.
        num_label_tokens: positions whose label is learned after the model's shift by one
            (labels[:, 1:] != -100): the count the mean loss is taken over, for token-weighted
            gradient accumulation.
        stats: each sample's InputStats.
        """
        if not items:
            raise ValueError("Collator got an empty list of items")
        samples: list[EncodedSample] = [item["sample"] for item in items]
        longest = max(len(sample) for sample in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), longest), dtype=torch.long)
        labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample)
            input_ids[row, :n] = sample.tensors["input_ids"]
            attention_mask[row, :n] = sample.tensors["attention_mask"]
            labels[row, :n] = sample.tensors["labels"]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        extra = [k for s in samples for k in s.tensors if k not in TEXT_KEYS and k not in VISION_KEYS]
        for key in (*VISION_KEYS, *dict.fromkeys(extra)):
            parts = [s.tensors[key] for s in samples if key in s.tensors]
            if parts:
                inputs[key] = torch.cat(parts, dim=0)
        return {
            "inputs": inputs,
            "skipped": [note for item in items for note in item["skipped"]],
            "num_samples": len(samples),
            "num_label_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
            "stats": [sample.stats for sample in samples],
        }


__all__ = [
    "Collator",
    "DataOptions",
    "EncodedSample",
    "IGNORE_INDEX",
    "SampleError",
    "SkipNote",
    "TrainDataset",
    "TrainRecord",
    "assistant_label_mask",
    "encode_record",
    "label_assistant_turns",
    "load_records",
]
