"""The benchmarks vidlab reads in their published layout, one module per benchmark family.

    from vidlab.evaluation.benchmarks import BENCHMARKS, load_benchmark
    data = load_benchmark("mvbench", "benchmarks/video/mvbench")

The eleven video benchmarks VideoLLaMA3 reports are asked with its prompts and read with its answer
rules (vidlab.evaluation.answers); four caption sets (MSR-VTT, MSVD, VATEX, YouCook2) are scored with
the COCO caption metrics.
"""

from __future__ import annotations

from pathlib import Path

from vidlab.errors import EvaluationError
from vidlab.evaluation.accuracy import accuracy_table
from vidlab.evaluation.answers import LETTERS, extract_letter
from vidlab.evaluation.benchmarks import (
    activitynet_qa,
    captions,
    charades_sta,
    egoschema,
    longvideobench,
    lvbench,
    mvbench,
    nextqa,
    perception_test,
    tempcompass,
    videomme,
)
from vidlab.evaluation.benchmarks.choice import choice_prompt, load_choices
from vidlab.evaluation.benchmarks.common import BenchmarkLayoutError
from vidlab.evaluation.benchmarks.mvbench import MLVU_TASKS, MVBENCH_TASKS, load_mlvu, load_mvbench, mvbench_prompt
from vidlab.evaluation.benchmarks.spec import Benchmark
from vidlab.evaluation.benchmarks.videomme import load_videomme, videomme_prompt
from vidlab.evaluation.records import EvalSet

VIDEO_BENCHMARKS: tuple[Benchmark, ...] = (
    activitynet_qa.BENCHMARK, charades_sta.BENCHMARK, egoschema.BENCHMARK, longvideobench.BENCHMARK,
    lvbench.BENCHMARK, mvbench.MLVU, mvbench.MVBENCH, nextqa.BENCHMARK, perception_test.BENCHMARK,
    tempcompass.BENCHMARK, videomme.BENCHMARK,
)
CAPTION_BENCHMARKS: tuple[Benchmark, ...] = (captions.MSRVTT, captions.MSVD, captions.VATEX, captions.YOUCOOK2)
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (*VIDEO_BENCHMARKS, *CAPTION_BENCHMARKS)}

__all__ = [
    "BENCHMARKS", "CAPTION_BENCHMARKS", "LETTERS", "MLVU_TASKS", "MVBENCH_TASKS", "VIDEO_BENCHMARKS", "Benchmark",
    "BenchmarkLayoutError", "accuracy_table", "choice_prompt", "extract_letter", "get_benchmark", "load_benchmark",
    "load_choices", "load_mlvu", "load_mvbench", "load_videomme", "mvbench_prompt", "videomme_prompt",
]


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name` (case and "-" ignored: "Video-MME" is videomme)."""
    key = name.strip().lower().replace("-", "").replace(" ", "")
    for benchmark in BENCHMARKS.values():
        if key in (benchmark.name.replace("_", ""), benchmark.name, benchmark.title.lower().replace("-", "")):
            return benchmark
    raise EvaluationError(f"unknown benchmark {name!r}. Use one of: {', '.join(BENCHMARKS)} (or all); "
                          "`vidlab eval benchmarks` lists them.")


def load_benchmark(name: str, root: str | Path, split: str | None = None, subtitles: bool = False) -> EvalSet:
    """Read a benchmark from its folder as released (see `vidlab eval benchmarks`).

    Args:
        name: a name from BENCHMARKS.
        root: the benchmark's folder.
        split: one of the benchmark's splits (None: its default).
        subtitles: put the subtitles before the question (Video-MME, LongVideoBench).

    Raises:
        BenchmarkLayoutError: the folder does not hold the files the benchmark ships, in their places;
            the message names what was expected where.
    """
    from vidlab.evaluation.sets import drop_duplicate_ids

    benchmark = get_benchmark(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EvaluationError(f"{root}: no such folder. Give --root the {benchmark.title} folder "
                              f"(`vidlab eval benchmarks {benchmark.name}` shows its layout).")
    split = split or benchmark.default_split
    if split not in benchmark.splits:
        raise EvaluationError(f"{benchmark.title} has no split {split!r}. Use one of: {', '.join(benchmark.splits)}.")
    if subtitles and not benchmark.subtitles:
        raise EvaluationError(f"{benchmark.title} has no subtitles; leave out --subtitles.")
    return drop_duplicate_ids(benchmark.load(root, split, subtitles))
