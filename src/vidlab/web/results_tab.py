"""The Results tab: an eval run or eval compare folder as metrics, a chart and a sample list to sort, filter
and open (video with the sampled frames marked, prompt, references, every run's prediction and scores).
Works without a model."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import gradio as gr
import pandas as pd

from vidlab.errors import VidlabError
from vidlab.web.controls import error_text
from vidlab.web.media import VIDEO_SUFFIXES, frame_marks, frames_at
from vidlab.web.options import WebOptions
from vidlab.web.results import Results, find_results, open_results
from vidlab.web.sessions import Sessions

PREVIEW_CHARS = 90


def _cell(text: str, limit: int = 400) -> str:
    """Text for a markdown table cell: one line, pipes escaped, shortened."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def sort_choices(results: Results) -> list[tuple[str, str]]:
    choices = [("file order", "file"), ("id", "id")]
    for name in results.names:
        choices += [(f"score of {name}, highest first", f"-score:{name}"),
                    (f"score of {name}, lowest first", f"score:{name}")]
    for name in results.names[1:]:
        base = results.names[0]
        choices += [(f"{name} vs {base}: biggest gain first", f"-delta:{name}"),
                    (f"{name} vs {base}: biggest loss first", f"delta:{name}")]
    return choices


def outcome_choices(results: Results) -> list[tuple[str, str]]:
    choices = [("all samples", "")]
    for name in results.names[1:]:
        choices += [(f"{name} wins", f"win:{name}"), (f"{name} losses", f"loss:{name}"),
                    (f"{name} ties", f"tie:{name}")]
    return choices


def sample_table(results: Results, task: str, outcome: str, search: str, sort: str) -> pd.DataFrame:
    rows = results.samples(task=None if task in (None, "", "all") else task, outcome=outcome or None,
                           search=search or None, sort=sort or None)
    names = results.names
    columns = ["id", "task", *[f"score {n}" for n in names], *[f"Δ {n}" for n in names[1:]],
               *[f"{n} vs {names[0]}" for n in names[1:]], f"prediction of {names[-1]}"]
    data = [[r.id, r.task, *[None if v is None else round(v, 1) for v in r.scores],
             *[None if v is None else round(v, 1) for v in r.deltas], *[o or "" for o in r.outcomes],
             r.prediction if len(r.prediction) <= PREVIEW_CHARS else r.prediction[: PREVIEW_CHARS - 1] + "…"]
            for r in rows]
    return pd.DataFrame(data, columns=columns)


def summary_text(results: Results) -> str:
    lines = [f"### {results.title}", ""]
    for run in results.runs:
        model = run.info.get("model")
        adapter = run.info.get("adapter")
        made = f" ({model}{' + ' + str(adapter) if adapter else ''})" if model else ""
        lines.append(f"- **{run.name}**{made}: {len(run.rows)} samples, {run.skipped} skipped · `{run.folder}`")
    for v in results.versus():
        lines.append(f"- **{v['run']} vs {v['baseline']}**: {v['wins']} wins, {v['losses']} losses, {v['ties']} ties "
                     f"over {v['common']} samples scored in both")
    lines += [f"\n⚠ {problem}" for problem in results.problems]
    return "\n".join(lines)


def chart_file(results: Results, temp_dir: Path) -> str | None:
    """A chart of the metrics drawn into the temporary folder: one panel per metric, each with its own axis,
    so a metric on a larger scale (CIDEr runs to 10, others to 1 or 100) does not flatten the rest."""
    header, rows = results.metric_table()
    rows = [row for row in rows if any(v is not None for v in row[1:1 + len(results.runs)])]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = results.names
    digest = hashlib.sha256(repr((names, rows)).encode()).hexdigest()[:16]
    out = temp_dir / "charts" / f"{digest}.png"
    if out.is_file():
        return str(out)
    columns = min(len(rows), 4)
    lines = -(-len(rows) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 2.4 * lines), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, row in zip(axes.flat, rows):
        values = [0.0 if v is None else v for v in row[1:1 + len(names)]]
        bars = axis.bar(range(len(names)), values, color=[colours[k % len(colours)] for k in range(len(names))])
        axis.bar_label(bars, labels=["-" if v is None else f"{v:g}" for v in row[1:1 + len(names)]], fontsize=8)
        axis.set_title(str(row[0]), fontsize=9)
        axis.set_xticks(range(len(names)), [n if len(n) <= 14 else n[:13] + "…" for n in names], fontsize=7,
                       rotation=20)
        axis.tick_params(axis="y", labelsize=7)
        low, high = min(0.0, *values), max(0.0, *values)
        axis.set_ylim(low * 1.2, high * 1.2 if high > 0 else 1.0)  # zero at the bottom, room for the labels
    for axis in list(axes.flat)[len(rows):]:
        axis.set_visible(False)
    figure.suptitle("each metric on its own scale", fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".part.png")
    figure.savefig(partial, dpi=110)
    plt.close(figure)
    partial.replace(out)
    return str(out)


def detail_text(sample: dict) -> str:
    lines = [f"### {sample['id']}" + (f" · task {sample['task']}" if sample["task"] else ""), "",
             "**Prompt**", "", "```", str(sample["prompt"]), "```"]
    if sample.get("options"):
        lines += ["", "**Options**: " + " · ".join(_cell(o, 120) for o in sample["options"])]
    references = sample["references"]
    if references:
        lines += ["", "**Reference" + ("s**" if len(references) > 1 else "**"), ""]
        lines += [f"- {_cell(r)}" for r in references]
    lines += ["", "| run | prediction | score | per-sample scores | frames | visual tokens |",
              "|---|---|---|---|---|---|"]
    for entry in sample["runs"]:
        row = entry["row"]
        scores = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in (row.get("scores") or {}).items() if not isinstance(v, (list, dict)))
        frames = sum(len(f) for f in row.get("frames") or [])
        tokens = f"{row.get('visual_tokens', '-')} (of {row.get('visual_tokens_before_pruning', '-')})"
        lines.append(f"| {_cell(entry['name'], 60)} | {_cell(row.get('prediction', ''))} | {_number(entry['score'])} "
                     f"| {_cell(scores, 200)} | {frames} | {tokens} |")
    return "\n".join(lines)


def results_tab(options: WebOptions, sessions: Sessions, temp_dir: Path, allowed: list[Path]) -> None:
    def listed() -> list[tuple[str, str]]:
        return [(f.label, str(f.path)) for f in find_results(options.runs)] if options.runs else []

    if options.runs is None:
        gr.Markdown("Start the page with `--runs DIR` to browse the evaluations under DIR.", elem_id="results-none")
    with gr.Row():
        folders = gr.Dropdown(listed(), value=None, multiselect=True, scale=4, elem_id="results-folders",
                              label=f"eval run or eval compare folders under {options.runs}",
                              info="one eval compare folder, or one or more eval runs (the first is the baseline)")
        refresh = gr.Button("Refresh list", scale=1, elem_id="results-refresh")
        show = gr.Button("Open", variant="primary", scale=1, elem_id="results-open")
    summary = gr.Markdown("", elem_id="results-summary")
    with gr.Row():
        metrics = gr.Dataframe(label="metrics", interactive=False, elem_id="results-metrics", scale=1)
        chart = gr.Image(label="chart", interactive=False, elem_id="results-chart", scale=1, height=320)
    with gr.Row():
        task = gr.Dropdown(["all"], value="all", label="task", elem_id="results-task")
        outcome = gr.Dropdown([("all samples", "")], value="", label="win / loss", elem_id="results-outcome")
        search = gr.Textbox(label="search (id, prompt, reference, prediction)", elem_id="results-search")
        sort = gr.Dropdown([("file order", "file")], value="file", label="sort by", elem_id="results-sort")
    samples = gr.Dataframe(label="samples (click a row to open it)", interactive=False, max_height=360,
                           elem_id="results-samples", wrap=False)
    pick = gr.Dropdown([], value=None, label="sample", filterable=True, elem_id="results-sample")
    with gr.Row():
        video = gr.Video(label="video (the sampled frames are marked as captions while it plays)",
                         interactive=False, elem_id="results-video", height=300)
        frames = gr.Gallery(label="frames the model saw", columns=6, height=300, object_fit="contain",
                            elem_id="results-frames")
    detail = gr.Markdown("", elem_id="results-detail")

    def refresh_list():
        return gr.Dropdown(choices=listed())

    def open_folders(chosen: list[str], request: gr.Request):
        state = sessions.get(request)
        try:
            results = open_results([Path(c) for c in chosen or []])
        except Exception as err:  # shown on the page, never as a traceback
            return (error_text(err), None, None, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        state.results = results
        header, rows = results.metric_table()
        table = sample_table(results, "all", "", "", "file")
        return (summary_text(results), pd.DataFrame(rows, columns=header), chart_file(results, temp_dir),
                gr.Dropdown(choices=["all", *results.tasks()], value="all"),
                gr.Dropdown(choices=outcome_choices(results), value=""),
                gr.Dropdown(choices=sort_choices(results), value="file"), "", table,
                gr.Dropdown(choices=list(table["id"]), value=None))

    def filtered(task_value, outcome_value, search_value, sort_value, request: gr.Request):
        results = sessions.get(request).results
        if results is None:
            return gr.skip(), gr.skip()
        table = sample_table(results, task_value, outcome_value, search_value, sort_value)
        return table, gr.Dropdown(choices=list(table["id"]))

    def selected(event: gr.SelectData):
        row = event.row_value or []
        return row[0] if row else gr.skip()

    def playable(path: Path) -> str:
        """A path the page may serve: the file itself under an allowed folder, else a copy in the temp folder."""
        resolved = path.resolve()
        if any(resolved.is_relative_to(root) for root in allowed):
            return str(resolved)
        if resolved.stat().st_size > options.max_upload_mb * 2**20:
            raise VidlabError(f"{path}: outside the folders the page serves and over --max-upload-mb to copy. Start "
                              "the page with --runs or --media-root above it.")
        copy = temp_dir / "media" / hashlib.sha256(str(resolved).encode()).hexdigest()[:16] / path.name
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resolved, copy)
        return str(copy)

    def open_sample(sample_id: str | None, request: gr.Request):
        results = sessions.get(request).results
        if results is None or not sample_id:
            return None, [], ""
        try:
            sample = results.sample(sample_id)
        except Exception as err:  # shown on the page, never as a traceback
            return None, [], error_text(err)
        text = detail_text(sample)
        videos = [p for p in sample["media"] if p.suffix.lower() in VIDEO_SUFFIXES]
        if not videos:
            images = [str(p) for p in sample["media"] if p.is_file()]
            return None, [(playable(Path(p)), Path(p).name) for p in images], text
        path = videos[0]
        if not path.is_file():
            return None, [], text + f"\n\n⚠ {path}: the video is not there any more (moved or deleted?)."
        try:
            thumbs, stamps = frames_at(path, sample["settings"], sample["frames"])
            marked = gr.Video(value=playable(path), subtitles=frame_marks(sample["frames"] or stamps, None))
        except Exception as err:  # shown on the page, never as a traceback
            return None, [], text + "\n\n" + error_text(err)
        return marked, [(f, f"Time {s:.1f}s") for f, s in zip(thumbs, stamps)], text

    refresh.click(refresh_list, None, folders)
    show.click(open_folders, folders,
               [summary, metrics, chart, task, outcome, sort, search, samples, pick])
    for control in (task, outcome, sort):
        control.change(filtered, [task, outcome, search, sort], [samples, pick])
    search.submit(filtered, [task, outcome, search, sort], [samples, pick])
    samples.select(selected, None, pick)
    pick.change(open_sample, pick, [video, frames, detail])
