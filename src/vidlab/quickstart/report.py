"""What `vidlab quickstart` reports: caption attribute scores, the checks, summary.json, report.md/png, the table.

Everything here works on plain data (predictions rows, metrics.json, log.jsonl rows) and touches
no model, so it is quick to test on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vidlab.files import save_figure, write_atomic, write_json

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
CHART_FILE = "report.png"
ATTRIBUTES = ("colour", "shape", "direction")

# Evaluations, in the order they run: name -> what the table calls them.
EVAL_LABELS = {
    "init_caption": "untrained model, captions",
    "base_caption": "base model, captions",
    "blind_caption": "blind control (blank video), captions",
    "base_direction": "base model, direction question",
    "lora_direction": "LoRA model, direction question",
}
CAPTION_EVALS = ("init_caption", "base_caption", "blind_caption")

# The claims of the quickstart (issue 6), on the held-out test set; all values 0-100 except the ratio.
# name -> (what it measures, comparison, threshold)
CHECKS = {
    "base_bleu4": ("caption BLEU-4 of the trained base model", ">=", 60.0),
    "base_colour": ("base model captions naming the right colour (%)", ">=", 95.0),
    "base_shape": ("base model captions naming the right shape (%)", ">=", 80.0),
    "base_direction": ("base model captions naming the right direction (%)", ">=", 60.0),
    "blind_ratio": ("BLEU-4 of the blind control / BLEU-4 of the base model", "<=", 1 / 3),
    "lora_gain": ("LoRA gain on the direction question (exact match, points over the base model)", ">=", 30.0),
}

# Every top-level key of summary.json and what it holds (the README documents these).
SUMMARY_KEYS = {
    "passed": "true when every check passed (a failed check is a finding, not an error: the exit status is 0)",
    "checks": "the quickstart's claims, each {name, description, op, value, threshold, passed}: base_bleu4 >= 60, "
              "base_colour >= 95, base_shape >= 80, base_direction >= 60 (% of captions), blind_ratio <= 1/3, "
              "lora_gain >= 30 (points)",
    "evals": "per evaluation (init_caption, base_caption, blind_caption, base_direction, lora_direction): label, "
             "folder, model, adapter, data, records, metrics (bleu1..bleu4, sacrebleu, rouge_l, cider, exact_match "
             "from its metrics.json, 0-100) and, for captions, attributes (colour, shape, direction, all: % of "
             "captions naming the right word and no other word of its kind; count: captions scored)",
    "training": "per training run (base, lora): folder, config, steps, first_loss and final_loss (mean training "
                "loss of the first and last logged window), seconds (wall time of the run) and seconds_per_step",
    "blind_bleu4_ratio": "BLEU-4 of the blind control divided by the base model's (null when the base model's is 0)",
    "lora_gain": "exact match on the direction question of the LoRA model minus the base model's, in points",
    "model": "the tiny model: spec (TinySpec sizes) and parameters (per part and total)",
    "data": "the synthetic data set: folder, videos per split, frames, fps, size",
    "settings": "the QuickstartSettings of the run",
    "commands": "per step, the command that does it (paths as given to --out), runnable from the same folder",
    "seconds": "per step, the wall seconds it took when it ran (a step finished by an earlier call keeps its time; "
               "a training run resumed after a crash counts the resumed part)",
    "total_seconds": "sum of seconds: the wall time of the whole quickstart",
    "out": "the quickstart folder, as given to --out",
    "vidlab_version": "the vidlab version that wrote the summary",
}

_WORD = re.compile(r"[a-z]+")


def attribute_accuracy(
    rows: Iterable[Mapping[str, Any]],
    records: Mapping[str, Mapping[str, Any]],
    vocabulary: Mapping[str, Sequence[str]],
) -> dict[str, float | int]:
    """Share of caption predictions that name each attribute of their video correctly.

    A caption names the colour correctly when it contains the record's colour word and no other
    colour word of the data set's vocabulary (whole words, case-insensitive); the same for shape and
    direction. "a red circle moves left" for a red circle moving left is right on all three; "a red
    red circle" is right on colour and shape but not direction; "a red or blue circle" is wrong on colour.

    Args:
        rows: prediction rows with "id" and "prediction" (predictions.jsonl of `vidlab eval run`).
        records: the data records by id, each with "colour", "shape" and "direction".
        vocabulary: every word of each attribute: {"colour": [...], "shape": [...], "direction": [...]}.

    Returns:
        {"colour", "shape", "direction": % right (0-100), "all": % right on all three, "count": captions scored}.
    """
    words = {kind: {w.lower() for w in vocabulary[kind]} for kind in ATTRIBUTES}
    right = dict.fromkeys((*ATTRIBUTES, "all"), 0)
    count = 0
    for row in rows:
        record = records[str(row["id"])]
        said = set(_WORD.findall(str(row["prediction"]).lower()))
        hits = {kind: said & words[kind] == {str(record[kind]).lower()} for kind in ATTRIBUTES}
        for kind, hit in hits.items():
            right[kind] += hit
        right["all"] += all(hits.values())
        count += 1
    shares: dict[str, float | int] = {k: 100.0 * v / count if count else 0.0 for k, v in right.items()}
    shares["count"] = count
    return shares


def run_checks(evals: Mapping[str, Mapping], blind_ratio: float | None, lora_gain: float | None) -> list[dict]:
    """The CHECKS against the evaluation results; a value that cannot be computed fails its check."""
    base = evals["base_caption"]
    values = {
        "base_bleu4": base["metrics"].get("bleu4"),
        **{f"base_{kind}": base["attributes"][kind] for kind in ATTRIBUTES},
        "blind_ratio": blind_ratio,
        "lora_gain": lora_gain,
    }
    checks = []
    for name, (description, op, threshold) in CHECKS.items():
        value = values[name]
        passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        checks.append({"name": name, "description": description, "op": op, "value": value,
                       "threshold": threshold, "passed": bool(passed)})
    return checks


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _check_value(check: dict) -> str:
    return _number(check["value"], 3 if check["name"] == "blind_ratio" else 1)


def _threshold(check: dict) -> str:
    return f"{check['threshold']:.3f}" if check["name"] == "blind_ratio" else f"{check['threshold']:g}"


def table_rows(summary: Mapping) -> list[list[str]]:
    """One row per evaluation: label, BLEU-4, colour %, shape %, direction %, exact match."""
    rows = []
    for name, label in EVAL_LABELS.items():
        result = summary["evals"][name]
        metrics, attributes = result["metrics"], result.get("attributes")
        caption = attributes is not None
        rows.append([
            label,
            _number(metrics.get("bleu4")) if caption else "-",
            *(_number(attributes[k]) if caption else "-" for k in ATTRIBUTES),
            _number(metrics.get("exact_match")),
        ])
    return rows


TABLE_HEADER = ["evaluation (held-out test set)", "BLEU-4", "colour %", "shape %", "direction %", "exact match"]


def render_table(summary: Mapping) -> str:
    """The short plain-text table printed at the end, with the checks."""
    rows = [TABLE_HEADER, *table_rows(summary)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.append("")
    for check in summary["checks"]:
        verdict = "pass" if check["passed"] else "FAIL"
        lines.append(f"{verdict}  {check['description']} {check['op']} {_threshold(check)}: {_check_value(check)}")
    failed = sum(not c["passed"] for c in summary["checks"])
    lines.append("all checks passed" if not failed else f"{failed} of {len(summary['checks'])} checks failed")
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _code(command: str) -> list[str]:
    return ["```bash", command, "```", ""]


def two_b_commands(data_dir: str) -> list[tuple[str, str]]:
    """(what, command) pairs that repeat the quickstart's LoRA step with VideoLLaMA3-2B."""
    model = "checkpoints/VideoLLaMA3-2B-hf"
    test = f"{data_dir}/test.direction.jsonl"
    train = f"{data_dir}/train.direction.jsonl"
    return [
        ("Convert the released model once to the native transformers format (downloads about 4 GB):",
         f"vidlab model convert DAMO-NLP-SG/VideoLLaMA3-2B {model} --dtype bf16"),
        ("Evaluate it before fine-tuning (put your own test file in place of the synthetic one):",
         f"vidlab eval run --model {model} --data {test} --out runs/2b-base --batch-size 8"),
        ("LoRA-fine-tune it with the shipped recipe (one GPU with 24 GB; no validation file here):",
         f"vidlab train configs/lora_videollama3_2b.yaml --set model.path={model} \\\n"
         f"  --set 'data.train=[{train}]' --set 'data.val=[]' --set output.eval_steps=null \\\n"
         "  --set output.dir=runs/lora-2b"),
        ("Evaluate the fine-tuned model (base + adapter) and compare:",
         f"vidlab eval run --model {model} --adapter runs/lora-2b --data {test} --out runs/2b-lora --batch-size 8\n"
         "vidlab eval compare runs/2b-base runs/2b-lora --out runs/2b-compare"),
        ("Merge the adapter into a standalone model:",
         f"vidlab model merge checkpoints/VideoLLaMA3-2B-lora --base {model} --adapter runs/lora-2b --dtype bf16"),
    ]


def render_markdown(summary: Mapping, step_titles: Mapping[str, str]) -> str:
    """report.md: what ran, the results and checks, the training runs, every command, the 2B recipe."""
    settings, data, model = summary["settings"], summary["data"], summary["model"]
    evals, training = summary["evals"], summary["training"]
    failed = [c for c in summary["checks"] if not c["passed"]]
    lines = [
        "# vidlab quickstart",
        "",
        f"A tiny VideoLLaMA3 ({model['parameters']['total']:,} parameters) built with random weights, trained "
        f"on the captions of {data['videos']['train']} synthetic videos (the base model), then LoRA-fine-tuned "
        "to answer a question it was never trained on (which direction the shape moves). Every step is "
        "a vidlab command; all numbers are on the "
        f"{data['videos']['test']} held-out test videos. Seed {settings['seed']}; "
        f"{summary['total_seconds']:.0f} s of wall time in all.",
        "",
        "## Results",
        "",
    ]
    lines += _md_table(TABLE_HEADER, table_rows(summary)) + [""]
    lines += [
        "- BLEU-4: COCO caption BLEU-4 (0-100) of the captions; exact match: share of answers equal to the "
        "reference after normalisation (lower case, no punctuation or articles). Both as `vidlab eval run` "
        "computes them (definitions in each evaluation's report.md).",
        "- colour / shape / direction %: share of captions that contain the video's colour (shape, "
        "direction) word and no other word of that kind.",
        "- The blind control is the base model captioning the same test records with every video "
        "replaced by one blank grey video of the same size, frame rate and length: what it gets right "
        "comes from the language prior, not from the pictures.",
        "",
        "## Checks",
        "",
    ]
    lines += _md_table(["check", "rule", "value", "result"], [
        [c["description"], f"{c['op']} {_threshold(c)}", _check_value(c), "pass" if c["passed"] else "**FAIL**"]
        for c in summary["checks"]
    ]) + [""]
    lines.append("All checks passed." if not failed else
                 f"{len(failed)} of {len(summary['checks'])} checks failed: a finding about this run's settings "
                 "(see summary.json); the quickstart itself completed.")
    lines += ["", f"![loss curves and metrics]({CHART_FILE})", "", "## Training", ""]
    lines += _md_table(["run", "steps", "first logged loss", "final logged loss", "seconds", "s/step"], [
        [name, t["steps"], _number(t["first_loss"], 4), _number(t["final_loss"], 4), _number(t["seconds"]),
         _number(t["seconds_per_step"], 3)]
        for name, t in training.items()
    ]) + [""]
    lines += ["## Evaluations", ""]
    lines += _md_table(["evaluation", "model", "adapter", "data", "records", "report"], [
        [e["label"], f"`{e['model']}`", f"`{e['adapter']}`" if e["adapter"] else "none", f"`{e['data']}`",
         e["records"], f"[{(link := Path(e['folder']).relative_to(summary['out']) / 'report.md')}]({link})"]
        for e in evals.values()
    ]) + [""]
    lines += ["## The commands", "",
              "Each step is the command below (run from the folder the quickstart ran in); quickstart only "
              "chains them. The configs are the copies in "
              f"`{summary['out']}/configs/`, so the commands run as they are.", ""]
    for number, (key, command) in enumerate(summary["commands"].items(), start=1):
        seconds = summary["seconds"].get(key)
        took = f"; {seconds:.1f} s" if seconds is not None else ""
        lines += [f"{number}. {step_titles.get(key, key)}{took}:", ""] + _code(command)
    lines += ["## Do the same with VideoLLaMA3-2B", "",
              "The same commands on the real model (a GPU with 24 GB for the LoRA step). The synthetic files "
              "work as they are, or use your own annotation files (docs/train.md, docs/evaluate.md):", ""]
    for what, command in two_b_commands(data["folder"]):
        lines += [what, ""] + _code(command)
    return "\n".join(lines)


def write_chart(summary: Mapping, losses: Mapping[str, list[tuple[int, float]]], path: Path) -> Path:
    """report.png: the training loss curves (left) and the key metrics before / after / blind (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    evals = summary["evals"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        for name, points in losses.items():
            if points:
                steps, values = zip(*points)
                left.plot(steps, values, marker="." if len(steps) < 30 else None,
                          label=f"{name} ({'captions' if name == 'base' else 'direction question'})")
        left.set_yscale("log")
        left.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        left.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        left.set_xlabel("optimiser step")
        left.set_ylabel("training loss (per token)")
        left.set_title("Training loss")
        left.legend()
        left.grid(alpha=0.3)

        groups = ["caption BLEU-4", "colour %", "shape %", "direction %", "direction question\nexact match"]

        def caption_values(name: str) -> list[float]:
            result = evals[name]
            return [result["metrics"].get("bleu4", 0.0), *(result["attributes"][k] for k in ATTRIBUTES)]

        series = {
            "before (untrained / base model)": caption_values("init_caption")
            + [evals["base_direction"]["metrics"].get("exact_match", 0.0)],
            "after (base / LoRA model)": caption_values("base_caption")
            + [evals["lora_direction"]["metrics"].get("exact_match", 0.0)],
            "blind control": caption_values("blind_caption") + [0.0],
        }
        width = 0.27
        for i, (label, values) in enumerate(series.items()):
            positions = [g + (i - 1) * width for g in range(len(groups))]
            shown = values if label != "blind control" else values[:-1]
            bars = right.bar(positions[: len(shown)], shown, width, label=label)
            right.bar_label(bars, fmt="%.0f", fontsize=7)
        right.set_xticks(range(len(groups)), groups, fontsize=8)
        right.set_ylim(0, 122)
        right.set_yticks(range(0, 101, 20))
        right.set_title("Held-out test set")
        right.legend(fontsize=7, loc="upper center", ncol=3)
        right.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        return save_figure(figure, path)
    finally:
        plt.close(figure)


def write_summary_and_report(out_dir: Path, summary: Mapping, step_titles: Mapping[str, str]) -> None:
    """summary.json (exactly the SUMMARY_KEYS) and report.md into `out_dir`, each atomically."""
    write_json(out_dir / SUMMARY_FILE, {key: summary[key] for key in SUMMARY_KEYS})
    write_atomic(out_dir / REPORT_FILE, render_markdown(summary, step_titles) + "\n")
