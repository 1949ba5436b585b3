"""LLaVA-Video-178K and LLaVA-OneVision (LLaVA-NeXT) annotation files.

A JSON list (or JSONL) of {"id", "conversations": [{"from": "human"|"gpt", "value"}], "video": path}
or "image": path or [paths], plus fields such as "data_source". The differences from vidlab's records:
- "video" / "image" is often one string, not a list;
- LLaVA marks a video with `<image>` too (its loader turns the frames into images), so in a record
  with a video and no image every `<image>` becomes `<video>`;
- a record may carry media but no placeholder (LLaVA's loader then puts one in front of the first
  question): the converter does the same, and counts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidlab.data.convert.common import Item, count_placeholders, failed, json_items, media_record, path_list


def _turns(item: dict) -> list[dict]:
    turns = item.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError('no "conversations" list (LLaVA records hold their turns there)')
    out = []
    for n, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or "from" not in turn:
            raise ValueError(f'turn {n} must be an object with "from" and a string "value"')
        out.append({"from": str(turn["from"]), "value": turn["value"]})
    return out


def _place_media(turns: list[dict], videos: list[str], images: list[str]) -> tuple[list[dict], str | None]:
    """The turns with vidlab's placeholders; returns (turns, note) where note says a placeholder was added."""
    if videos and not images:
        turns = [{**t, "value": t["value"].replace("<image>", "<video>")} for t in turns]
    text = "".join(t["value"] for t in turns)
    counts = count_placeholders(text)
    if counts["audio"]:
        raise ValueError("holds an <audio> placeholder; vidlab trains on video and images only")
    wanted = {"video": len(videos), "image": len(images)}
    for kind in ("video", "image"):
        if counts[kind] not in (0, wanted[kind]):
            raise ValueError(
                f"has {wanted[kind]} {kind}(s) but {counts[kind]} <{kind}> placeholder(s); "
                "give one placeholder per file or none"
            )
    missing = [kind for kind in ("video", "image") if wanted[kind] and not counts[kind]]
    if not missing:
        return turns, None
    first_user = next((i for i, t in enumerate(turns) if t["from"].lower() in ("human", "user")), None)
    if first_user is None:
        raise ValueError("has media but no human turn to put them in")
    prefix = "".join(f"<{kind}>\n" * wanted[kind] for kind in missing)
    turns = list(turns)
    turns[first_user] = {**turns[first_user], "value": prefix + turns[first_user]["value"]}
    return turns, f"added {' and '.join(f'<{k}>' for k in missing)} placeholder(s) in front of the first question"


def convert_item(item: Any) -> tuple[dict, str | None]:
    """One LLaVA record -> (vidlab record, note or None). Raises ValueError saying why it cannot be."""
    if not isinstance(item, dict):
        raise ValueError(f"a record must be a JSON object, got {type(item).__name__}")
    videos = path_list(item.get("video"), "video")
    images = path_list(item.get("image"), "image")
    turns, note = _place_media(_turns(item), videos, images)
    record = media_record(item.get("id"), videos, images)
    for key in ("start", "end", "data_source"):
        if key in item:
            record[key] = item[key]
    record["conversations"] = turns
    return record, note


def read(path: Path, **_: Any) -> Iterator[Item]:
    for where, raw in json_items(path):
        if isinstance(raw, Exception):
            yield failed(where, raw)
            continue
        try:
            record, note = convert_item(raw)
        except ValueError as err:
            yield failed(where, err)
            continue
        yield Item(where, records=[record], notes=[note] if note else [])
