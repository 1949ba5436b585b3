"""Caption benchmarks for BLEU, METEOR, ROUGE-L and CIDEr: MSR-VTT, MSVD, VATEX and YouCook2 as released.

Every video (YouCook2: every segment) is one record whose references are all its captions; the
metrics are computed over the whole corpus at once, as the COCO caption evaluation defines them.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks.common import (
    Collector,
    find_video,
    first_existing,
    layout_error,
    prompt_record,
    read_json_lenient,
    require_file,
    require_folder,
)
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.records import EvalSet
from vidlab.files import TEXT_ENCODING

CAPTION_PROMPT = "Describe what happens in the video in one sentence."
CAPTION_METRICS = ("cider", "bleu4", "bleu1", "bleu2", "bleu3", "meteor", "rouge_l", "sacrebleu")


def _caption_record(index: int, name: str, record_id: str, where: str, video: str, references: list[str],
                    start: float | None = None, end: float | None = None):
    references = [r.strip() for r in references if isinstance(r, str) and r.strip()]
    if not references:
        raise EvaluationError(f"{where}: {record_id} has no caption to compare with.")
    return prompt_record(
        record_id=record_id, where=where, index=index,
        media=[MediaPart(type="video", path=video, start=start, end=end)], prompt=CAPTION_PROMPT,
        references=references, scoring={"benchmark": name},
    )


# ---- MSR-VTT ----------------------------------------------------------------------------------------

MSRVTT_FILES = ("test_videodatainfo.json", "train_val_videodatainfo.json", "videodatainfo_2017.json")
MSRVTT_SPLITS = {"test": "test", "val": "validate"}


def load_msrvtt(root: Path, split: str, subtitles: bool) -> EvalSet:
    wanted = MSRVTT_SPLITS[split]
    names = [n for n in MSRVTT_FILES if (root / n).is_file()]
    if not names:
        raise layout_error(root, "MSR-VTT", " or ".join(str(root / n) for n in MSRVTT_FILES))
    folders = [f for f in ("TestVideo", "TrainValVideo", "videos/all", "videos") if (root / f).is_dir()]
    if not folders:
        raise layout_error(root, "MSR-VTT", f"a folder of videos: {root / 'TestVideo'}/ (test), "
                           f"{root / 'TrainValVideo'}/ (train/val) or {root / 'videos/all'}/")
    found = Collector()
    for name in names:
        path = root / name
        data = read_json_lenient(path)
        if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
            raise EvaluationError(f'{path}: expected {{"videos": [...], "sentences": [...]}} as MSR-VTT ships it.')
        captions: dict[str, list[str]] = defaultdict(list)
        for sentence in data.get("sentences") or []:
            captions[str(sentence.get("video_id"))].append(str(sentence.get("caption", "")))
        for number, video in enumerate(data["videos"], start=1):
            if video.get("split") != wanted:
                continue
            video_id = str(video.get("video_id"))
            where = f"{path}#videos[{number}]"
            found.add(where, video_id, lambda index, v=video_id, w=where, c=captions: _caption_record(
                index, "msrvtt", v, w, find_video(root, folders, v), c.get(v, [])))
        if found.records:
            return found.result(path, "msrvtt", root, split)
    raise layout_error(root, "MSR-VTT", f'videos of split "{wanted}" in {", ".join(names)}')


# ---- MSVD -------------------------------------------------------------------------------------------

MSVD_CORPUS = ("MSR Video Description Corpus.csv", "video_corpus.csv")
# The split every caption paper uses: clips vid1-1200 train, vid1201-1300 val, vid1301-1970 test.
MSVD_SPLITS = {"test": range(1301, 1971), "val": range(1201, 1301)}


def load_msvd(root: Path, split: str, subtitles: bool) -> EvalSet:
    corpus = require_file(root, MSVD_CORPUS, "MSVD", "It is Microsoft's MSR Video Description Corpus.")
    mapping_path = require_file(root, ["youtube_mapping.txt"], "MSVD",
                                "It ships with the YouTubeClips videos and gives the standard split.")
    folder = require_folder(root, ("YouTubeClips", "videos"), "MSVD")
    numbers = {}
    for line in mapping_path.read_text(encoding=TEXT_ENCODING).splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"vid\d+", parts[1]):
            numbers[parts[0]] = int(parts[1][3:])
    captions: dict[str, list[str]] = defaultdict(list)
    with open(corpus, newline="", encoding=TEXT_ENCODING) as handle:
        for row in csv.DictReader(handle):
            if (row.get("Language") or "").strip() == "English" and row.get("Description"):
                clip = f"{row['VideoID']}_{row['Start']}_{row['End']}"
                captions[clip].append(row["Description"])
    found = Collector()
    chosen = sorted((n, clip) for clip, n in numbers.items() if n in MSVD_SPLITS[split])
    for number, clip in chosen:
        where = f"{mapping_path}#vid{number}"
        found.add(where, clip, lambda index, c=clip, w=where: _caption_record(
            index, "msvd", c, w, find_video(root, folder, c), captions.get(c, [])))
    return found.result(corpus, "msvd", root, split)


# ---- VATEX ------------------------------------------------------------------------------------------

VATEX_FILES = {"test": "vatex_public_test_english_v1.1.json", "val": "vatex_validation_v1.0.json"}
_VATEX_ID_RE = re.compile(r"^(.+)_(\d{6})_(\d{6})$")


def _vatex_video(root: Path, folder: str, video_id: str) -> tuple[str, float | None, float | None]:
    """The 10-second clip `<videoID>.<ext>`; failing that, the whole YouTube video cut to the id's seconds."""
    clip = find_video(root, folder, video_id)
    match = _VATEX_ID_RE.match(video_id)
    if (root / clip).exists() or match is None:
        return clip, None, None
    whole = find_video(root, folder, match.group(1))
    if (root / whole).exists():
        return whole, float(int(match.group(2))), float(int(match.group(3)))
    return clip, None, None


def load_vatex(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = require_file(root, [VATEX_FILES[split]], "VATEX")
    folder = require_folder(root, ("videos", split), "VATEX")
    found = Collector()
    items = read_json_lenient(path)
    for number, item in enumerate(items if isinstance(items, list) else [], start=1):
        where = f"{path}#{number}"
        video_id = str(item.get("videoID")) if isinstance(item, dict) else None

        def build(index: int, item=item, where=where, video_id=video_id):
            if not video_id or not isinstance(item.get("enCap"), list):
                raise EvaluationError(f'{where}: a VATEX item needs "videoID" and "enCap" (English captions).')
            video, start, end = _vatex_video(root, folder, video_id)
            return _caption_record(index, "vatex", video_id, where, video, item["enCap"], start, end)

        found.add(where, video_id, build)
    return found.result(path, "vatex", root, split)


# ---- YouCook2 ---------------------------------------------------------------------------------------

YOUCOOK2_FILE = "youcookii_annotations_trainval.json"


def load_youcook2(root: Path, split: str, subtitles: bool) -> EvalSet:
    path = first_existing(root, [YOUCOOK2_FILE, f"annotations/{YOUCOOK2_FILE}"])
    if path is None:
        raise layout_error(root, "YouCook2", f"{root / YOUCOOK2_FILE} (or annotations/{YOUCOOK2_FILE})")
    require_folder(root, ("raw_videos", "videos"), "YouCook2")
    data = read_json_lenient(path)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise EvaluationError(f'{path}: expected {{"database": {{video_id: {{...}}}}}} as YouCook2 ships it.')
    found = Collector()
    for video_id, video in database.items():
        if not isinstance(video, dict) or video.get("subset") != "validation":
            continue
        folders = [f"raw_videos/validation/{video.get('recipe_type')}", "raw_videos/validation", "videos"]
        for number, segment in enumerate(video.get("annotations") or [], start=1):
            where = f"{path}#{video_id}/{number}"
            record_id = f"{video_id}#{segment.get('id', number - 1)}" if isinstance(segment, dict) else None

            def build(index: int, segment=segment, where=where, record_id=record_id, video_id=video_id,
                      folders=folders):
                try:
                    start, end = (float(t) for t in segment["segment"])
                except (KeyError, TypeError, ValueError) as err:
                    raise EvaluationError(f'{where}: a segment needs "segment": [start, end] and "sentence".') from err
                return _caption_record(index, "youcook2", record_id, where, find_video(root, folders, video_id),
                                       [segment.get("sentence", "")], start, end)

            found.add(where, record_id, build)
    return found.result(path, "youcook2", root, split)


_NOTE = ("Corpus-level COCO metrics over all {what} (pycocoevalcap after PTB tokenisation; CIDEr-D with document "
         "frequencies from this split's references). {extra}")

MSRVTT = Benchmark(
    name="msrvtt", title="MSR-VTT", task="captioning", folder="msrvtt",
    download="MSR-VTT from Microsoft Research (test_videodatainfo.json with TestVideo/, "
             "train_val_videodatainfo.json with TrainValVideo/; or videodatainfo_2017.json)",
    layout="""msrvtt/
  test_videodatainfo.json         (or train_val_videodatainfo.json / videodatainfo_2017.json)
  TestVideo/video7010.mp4         (or TrainValVideo/, videos/all/)""",
    splits=("test", "val"), load=load_msrvtt, headline=CAPTION_METRICS,
    notes=(_NOTE.format(what="2,990 test videos, 20 references each",
                        extra="Retrieval papers' 1k-A split is a different set."),),
)
MSVD = Benchmark(
    name="msvd", title="MSVD", task="captioning", folder="msvd",
    download="Microsoft's MSR Video Description Corpus (MSR Video Description Corpus.csv) and YouTubeClips.tar "
             "with youtube_mapping.txt",
    layout="""msvd/
  MSR Video Description Corpus.csv   (English rows are the references)
  youtube_mapping.txt                (clip -> vidN; test is vid1301-vid1970, val vid1201-vid1300)
  YouTubeClips/<VideoID>_<Start>_<End>.avi""",
    splits=("test", "val"), load=load_msvd, headline=CAPTION_METRICS,
    notes=(_NOTE.format(what="670 test clips and their English descriptions", extra=""),),
)
VATEX = Benchmark(
    name="vatex", title="VATEX", task="captioning", folder="vatex",
    download="https://eric-xw.github.io/vatex-website/download.html (vatex_public_test_english_v1.1.json, "
             "vatex_validation_v1.0.json); videos from YouTube by videoID",
    layout="""vatex/
  vatex_public_test_english_v1.1.json   (vatex_validation_v1.0.json for --split val)
  videos/<videoID>.mp4                  (the 10 s clip; or videos/<YouTube id>.mp4, cut by the id's seconds)""",
    splits=("test", "val"), load=load_vatex, headline=CAPTION_METRICS,
    notes=(_NOTE.format(what="clips, 10 English references each", extra="Same as lmms-eval's vatex_test."),),
)
YOUCOOK2 = Benchmark(
    name="youcook2", title="YouCook2", task="captioning (by segment)", folder="youcook2",
    download="http://youcook2.eecs.umich.edu/download (youcookii_annotations_trainval.json; raw videos with its "
             "download script)",
    layout="""youcook2/
  youcookii_annotations_trainval.json            (or annotations/...)
  raw_videos/validation/<recipe_type>/<id>.mp4   (or raw_videos/validation/<id>.mp4, videos/<id>.mp4)""",
    splits=("val",), load=load_youcook2, headline=CAPTION_METRICS,
    notes=(_NOTE.format(what="validation segments (each cut by its start/end, one reference each)",
                        extra="lmms-eval's youcook2_val instead scores each video separately and averages, and "
                              "reports the mean of BLEU-1..4 under every BLEU-n name, so its numbers differ."),),
)
