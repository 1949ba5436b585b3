"""LLaVA-Video-178K and LLaVA-OneVision (LLaVA-NeXT) annotation files.

A JSON list (or JSONL) of {"id", "conversations": [{"from": "human"|"gpt", "value"}], "video": path}
or "image": path or [paths], plus fields such as "data_source". The differences from vidlab's records:
- "video" / "image" is often one string, not a list;
- LLaVA marks a video with `<image>` too (its loader turns the frames into images), so in a record
  with a video and no image every `<image>` becomes `<video>`;
- a record may carry media but no placeholder (LLaVA's loader then puts one in front of the first
  question): the converter does the same, and counts it.
LLaVA-OneVision-Data (lmms-lab on the Hugging Face hub) is published as parquet: one row per record
with "id", "conversations", "data_source" and "image", a `datasets` Image ({"bytes", "path"}, or
none for text-only rows). The images are written out as files (under OUT's folder, or the data
root, in `<OUT name>_media/`) and the records name them.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidlab.data.convert.common import Item, count_placeholders, failed, json_items, media_record, path_list
from vidlab.errors import AnnotationConversionError
from vidlab.files import write_atomic


def _turns(item: dict) -> list[dict]:
    turns = item.get("conversations")
    if not isinstance(turns, list):
        raise ValueError('no "conversations" list (LLaVA records hold their turns there)')
    if not turns:
        raise ValueError('the conversation is empty ("conversations" has no turns)')
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


def _image_suffix(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "png").lower()
    except OSError:
        return ".png"
    return {"jpeg": ".jpg"}.get(kind, f".{kind}")


def _parquet_items(path: Path, media_dir: Path, media_base: Path) -> Iterator[tuple[str, Any]]:
    """(file row N, record) for each row of a LLaVA-OneVision-Data parquet file, its image saved as a file."""
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet
        raise AnnotationConversionError(f"{path}: not a readable parquet file ({err}).") from err
    number = 0
    for batch in rows.iter_batches(batch_size=64):
        for row in batch.to_pylist():
            number += 1
            where = f"{path} row {number}"
            image = row.get("image")
            if isinstance(image, dict):  # the datasets Image feature
                if image.get("bytes"):
                    stem = re.sub(r"[^\w.-]+", "_", str(row.get("id") or f"row{number}"))[:120]
                    name = f"{number:07d}_{stem}{_image_suffix(image['bytes'])}"
                    write_atomic(media_dir / name, image["bytes"])
                    row["image"] = Path(os.path.relpath(media_dir / name, media_base)).as_posix()
                else:
                    row["image"] = image.get("path")
            yield where, row


def read(path: Path, media_dir: Path | None = None, media_base: Path | None = None, **_: Any) -> Iterator[Item]:
    if path.suffix.lower() == ".parquet":
        media_dir = media_dir or path.parent / f"{path.stem}_media"
        items = _parquet_items(path, media_dir, media_base or media_dir.parent)
    else:
        items = json_items(path)
    for where, raw in items:
        if isinstance(raw, Exception):
            yield failed(where, raw)
            continue
        try:
            record, note = convert_item(raw)
        except ValueError as err:
            yield failed(where, err)
            continue
        yield Item(where, records=[record], notes=[note] if note else [])
