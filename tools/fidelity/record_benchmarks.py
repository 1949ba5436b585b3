"""Record what VideoLLaMA3's own benchmark code does, for vidlab's fidelity tests.

    python tools/fidelity/record_benchmarks.py                       # fetch, set up, record
    python tools/fidelity/record_benchmarks.py --source /path/to/VideoLLaMA3 --env /tmp/vl3-eval-env

Three steps, each skipped when already done:
1. a checkout of VideoLLaMA3 at the pinned commit (git clone, or --source: a local clone/mirror);
2. a scratch virtual environment (--env, never vidlab's) with the original's pins for what its
   `evaluation/benchmarks/*.py` import (numpy==1.24.4 and the unpinned pyarrow, pysubs2, pandas,
   openai, requests, tqdm as its requirements.txt lists them);
3. this script again, inside that environment (`--inside`): it writes the rows of tools/fidelity/
   benchmarks_corpus.py in each benchmark's published layout, builds the original's dataset classes on them,
   and records every prompt they make, every answer string of the corpus through every reader
   (the result, or the exception), and the row sets the loaders refuse.

Stand-ins (what cannot or need not install): the model and `videollama3.mm_utils.load_video` (no
frames are decoded: prompts are made for fixed timestamps), and `torch.utils.data` (the classes
use only its Dataset base class; torch 2.4.0's wheel with its CUDA libraries is gigabytes).

Output: tests/data/fidelity/benchmarks.json (small; nothing of the original's code is in it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
import types
from pathlib import Path

REPO = "https://github.com/DAMO-NLP-SG/VideoLLaMA3.git"
COMMIT = "05cee23deb854fd6ff82dcff1243a4f682e4d617"  # 2025-08-14, the commit docs/fidelity.md describes
# pyarrow is unpinned there; releases after 2024 need numpy 2, so the one of datasets==2.21.0's time (its pin).
PINS = ["numpy==1.24.4", "pyarrow==17.0.0", "pysubs2", "pandas", "openai", "requests", "tqdm"]
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent.parent / "tests" / "data" / "fidelity" / "benchmarks.json"


# ---- outside: checkout, environment, run ----------------------------------------------------------------


def checkout(source: str, workdir: Path) -> Path:
    """The original's evaluation/ folder at COMMIT, under workdir (a bare clone is made when `source` is a URL)."""
    work = workdir / COMMIT[:12]
    if (work / "evaluation" / "benchmarks" / "base.py").exists():
        return work
    git_dir = Path(source)
    if not git_dir.is_dir():
        git_dir = workdir / "VideoLLaMA3.git"
        if not git_dir.exists():
            subprocess.run(["git", "clone", "--quiet", "--bare", source, str(git_dir)], check=True)
    work.mkdir(parents=True, exist_ok=True)
    # Only the evaluation code is needed (the repository's large media files are not).
    archive = subprocess.run(["git", "--git-dir", str(_git_dir(git_dir)), "archive", COMMIT, "evaluation"],
                             check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    return work


def _git_dir(where: Path) -> Path:
    return where / ".git" if (where / ".git").exists() else where


def environment(env: Path, python: str) -> Path:
    bin_python = env / "bin" / "python"
    if not bin_python.exists():
        subprocess.run([python, "-m", "venv", str(env)], check=True)
    subprocess.run([str(bin_python), "-m", "pip", "install", "--quiet", *PINS], check=True)
    return bin_python


def outside(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    work = checkout(args.source or REPO, workdir)
    python = environment(Path(args.env), args.python)
    subprocess.run([str(python), __file__, "--inside", str(work), "--out", str(args.out)], check=True)


# ---- inside the original's environment ------------------------------------------------------------------


def stand_ins() -> None:
    """Modules the benchmark classes import but never use for prompts and answer reading."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch.utils")
    data = types.ModuleType("torch.utils.data")

    class Dataset:  # the only thing the classes take from torch
        pass

    data.Dataset, data.DataLoader = Dataset, object
    torch.utils, utils.data = utils, data
    vl3 = types.ModuleType("videollama3")
    constants = types.ModuleType("videollama3.constants")
    constants.DEFAULT_IMAGE_TOKEN = "<image>"
    mm_utils = types.ModuleType("videollama3.mm_utils")

    def load_video(*args, **kwargs):
        raise RuntimeError("stand-in: the recorder decodes no video")

    mm_utils.load_video = load_video
    sys.modules.update({"torch": torch, "torch.utils": utils, "torch.utils.data": data, "videollama3": vl3,
                        "videollama3.constants": constants, "videollama3.mm_utils": mm_utils})
    # The judged benchmarks make an Azure client when built; it is never called here.
    os.environ.setdefault("ENDPOINT_URL", "http://127.0.0.1:9")
    os.environ.setdefault("AZURE_OPENAI_API_KEY", "unused")


def import_benchmarks(work: Path) -> dict:
    """The original's benchmark modules, without running its package __init__ (it imports the image
    benchmarks and their dependencies too)."""
    import importlib

    package = types.ModuleType("vl3bench")
    package.__path__ = [str(work / "evaluation" / "benchmarks")]
    sys.modules["vl3bench"] = package
    names = {"mvbench": "MVBenchDataset", "mlvu": "MLVUDataset", "nextqa": "NextQADataset",
             "videomme": "VideoMMEDataset", "egoschema": "EgoSchemaDataset",
             "perception_test": "PerceptionTestDataset", "longvideobench": "LongVideoBenchDataset",
             "lvbench": "LVBenchDataset", "activitynet_qa": "ActivitynetQADataset",
             "tempcompass": "TempCompassDataset", "charades_sta": "CharadesSTADataset"}
    return {name: getattr(importlib.import_module(f"vl3bench.{name}"), cls) for name, cls in names.items()}


def layout(name: str, rows) -> dict:
    """The files of a benchmark folder holding `rows`, in its published layout: {relative path: text},
    {"rows": [...]} for a parquet file; videos are empty files (only their existence is checked)."""
    import csv
    import io

    import benchmarks_corpus as corpus

    files: dict = {}
    if name in ("mvbench", "mlvu"):
        folders = corpus.MVBENCH_FOLDERS if name == "mvbench" else corpus.MLVU_FOLDERS
        for file, folder in folders.items():  # the loader opens every task file: the others are empty
            items = rows.get(file, [])
            files[f"json/{file}"] = json.dumps(items, ensure_ascii=False, indent=1)
            for item in items:
                if "video" in item:
                    files[f"video/{folder}{item['video']}"] = ""
    elif name == "nextqa":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        files["test.csv"] = out.getvalue()
        files["map_vid_vidorID.json"] = json.dumps(corpus.NEXTQA_MAP)
        files.update({f"NExTVideo/{path}.mp4": "" for path in corpus.NEXTQA_MAP.values()})
    elif name == "videomme":
        files["test-00000-of-00001.parquet"] = {"rows": rows}
        files.update({f"videos/{row['videoID']}.mp4": "" for row in rows})
        files.update({f"subtitles/{video}.srt": text for video, text in corpus.VIDEOMME_SRT.items()})
    elif name == "egoschema":
        files["questions.json"] = json.dumps(rows, indent=1)
        files.update({f"good_clips_git/{row['q_uid']}.mp4": "" for row in rows})
    elif name == "perception_test":
        files["mc_question_test.json"] = json.dumps(rows, indent=1)
        files.update({f"videos/{key}.mp4": "" for key in rows})
    elif name == "longvideobench":
        files["lvb_val.json"] = json.dumps(rows, indent=1)
        files.update({f"videos/{row['video_path']}": "" for row in rows})
        files.update({f"subtitles/{path}": json.dumps(cues) for path, cues in corpus.LONGVIDEOBENCH_SUBTITLES.items()})
    elif name == "lvbench":
        files["video_info.meta.jsonl"] = "".join(json.dumps(row) + "\n" for row in rows)
        files.update({f"video/{row['key']}.mp4": "" for row in rows})
    elif name == "activitynet_qa":
        questions, answers = rows
        files["test_q.json"] = json.dumps(questions, indent=1)
        files["test_a.json"] = json.dumps(answers, indent=1)
        files.update({f"all_test/v_{q['video_name']}.mp4": "" for q in questions})
    elif name == "tempcompass":
        for task_format, items in rows.items():
            files[f"{task_format}/test-00000-of-00001.parquet"] = {"rows": items}
            files.update({f"videos/{item['video_id']}.mp4": "" for item in items})
    elif name == "charades_sta":
        files["charades_annotations_test-random_prompt.json"] = json.dumps(rows, indent=1)
        files.update({f"Charades_v1/{row['video']}": "" for row in rows})
    return files


def materialise(files: dict, root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            pq.write_table(pa.Table.from_pylist(content["rows"]), path)
        else:
            path.write_text(content, encoding="utf-8")


def build(cls, root: Path):
    return cls(data_root=str(root), processor=None, num_splits=1, split_idx=0, fps=1, max_frames=180)


def crash(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def key_of(name: str, data_id, meta: dict) -> str:
    """What names a question on both sides: the benchmark's own id, else its (unique) video file."""
    if name == "videomme":
        return meta["question_id"] + (" +subtitles" if "subtitles" in meta else "")
    if name in ("egoschema", "perception_test", "lvbench", "charades_sta"):
        return str(data_id)
    if name == "tempcompass":
        return f"{meta['question_format']}/{Path(meta['video_path']).stem}"
    return Path(meta["video_path"]).name


def prompts(name: str, dataset, timestamps: list[float], module) -> list[dict]:
    import numpy as np

    found = []
    for data_id, meta in dataset.data_dict.items():
        entry = {"key": key_of(name, data_id, meta), "ground_truth": plain(meta.get("ground_truth"))}
        try:
            if name == "longvideobench":
                frames = [np.zeros((1, 1, 3), dtype=np.uint8) for _ in timestamps]
                interleaved = module.insert_subtitles_into_frames(
                    frames, timestamps, meta["subtitle"], meta["starting_timestamp_for_subtitles"], meta["duration"])
                conversation = dataset.generate_instruction(data_id, interleaved, timestamps)
                entry["content"] = [{"type": "video", "timestamps": part["timestamps"]} if part["type"] == "video"
                                    else {"type": "text", "text": part["text"]} for part in conversation[0]["content"]]
                entry["text"] = "".join(p.get("text", "") for p in entry["content"])
            else:
                entry["text"] = dataset.generate_instruction(data_id, timestamps)
        except Exception as err:  # noqa: BLE001 - recorded, not handled
            entry["crash"] = crash(err)
        found.append(entry)
    return found


def plain(value):
    """JSON-ready: numpy scalars and arrays as Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def read_answers(dataset, data_id, answers: list[str]) -> list[dict]:
    results = []
    for response in answers:
        try:
            value = dataset.process_response(data_id, response)
            results.append({"response": response, "result": plain(value)})
        except Exception as err:  # noqa: BLE001 - recorded, not handled
            results.append({"response": response, "crash": crash(err)})
    return results


def inside(work: Path, out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import benchmarks_corpus as corpus

    stand_ins()
    classes = import_benchmarks(work)
    rows = {"mvbench": corpus.MVBENCH_ROWS, "mlvu": corpus.MLVU_ROWS, "nextqa": corpus.NEXTQA_ROWS,
            "videomme": corpus.VIDEOMME_ROWS, "egoschema": corpus.EGOSCHEMA_ROWS,
            "perception_test": corpus.PERCEPTION_ROWS, "longvideobench": corpus.LONGVIDEOBENCH_ROWS,
            "lvbench": corpus.LVBENCH_ROWS,
            "activitynet_qa": (corpus.ACTIVITYNET_QUESTIONS, corpus.ACTIVITYNET_ANSWERS),
            "tempcompass": corpus.TEMPCOMPASS_ROWS, "charades_sta": corpus.CHARADES_ROWS}
    # (benchmark, the question the answers are read for, its answer type, the answers)
    readers = [
        ("mvbench", "as1.mp4", "letter", corpus.LETTER_ANSWERS),
        ("mvbench", "video_10001.mp4", "letter", corpus.LETTER_ANSWERS),
        ("mlvu", "movie101_66.mp4", "letter", corpus.LETTER_ANSWERS),
        ("nextqa", "4010069381.mp4", "letter", corpus.LETTER_ANSWERS),
        ("videomme", "001-1", "letter", corpus.LETTER_ANSWERS),
        ("videomme", "002-1", "letter", corpus.LETTER_ANSWERS),
        ("egoschema", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "letter", corpus.LETTER_ANSWERS),
        ("perception_test", "video_10909_1", "letter", corpus.LETTER_ANSWERS),
        ("longvideobench", "86CxyhFV9MI.mp4", "letter", corpus.LETTER_ANSWERS),
        ("longvideobench", "abcd.mkv", "letter", corpus.LETTER_ANSWERS),
        ("lvbench", "5", "letter", corpus.LETTER_ANSWERS),
        ("tempcompass", "multi-choice/1004227795", "tempcompass multi-choice", corpus.TEMPCOMPASS_CHOICE_ANSWERS),
        ("tempcompass", "yes_no/1004227796", "yes/no", corpus.YES_NO_ANSWERS),
        ("tempcompass", "yes_no/1004227797", "yes/no", corpus.YES_NO_ANSWERS),
        ("tempcompass", "caption_matching/1004227798", "caption matching", corpus.CAPTION_MATCHING_ANSWERS),
        ("tempcompass", "caption_matching/1004227799", "caption matching", corpus.CAPTION_MATCHING_ANSWERS),
        ("tempcompass", "caption_matching/1004227800", "caption matching", corpus.CAPTION_MATCHING_ANSWERS),
        ("charades_sta", "3MSZA_0", "interval", corpus.INTERVAL_ANSWERS),
    ]
    import importlib.metadata as metadata

    recording: dict = {
        "source": {"repository": REPO, "commit": COMMIT, "python": sys.version.split()[0],
                   "packages": {p: metadata.version(p) for p in ("numpy", "pandas", "pyarrow", "pysubs2", "openai")},
                   "stand_ins": ["torch.utils.data.Dataset", "videollama3.constants",
                                 "videollama3.mm_utils.load_video"]},
        "timestamps": corpus.TIMESTAMPS,
        "benchmarks": {},
        "readers": [],
        "load_cases": [],
    }
    datasets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls in classes.items():
            files = layout(name, rows[name])
            root = Path(tmp) / name
            materialise(files, root)
            dataset = build(cls, root)
            datasets[name] = dataset
            module = sys.modules[f"vl3bench.{name}"]
            recording["benchmarks"][name] = {"files": files,
                                             "prompts": prompts(name, dataset, corpus.TIMESTAMPS, module)}
        for name, key, answer_type, answers in readers:
            dataset = datasets[name]
            data_id = next(i for i, meta in dataset.data_dict.items() if key_of(name, i, meta) == key)
            meta = dataset.data_dict[data_id]
            recording["readers"].append({
                "benchmark": name, "key": key, "answer_type": answer_type,
                "options": [str(o) for o in meta.get("options", [])], "ground_truth": plain(meta.get("ground_truth")),
                "results": read_answers(dataset, data_id, answers)})
        for number, (name, what, case_rows) in enumerate(corpus.LOAD_CASES):
            files = layout(name, case_rows)
            root = Path(tmp) / f"case{number}"
            materialise(files, root)
            try:
                build(classes[name], root)
                outcome = "loaded"
            except Exception as err:  # noqa: BLE001 - recorded, not handled
                outcome = crash(err)
            recording["load_cases"].append({"benchmark": name, "what": what, "files": files, "original": outcome})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recording, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    counts = {t: sum(len(r["results"]) for r in recording["readers"] if r["answer_type"] == t)
              for t in {r["answer_type"] for r in recording["readers"]}}
    print(f"recorded {sum(len(b['prompts']) for b in recording['benchmarks'].values())} prompts, answers {counts}, "
          f"{len(recording['load_cases'])} load cases -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help=f"VideoLLaMA3 git URL or local clone (default {REPO})")
    parser.add_argument("--workdir", default="/tmp/vl3-eval-src", help="where the checkout goes")
    parser.add_argument("--env", default="/tmp/vl3-eval-env", help="the scratch virtual environment")
    parser.add_argument("--python", default="python3.11", 
                        help="Python for the environment (numpy 1.24.4 needs <= 3.11)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        try:
            inside(Path(args.inside), Path(args.out))
        except Exception:
            traceback.print_exc()
            raise SystemExit(1) from None
    else:
        outside(args)


if __name__ == "__main__":
    main()
