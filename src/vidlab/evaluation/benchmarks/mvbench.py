"""MVBench and MLVU: a json/ folder of task files and a video/ folder per task, MVBench's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidlab.conversation import MediaPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.answers import LETTERS, first_letter_match, letter_range, option_text_in, without_answer_word
from vidlab.evaluation.benchmarks.common import (
    MVBENCH_INSTRUCTION,
    Collector,
    candidate_letter,
    choice_record,
    clip_window,
    layout_error,
    lettered,
    options_list,
    question_text,
)
from vidlab.evaluation.benchmarks.spec import Benchmark, DataFormat
from vidlab.evaluation.records import EvalSet
from vidlab.files import iter_json_items

# MVBench's release (json/<file>, video/<folder>/<video>): task name, video folder, and whether the
# task's records carry start/end seconds to cut the clip. From MVBench's and VideoLLaMA3's eval code.
MVBENCH_TASKS: dict[str, tuple[str, str, bool]] = {
    "action_sequence.json": ("Action Sequence", "star/Charades_v1_480/", True),
    "action_prediction.json": ("Action Prediction", "star/Charades_v1_480/", True),
    "action_antonym.json": ("Action Antonym", "ssv2_video/", False),
    "fine_grained_action.json": ("Fine-grained Action", "Moments_in_Time_Raw/videos/", False),
    "unexpected_action.json": ("Unexpected Action", "FunQA_test/test/", False),
    "object_existence.json": ("Object Existence", "clevrer/video_validation/", False),
    "object_interaction.json": ("Object Interaction", "star/Charades_v1_480/", True),
    "object_shuffle.json": ("Object Shuffle", "perception/videos/", False),
    "moving_direction.json": ("Moving Direction", "clevrer/video_validation/", False),
    "action_localization.json": ("Action Localization", "sta/sta_video/", True),
    "scene_transition.json": ("Scene Transition", "scene_qa/video/", False),
    "action_count.json": ("Action Count", "perception/videos/", False),
    "moving_count.json": ("Moving Count", "clevrer/video_validation/", False),
    "moving_attribute.json": ("Moving Attribute", "clevrer/video_validation/", False),
    "state_change.json": ("State Change", "perception/videos/", False),
    "fine_grained_pose.json": ("Fine-grained Pose", "nturgbd/", False),
    "character_order.json": ("Character Order", "perception/videos/", False),
    "egocentric_navigation.json": ("Egocentric Navigation", "vlnqa/", False),
    "episodic_reasoning.json": ("Episodic Reasoning", "tvqa/frames_fps3_hq/", True),  # frame folders, 3 fps
    "counterfactual_inference.json": ("Counterfactual Inference", "clevrer/video_validation/", False),
}

# MLVU's multiple-choice tasks (json/<file>, video/<folder>/<video>); 8_sub_scene and 9_summary are
# open-ended and, as in VideoLLaMA3's evaluation, not read.
MLVU_TASKS: dict[str, tuple[str, str, bool]] = {
    "1_plotQA.json": ("PQA (Plot QA)", "1_plotQA/", False),
    "2_needle.json": ("NQA (Needle QA)", "2_needle/", False),
    "3_ego.json": ("ER (Ego Reasoning)", "3_ego/", False),
    "4_count.json": ("AC (Action Count)", "4_count/", False),
    "5_order.json": ("AO (Action Order)", "5_order/", False),
    "6_anomaly_reco.json": ("AR (Anomaly Recognition)", "6_anomaly_reco/", False),
    "7_topic_reasoning.json": ("TR (Topic Reasoning)", "7_topic_reasoning/", False),
}


def mvbench_prompt(question: str, options: list[str]) -> str:
    """VideoLLaMA3's MVBench prompt (also its MLVU and NExT-QA prompt)."""
    return f"Question: {question}\nOptions:\n{lettered(options)}{MVBENCH_INSTRUCTION}"


def read_mvbench(response: str, options: Sequence[str]) -> str | None:
    """VideoLLaMA3's MVBench reader (also MLVU's and NExT-QA's): the first capital in the option range, with
    or without "(", ")", "," or spaces around it (so the "B" of "Based" counts too); else the first option
    whose text the answer holds.

    Where VideoLLaMA3 keeps a comma with the letter ("(B), because" -> "B),") and stops the run, and where
    its MLVU and NExT-QA copies reach an undefined name on the text step, this reads the letter and the
    text as MVBench's does (docs/fidelity.md).
    """
    valid = LETTERS[: len(options)]
    text = without_answer_word(response)
    letter = first_letter_match(rf"[\(,\ ]*{letter_range(options)}[\),\ ]*", text, valid)
    if letter:
        return letter
    index = option_text_in(text, options)
    return None if index is None else valid[index]


def _load_task_files(path: Path, data_root: Path | None, tasks: dict, name: str) -> EvalSet:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise EvaluationError(f"{path}: no task JSON files in the folder. Point --data at the json/ folder.")
    json_dir = path if path.is_dir() else path.parent
    root = data_root or json_dir.parent
    found = Collector()
    for file in files:
        if path.is_dir() and file.name not in tasks:
            continue  # a folder holds only the benchmark's own task files; others are not its tasks
        task, folder, cut = tasks.get(file.name, (file.stem.replace("_", " ").title(), "", True))
        for number, (line, item) in enumerate(iter_json_items(file), start=1):
            where = f"{file}:{line}"

            def build(index: int, item=item, where=where, number=number, file=file, task=task, folder=folder,
                      cut=cut):
                if isinstance(item, Exception):
                    raise item
                if not isinstance(item, dict) or not isinstance(item.get("video"), str):
                    raise EvaluationError(f'{where}: a {name} record needs "video", "question", "candidates" '
                                          'and "answer".')
                options = options_list(item.get("candidates"), where, "candidates", as_given=True)
                start, end = clip_window(item, where) if cut else (None, None)
                if cut and file.name in tasks and (start is None or end is None):
                    # The task's clips are cut from longer videos: the whole video would ask about other frames.
                    raise EvaluationError(f'{where}: a {task} record needs "start" and "end" (seconds): the task '
                                          "asks about a clip of the video. Add them (re-download the task file).")
                video = f"video/{folder}{item['video']}" if folder else item["video"]
                return choice_record(
                    record_id=f"{file.stem}-{number}", where=where, index=index,
                    media=[MediaPart(type="video", path=video, start=start, end=end)],
                    prompt=mvbench_prompt(question_text(item, where), options), options=options,
                    answer=candidate_letter(item.get("answer"), options, where), meta={"task": task},
                    scoring={"benchmark": name, "reader": "mvbench"},
                )

            found.add(where, f"{file.stem}-{number}", build)
    return found.result(path, name, root, "test" if name == "mvbench" else "dev")


def load_mvbench(path: Path, data_root: Path | None = None) -> EvalSet:
    """MVBench as released: its `json/` folder (every task) or one task's JSON. Media are
    `video/<task folder>/<video>` under the data root (default: the folder above `json/`).
    A JSON file that is not one of the 20 tasks is read with paths relative to the data root.
    """
    return _load_task_files(path, data_root, MVBENCH_TASKS, "mvbench")


def load_mlvu(path: Path, data_root: Path | None = None) -> EvalSet:
    """MLVU (dev) as released: its `json/` folder (the 7 multiple-choice tasks) or one task's JSON;
    videos `video/<task folder>/<video>` under the data root (default: the folder above `json/`)."""
    return _load_task_files(path, data_root, MLVU_TASKS, "mlvu")


def _task_format(name: str, tasks: dict, loader, marker: bool) -> DataFormat:
    """A json/ folder of task files, one task file, or a file whose records have "candidates" (MLVU's also
    carry "question_type", a field only MLVU has)."""

    def detect(path: Path, first: dict[str, Any] | None) -> bool:
        if path.is_dir():
            return first is None and bool({p.name for p in path.glob("*.json")} & set(tasks))
        if first is None:
            return path.name in tasks
        return "candidates" in first and ("question_type" in first) == marker

    return DataFormat(name=name, read=lambda path, root, subtitles: loader(path, root), detect=detect, folders=True)


def _root_loader(tasks: dict, title: str, name: str, loader):
    def load(root: Path, split: str, subtitles: bool) -> EvalSet:
        json_dir, video_dir = root / "json", root / "video"
        if not json_dir.is_dir() or not any((json_dir / f).is_file() for f in tasks):
            raise layout_error(root, title, f"{json_dir}/ holding its task files ({', '.join(list(tasks)[:3])}, ...)")
        if not video_dir.is_dir():
            raise layout_error(root, title, f"{video_dir}/ holding a folder of videos per task")
        return loader(json_dir, root)

    return load


MVBENCH = Benchmark(
    name="mvbench",
    title="MVBench",
    task="multiple choice",
    folder="mvbench",
    download="https://huggingface.co/datasets/OpenGVLab/MVBench (json/ and video/ zips)",
    layout="""mvbench/
  json/<task>.json                 (20 tasks: action_sequence.json, ...)
  video/<task folder>/<video>      (star/Charades_v1_480/, clevrer/video_validation/, ssv2_video/, ...;
                                    tvqa/frames_fps3_hq/<video>/ are frame folders at 3 fps)""",
    splits=("test",),
    load=_root_loader(MVBENCH_TASKS, "MVBench", "mvbench", load_mvbench),
    groups=("task",),
    read_answer=read_mvbench,
    data_format=_task_format("mvbench", MVBENCH_TASKS, load_mvbench, marker=False),
    notes=("Episodic Reasoning's clips are frame folders at 3 fps: give --folder-fps 3 so their times are right.",),
)

MLVU = Benchmark(
    name="mlvu",
    title="MLVU",
    task="multiple choice",
    folder="mlvu",
    download="https://huggingface.co/datasets/MLVU/MVLU (MLVU/json and MLVU/video)",
    layout="""mlvu/
  json/1_plotQA.json ... 7_topic_reasoning.json   (the 7 multiple-choice tasks of the dev set)
  video/<task folder>/<video>                     (1_plotQA/, 2_needle/, ...)""",
    splits=("dev",),
    load=_root_loader(MLVU_TASKS, "MLVU", "mlvu", load_mlvu),
    groups=("task",),
    headline=("accuracy", "task_mean"),
    read_answer=read_mvbench,
    data_format=_task_format("mlvu", MLVU_TASKS, load_mlvu, marker=True),
    notes=("MLVU's paper reports M-Avg, the mean of the task accuracies (task_mean); VideoLLaMA3 reports the "
           "accuracy over all questions (accuracy). Both are given.",),
)
