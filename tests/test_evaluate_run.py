"""`eval run` on the tiny model: batching, skipped records, resuming after SIGKILL, two processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import gradient_frames
from PIL import Image

from vidlab.conversation import parse_record
from vidlab.data.synthetic import Scene, write_scene
from vidlab.errors import EvaluationError
from vidlab.evaluation.cli import eval_app
from vidlab.evaluation.metrics import score_file
from vidlab.evaluation.run import RunOptions, run_predictions
from vidlab.generate import GenerationOptions, generate, generate_batch
from vidlab.inputs import build_inputs, collate, encode, load_media
from vidlab.media.writer import write_video

SHORT = GenerationOptions(max_new_tokens=6)


def run_eval_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m vidlab.evaluation.cli ...`: the same app `vidlab eval` registers."""
    return subprocess.run(
        [sys.executable, "-m", "vidlab.evaluation.cli", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def comparable(path: Path) -> list[dict]:
    """Prediction rows without what depends on timing or on scoring."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("seconds", "scores")} for row in rows]


def video_record(rid, video, answer, **extra):
    return {"id": rid, "video": [video], **extra,
            "conversations": [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": answer}]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    write_scene(root / "red.mp4", Scene(colour="red", size=64, seconds=3, fps=4))
    write_scene(root / "blue.mp4", Scene(colour="blue", shape="square", direction="up", size=64, seconds=2, fps=4))
    write_video(root / "wide.mp4", gradient_frames(12, 48, 80), fps=4)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(root / "pic.png")
    (root / "broken.mp4").write_bytes(b"this is not a video")
    records = [
        video_record("red", "red.mp4", "a red circle moves left"),
        {"id": "pic", "image": ["pic.png"], "conversations": [
            {"from": "human", "value": "<image>\nDescribe the picture."},
            {"from": "gpt", "value": ["Noise.", "Dots."]}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Say something."}], "references": ["something"]},
        video_record("missing", "nowhere.mp4", "x"),
        video_record("blue", "blue.mp4", "a blue square moves up", start=0.5, end=2.0),
        video_record("broken", "broken.mp4", "x"),
        video_record("wide", "wide.mp4", "stripes slide"),
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(3, '{"id": "torn", "conversations": [')
    (root / "eval.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_batched_generation_equals_one_at_a_time(tiny_model, data_dir):
    model, processor = tiny_model
    lines = (data_dir / "eval.jsonl").read_text().splitlines()
    records = {r["id"]: r for r in (json.loads(line) for line in lines if not line.startswith('{"id": "torn"'))}
    chosen = [records[i] for i in ("red", "pic", "text", "wide", "blue")]
    conversations = [parse_record({**r, "conversations": r["conversations"][:1]}) for r in chosen]
    items = [(c, load_media(c, data_root=data_dir)) for c in conversations]
    batch = collate([encode(c, media, processor) for c, media in items], processor.tokenizer.pad_token_id, "left")
    mask = batch.tensors["attention_mask"]
    assert mask.shape[0] == 5 and bool(mask[:, -1].all()) and not bool(mask[:, 0].all())  # padded on the left
    together = generate_batch(model, processor, batch, SHORT)
    for (conversation, media), stats, answer in zip(items, batch.stats, together):
        alone = build_inputs(conversation, media, processor)
        assert [stats] == alone.stats
        assert answer.token_ids == generate(model, processor, alone, SHORT).token_ids
    assert len({tuple(a.token_ids) for a in together}) > 1  # different prompts, different answers
    assert batch.stats[0].frames == [[0.0, 1.0, 2.0]] and batch.stats[1].frames == []


def test_run_skips_bad_records_resumes_and_does_not_depend_on_batch_size(tiny_model, data_dir, tmp_path):
    options = RunOptions(batch_size=3, generation=SHORT, progress=False)
    result = run_predictions(tiny_model, data_dir / "eval.jsonl", tmp_path / "b3", options=options)
    predictions = tmp_path / "b3" / "predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["red", "pic", "text", "blue", "wide"]
    assert result.predictions == result.answered == 5 and result.records == 7
    red, pic = rows[0], rows[1]
    assert red["frames"] == [[0.0, 1.0, 2.0]] and red["references"] == ["a red circle moves left"]
    assert red["prompt"] == "<video>\nWhat happens?" and red["media"] == ["red.mp4"] and red["kind"] == "open"
    assert 0 < red["visual_tokens"] <= red["visual_tokens_before_pruning"] < red["prompt_tokens"]
    assert 1 <= red["generated_tokens"] <= 6 and red["seconds"] > 0
    assert pic["references"] == ["Noise.", "Dots."] and pic["frames"] == []
    # the blue clip from 0.5 s, 1.5 s long, read as the original's evaluation reads windows (precise_time:
    # ticks from the file's start, kept from round(0.5) = 1, the first repeated as it comes half a tick
    # late), stamped in the video
    assert rows[3]["frames"] == [[0.5, 1.5]]

    skipped = [json.loads(line) for line in (tmp_path / "b3" / "skipped.jsonl").read_text().splitlines()]
    source = str(data_dir / "eval.jsonl")
    assert [(s["source"], s["id"]) for s in skipped] == [
        (f"{source}:4", None), (f"{source}:5", "missing"), (f"{source}:7", "broken")]
    assert skipped[0]["reason"].startswith("not valid JSON")
    assert "nowhere.mp4: no such file" in skipped[1]["reason"]
    assert "broken.mp4: not a readable video" in skipped[2]["reason"]

    before = predictions.read_bytes()
    again = run_predictions(tiny_model, data_dir / "eval.jsonl", tmp_path / "b3", options=options)
    assert again.answered == 0 and predictions.read_bytes() == before  # nothing redone, nothing rewritten
    assert len(again.skipped) == 3  # the bad records are tried again and listed again

    single = RunOptions(batch_size=1, generation=SHORT, progress=False, workers=0)
    run_predictions(tiny_model, data_dir / "eval.jsonl", tmp_path / "b1", options=single)
    assert comparable(tmp_path / "b1" / "predictions.jsonl") == comparable(predictions)

    longer = RunOptions(batch_size=3, generation=GenerationOptions(max_new_tokens=9), progress=False)
    with pytest.raises(EvaluationError, match=r"holds predictions of a different run \(max_new_tokens: 6 then, 9"):
        run_predictions(tiny_model, data_dir / "eval.jsonl", tmp_path / "b3", options=longer)


def test_multiple_choice_run_is_scored_by_accuracy_per_task(tiny_model, data_dir, tmp_path):
    mvbench = tmp_path / "MVBench"
    (mvbench / "json").mkdir(parents=True)
    (mvbench / "video" / "clevrer" / "video_validation").mkdir(parents=True)
    shutil.copy(data_dir / "red.mp4", mvbench / "video" / "clevrer" / "video_validation" / "v1.mp4")
    item = {"video": "v1.mp4", "question": "Where does it go?", "candidates": ["left", "right", "up"], "answer": "left"}
    (mvbench / "json" / "moving_direction.json").write_text(json.dumps([item, {**item, "answer": "up"}]))
    (mvbench / "json" / "moving_count.json").write_text(json.dumps([{**item, "question": "How many?"}]))
    options = RunOptions(batch_size=2, generation=SHORT, progress=False)
    run_predictions(tiny_model, mvbench / "json", tmp_path / "out", options=options)
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["kind"], r["answer"], r["meta"]["task"]) for r in rows] == [
        ("moving_count-1", "choice", "A", "Moving Count"), ("moving_direction-1", "choice", "A", "Moving Direction"),
        ("moving_direction-2", "choice", "C", "Moving Direction")]
    assert rows[0]["prompt"].startswith("<video>\nQuestion: How many?\nOptions:\n(A) left\n")
    metrics = score_file(tmp_path / "out" / "predictions.jsonl")
    assert set(metrics) & {"bleu4", "cider"} == set() and 0 <= metrics["accuracy"] <= 100
    tasks = metrics["accuracy_breakdown"]["task"]
    assert {name: v["total"] for name, v in tasks.items()} == {"Moving Count": 1, "Moving Direction": 2}
    assert metrics["counts"] == {"evaluated": 3, "open": 0, "choice": 3, "skipped": 0}


def test_the_prompt_recorded_is_the_prompt_sent_subtitles_included(tiny_model, data_dir, tmp_path):
    item = {"id": "q1", "video": str(data_dir / "red.mp4"), "question": "Where does it go? ",
            "options": ["left", "right"], "answer": "A", "subtitles": "It goes left."}
    (tmp_path / "mc.jsonl").write_text(json.dumps(item) + "\n")
    run_predictions(tiny_model, tmp_path / "mc.jsonl", tmp_path / "out",
                    options=RunOptions(generation=SHORT, progress=False))
    row = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert row["prompt"].startswith("<video>\nThis video's subtitles are listed below:\nIt goes left.\nQuestion: ")


def many_records(data_dir: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        if i % 2:
            lines.append(json.dumps(video_record(f"r{i:02d}", str(data_dir / "red.mp4"), "a red circle moves left")))
        else:
            lines.append(json.dumps({"id": f"r{i:02d}", "references": ["words"],
                                     "conversations": [{"from": "human", "value": f"Question number {i}?"}]}))
    path = data_dir / f"many-{count}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_killed_run_resumes_to_exactly_one_prediction_per_record(tiny_model, tiny_model_dir, data_dir, tmp_path):
    data = many_records(data_dir, 30)
    out = tmp_path / "killed"
    predictions = out / "predictions.jsonl"
    args = ["run", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--max-new-tokens", "12",
            "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "vidlab.evaluation.cli", *args],
                               env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if predictions.exists() and predictions.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = predictions.read_text().splitlines()
    assert 3 <= len(kept) < 30, "the run should have been killed half way"
    with predictions.open("a") as handle:
        handle.write('{"id": "r29", "prediction": "half writ')  # as if killed in the middle of a line

    # The batch size may change between runs: greedy answers do not depend on it.
    result = run_eval_cli(*args, "--batch-size", "4", "--metrics", "bleu4,rouge_l")
    assert result.returncode == 0, result.stderr
    assert f"30 predictions ({30 - len(kept)} new)" in result.stdout
    rows = predictions.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in rows]
    assert ids == [f"r{i:02d}" for i in range(30)]  # each record once, in data order
    # The answers from before the kill were kept, not generated again (their timings are unchanged).
    before = {json.loads(line)["id"]: json.loads(line)["seconds"] for line in kept}
    assert all(json.loads(line)["seconds"] == before[json.loads(line)["id"]] for line in rows if
               json.loads(line)["id"] in before)
    # Same answers as a run that was never interrupted.
    whole = RunOptions(generation=GenerationOptions(max_new_tokens=12), progress=False)
    run_predictions(tiny_model, data, tmp_path / "whole", options=whole)
    assert comparable(predictions) == comparable(tmp_path / "whole" / "predictions.jsonl")
    assert json.loads((out / "metrics.json").read_text())["counts"]["evaluated"] == 30
    assert (out / "report.md").is_file()


def test_two_processes_merge_into_the_single_process_predictions(tiny_model, tiny_model_dir, data_dir, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    data = data_dir / "eval.jsonl"
    out = tmp_path / "sharded"
    # On a machine without GPUs accelerate starts several processes through its multi-GPU launcher
    # (torchrun underneath); vidlab then joins them with gloo on the CPU. `torchrun -m` works the same.
    result = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vidlab.evaluation.cli", "run",
         "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--batch-size", "2",
         "--max-new-tokens", "6", "--no-progress", "--no-score"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5 predictions (5 new), 3 records skipped" in result.stdout
    single = RunOptions(batch_size=2, generation=SHORT, progress=False)
    run_predictions(tiny_model, data, tmp_path / "single", options=single)
    assert comparable(out / "predictions.jsonl") == comparable(tmp_path / "single" / "predictions.jsonl")
    assert (out / "skipped.jsonl").read_text() == (tmp_path / "single" / "skipped.jsonl").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "run.json", "skipped.jsonl"]


def test_every_record_skipped_says_so_and_where_the_reasons_are(tiny_model, data_dir, tmp_path):
    import vidlab

    data = tmp_path / "all-bad.jsonl"
    data.write_text(json.dumps(video_record("gone", str(data_dir / "nowhere.mp4"), "x")) + "\n{broken\n")
    with pytest.raises(EvaluationError) as caught:
        vidlab.evaluate(tiny_model, data, tmp_path / "out", options=RunOptions(generation=SHORT, progress=False))
    message = str(caught.value)
    assert "every record of the data set (2) was skipped" in message
    assert str(tmp_path / "out" / "skipped.jsonl") in message and "nowhere.mp4: no such file" in message
    assert "Run `vidlab eval run` first" not in message


def test_evaluate_api_answers_scores_and_reports(tiny_model, data_dir, tmp_path):
    import vidlab

    result = vidlab.evaluate(tiny_model, data_dir / "eval.jsonl", tmp_path / "api", metrics=["bleu4", "exact_match"],
                             options=RunOptions(batch_size=2, generation=SHORT, progress=False))
    assert (result.records, result.predictions, result.answered, len(result.skipped)) == (7, 5, 5, 3)
    assert set(result.metrics) >= {"bleu4", "exact_match", "counts"} and "cider" not in result.metrics
    assert result.report == tmp_path / "api" / "report.md" and result.report.is_file()
    assert json.loads((tmp_path / "api" / "metrics.json").read_text())["bleu4"] == result.metrics["bleu4"]
    rescored = vidlab.score(tmp_path / "api" / "predictions.jsonl", ["rouge_l"], report=False)
    assert set(rescored.metrics) & {"bleu4", "rouge_l"} == {"rouge_l"} and rescored.report is None


@pytest.mark.parametrize("flags, message", [
    (["--fps", "inf"], "--fps: input should be a finite number"),
    (["--fps", "nan"], "--fps: input should be a finite number"),
    (["--fps", "0"], "--fps: input should be greater than 0"),
    (["--max-frames", "0"], "--max-frames: input should be greater than or equal to 1"),
    (["--max-frames", "4", "--num-frames", "2"], "give --max-frames or --num-frames, not both"),
])
def test_bad_frame_settings_are_one_line_before_anything_loads(tmp_path, flags, message):
    result = run_eval_cli("run", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "none.jsonl"),
                          "--out", str(tmp_path / "o"), *flags)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_every_option_has_help_and_user_errors_are_one_line(tmp_path):
    command = typer.main.get_command(eval_app)
    assert set(command.commands) == {"run", "score", "compare", "benchmarks"}
    for name, sub in command.commands.items():
        assert sub.help, name
        for param in sub.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
    result = run_eval_cli("run", "--model", "m", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    missing = tmp_path / "none.jsonl"
    assert result.stderr.strip() == f"error: {missing}: no such data file or folder. Check the --data path."
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prediction": "x", "references": ["x"]}\n')
    result = run_eval_cli("score", str(tmp_path / "p.jsonl"), "--metrics", "bleu4,blue")
    assert result.returncode == 2 and "unknown metric(s) blue" in result.stderr and "Traceback" not in result.stderr
    assert run_eval_cli("run", "--help").stdout.count("--") > 20


def test_questions_about_one_video_decode_and_encode_it_once(tiny_model, data_dir, tmp_path, monkeypatch):
    import functools

    import vidlab.media as media
    from vidlab.vision_cache import _base

    model, _ = tiny_model
    calls = {"decoder": 0, "encoder": 0}
    decoder, encoder = media.load_video, _base(model).get_video_features

    @functools.wraps(decoder)
    def counting_decoder(*args, **kwargs):
        calls["decoder"] += 1
        return decoder(*args, **kwargs)

    @functools.wraps(encoder)
    def counting_encoder(*args, **kwargs):
        calls["encoder"] += 1
        return encoder(*args, **kwargs)

    records = [video_record(f"q{i}", "red.mp4", "a red circle moves left") for i in range(4)]
    for i, record in enumerate(records):
        record["conversations"][0]["value"] = f"<video>\nQuestion {i}?"
    data = data_dir / "same-video.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    options = RunOptions(batch_size=2, generation=SHORT, progress=False, workers=0)
    monkeypatch.setattr(media, "load_video", counting_decoder)
    monkeypatch.setattr(_base(model), "get_video_features", counting_encoder)
    run_predictions(tiny_model, data, tmp_path / "cached", options=options)
    assert calls == {"decoder": 1, "encoder": 1}  # one video: decoded once, encoded once, for 4 questions
    monkeypatch.undo()
    # The answers are the ones each question gets alone, with nothing cached.
    rows = [json.loads(line) for line in (tmp_path / "cached" / "predictions.jsonl").read_text().splitlines()]
    for record, row in zip(records, rows):
        conversation = parse_record({**record, "conversations": record["conversations"][:1]})
        alone = build_inputs(conversation, load_media(conversation, tiny_model[1], data_root=data_dir),
                             tiny_model[1])  # decoded as the run decodes them
        assert generate(model, tiny_model[1], alone, SHORT).text == row["prediction"]


def test_records_with_wrong_types_are_skipped_and_the_run_goes_on(tiny_model, data_dir, tmp_path):
    good = video_record("good", "red.mp4", "a red circle moves left")
    bad = [{**good, "id": "a", "start": "abc"}, {**good, "id": "b", "start": "00:01:05"},
           {**good, "id": "c", "end": [1]}, {**good, "id": "d", "video": 5}]
    data = data_dir / "wrong-types.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [good, *bad]))
    result = run_predictions(tiny_model, data, tmp_path / "out", options=RunOptions(generation=SHORT, progress=False))
    assert result.predictions == 1 and [s.id for s in result.skipped] == ["a", "b", "c", "d"]
    reasons = [s.reason for s in result.skipped]
    assert '"start" must be a number of seconds' in reasons[0] and "write 65" in reasons[1]
    assert '"end" must be' in reasons[2] and '"video" must be a path' in reasons[3]
