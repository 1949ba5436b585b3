"""`vidlab data convert`: read a data set in another format, validate every record, write annotation JSONL.

Every record a converter makes is checked with `vidlab.conversation.parse_record` (the parser
training and evaluation use) before it is written; a training record needs a gpt answer, an
evaluation record ("references") must read as `vidlab eval` reads it; with a data root, every
video and image must exist. What fails is reported with its source place (file:line) and reason,
in the result and in OUT.skipped.jsonl, and the rest is written atomically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidlab.conversation import parse_record
from vidlab.data.convert import captions as caption_sets
from vidlab.data.convert import llamafactory, llava, rl, sharegpt4video, video_chatgpt
from vidlab.data.convert.common import CAPTION_MODES, Item, MediaMissing, Problem, failed, json_items
from vidlab.errors import AnnotationConversionError, VidlabError
from vidlab.files import write_json, write_jsonl


def _read_records(path: Path, **_: Any) -> Iterator[Item]:
    for where, raw in json_items(path):
        if isinstance(raw, Exception):
            yield failed(where, raw)
        elif not isinstance(raw, dict):
            yield Item(where, problem=f"a record must be a JSON object, got {type(raw).__name__}")
        else:
            yield Item(where, records=[raw])


FORMATS: dict[str, Callable[..., Iterator[Item]]] = {
    "llava": llava.read,
    "video-chatgpt": video_chatgpt.read,
    "sharegpt4video": sharegpt4video.read,
    "msrvtt": caption_sets.read_msrvtt,
    "msvd": caption_sets.read_msvd,
    "vatex": caption_sets.read_vatex,
    "sharegpt": llamafactory.read,
    "openai": llamafactory.read_openai,
    "video-r1": rl.read_video_r1,
    "llava-hound-dpo": rl.read_llava_hound_dpo,
    "records": _read_records,
}
FORMAT_HELP = {
    "llava": "LLaVA-Video-178K / LLaVA-OneVision json, or LLaVA-OneVision-Data parquet (images inside)",
    "video-chatgpt": "Video-ChatGPT VideoInstruct100K ({q, a, video_id}) or its QA evaluation files (consistency: "
                     "Q1, Q2)",
    "sharegpt4video": "ShareGPT4Video sharegpt4video_40k.jsonl (the whole-video caption, idx -1)",
    "msrvtt": "MSR-VTT train_val_videodatainfo.json / test_videodatainfo.json",
    "msvd": "MSVD AllVideoDescriptions.txt or the MSR Video Description Corpus CSV",
    "vatex": "VATEX vatex_*_v1.x.json (enCap / chCap)",
    "sharegpt": "LLaMA-Factory sharegpt (conversations with images / videos lists)",
    "openai": "LLaMA-Factory OpenAI messages (messages with role / content)",
    "video-r1": "Video-R1-260k.json (problem, options, solution, path): GRPO records with answer_type",
    "llava-hound-dpo": "LLaVA-Hound video DPO pairs, ShareGPTVideo sft_dpo_17k.jsonl (prompt, chosen, rejected): DPO "
                       "records",
    "records": "vidlab annotation records, SFT, GRPO or DPO (to validate them, or to write them --to sharegpt)",
}
TARGETS = ("records", "sharegpt")
CAPTION_FORMATS = ("sharegpt4video", "msrvtt", "msvd", "vatex")


@dataclass
class AnnotationConversion:
    """What a conversion did.

    Attributes:
        out: the file written.
        source_format, target: what was read and what was written (records or sharegpt).
        items: source items read (records, lines, sentences or videos, per format).
        records: records written.
        problems: source items (or made records) not converted, with place and reason.
        notes: what was changed on the way (e.g. placeholders added), with how often.
        skipped_file: OUT.skipped.jsonl listing the problems (None when there were none).
        dataset_info: --to sharegpt only: the entry to add to LLaMA-Factory's dataset_info.json.
    """

    out: Path
    source_format: str
    target: str
    items: int
    records: int
    problems: list[Problem] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)
    skipped_file: Path | None = None
    dataset_info: dict | None = None


def _problem(where: str, err: Exception) -> Problem:
    kind = "missing media" if isinstance(err, MediaMissing) else "invalid"
    return Problem(where, str(err).removeprefix(f"{where}: "), kind)


def _nothing_converted(path: Path, source_format: str, problems: list[Problem], root: Path | None,
                       skipped_file: Path | None) -> AnnotationConversionError:
    """Why nothing was converted, in the words of the problem every item had (not a guess at the format)."""
    if not problems:
        return AnnotationConversionError(f"{path}: nothing could be converted from {source_format}: the file holds no "
                                         "items.")
    listed = f" All {len(problems)} are listed in {skipped_file}." if skipped_file is not None else ""
    first = f"{problems[0].source}: {problems[0].reason}"
    if all(p.kind == "missing media" for p in problems):
        return AnnotationConversionError(
            f"{path}: nothing converted: the media of every item ({len(problems)}) are missing under the data root "
            f"{root} (first: {first}). Check --data-root: it is the folder the file's media paths (or video ids) "
            f"are relative to.{listed}"
        )
    reason, count = Counter(p.reason for p in problems).most_common(1)[0]
    if count == len(problems) and len(problems) > 1:
        return AnnotationConversionError(f"{path}: nothing converted: all {count} items have the same problem: "
                                         f"{reason} (first: {problems[0].source}).{listed}")
    firsts = "; ".join(f"{p.source}: {p.reason}" for p in problems[:3])
    return AnnotationConversionError(
        f"{path}: nothing could be converted from {source_format} ({len(problems)} problem(s); first: {firsts}). "
        f"Is the file in the {source_format} format ({FORMAT_HELP.get(source_format, '')})?{listed}"
    )


def _validate(record: dict, where: str, index: int, data_root: Path | None) -> dict:
    """The record as training or evaluation will read it; raises VidlabError / ValueError if it cannot be."""
    if record.get("references") is not None:
        from vidlab.evaluation.records import annotation_record

        conversation = annotation_record(record, where, index, default_id=where).conversation
    elif "chosen" in record or "rejected" in record or "answer_type" in record:  # a DPO pair or a GRPO record
        from vidlab.annotations import Position
        from vidlab.training.rl_records import parse_prompt_record

        method = "grpo" if "answer_type" in record else "dpo"
        root = data_root if data_root is not None else Path(".")
        conversation = parse_prompt_record(record, Position(Path(where), index, 0), root, method,
                                           check_media=False, where=where).prompt  # media: checked below
    else:
        conversation = parse_record(record, where=where)
        if not any(turn.role == "assistant" for turn in conversation.turns):
            raise ValueError('no gpt answer, so nothing to train on (for evaluation, list the answers in "references")')
    if data_root is not None:
        for part in conversation.media:
            path = Path(part.path).expanduser()
            if not (path if path.is_absolute() else data_root / path).exists():
                raise MediaMissing(f"{part.type} {part.path} not found under the data root {data_root}")
    return record


def _unique_id(record: dict, seen: Counter, notes: Counter) -> dict:
    record_id = record.get("id")
    if record_id is None:
        return record
    seen[str(record_id)] += 1
    if seen[str(record_id)] == 1:
        return record
    notes["repeated ids made unique with #n (evaluation keys predictions on ids)"] += 1
    return {**record, "id": f"{record_id}#{seen[str(record_id)]}"}


def _check_arguments(source_format: str, path: Path, out: Path, data_root: Path | None, captions: str, to: str):
    problems = []
    if source_format not in FORMATS:
        problems.append(f"unknown source format {source_format!r}; use one of: {', '.join(FORMATS)}")
    if not path.is_file():
        problems.append(f"{path}: no such file")
    if data_root is not None and not data_root.is_dir():
        problems.append(f"{data_root}: the data root is not a folder")
    if captions not in CAPTION_MODES:
        problems.append(f"--captions {captions!r}: use train (one record per caption) or eval (all as references)")
    if to not in TARGETS:
        problems.append(f"--to {to!r}: use records or sharegpt")
    if out.resolve() == path.resolve():
        problems.append(f"{out}: the output would replace the input; write to another file")
    if problems:
        raise AnnotationConversionError("; ".join(problems) + ".")


def convert_annotations(
    source_format: str,
    path: str | Path,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    captions: str = "train",
    to: str = "records",
    prompt: str | None = None,
    split: str | None = None,
    language: str | None = None,
    dataset_info: str | Path | None = None,
    dataset: str | None = None,
) -> AnnotationConversion:
    """Convert a data set file to vidlab annotation records (JSONL), or records to LLaMA-Factory sharegpt.

    Args:
        source_format: one of FORMATS (llava, video-chatgpt, sharegpt4video, msrvtt, msvd, vatex,
            sharegpt, openai, records).
        path: the source file.
        out: the file to write: JSONL of records; with to="sharegpt", a JSON list when it ends in .json.
        data_root: the folder the source's media paths (or video ids) are relative to. With it, videos
            named by id are found in any sub-folder and container, and every record's media must exist.
            Without it, ids become `<id>.mp4` (`.avi` for MSVD) and nothing is checked on disk.
        captions: caption sets only: "train" (one record per caption) or "eval" (one record per video with
            every caption in "references").
        to: "records" or "sharegpt" (LLaMA-Factory; clip windows and evaluation records cannot go there).
        prompt: the question caption records ask (default: per format).
        split: MSR-VTT only: keep the videos of this split (train, validate, test).
        language: MSVD's corpus CSV (a Language value, default English) or VATEX (en, zh).
        dataset_info, dataset: LLaMA-Factory only: its dataset_info.json and the data set's name there,
            to use the columns and tags that entry renames.

    Raises:
        AnnotationConversionError: bad arguments, a file that is not in the format asked for, or nothing
            convertible (the message says the reason every item shares, or the first problems).
    """
    path, out = Path(path).expanduser(), Path(out).expanduser()
    root = Path(data_root).expanduser() if data_root is not None else None
    _check_arguments(source_format, path, out, root, captions, to)
    # Media a source holds inside it (LLaVA-OneVision-Data's parquet images) are written beside the records.
    media_dir = (root or out.parent) / f"{out.stem}_media"
    options: dict[str, Any] = {"data_root": root, "prompt": prompt, "captions": captions, "split": split,
                               "language": language, "media_dir": media_dir, "media_base": root or out.parent}
    if dataset_info is not None or dataset is not None:
        if source_format not in ("sharegpt", "openai") or dataset_info is None or dataset is None:
            raise AnnotationConversionError("--dataset-info and --dataset go together, with --from sharegpt or openai.")
        options["layout"] = llamafactory.layout_from_dataset_info(Path(dataset_info), dataset)
    problems: list[Problem] = []
    notes: Counter = Counter()
    seen_ids: Counter = Counter()
    rows: list[dict] = []
    items = 0
    for item in FORMATS[source_format](path, **options):
        items += 1
        notes.update(item.notes)
        if item.problem is not None:
            problems.append(Problem(item.source, item.problem, item.problem_kind))
            continue
        for record in item.records:
            try:
                record = _validate(_unique_id(record, seen_ids, notes), item.source, len(rows), root)
                rows.append(llamafactory.to_sharegpt(record, item.source) if to == "sharegpt" else record)
            except (VidlabError, ValueError) as err:
                problems.append(_problem(item.source, err))
    skipped_file = out.with_name(f"{out.stem}.skipped.jsonl")
    if problems:  # written even when nothing converted: it says why, item by item
        write_jsonl(skipped_file, [p.to_dict() for p in problems])
    elif skipped_file.exists():
        skipped_file.unlink()  # a list from an earlier run of the same conversion would mislead
    if not rows:
        raise _nothing_converted(path, source_format, problems, root, skipped_file if problems else None)
    if to == "sharegpt" and out.suffix.lower() == ".json":
        write_json(out, rows)
    else:
        write_jsonl(out, rows)
    result = AnnotationConversion(out, source_format, to, items, len(rows), problems, notes,
                                  skipped_file if problems else None)
    if to == "sharegpt":
        has = {key: any(key in row for row in rows) for key in ("images", "videos", "system")}
        result.dataset_info = llamafactory.dataset_info_entry(out.name, has["images"], has["videos"], has["system"])
    return result
