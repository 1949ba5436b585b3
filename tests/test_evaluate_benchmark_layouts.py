"""Each benchmark read from a small folder in its released layout and field names, prompted, read and scored
as VideoLLaMA3 does; and a wrong-layout folder for each, whose error names what was expected where."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import gradient_frames

from vidlab.conversation import MediaPart
from vidlab.evaluation.benchmarks import BENCHMARKS, BenchmarkLayoutError, load_benchmark
from vidlab.evaluation.metrics import score_file
from vidlab.evaluation.sets import detect_format, load_eval_set
from vidlab.media import VideoClip
from vidlab.media.writer import write_video


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", gradient_frames(4, 32, 32), fps=4)


def put(path: Path, data) -> Path:
    """Write JSON (or text, or a copy of a video file) at path, making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        shutil.copy(data, path)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(json.dumps(data, indent=1))
    return path


def text_of(record) -> str:
    return record.conversation.turns[-1].parts[-1].text


def score(data, answers: dict[str, str], folder: Path) -> dict:
    """Predictions rows as `vidlab eval run` writes them, with the given answers, scored by score_file."""
    rows = []
    for r in data.records:
        if r.id not in answers:
            continue
        row = {"id": r.id, "source": r.source, "kind": r.kind, "prompt": r.question,
               "media": [p.path for p in r.conversation.media], "prediction": answers[r.id], "references": r.references}
        if r.kind == "choice":
            row.update(options=r.options, answer=r.answer)
        if r.meta:
            row["meta"] = r.meta
        if r.scoring:
            row["scoring"] = r.scoring
        rows.append(row)
    path = put(folder / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return score_file(path, ["accuracy", "exact_match", "strict_match", "miou", "r1@0.3", "r1@0.5", "r1@0.7",
                             "bleu4", "sacrebleu"])


# ---- the wrong layout, for every benchmark ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_an_empty_folder_names_the_expected_files(name, tmp_path):
    with pytest.raises(BenchmarkLayoutError) as caught:
        load_benchmark(name, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: not a {BENCHMARKS[name].title} folder as released: expected ")
    assert str(tmp_path) in message.split("expected", 1)[1]  # the place it looked
    assert f"vidlab eval benchmarks {BENCHMARKS[name].title}" in message


# ---- MVBench and MLVU ---------------------------------------------------------------------------------


def test_mvbench_folder_prompt_clip_cut_and_scores(tmp_path, clip_file):
    root = tmp_path / "mvbench"
    put(root / "json/action_sequence.json", [
        {"video": "3MSZA.mp4", "question": "What did the person do first?", "start": 1.5, "end": 9.0,
         "candidates": ["Sat on the bed.", "Opened the door.", "Took a cup."], "answer": "Opened the door."},
        {"video": "3MSZA.mp4", "question": "And then?", "start": 2.0, "end": 9.0,
         "candidates": ["Left.", "Sat."], "answer": "Sat."},
    ])
    put(root / "json/fine_grained_pose.json", [
        {"video": "S001C001P001R001A001_rgb.avi", "question": "Which pose?", "candidates": ["sit", "stand"],
         "answer": "stand"},
    ])
    put(root / "video/star/Charades_v1_480/3MSZA.mp4", clip_file)
    put(root / "video/nturgbd/S001C001P001R001A001_rgb.avi", clip_file)
    data = load_benchmark("mvbench", root)
    first, second, pose = data.records
    assert first.conversation.media == [
        MediaPart(type="video", path="video/star/Charades_v1_480/3MSZA.mp4", start=1.5, end=9.0)]
    assert pose.conversation.media == [MediaPart(type="video", path="video/nturgbd/S001C001P001R001A001_rgb.avi")]
    assert text_of(pose) == ("Question: Which pose?\nOptions:\n(A) sit\n(B) stand\nAnswer with the option's letter "
                             "from the given choices directly and only give the best option.")
    assert (first.answer, second.answer, pose.answer) == ("B", "B", "B")
    assert pose.meta == {"task": "Fine-grained Pose"} and pose.scoring == {"benchmark": "mvbench", "reader": "mvbench"}
    # Right, wrong ("Answer: A" is read as A), and "Based ..." read as B (right, by VideoLLaMA3's rule).
    metrics = score(data, {first.id: "(B) Opened the door.", second.id: "Answer: A", pose.id: "Based on the pose"},
                    tmp_path / "run")
    assert metrics["accuracy"] == pytest.approx(200 / 3)
    section = metrics["benchmark"]
    assert section["tables"]["task"]["Action Sequence"] == {"accuracy": 50.0, "correct": 1, "total": 2}
    assert section["headline"] == {"accuracy": pytest.approx(200 / 3)} and section["unreadable"] == []


def test_mlvu_json_folder_gets_its_own_video_folders(tmp_path, clip_file):
    root = tmp_path / "mlvu"
    put(root / "json/1_plotQA.json", [
        {"video": "movie101_66.mp4", "duration": 246, "question": "What color is the car?",
         "candidates": ["Red", "Blue", "Green", "White"], "answer": "Blue", "question_type": "plotQA"}])
    put(root / "json/4_count.json", [
        {"video": "count_1.mp4", "duration": 300, "question": "How many jumps?", "candidates": ["1", "2", "3"],
         "answer": "3", "question_type": "count"}])
    put(root / "json/9_summary.json", [{"video": "s.mp4", "question": "Summarise.", "answer": "x"}])  # open: not read
    put(root / "video/1_plotQA/movie101_66.mp4", clip_file)
    put(root / "video/4_count/count_1.mp4", clip_file)
    assert detect_format(root / "json") == "mlvu"
    assert detect_format(root / "json/1_plotQA.json") == "mlvu"
    for data in (load_eval_set(root / "json"), load_benchmark("mlvu", root)):
        assert [r.conversation.media[0].path for r in data.records] == [
            "video/1_plotQA/movie101_66.mp4", "video/4_count/count_1.mp4"]
        assert [r.meta["task"] for r in data.records] == ["PQA (Plot QA)", "AC (Action Count)"]
    data = load_benchmark("mlvu", root)
    metrics = score(data, {"1_plotQA-1": "B", "4_count-1": "(A)"}, tmp_path / "run")
    assert metrics["benchmark"]["headline"] == {"accuracy": 50.0, "task_mean": 50.0}


def test_a_folder_with_both_or_neither_task_sets_asks_for_format(tmp_path):
    put(tmp_path / "json/1_plotQA.json", [])
    put(tmp_path / "json/action_count.json", [])
    with pytest.raises(Exception, match="task files of both MVBench and MLVU. Pass --format"):
        detect_format(tmp_path / "json")
    put(tmp_path / "other/x.json", [])
    with pytest.raises(Exception, match="no MVBench or MLVU task files. Pass --format"):
        detect_format(tmp_path / "other")


# ---- Video-MME ----------------------------------------------------------------------------------------

VIDEOMME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem", "question": "How many shapes appear?",
     "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "C"},
    {"video_id": "002", "duration": "long", "domain": "Sports Competition", "sub_category": "Football",
     "url": "https://www.youtube.com/watch?v=ZZZZZZZZZZZ", "videoID": "ZZZZZZZZZZZ", "question_id": "002-1",
     "task_type": "OCR Problems", "question": "What is the score?",
     "options": ["A. 1-0.", "B. 2-0.", "C. 0-0.", "D. 3-1."], "answer": "A"},
]


def test_videomme_parquet_with_videos_unpacked_to_data_and_subtitles(tmp_path, clip_file):
    root = tmp_path / "videomme"
    root.mkdir()
    pq.write_table(pa.Table.from_pylist(VIDEOMME_ROWS), root / "test-00000-of-00001.parquet")
    put(root / "data/fFjv93ACGo8.mp4", clip_file)  # as the release's zips unpack
    put(root / "data/ZZZZZZZZZZZ.mkv", clip_file)
    put(root / "subtitle/fFjv93ACGo8.srt",
        '1\n00:00:00,500 --> 00:00:01,500\n<font color="white" size=".72c">Hello</font>\n\n'
        "2\n00:00:02,000 --> 00:00:04,000\nSecond line\n")
    assert detect_format(root / "test-00000-of-00001.parquet") == "videomme"
    data = load_benchmark("videomme", root)
    assert [r.conversation.media[0].path for r in data.records] == ["data/fFjv93ACGo8.mp4", "data/ZZZZZZZZZZZ.mkv"]
    assert text_of(data.records[0]).endswith("How many shapes appear?\nA. One.\nB. Two.\nC. Three.\nD. Four.\n"
                                             "Answer with the option's letter from the given choices directly and "
                                             "only give the best option. The best answer is:")
    with_subs = load_benchmark("videomme", root, subtitles=True)
    clip = VideoClip("v.mp4", np.zeros((3, 2, 2, 3), np.uint8), [0.0, 1.0, 2.0], [1.0, 2.5, 3.0], [0, 1, 2], 1.0, 5.0)
    # The cue on screen at each frame's announced time (1.0, 2.5, 3.0 s); markup removed.
    assert with_subs.records[0].conversation_for([clip]).turns[0].parts[-1].text.startswith(
        "This video's subtitles are listed below:\nHello\nSecond line\nSecond line\nSelect the best answer")
    # A video without a subtitle file still gets the (empty) block.
    assert with_subs.records[1].conversation_for([clip]).turns[0].parts[-1].text.startswith(
        "This video's subtitles are listed below:\n\nSelect")
    metrics = score(data, {"001-1": "C", "002-1": "The answer is (B)."}, tmp_path / "run")
    tables = metrics["benchmark"]["tables"]
    assert tables["duration"] == {"long": {"accuracy": 0.0, "correct": 0, "total": 1},
                                  "short": {"accuracy": 100.0, "correct": 1, "total": 1}}
    assert set(tables) == {"duration", "category", "sub_category", "task"}


def test_videomme_result_template_with_trailing_commas_and_old_keys(tmp_path, clip_file):
    template = """[
    {
        "video_id": "001",
        "duration_category": "short",
        "video_category": "Knowledge",
        "video_subcategory": "Humanity & History",
        "questions": [
            {
                "question_id": "001-1",
                "task_type": "Counting Problem",
                "question": "How many red socks are there?",
                "choices": ["A. 1.", "B. 4.", "C. 2.", "D. 3."],
                "answer": "D",
                "response": "D. 3",
            }
        ]
    }
]"""
    path = put(tmp_path / "output_test_template.json", template)
    put(tmp_path / "videos/001.mp4", clip_file)
    assert detect_format(path) == "videomme"
    (record,) = load_eval_set(path).records
    assert record.options == ["1.", "4.", "2.", "3."] and record.answer == "D"
    assert record.meta == {"task": "Counting Problem", "category": "Knowledge", "sub_category": "Humanity & History",
                           "duration": "short"}
    assert record.conversation.media[0].path == "videos/001.mp4"


def test_a_parquet_that_is_not_videomme_asks_for_the_benchmark(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"video_id": "1", "question": "q", "answer": "yes", "dim": "speed"}]),
                   tmp_path / "test-00000-of-00001.parquet")
    with pytest.raises(Exception, match=r"are not Video-MME's .* --benchmark NAME --root DIR"):
        detect_format(tmp_path / "test-00000-of-00001.parquet")


def test_videomme_without_its_video_folder_names_both(tmp_path):
    pq.write_table(pa.Table.from_pylist(VIDEOMME_ROWS), tmp_path / "test-00000-of-00001.parquet")
    with pytest.raises(BenchmarkLayoutError, match=rf"{tmp_path}/videos/ or {tmp_path}/data/"):
        load_benchmark("videomme", tmp_path)


# ---- EgoSchema and PerceptionTest (private answers, submission files) -----------------------------------


def test_egoschema_scores_the_public_subset_and_writes_both_submissions(tmp_path, clip_file):
    root = tmp_path / "egoschema"
    questions = [{"q_uid": f"q{i}", "google_drive_id": f"g{i}", "question": f"What does C do {i}?",
                  **{f"option {k}": f"option text {i}{k}" for k in range(5)}} for i in range(3)]
    put(root / "questions.json", questions)
    put(root / "subset_answers.json", {"q0": 1, "q1": 4})
    for i in range(3):
        put(root / f"good_clips_git/q{i}.mp4", clip_file)
    data = load_benchmark("egoschema", root)
    assert [r.answer for r in data.records] == ["B", "E", None]
    assert text_of(data.records[0]) == (
        "Select the best answer to the following multiple-choice question based on the video.\nWhat does C do 0?\n"
        "Options:\n(A) option text 00\n(B) option text 01\n(C) option text 02\n(D) option text 03\n(E) option text 04\n"
        "Answer with the option's letter from the given choices directly and only give the best option. "
        "The best answer is: ")
    metrics = score(data, {"q0": "(B)", "q1": "A", "q2": "no idea"}, tmp_path / "run")
    assert metrics["accuracy"] == 50.0 and metrics["accuracy_breakdown"]["overall"]["total"] == 2
    assert "1 questions have no public answer" in metrics["notes"]["private answers"]
    assert metrics["benchmark"]["unreadable"] == ["q2"]
    assert json.loads((tmp_path / "run/submission.json").read_text()) == {"q0": 1, "q1": 0, "q2": -1}
    assert (tmp_path / "run/submission.csv").read_text() == "q_uid,answer\nq0,1\nq1,0\nq2,-1\n"
    assert [r.id for r in load_benchmark("egoschema", root, "subset").records] == ["q0", "q1"]


def _perception(answers: bool) -> dict:
    def question(qid, text, options, answer_id, area, tags):
        item = {"id": qid, "question": text, "options": options}
        if answers:
            item.update(answer_id=answer_id, area=area, reasoning="Descriptive", tag=tags)
        return item

    return {
        "video_10909": {"metadata": {"video_id": "video_10909", "num_frames": 20, "split": "valid"},
                        "mc_question": [question(0, "How many cups?", ["1", "2", "3"], 2, "Memory", ["counting"]),
                                        question(1, "Is the lid on?", ["yes", "no", "unclear"], 0, "Physics",
                                                 ["state", "counting"])]},
        "video_22": {"metadata": {"video_id": "video_22"},
                     "mc_question": [question(0, "What moved?", ["cup", "box", "pen"], 1, "Memory", ["motion"])]},
    }


def test_perception_test_valid_is_scored_per_area_and_test_is_a_submission(tmp_path, clip_file):
    root = tmp_path / "perception_test"
    put(root / "mc_question_valid.json", _perception(answers=True))
    put(root / "mc_question_test.json", _perception(answers=False))
    for video in ("video_10909", "video_22"):
        put(root / f"videos/{video}.mp4", clip_file)
    valid = load_benchmark("perception_test", root, "valid")
    assert [r.id for r in valid.records] == ["video_10909_0", "video_10909_1", "video_22_0"]
    assert text_of(valid.records[0]) == ("Question: How many cups?\nOptions:\n(A) 1\n(B) 2\n(C) 3\nAnswer with the "
                                         "option's letter from the given choices directly and only give the best "
                                         "option.")
    metrics = score(valid, {"video_10909_0": "C", "video_10909_1": "B", "video_22_0": "box"}, tmp_path / "valid")
    tables = metrics["benchmark"]["tables"]
    assert tables["area"] == {"Memory": {"accuracy": 100.0, "correct": 2, "total": 2},
                              "Physics": {"accuracy": 0.0, "correct": 0, "total": 1}}
    assert tables["tag"]["counting"] == {"accuracy": 50.0, "correct": 1, "total": 2}
    test = load_benchmark("perception_test", root)
    assert all(r.answer is None for r in test.records)
    metrics = score(test, {"video_10909_0": "(A)", "video_10909_1": "???", "video_22_0": "C"}, tmp_path / "test")
    assert "accuracy" not in metrics and metrics["benchmark"]["unreadable"] == ["video_10909_1"]
    assert json.loads((tmp_path / "test/submission.json").read_text()) == {
        "video_10909": [{"id": 0, "answer_id": 0, "answer": "1"}, {"id": 1, "answer_id": -1, "answer": ""}],
        "video_22": [{"id": 0, "answer_id": 2, "answer": "pen"}]}


# ---- LongVideoBench, LVBench, NExT-QA ---------------------------------------------------------------


def test_longvideobench_prompt_levels_and_subtitles_covering_the_frames(tmp_path, clip_file):
    root = tmp_path / "longvideobench"
    base = {"video_id": "86CxyhFV9MI", "question_wo_referring_query": "q", "position": [1], "topic_category": "NP-News",
            "duration_group": 15, "view_count": 1, "type": "T2E", "duration": 10.0, "video_path": "86CxyhFV9MI.mp4"}
    put(root / "lvb_val.json", [
        {**base, "id": "86CxyhFV9MI_0", "question": "What is shown first?", "candidates": ["a dog", "a cat", "a cow"],
         "correct_choice": 1, "level": "L1-Perception", "question_category": "S2E", "subtitle_path": "a_en.json",
         "starting_timestamp_for_subtitles": 100.0},
        {**base, "id": "86CxyhFV9MI_1", "question": "Then?", "candidates": ["x", "y", "z", "w", "v"],
         "correct_choice": 4, "level": "L2-Relation", "question_category": "TOS", "subtitle_path": "b_en.json",
         "starting_timestamp_for_subtitles": 0.0},
    ])
    put(root / "videos/86CxyhFV9MI.mp4", clip_file)
    put(root / "subtitles/a_en.json", [{"timestamp": [100.5, 103.0], "text": "first words"},
                                        {"timestamp": [106.0, 106.2], "text": "short cue"},
                                        {"timestamp": [103.5, 105.5], "text": "between frames"},
                                        {"timestamp": [107, 110], "text": "whole seconds"}])
    put(root / "subtitles/b_en.json", [{"start": "00:00:01.0", "end": "00:00:02.5", "line": "clock cue"},
                                        {"timestamp": [8.5, None], "text": "open end"}])
    data = load_benchmark("longvideobench", root)
    assert text_of(data.records[0]) == ("Question: What is shown first?\nA. a dog\nB. a cat\nC. a cow\n"
                                        "Answer with the option's letter from the given choices directly.")
    assert data.records[1].answer == "E" and data.records[0].meta["level"] == "L1-Perception"
    subs = load_benchmark("longvideobench", root, subtitles=True)
    clip = VideoClip("v.mp4", np.zeros((3, 2, 2, 3), np.uint8), [0, 1, 2], [1.0, 6.0, 9.0], [0, 1, 2], 1.0, 10.0)
    # Cues shifted back 100 s: 0.5-3.0 holds 1.0; 6.0-6.2 widened to 5.6-6.6 holds 6.0; 3.5-5.5 holds no frame;
    # 7-10 holds 9.0. Second video (no shift): 1.0-2.5 holds no frame strictly inside; 8.5-open (10 s) holds 9.0.
    assert subs.records[0].conversation_for([clip]).turns[0].parts[-1].text.startswith(
        "first words\nshort cue\nwhole seconds\nQuestion: What is shown first?")
    assert subs.records[1].conversation_for([clip]).turns[0].parts[-1].text.startswith("open end\nQuestion: Then?")
    metrics = score(data, {"86CxyhFV9MI_0": "B.", "86CxyhFV9MI_1": "I pick A"}, tmp_path / "run")
    assert metrics["benchmark"]["tables"]["level"] == {"L1-Perception": {"accuracy": 100.0, "correct": 1, "total": 1},
                                                      "L2-Relation": {"accuracy": 0.0, "correct": 0, "total": 1}}


def test_lvbench_options_from_the_question_and_multi_label_types(tmp_path, clip_file):
    root = tmp_path / "lvbench"
    line = {"key": "abc123", "type": "cartoon", "video_info": {"duration_minutes": 70.0, "fps": 30.0},
            "qa": [{"uid": "55", "question": "What year is shown?\n(A) 1636\n(B) 1366\n(C) 1363\n(D) 1633",
                    "answer": "D", "question_type": ["key information retrieval", "reasoning"],
                    "time_reference": "00:15-00:19"},
                   {"uid": "56", "question": "Who speaks?\n(A) a man\n(B) a woman\n(C) a child\n(D) nobody",
                    "answer": "B", "question_type": ["entity recognition"], "time_reference": "01:00-01:05"}]}
    put(root / "video_info.meta.jsonl", json.dumps(line) + "\n")
    put(root / "video/abc123.mp4", clip_file)
    data = load_benchmark("lvbench", root)
    first = data.records[0]
    assert first.options == ["1636", "1366", "1363", "1633"] and first.answer == "D"
    assert text_of(first) == ("What year is shown?\n(A) 1636\n(B) 1366\n(C) 1363\n(D) 1633\nAnswer with the option's "
                              "letter from the given choices directly.")
    metrics = score(data, {"55": "(D) 1633", "56": "a woman"}, tmp_path / "run")  # "a woman" reads as A
    types = metrics["benchmark"]["tables"]["question_type"]
    assert types["reasoning"] == {"accuracy": 100.0, "correct": 1, "total": 1}
    assert types["entity recognition"]["accuracy"] == 0.0 and metrics["accuracy"] == 50.0


def test_nextqa_csv_with_its_video_map_and_type_groups(tmp_path, clip_file):
    root = tmp_path / "nextqa"
    header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3",
              "a4"]
    rows = [["2574374895", 719, 320, 240, "what did the baby do after throwing the cup", 2, 8, "TN", "clap",
             "the lady", "lay on floor", "picked it up", "crawl"],
            ["2925959064", 1233, 500, 375, "where is this place", 1, 1, "DL", "mall", "river", "pool", "room", "hill"],
            ["2925959064", 1233, 500, 375, "why did the man wave", 0, 2, "CW", "greet", "leave", "dance", "cry", "run"]]
    (root).mkdir()
    with open(root / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    put(root / "map_vid_vidorID.json", {"2574374895": "0101/2574374895", "2925959064": "0016/2925959064"})
    put(root / "NExTVideo/0101/2574374895.mp4", clip_file)
    put(root / "NExTVideo/0016/2925959064.mp4", clip_file)
    data = load_benchmark("nextqa", root)
    assert [r.id for r in data.records] == ["2574374895_8", "2925959064_1", "2925959064_2"]
    assert data.records[0].conversation.media[0].path == "NExTVideo/0101/2574374895.mp4"
    assert data.records[0].answer == "C" and data.records[0].meta == {"group": "Temporal", "type": "Bef&Aft"}
    assert text_of(data.records[1]).startswith("Question: where is this place\nOptions:\n(A) mall\n(B) river\n")
    metrics = score(data, {"2574374895_8": "C", "2925959064_1": "B", "2925959064_2": "(D)"}, tmp_path / "run")
    assert metrics["benchmark"]["tables"]["group"] == {
        "Causal": {"accuracy": 0.0, "correct": 0, "total": 1}, "Descriptive": {"accuracy": 100.0, "correct": 1,
                                                                              "total": 1},
        "Temporal": {"accuracy": 100.0, "correct": 1, "total": 1}}


# ---- TempCompass -----------------------------------------------------------------------------------


def _tempcompass_questions() -> dict:
    return {
        "multi-choice": {"1034419625": {"action": [{"question": "What is the man doing?\nA. dunking\nB. dribbling",
                                                    "answer": "A. dunking"}]}},
        "yes_no": {"1034419625": {"action": [{"question": "Is the man dunking?", "answer": "yes"},
                                             {"question": "Is the man dribbling?", "answer": "no"}],
                                  "speed": [{"question": "Is it slow motion?", "answer": "no"}]}},
        "caption_matching": {"1034419625": {"direction": [
            {"question": "Which caption matches the video better?\nCaption A: left\nCaption B: right",
             "answer": "Caption B: right"}]}},
        "captioning": {"1034419625": {"action": [
            {"question": "Identify the information.\nInformation A: {'action': 'dunking'}\nInformation B: "
                         "{'action': 'passing'}\nGenerated Caption:", "answer": "A. dunking"}]}},
    }


def test_tempcompass_github_layout_four_formats_scored_by_their_rules(tmp_path, clip_file):
    root = tmp_path / "tempcompass"
    for task_format, questions in _tempcompass_questions().items():
        put(root / f"questions/{task_format}.json", questions)
    put(root / "videos/1034419625.mp4", clip_file)
    data = load_benchmark("tempcompass", root)
    by_id = {r.id: r for r in data.records}
    assert list(by_id) == ["multi-choice/1034419625/action/1", "yes_no/1034419625/action/1",
                           "yes_no/1034419625/action/2", "yes_no/1034419625/speed/1",
                           "caption_matching/1034419625/direction/1", "captioning/1034419625/action/1"]
    assert text_of(by_id["yes_no/1034419625/action/1"]) == ("Question: Is the man dunking?\nPlease answer with 'yes' "
                                                            "or 'no' directly.")
    captioning = by_id["captioning/1034419625/action/1"]
    assert text_of(captioning) == ("Question: Identify the information.\nInformation A: {'action': 'dunking'}\n"
                                   "Information B: {'action': 'passing'}\nPlease answer with the caption directly.")
    assert captioning.kind == "judged" and captioning.scoring["target"] == "a"
    answers = {"multi-choice/1034419625/action/1": "A", "yes_no/1034419625/action/1": "yes",
               "yes_no/1034419625/action/2": "Yes it is", "yes_no/1034419625/speed/1": "hmm",
               "caption_matching/1034419625/direction/1": "Caption B: right",
               "captioning/1034419625/action/1": "A man dunks."}
    metrics = score(data, answers, tmp_path / "run")
    assert metrics["accuracy"] == 60.0  # 3 of the 5 rule-scored answers; captioning waits for a judge
    assert "need an LLM judge" in metrics["notes"]["judged"]
    assert metrics["benchmark"]["unreadable"] == ["yes_no/1034419625/speed/1"]
    assert metrics["benchmark"]["tables"]["format"]["yes_no"] == {"accuracy": pytest.approx(100 / 3), "correct": 1,
                                                                   "total": 3}
    assert metrics["benchmark"]["tables"]["format_dim"]["yes_no / speed"]["total"] == 1


def test_tempcompass_hugging_face_parquet_one_format(tmp_path, clip_file):
    root = tmp_path / "tempcompass"
    (root / "yes_no").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"video_id": "1034419625", "question": "Is the man dunking?",
                                          "answer": "yes", "dim": "action"}]),
                   root / "yes_no/test-00000-of-00001.parquet")
    put(root / "videos/1034419625.mp4", clip_file)
    (record,) = load_benchmark("tempcompass", root, "yes_no").records
    assert record.scoring == {"benchmark": "tempcompass", "format": "yes_no", "target": "yes", "kind": "match"}
    with pytest.raises(BenchmarkLayoutError, match="multi-choice/test-00000-of-00001.parquet"):
        load_benchmark("tempcompass", root)  # all four formats by default


# ---- Charades-STA ------------------------------------------------------------------------------------


def test_charades_sta_release_text_prompt_and_grounding_scores(tmp_path, clip_file):
    root = tmp_path / "charades"
    put(root / "charades_sta_test.txt",
        "3MSZA 24.3 30.4##person turn a light on.\n3MSZA 0.0 6.0##a person opens a door.\nAO8RW 2 8##someone sits\n")
    put(root / "Charades_v1_480/3MSZA.mp4", clip_file)
    put(root / "Charades_v1_480/AO8RW.mp4", clip_file)
    data = load_benchmark("charades_sta", root)
    first = data.records[0]
    assert first.kind == "grounding" and first.scoring["interval"] == [24.3, 30.4]
    assert first.conversation.media[0].path == "Charades_v1_480/3MSZA.mp4"
    assert text_of(first) == ('When does "person turn a light on" happen in the video? Please output the start and end '
                              "timestamps in seconds.")
    answers = {data.records[0].id: "From 24.3 to 30.4 seconds.",   # IoU 1
               data.records[1].id: "3 - 9",                          # overlap 3 of union 9: IoU 1/3
               data.records[2].id: "I am not sure."}                 # no interval: IoU 0, listed
    metrics = score(data, answers, tmp_path / "run")
    assert metrics["miou"] == pytest.approx(100 * (1 + 1 / 3) / 3)
    assert (metrics["r1@0.3"], metrics["r1@0.5"], metrics["r1@0.7"]) == (pytest.approx(200 / 3),
                                                                         pytest.approx(100 / 3), pytest.approx(100 / 3))
    assert metrics["benchmark"]["unreadable"] == [data.records[2].id]
    assert list(metrics["benchmark"]["headline"]) == ["miou", "r1@0.3", "r1@0.5", "r1@0.7"]


def test_charades_sta_videollama3_prepared_file(tmp_path, clip_file):
    root = tmp_path / "charades"
    put(root / "charades_annotations_test-random_prompt.json", [
        {"question_id": 7, "video": "3MSZA.mp4", "conversation": [{"content": "<video>\nWhen is the light on? "}],
         "timestamps": [[24.3, 30.4]]}])
    put(root / "Charades_v1/3MSZA.mp4", clip_file)
    (record,) = load_benchmark("charades_sta", root).records
    assert record.id == "7" and text_of(record) == ("When is the light on? Please output the start and end timestamps "
                                                    "in seconds.")
    assert record.conversation.media[0].path == "Charades_v1/3MSZA.mp4"


# ---- ActivityNet-QA ----------------------------------------------------------------------------------


def test_activitynet_qa_joined_files_prompt_and_judge_free_scores(tmp_path, clip_file):
    root = tmp_path / "activitynet_qa"
    put(root / "test_q.json", [
        {"video_name": "1QIUV7WYKXg", "question": "is the athlete wearing trousers", "question_id": "v_1QIUV7WYKXg_3"},
        {"video_name": "9eniCub7u60", "question": "what color is the ball", "question_id": "v_9eniCub7u60_2"},
        {"video_name": "9eniCub7u60", "question": "what does the girl do", "question_id": "v_9eniCub7u60_5"}])
    put(root / "test_a.json", [{"answer": "no", "type": 3, "question_id": "v_1QIUV7WYKXg_3"},
                               {"answer": "red", "type": 4, "question_id": "v_9eniCub7u60_2"},
                               {"answer": "dance", "type": 0, "question_id": "v_9eniCub7u60_5"}])
    put(root / "all_test/v_1QIUV7WYKXg.mp4", clip_file)
    put(root / "all_test/v_9eniCub7u60.webm", clip_file)
    data = load_benchmark("activitynet_qa", root)
    first = data.records[0]
    assert text_of(first) == ("Question: is the athlete wearing trousers\nPlease watch the video and answer the "
                              "question clearly and concisely.\n")
    assert data.records[1].conversation.media[0].path == "all_test/v_9eniCub7u60.webm"
    assert first.meta == {"type": "Yes/No", "type_group": "Free"} and first.references == ["no"]
    metrics = score(data, {"v_1QIUV7WYKXg_3": "no", "v_9eniCub7u60_2": "Red.", "v_9eniCub7u60_5": "she sings"},
                    tmp_path / "run")
    assert metrics["strict_match"] == pytest.approx(100 / 3)  # only "no" equals its reference as it is
    assert metrics["exact_match"] == pytest.approx(200 / 3)   # "Red." matches after normalisation
    by_group = metrics["benchmark"]["tables"]["by type_group"]
    assert by_group["Free"] == {"strict_match": 50.0, "exact_match": 100.0, "total": 2}
    assert by_group["Motion"]["exact_match"] == 0.0
    assert "judge" in metrics["notes"] and "--judge-url" in metrics["notes"]["judge"]


# ---- caption sets ------------------------------------------------------------------------------------


def test_msrvtt_test_split_with_all_references(tmp_path, clip_file):
    root = tmp_path / "msrvtt"
    put(root / "test_videodatainfo.json", {
        "info": {"year": "2016"},
        "videos": [{"category": 9, "url": "u", "video_id": "video7010", "start time": 1.0, "end time": 11.0,
                    "split": "test", "id": 7010},
                   {"category": 1, "url": "u", "video_id": "video7011", "start time": 0.0, "end time": 10.0,
                    "split": "test", "id": 7011}],
        "sentences": [{"caption": "a man is cooking in a kitchen", "video_id": "video7010", "sen_id": 1},
                      {"caption": "someone cooks food on a stove", "video_id": "video7010", "sen_id": 2},
                      {"caption": "a dog runs across the green field", "video_id": "video7011", "sen_id": 3}]})
    put(root / "TestVideo/video7010.mp4", clip_file)
    put(root / "TestVideo/video7011.mp4", clip_file)
    data = load_benchmark("msrvtt", root)
    assert [r.id for r in data.records] == ["video7010", "video7011"]
    assert data.records[0].references == ["a man is cooking in a kitchen", "someone cooks food on a stove"]
    assert text_of(data.records[0]) == "Describe what happens in the video in one sentence."
    # Each prediction equal to one of its references: corpus BLEU-4 and exact match are 100.
    metrics = score(data, {"video7010": "someone cooks food on a stove", "video7011": "a dog runs across the green "
                                                                                      "field"}, tmp_path / "run")
    assert metrics["bleu4"] == pytest.approx(100.0) and metrics["exact_match"] == 100.0
    assert metrics["benchmark"]["headline"]["bleu4"] == pytest.approx(100.0)


def test_msvd_corpus_csv_mapping_and_standard_split(tmp_path, clip_file):
    root = tmp_path / "msvd"
    root.mkdir()
    with open(root / "MSR Video Description Corpus.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["VideoID", "Start", "End", "WorkerID", "Source", "AnnotationTime", "Language", "Description"])
        writer.writerow(["-4wsuPCjDBc", "5", "15", "1", "clean", "10", "English", "A squirrel eats, happily."])
        writer.writerow(["-4wsuPCjDBc", "5", "15", "2", "clean", "10", "English", "a squirrel is eating a nut"])
        writer.writerow(["-4wsuPCjDBc", "5", "15", "3", "clean", "10", "German", "ein Eichhörnchen"])
        writer.writerow(["zv2RIbUsnSw", "159", "165", "1", "clean", "10", "English", "a man plays a flute"])
    put(root / "youtube_mapping.txt", "zv2RIbUsnSw_159_165 vid1200\n-4wsuPCjDBc_5_15 vid1301\n")
    put(root / "YouTubeClips/-4wsuPCjDBc_5_15.avi", clip_file)
    (record,) = load_benchmark("msvd", root).records  # vid1200 is a training clip
    assert record.id == "-4wsuPCjDBc_5_15" and record.conversation.media[0].path == "YouTubeClips/-4wsuPCjDBc_5_15.avi"
    assert record.references == ["A squirrel eats, happily.", "a squirrel is eating a nut"]


def test_vatex_clip_or_whole_video_cut_by_the_id(tmp_path, clip_file):
    root = tmp_path / "vatex"
    put(root / "vatex_public_test_english_v1.1.json", [
        {"videoID": "G9zN5TTuGO4_000179_000189", "enCap": ["a man plays drums", "someone drums"]},
        {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["a girl jumps"], "chCap": ["一个女孩"]}])
    put(root / "videos/G9zN5TTuGO4_000179_000189.mp4", clip_file)  # the cut clip
    put(root / "videos/Ptf_2VRj-V0.mp4", clip_file)                 # the whole YouTube video
    first, second = load_benchmark("vatex", root).records
    assert first.conversation.media == [MediaPart(type="video", path="videos/G9zN5TTuGO4_000179_000189.mp4")]
    assert second.conversation.media == [MediaPart(type="video", path="videos/Ptf_2VRj-V0.mp4", start=122.0,
                                                   end=132.0)]
    assert first.references == ["a man plays drums", "someone drums"]


def test_youcook2_validation_segments_with_their_times(tmp_path, clip_file):
    root = tmp_path / "youcook2"
    put(root / "annotations/youcookii_annotations_trainval.json", {"database": {
        "xHr8X2Wpmno": {"duration": 241.6, "subset": "validation", "recipe_type": "113",
                        "video_url": "https://www.youtube.com/watch?v=xHr8X2Wpmno",
                        "annotations": [{"segment": [25, 37], "id": 0, "sentence": "cut the onion"},
                                        {"segment": [37, 50], "id": 1, "sentence": "peel the carrots"}]},
        "train1": {"duration": 10, "subset": "training", "recipe_type": "101",
                   "annotations": [{"segment": [0, 5], "id": 0, "sentence": "x"}]}}})
    put(root / "raw_videos/validation/113/xHr8X2Wpmno.mp4", clip_file)
    data = load_benchmark("youcook2", root)
    assert [r.id for r in data.records] == ["xHr8X2Wpmno#0", "xHr8X2Wpmno#1"]
    assert data.records[1].conversation.media == [
        MediaPart(type="video", path="raw_videos/validation/113/xHr8X2Wpmno.mp4", start=37.0, end=50.0)]
    assert data.records[1].references == ["peel the carrots"]
