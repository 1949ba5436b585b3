"""LLaMA-Factory's multimodal sharegpt and OpenAI-messages files, both ways.

LLaMA-Factory (hiyouga/LLaMA-Factory, data/README.md) reads a JSON list or JSONL of:
- sharegpt: {"conversations": [{"from": "human"|"gpt"|"observation"|"function_call", "value"}],
  "system": "...", "images": [...], "videos": [...], "audios": [...], "tools": "..."};
- OpenAI messages: {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}], ...} (the same
  with other tags).
Media are placeholders in the text, `<image>`, `<video>`, `<audio>` (no newline needed), one per file
of the record's lists, in order; paths are relative to LLaMA-Factory's media_dir. A video may be a
list of its frames' image paths; vidlab reads such a video from its frames' folder. Column and tag
names can be renamed per data set in dataset_info.json; pass that file and the data set's name to
use its names. Tool calls (function_call / observation turns, "tools") and audio have no place in
vidlab's records and are reported, not converted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from vidlab.conversation import MediaPart, TextPart, parse_record
from vidlab.data.convert.common import (
    Item,
    MediaMissing,
    count_placeholders,
    failed,
    json_items,
    media_record,
    path_list,
)
from vidlab.errors import AnnotationConversionError
from vidlab.files import TEXT_ENCODING


@dataclass(frozen=True)
class Layout:
    """Column and tag names of one LLaMA-Factory data set (its dataset_info.json entry)."""

    messages: str = "conversations"
    system: str | None = "system"
    images: str = "images"
    videos: str = "videos"
    audios: str = "audios"
    tools: str = "tools"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"
    observation_tag: str = "observation"
    function_tag: str = "function_call"


SHAREGPT = Layout()
OPENAI = Layout(messages="messages", role_tag="role", content_tag="content", user_tag="user",
                assistant_tag="assistant")


def layout_from_dataset_info(info_path: Path, name: str) -> Layout:
    """The layout a dataset_info.json entry declares ("columns" and "tags"), over sharegpt's defaults."""
    try:
        info = json.loads(Path(info_path).read_text(encoding=TEXT_ENCODING))
    except (OSError, json.JSONDecodeError) as err:
        raise AnnotationConversionError(
            f"{info_path}: cannot read it as JSON ({err}). Pass LLaMA-Factory's dataset_info.json."
        ) from err
    if not isinstance(info, dict) or name not in info:
        known = ", ".join(sorted(info)[:20]) if isinstance(info, dict) else ""
        raise AnnotationConversionError(f"{info_path}: no data set named {name!r}. Its data sets: {known}.")
    entry = info[name]
    if entry.get("formatting", "alpaca") != "sharegpt":
        raise AnnotationConversionError(
            f"{info_path}: {name} is in LLaMA-Factory's {entry.get('formatting', 'alpaca')} format; only its sharegpt "
            "format (conversations or OpenAI messages, with images / videos) can be converted."
        )
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    layout = replace(SHAREGPT, **{k: v for k, v in columns.items() if k in Layout.__dataclass_fields__})
    return replace(layout, **{k: v for k, v in tags.items() if k in Layout.__dataclass_fields__})


def _roles(layout: Layout) -> dict[str, str]:
    return {layout.user_tag: "human", layout.assistant_tag: "gpt", layout.system_tag: "system"}


def _frame_folder(frames: list, n: int, data_root: Path | None) -> str:
    """A video given as its frames' paths -> the folder holding them (vidlab reads a frame folder in name order)."""
    if not frames or not all(isinstance(f, str) and f.strip() for f in frames):
        raise ValueError(f"video {n} is a list that is not all frame paths (strings)")
    folders = {PurePosixPath(f).parent for f in frames}
    folder = folders.pop()
    if folders or str(folder) in ("", "."):
        raise ValueError(f"video {n}'s frames are not in one folder of their own; vidlab reads a video given as "
                         "frames from its folder: move them into one")
    if data_root is not None:
        from vidlab.media.images import list_frame_files

        if not (data_root / folder).is_dir():
            raise MediaMissing(f"video {n}'s frame folder {folder} not found under the data root {data_root}")
        on_disk = {p.name for p in list_frame_files(data_root / folder)}
        listed = {PurePosixPath(f).name for f in frames}
        if listed - on_disk:
            raise MediaMissing(f"video {n}: frame {sorted(listed - on_disk)[0]} not found in {data_root / folder}")
        if on_disk - listed:
            raise ValueError(f"video {n}: {folder} holds {len(on_disk - listed)} image(s) besides its "
                             f"{len(listed)} frames, and vidlab reads every image of a frame folder: give the "
                             "frames a folder of their own")
    return folder.as_posix()


def _videos(value: Any, name: str, data_root: Path | None) -> list[str]:
    """The record's videos: files, or (a list inside the list) the frames of one video."""
    if isinstance(value, list) and any(isinstance(v, list) for v in value):
        return [_frame_folder(v, n, data_root) if isinstance(v, list) else path_list(v, name)[0]
                for n, v in enumerate(value, start=1)]
    return path_list(value, name)


def convert_item(item: Any, layout: Layout, data_root: Path | None = None) -> dict:
    """One LLaMA-Factory record -> a vidlab record. Raises ValueError saying why it cannot be."""
    if not isinstance(item, dict):
        raise ValueError(f"a record must be a JSON object, got {type(item).__name__}")
    messages = item.get(layout.messages)
    if not isinstance(messages, list) or not messages:
        raise ValueError(f'no "{layout.messages}" list of messages')
    if path_list(item.get(layout.audios), layout.audios):
        raise ValueError(f'has "{layout.audios}"; vidlab trains on video and images only')
    if item.get(layout.tools):
        raise ValueError(f'has "{layout.tools}" (tool calling), which vidlab records cannot hold')
    roles = _roles(layout)
    turns = []
    system = item.get(layout.system) if layout.system else None
    if system is not None and not isinstance(system, str):
        raise ValueError(f'"{layout.system}" must be a string')
    if isinstance(system, str) and system.strip():
        turns.append({"from": "system", "value": system})
    for n, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise ValueError(f"message {n} is not an object")
        role = message.get(layout.role_tag)
        content = message.get(layout.content_tag)
        if role in (layout.observation_tag, layout.function_tag):
            raise ValueError(f"message {n} is a {role} turn (tool calling), which vidlab records cannot hold")
        if role not in roles:
            raise ValueError(f'message {n} has {layout.role_tag} {role!r}; expected {", ".join(roles)}')
        if not isinstance(content, str):
            raise ValueError(f'message {n} "{layout.content_tag}" must be a string with <image> / <video> placeholders')
        turns.append({"from": roles[role], "value": content})
    images = path_list(item.get(layout.images), layout.images)
    videos = _videos(item.get(layout.videos), layout.videos, data_root)
    counts = count_placeholders("".join(t["value"] for t in turns))
    if counts["audio"]:
        raise ValueError("holds an <audio> placeholder; vidlab trains on video and images only")
    for kind, paths in (("image", images), ("video", videos)):
        if counts[kind] != len(paths):
            raise ValueError(f"has {len(paths)} {kind}(s) but {counts[kind]} <{kind}> placeholder(s); "
                             f"LLaMA-Factory and vidlab both need one <{kind}> per file")
    record = media_record(item.get("id"), videos, images)
    record["conversations"] = turns
    return record


def read(path: Path, layout: Layout = SHAREGPT, data_root: Path | None = None, **_: Any) -> Iterator[Item]:
    for where, raw in json_items(path):
        if isinstance(raw, Exception):
            yield failed(where, raw)
            continue
        try:
            yield Item(where, records=[convert_item(raw, layout, data_root)])
        except ValueError as err:
            yield failed(where, err)


def read_openai(path: Path, layout: Layout | None = None, **kwargs: Any) -> Iterator[Item]:
    return read(path, layout or OPENAI, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Back to sharegpt


def to_sharegpt(record: dict, where: str) -> dict:
    """A vidlab record -> a LLaMA-Factory sharegpt record. Raises ConversationError / ValueError saying why not."""
    if record.get("references") is not None:
        raise ValueError('ends with "references" (an evaluation record); LLaMA-Factory trains on a final gpt turn')
    conversation = parse_record(record, where=where)
    if any(part.start is not None or part.end is not None for part in conversation.media):
        raise ValueError("uses a clip window (start/end), which LLaMA-Factory cannot express; cut the clip to a "
                         "file of its own first")
    out: dict = {"conversations": []}
    tags = {"user": "human", "assistant": "gpt"}
    for turn in conversation.turns:
        if turn.role == "system":
            out["system"] = turn.text
            continue
        text = "".join(p.text if isinstance(p, TextPart) else f"<{p.type}>" for p in turn.parts)
        out["conversations"].append({"from": tags[turn.role], "value": text})
    for kind, column in (("video", "videos"), ("image", "images")):
        paths = [part.path for part in conversation.media if isinstance(part, MediaPart) and part.type == kind]
        if paths:
            out[column] = paths
    if conversation.id is not None:
        out["id"] = conversation.id
    return out


def dataset_info_entry(file_name: str, has_images: bool, has_videos: bool, has_system: bool) -> dict:
    """The dataset_info.json entry LLaMA-Factory needs to read a file written by `to_sharegpt`."""
    columns = {"messages": "conversations"}
    if has_system:
        columns["system"] = "system"
    if has_images:
        columns["images"] = "images"
    if has_videos:
        columns["videos"] = "videos"
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns}
