"""Video-MME, MVBench and general multiple-choice files; VideoLLaMA3's prompts; answer letters; accuracy."""

import json

import numpy as np
import pytest

from vidlab.conversation import MediaPart, TextPart
from vidlab.evaluation.benchmarks import (
    accuracy_table,
    extract_letter,
    load_choices,
    load_mvbench,
    load_videomme,
)
from vidlab.evaluation.metrics import compute_scores
from vidlab.evaluation.sets import detect_format, load_eval_set
from vidlab.evaluation.subtitles import read_subtitles
from vidlab.media import VideoClip

OPTIONS = ["a red circle", "a blue square", "a green triangle", "a red circle and a square"]


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("B", "B"), ("b", "B"), ("(B)", "B"), ("B.", "B"), ("B) a blue square", "B"), ("**C**", "C"),
        ("[D]", "D"), ("C: a green triangle", "C"), ("The answer is B", "B"), ("The answer is (C).", "C"),
        ("Answer: D", "D"), ("The best option is: A", "A"), ("I think option C fits best.", "C"),
        ("Looking at the motion, (D) is right.", "D"), ("It must be B.", "B"),
        ("A", "A"), ("A. a red circle", "A"),
        ("It shows a green triangle moving.", "C"),  # the text of one option
        ("a red circle and a square", "D"),  # an option that contains another: the longer one
        ("A man walks across the room.", None),  # an article, not option A
        ("E", None),  # no option E
        ("Maybe (A) or (B)", None),  # two letters: no answer
        ("", None),
    ],
)
def test_answer_letter_extraction(response, letter):
    assert extract_letter(response, OPTIONS) == letter


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(item) + "\n" for item in data))
    else:
        path.write_text(json.dumps(data, indent=2))
    return path


VIDEOMME_ROW = {
    "video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
    "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
    "task_type": "Counting Problem", "question": "How many shapes appear?",
    "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "C",
}


def test_videomme_rows_prompt_and_fields(tmp_path):
    second = {**VIDEOMME_ROW, "question_id": "001-2", "task_type": "Object Recognition", "answer": "A",
              "duration": "long", "domain": "Sports"}
    bad = {**VIDEOMME_ROW, "question_id": "x", "answer": "E"}
    data = write(tmp_path / "videomme.jsonl", [VIDEOMME_ROW, second, bad])
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "fFjv93ACGo8.mkv").write_bytes(b"")  # found whatever the container
    assert detect_format(data) == "videomme"
    loaded = load_videomme(data)
    first = loaded.records[0]
    assert [r.id for r in loaded.records] == ["001-1", "001-2"]
    assert first.conversation.media == [MediaPart(type="video", path="videos/fFjv93ACGo8.mkv")]
    assert first.options == ["One.", "Two.", "Three.", "Four."] and first.answer == "C"
    assert first.references == ["C"] and first.kind == "choice"
    assert first.meta == {"task": "Counting Problem", "category": "Knowledge", "sub_category": "Humanity & History",
                          "duration": "short"}
    # VideoLLaMA3's Video-MME prompt, word for word.
    assert first.conversation.turns[0].parts[-1].text == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\nHow many shapes appear?\nA. One.\nB. Two.\nC. Three.\n"
        "D. Four.\nAnswer with the option's letter from the given choices directly and only give the best option. "
        "The best answer is:"
    )
    assert len(loaded.skipped) == 1
    assert loaded.skipped[0].source == f"{data}:3"
    assert "'E' is not one of the letters A, B, C, D" in loaded.skipped[0].reason


def test_videomme_grouped_form_and_subtitles_at_the_sampled_frames(tmp_path):
    group = {k: VIDEOMME_ROW[k] for k in ("video_id", "duration", "domain", "sub_category", "videoID")}
    questions = [{k: VIDEOMME_ROW[k] for k in ("question_id", "task_type", "question", "options", "answer")}]
    data = write(tmp_path / "videomme.json", [{**group, "questions": questions}])
    (tmp_path / "subtitles").mkdir()
    (tmp_path / "subtitles" / "fFjv93ACGo8.srt").write_text(
        "1\n00:00:00,500 --> 00:00:01,500\nHello <i>there</i>\n\n2\n00:00:02,000 --> 00:00:04,000\nSecond line\n"
    )
    assert detect_format(data) == "videomme"
    record = load_eval_set(data, subtitles=True).records[0]
    assert record.meta["task"] == "Counting Problem" and record.conversation.media[0].path == "videos/fFjv93ACGo8.mp4"
    clip = VideoClip("v.mp4", np.zeros((3, 2, 2, 3), np.uint8), [1.0, 2.5, 3.0], [1.0, 2.5, 3.0], [0, 1, 2], 1.0, 5.0)
    prompt = record.conversation_for([clip]).turns[0].parts[-1].text
    # One line per sampled frame that has a cue on screen, as VideoLLaMA3 builds it.
    assert prompt.startswith("This video's subtitles are listed below:\nHello there\nSecond line\nSecond line\n"
                             "Select the best answer")
    assert load_eval_set(data).records[0].conversation_for([clip]) == record.conversation  # off by default


def test_mvbench_folder_paths_clips_and_answers(tmp_path):
    json_dir = tmp_path / "MVBench" / "json"
    write(json_dir / "action_sequence.json", [
        {"video": "3MSZA.mp4", "question": "What did the person do first?",
         "candidates": ["Sat on the bed.", "Opened the door.", "Took a cup."], "answer": "Opened the door.",
         "start": 1.5, "end": 9.0},
    ])
    write(json_dir / "action_antonym.json", [
        {"video": "166583.webm", "question": "What is the action?", "candidates": ["pushing", "pulling"],
         "answer": "pulling", "start": 0.0, "end": 1.0},
        {"video": "1.webm", "question": "?", "candidates": ["a", "b"], "answer": "c"},
    ])
    assert detect_format(json_dir) == "mvbench"
    loaded = load_mvbench(json_dir)
    assert loaded.data_root == tmp_path / "MVBench"
    antonym, sequence = loaded.records  # files in name order
    assert sequence.meta == {"task": "Action Sequence"} and antonym.meta == {"task": "Action Antonym"}
    assert sequence.conversation.media == [
        MediaPart(type="video", path="video/star/Charades_v1_480/3MSZA.mp4", start=1.5, end=9.0)
    ]
    # Action Antonym clips are whole videos: the start/end in its records are not used.
    assert antonym.conversation.media == [MediaPart(type="video", path="video/ssv2_video/166583.webm")]
    assert sequence.answer == "B" and antonym.answer == "B" and sequence.id == "action_sequence-1"
    assert sequence.conversation.turns[0].parts[-1] == TextPart(text=(
        "Question: What did the person do first?\nOptions:\n(A) Sat on the bed.\n(B) Opened the door.\n"
        "(C) Took a cup.\nAnswer with the option's letter from the given choices directly and only give the best "
        "option."
    ))
    assert [s.source for s in loaded.skipped] == [f"{json_dir / 'action_antonym.json'}:13"]  # where the item's "{" is
    assert "'c' is not one of the letters A, B" in loaded.skipped[0].reason
    assert [r.id for r in load_mvbench(json_dir / "action_sequence.json").records] == ["action_sequence-1"]


def test_general_multiple_choice_form(tmp_path):
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:10,000\nA line\n")
    data = write(tmp_path / "mc.jsonl", [
        {"id": "q1", "video": "a.mp4", "question": "What moves?", "options": {"A": "a dog", "B": "a cat"},
         "answer": "a cat", "task": "objects"},
        {"id": "q2", "image": ["p.png"], "question": "Colour?", "options": ["(A) red", "(B) blue"], "answer": 0,
         "subtitles": "subs.srt", "category": "colour"},
        {"id": "q3", "question": "Text only?", "options": ["yes", "no"], "answer": "(B)", "subtitles": "plain words"},
        {"id": "q4", "question": "Bad?", "options": ["only one"], "answer": "A"},
    ])
    assert detect_format(data) == "choice"
    loaded = load_choices(data)
    q1, q2, q3 = loaded.records
    assert (q1.answer, q2.answer, q3.answer) == ("B", "A", "B")
    assert q2.options == ["red", "blue"] and q2.conversation.media == [MediaPart(type="image", path="p.png")]
    assert q1.meta == {"task": "objects"} and q2.meta == {"category": "colour"}
    assert q1.conversation.turns[0].parts[-1].text == (
        "Question: What moves?\nOptions:\n(A) a dog\n(B) a cat\nAnswer with the option's letter from the given "
        "choices directly."
    )
    assert q2.subtitles == read_subtitles(tmp_path / "subs.srt")
    assert q3.conversation_for([]).turns[0].parts[-1].text.startswith(
        "This video's subtitles are listed below:\nplain words\nQuestion: Text only?")
    assert loaded.skipped[0].id == "q4" and "at least two" in loaded.skipped[0].reason


def test_accuracy_overall_and_per_task_category_duration():
    rows = [
        {"id": "1", "kind": "choice", "prediction": "(A)", "options": ["x", "y"], "answer": "A",
         "meta": {"task": "count", "duration": "short"}},
        {"id": "2", "kind": "choice", "prediction": "The answer is B", "options": ["x", "y"], "answer": "A",
         "meta": {"task": "count", "duration": "long"}},
        {"id": "3", "kind": "choice", "prediction": "B.", "options": ["x", "y"], "answer": "B",
         "meta": {"task": "order", "duration": "long", "category": "sports"}},
        {"id": "4", "kind": "choice", "prediction": "no idea", "options": ["x", "y"], "answer": "B",
         "meta": {"task": "order", "duration": "long", "category": "sports"}},
    ]
    scores = compute_scores(rows)
    assert scores.values == {"accuracy": 50.0}  # no open-ended rows: no caption metrics
    assert scores.per_sample["2"] == {"choice": "B", "correct": False}
    assert scores.per_sample["4"] == {"choice": None, "correct": False}
    table = accuracy_table({**r, "correct": scores.per_sample[r["id"]]["correct"]} for r in rows)
    assert table["overall"] == {"accuracy": 50.0, "correct": 2, "total": 4}
    assert table["task"]["count"]["accuracy"] == 50.0 and table["task"]["order"]["accuracy"] == 50.0
    assert table["duration"] == {"short": {"accuracy": 100.0, "correct": 1, "total": 1},
                                 "long": {"accuracy": pytest.approx(100 / 3), "correct": 1, "total": 3}}
    assert table["category"] == {"sports": {"accuracy": 50.0, "correct": 1, "total": 2}}
