"""VideoLLaMA3's answer readers per benchmark, TempCompass's rules, grounding intervals and IoU, accuracy groups."""

import pytest

from vidlab.evaluation.accuracy import accuracy_table, mean_of_groups
from vidlab.evaluation.answers import read_intervals, read_tempcompass, tempcompass_target
from vidlab.evaluation.benchmarks import read_letter
from vidlab.evaluation.grounding import grounding_scores, interval_iou

FOUR = ["a red circle", "a blue square", "a green triangle", "4"]


@pytest.mark.parametrize(
    ("reader", "response", "letter"),
    [
        # MVBench / MLVU / NExT-QA: the first capital in range, even inside a word ("Based" -> B).
        ("mvbench", "(C) a green triangle", "C"),
        ("mvbench", "Answer: D", "D"),
        ("mvbench", "Based on the video, (C).", "B"),
        ("mvbench", "it is a blue square", "B"),  # no capital A-D: the option text
        ("mvbench", "no idea", None),
        # Video-MME / LongVideoBench: as above, and an option that is a digit also matches its word.
        ("videomme", "The best answer is C.", "C"),
        ("videomme", "i count four of them", "D"),
        ("videomme", "nothing matches", None),
        # EgoSchema: A-E; PerceptionTest: A-C, else the whole answer equal to an option.
        ("egoschema", "e", None),
        ("egoschema", "(E) 5", "E"),
        ("perception_test", "A BLUE SQUARE", "A"),  # the capital A of "A" is read first
        ("perception_test", "a blue square", "B"),
        ("perception_test", "a blue square, I think", None),
        # LVBench: a standalone A-D in the upper-cased answer ("a man" is A).
        ("lvbench", "a man walks", "A"),
        ("lvbench", "Option (C)", "C"),
        ("lvbench", "BCD", None),
        # vidlab's own reader does not take the article for option A.
        ("vidlab", "A man walks", None),
    ],
)
def test_videollama3_letter_readers(reader, response, letter):
    options = FOUR if reader not in ("perception_test", "egoschema") else (
        ["a red circle", "a blue square", "a green triangle"] if reader == "perception_test" else [*FOUR, "5"])
    assert read_letter(response, options, reader) == letter


@pytest.mark.parametrize(
    ("task_format", "answer", "response", "right", "readable"),
    [
        ("multi-choice", "B. dunking a basketball", "B. dunking", True, True),
        ("multi-choice", "B. dunking a basketball", "b", True, True),
        ("multi-choice", "A. dribbling", "a man dunks", True, True),  # the rule only looks at the start
        ("multi-choice", "C. passing", "(C)", False, True),
        ("yes_no", "yes", "Yes, he is.", True, True),
        ("yes_no", "no", "Yes.", False, True),
        ("yes_no", "no", "Maybe.", False, False),
        ("caption_matching", "Caption B: The man is moving left.", "Caption B", True, True),
        ("caption_matching", "Option 2: A man is dunking.", "option 2: a man is dunking", True, True),
        ("caption_matching", "Sentence A: x", "Sentence B", False, True),
    ],
)
def test_tempcompass_rules(task_format, answer, response, right, readable):
    assert read_tempcompass(response, task_format, tempcompass_target(answer, task_format)) == (right, readable)


def test_tempcompass_targets():
    assert tempcompass_target("Caption B: The man", "caption_matching") == "b"
    assert tempcompass_target("Option 2: A man", "caption_matching") == "2"
    assert tempcompass_target("B. dunking a basketball", "captioning") == "b"
    assert tempcompass_target("yes", "yes_no") == "yes"


@pytest.mark.parametrize(
    ("response", "intervals"),
    [
        ("The event happens from 2.5 to 7 seconds.", [[2.5, 7.0]]),
        ("0 - 3.2 and 10-12", [[0.0, 3.2], [10.0, 12.0]]),
        ("It starts at 4 s and ends at 9 s.", [[4.0, 9.0]]),
        ("Around 1, 4 and 9 seconds.", [[4.0, 9.0]]),  # odd count: the first number is dropped
        ("I cannot tell.", []),
    ],
)
def test_grounding_answers_read_as_videollama3_does(response, intervals):
    assert read_intervals(response) == intervals


def test_iou_and_recall_by_hand():
    assert interval_iou([[2.0, 6.0]], [4.0, 8.0]) == pytest.approx(2 / 6)
    assert interval_iou([[6.0, 2.0]], [4.0, 8.0]) == pytest.approx(2 / 6)  # each interval ordered low to high
    assert interval_iou([[0.0, 1.0], [4.0, 6.0]], [4.0, 8.0]) == pytest.approx(2 / 5)  # 2 / (4 + 1 + 2 - 2)
    assert interval_iou([], [4.0, 8.0]) == 0.0
    assert interval_iou([], [5.0, 5.0]) == 0.0  # no union: 0, not a division by zero
    ious = [1.0, 0.5, 0.3, 0.0]
    assert grounding_scores(ious) == {"miou": pytest.approx(45.0), "r1@0.3": 75.0, "r1@0.5": 50.0, "r1@0.7": 25.0}


def test_accuracy_multi_label_groups_and_mean_of_tasks():
    rows = [
        {"correct": True, "meta": {"task": "A", "type": ["x", "y"]}},
        {"correct": False, "meta": {"task": "A", "type": ["y"]}},
        {"correct": True, "meta": {"task": "B", "type": "x"}},
        {"correct": True, "meta": {"task": "B"}},
    ]
    table = accuracy_table(rows, ["task", "type"])
    assert table["overall"] == {"accuracy": 75.0, "correct": 3, "total": 4}  # each row once
    assert table["type"] == {"x": {"accuracy": 100.0, "correct": 2, "total": 2},
                             "y": {"accuracy": 50.0, "correct": 1, "total": 2}}
    assert mean_of_groups(table["task"]) == pytest.approx(75.0)  # (50 + 100) / 2
    assert list(accuracy_table(rows, ["type"])) == ["overall", "type"]
