"""Annotation records and chat messages become one Conversation; bad ones say what to fix."""

import pytest

from vidlab.conversation import MediaPart, TextPart, parse_messages, parse_record
from vidlab.errors import ConversationError


def test_record_with_video_system_and_several_turns():
    record = {
        "id": 7,
        "video": ["clips/a.mp4"],
        "start": 1.5,
        "end": 4.0,
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<video>\nWhat happens?"},
            {"from": "gpt", "value": "A ball rolls."},
            {"from": "human", "value": "Which way?"},
            {"from": "gpt", "value": "Left."},
        ],
    }
    conv = parse_record(record, "train.jsonl:3")
    assert conv.id == "7" and conv.source == "train.jsonl:3"
    assert [t.role for t in conv.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert conv.turns[1].parts == [
        MediaPart(type="video", path="clips/a.mp4", start=1.5, end=4.0),
        TextPart(text="What happens?"),
    ]
    assert conv.to_messages()[1] == {
        "role": "user",
        "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}],
    }


def test_record_with_several_images_in_order_and_a_single_path_string():
    record = {
        "image": ["a.jpg", "b.jpg"],
        "conversations": [
            {"from": "human", "value": "Compare <image> with <image>."},
            {"from": "gpt", "value": "Same."},
        ],
    }
    parts = parse_record(record).turns[0].parts
    assert [p.path if isinstance(p, MediaPart) else p.text for p in parts] == [
        "Compare ", "a.jpg", " with ", "b.jpg", ".",
    ]
    single = parse_record({"video": "v.mp4", "conversations": [{"from": "human", "value": "<video>Hi"}]})
    assert single.media[0].path == "v.mp4"


def test_text_only_record():
    conv = parse_record({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    assert conv.media == [] and conv.turns[1].text == "Hello"


def test_chat_messages():
    conv = parse_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"type": "text", "text": "What?"}]},
            {"role": "assistant", "content": "A dog."},
            {"role": "user", "content": [{"type": "image", "path": "x.png"}, "And this?"]},
        ]
    )
    assert [m.type for m in conv.media] == ["video", "image"]
    assert conv.turns[3].text == "And this?"


@pytest.mark.parametrize(
    "record, message",
    [
        ({"conversations": [{"from": "robot", "value": "hi"}]}, "unknown role 'robot'"),
        (
            {"video": ["a.mp4", "b.mp4"], "conversations": [{"from": "human", "value": "<video> hi"}]},
            "2 video\\(s\\) but 1 <video> placeholder",
        ),
        ({"conversations": [{"from": "human", "value": "<video> hi"}]}, "more <video> placeholders"),
        ({"image": "a.jpg", "conversations": [{"from": "human", "value": "hi"}]}, "1 image\\(s\\) but 0 <image>"),
        ({"conversations": [{"from": "human", "value": "  "}]}, "turn 1 \\(user\\) is empty"),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
            "turn 2 is from user but assistant was expected",
        ),
        ({"conversations": [{"from": "gpt", "value": "a"}]}, "turn 1 is from assistant but user"),
        ({"video": "a.mp4"}, 'no "conversations" list'),
        ({"conversations": []}, "no turns"),
        ({"conversations": [{"from": "human"}]}, 'turn 1 must be an object with "from" and "value"'),
    ],
)
def test_bad_records_name_the_record_and_the_fix(record, message):
    with pytest.raises(ConversationError, match=message) as err:
        parse_record(record, "data/train.jsonl:12")
    assert str(err.value).startswith("data/train.jsonl:12: ")


@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "bot", "content": "x"}], "unknown role 'bot'"),
        ([{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}], "content type 'audio'"),
        ([{"role": "user", "content": [{"type": "video"}]}], "video item without a path"),
        ([{"role": "user", "content": ""}], "is empty"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "only the first turn"),
    ],
)
def test_bad_messages(messages, message):
    with pytest.raises(ConversationError, match=message):
        parse_messages(messages, "request")
