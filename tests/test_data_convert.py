"""vidlab data convert: every source format, written here in its real field names; problems with their place;
the records load with training's and evaluation's readers; back to LLaMA-Factory sharegpt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidlab.conversation import parse_record
from vidlab.data.convert import AnnotationConversionError, convert_annotations
from vidlab.errors import DataFileError
from vidlab.evaluation.sets import load_eval_set
from vidlab.training.data import load_records


def touch(root: Path, *names: str) -> Path:
    """Empty media files (the converters and the readers only look them up, nothing decodes them)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def json_list(path: Path, items: list) -> Path:
    """A JSON list with one item per line: item k (0-based) starts on line k + 2."""
    path.write_text("[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]\n")
    return path


def jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i, ensure_ascii=False)) + "\n" for i in items))
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def reasons(result) -> dict[str, str]:
    return {p.source: p.reason for p in result.problems}


# ---------------------------------------------------------------------------------------------------------------------
# LLaVA-Video-178K / LLaVA-OneVision


LLAVA = [
    {"id": "RW587", "conversations": [{"from": "human", "value": "<image>\nWhat is the person doing?"},
                                      {"from": "gpt", "value": "Cooking."}],
     "data_source": "0_30_s_academic_v0_1", "video": "academic_source/Charades/RW587.mp4"},
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "What colour is the bus?"}, {"from": "gpt", "value": "Red."}]},
    {"id": "pair", "image": ["a.jpg", "b.jpg"],
     "conversations": [{"from": "human", "value": "<image>\n<image>\nSame place?"}, {"from": "gpt", "value": "No."}]},
    {"id": "two-marks", "video": "c.mp4",
     "conversations": [{"from": "human", "value": "<image>\n<image>\nWhat?"}, {"from": "gpt", "value": "x"}]},
    {"id": "no-answer", "video": "c.mp4", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]},
    {"id": "text", "conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]},
]


def test_llava_video_and_onevision_records(tmp_path):
    root = touch(tmp_path / "media", "academic_source/Charades/RW587.mp4", "coco/train2017/000000033471.jpg",
                 "a.jpg", "b.jpg", "c.mp4")
    source = json_list(tmp_path / "0_30_s_academic_v0_1_cap_processed.json", LLAVA)
    result = convert_annotations("llava", source, tmp_path / "llava.jsonl", data_root=root)

    out = rows(result.out)
    assert [r["id"] for r in out] == ["RW587", "000000033471", "pair", "text"]
    assert out[0] == {"id": "RW587", "video": ["academic_source/Charades/RW587.mp4"],
                      "data_source": "0_30_s_academic_v0_1",
                      "conversations": [{"from": "human", "value": "<video>\nWhat is the person doing?"},
                                        {"from": "gpt", "value": "Cooking."}]}
    # No placeholder: one goes in front of the first question, as LLaVA's loader does, and it is counted.
    assert out[1]["image"] == ["coco/train2017/000000033471.jpg"]
    assert out[1]["conversations"][0]["value"] == "<image>\nWhat colour is the bus?"
    assert result.notes == {"added <image> placeholder(s) in front of the first question": 1}
    assert reasons(result) == {
        f"{source}:5": "has 1 video(s) but 2 <video> placeholder(s); give one placeholder per file or none",
        f"{source}:6": 'no gpt answer, so nothing to train on (for evaluation, list the answers in "references")',
    }
    records, skipped = load_records([result.out], root)
    assert len(records) == 4 and not skipped
    assert [p.type for p in records[2].conversation.media] == ["image", "image"]
    assert rows(result.skipped_file) == [{"source": p.source, "reason": p.reason, "kind": p.kind}
                                         for p in result.problems]


def test_a_file_in_another_format_is_refused_with_the_first_problems(tmp_path):
    source = jsonl(tmp_path / "qa.json", [{"q": "What?", "a": "That.", "video_id": "v_1"}])
    with pytest.raises(
        AnnotationConversionError, match=r"nothing could be converted from llava .*qa\.json:1: no \"conversations\" "
                                           r"list.*Is the file in the llava format"
    ):
        convert_annotations("llava", source, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Video-ChatGPT


def test_video_chatgpt_instructions_find_activitynet_videos_by_id(tmp_path):
    root = touch(tmp_path / "activitynet", "v1-2/train/v_k_ZXmr8pmrs.mkv", "v_1Qb2yFWXQSw.mp4")
    source = json_list(tmp_path / "VideoInstruct100K.json", [
        {"q": "What are the main activities in the video?", "a": "A man prepares camera equipment.",
         "video_id": "v_k_ZXmr8pmrs"},
        {"q": "Where is he?", "a": "Outdoors.", "video_id": "v_k_ZXmr8pmrs"},
        {"q": "  ", "a": "Empty question.", "video_id": "v_k_ZXmr8pmrs"},
        {"q": "What?", "a": "Gone.", "video_id": "v_not_downloaded"},
        {"video_name": "v_1Qb2yFWXQSw.mp4", "Q": "What sport is played?", "A": "Tennis."},
        {"id": "v_1Qb2yFWXQSw", "video": "v_1Qb2yFWXQSw.pkl",
         "conversations": [{"from": "human", "value": "Describe the video.\n<video>"},
                           {"from": "gpt", "value": "A match."}]},
    ])
    result = convert_annotations("video-chatgpt", source, tmp_path / "vcg.jsonl", data_root=root)

    out = rows(result.out)
    assert [r["id"] for r in out] == ["v_k_ZXmr8pmrs#1", "v_k_ZXmr8pmrs#2", "v_1Qb2yFWXQSw#1", "v_1Qb2yFWXQSw"]
    assert out[0]["video"] == ["v1-2/train/v_k_ZXmr8pmrs.mkv"]
    assert out[0]["conversations"] == [
        {"from": "human", "value": "<video>\nWhat are the main activities in the video?"},
        {"from": "gpt", "value": "A man prepares camera equipment."}]
    assert out[3]["video"] == ["v_1Qb2yFWXQSw.mp4"]  # the .pkl of CLIP features -> the video it came from
    assert out[3]["conversations"][0]["value"] == "Describe the video.\n<video>"
    assert reasons(result)[f"{source}:4"] == "the question is empty"
    assert reasons(result)[f"{source}:5"].startswith("no video file named v_not_downloaded")
    assert len(load_records([result.out], root)[0]) == 4


def test_without_a_data_root_video_ids_become_mp4_names(tmp_path):
    source = json_list(tmp_path / "VideoInstruct100K.json", [{"q": "Q?", "a": "A.", "video_id": "v_abc"}])
    result = convert_annotations("video-chatgpt", source, tmp_path / "vcg.jsonl")
    assert rows(result.out)[0]["video"] == ["v_abc.mp4"] and result.problems == []


# ---------------------------------------------------------------------------------------------------------------------
# ShareGPT4Video


SHAREGPT4VIDEO = [
    {"video_id": "j5JqNXjGufw", "video_path": "panda/j5JqNXjGufw.mp4", "zip_folder": "panda_videos_16.zip",
     "timestamp": [0.0, 2.5, 5.0], "keyframe": [0, 60, 120],
     "captions": [{"idx": "0", "content": "A dog runs in."}, {"idx": "1", "content": "It sits."},
                  {"idx": "-1", "content": "A brown dog runs into a garden and sits on the grass."}]},
    {"video_id": "noWhole", "video_path": "panda/noWhole.mp4", "zip_folder": "panda_videos_16.zip",
     "timestamp": [0.0], "keyframe": [0], "captions": [{"idx": "0", "content": "Only a part."}]},
    "{not json",
]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sharegpt4video_whole_video_captions(tmp_path, mode):
    root = touch(tmp_path / "zip_folder", "panda/j5JqNXjGufw.mp4")
    source = jsonl(tmp_path / "sharegpt4video_40k.jsonl", SHAREGPT4VIDEO)
    result = convert_annotations("sharegpt4video", source, tmp_path / f"{mode}.jsonl", data_root=root, captions=mode)

    question = {"from": "human", "value": "<video>\nDescribe this video in detail."}
    caption = "A brown dog runs into a garden and sits on the grass."
    expected = {"id": "j5JqNXjGufw", "video": ["panda/j5JqNXjGufw.mp4"], "conversations": [question]}
    expected.update({"conversations": [question, {"from": "gpt", "value": caption}]} if mode == "train"
                    else {"references": [caption]})
    assert rows(result.out) == [expected]
    assert set(reasons(result)) == {f"{source}:2", f"{source}:3"}
    assert reasons(result)[f"{source}:2"] == 'no whole-video caption (a "captions" entry with "idx": "-1")'
    assert reasons(result)[f"{source}:3"].startswith("not valid JSON")
    evaluation = load_eval_set(result.out, root)
    assert [(r.id, r.references) for r in evaluation.records] == [("j5JqNXjGufw", [caption])]


# ---------------------------------------------------------------------------------------------------------------------
# MSR-VTT, MSVD, VATEX


MSRVTT = {
    "info": {"contributor": "Microsoft MSM group", "year": "2016"},
    "videos": [
        {"category": 9, "url": "https://www.youtube.com/watch?v=9lZi22qLlEo", "video_id": "video0",
         "start time": 137.72, "end time": 149.44, "split": "train", "id": 0},
        {"category": 16, "url": "https://www.youtube.com/watch?v=w4JM08PDEng", "video_id": "video1",
         "start time": 184.33, "end time": 206.89, "split": "validate", "id": 1},
        {"category": 9, "url": "https://www.youtube.com/watch?v=x", "video_id": "video2",
         "start time": 31.17, "end time": 41.24, "split": "train", "id": 2},
    ],
    "sentences": [
        {"caption": "a car is shown", "video_id": "video0", "sen_id": 0},
        {"caption": "a man drives a car down the road", "video_id": "video0", "sen_id": 1},
        {"caption": "a car is shown", "video_id": "video0", "sen_id": 2},
        {"caption": "people are talking", "video_id": "video1", "sen_id": 3},
        {"caption": "a lost caption", "video_id": "video77", "sen_id": 4},
        {"caption": "a dog plays", "video_id": "video2", "sen_id": 5},
    ],
}


def test_msrvtt_one_record_per_caption_for_training(tmp_path):
    root = touch(tmp_path / "MSRVTT", "TrainValVideo/video0.mp4", "TrainValVideo/video1.mp4")
    source = tmp_path / "train_val_videodatainfo.json"
    source.write_text(json.dumps(MSRVTT))
    result = convert_annotations("msrvtt", source, tmp_path / "msrvtt.jsonl", data_root=root)

    out = rows(result.out)
    assert [(r["id"], r["video"][0], r["conversations"][1]["value"]) for r in out] == [
        ("video0#1", "TrainValVideo/video0.mp4", "a car is shown"),
        ("video0#2", "TrainValVideo/video0.mp4", "a man drives a car down the road"),  # the repeated caption: once
        ("video1#1", "TrainValVideo/video1.mp4", "people are talking"),
    ]
    assert all("start" not in r for r in out)  # the files are already cut: "start time" is in the YouTube source
    assert reasons(result) == {
        f"{source}:sentences[4]": "caption of video 'video77', which \"videos\" does not list",
        f"{source}:videos[2]": "no video file named video2 (any of .mp4, .mkv, .webm, .avi, .mov, ...) under the "
                               f"data root {root}. Download it, or leave the record out",
    }
    assert result.notes == {"videos with empty or repeated captions (left out)": 1}
    records, skipped = load_records([result.out], root)
    assert [r.id for r in records] == ["video0#1", "video0#2", "video1#1"] and not skipped


def test_msrvtt_one_record_per_video_with_every_caption_for_evaluation(tmp_path):
    source = tmp_path / "train_val_videodatainfo.json"
    source.write_text(json.dumps(MSRVTT))
    result = convert_annotations("msrvtt", source, tmp_path / "eval.jsonl", captions="eval", split="train")

    assert rows(result.out) == [
        {"id": "video0", "video": ["video0.mp4"],
         "conversations": [{"from": "human", "value": "<video>\nDescribe what happens in the video in one sentence."}],
         "references": ["a car is shown", "a man drives a car down the road"]},
        {"id": "video2", "video": ["video2.mp4"],
         "conversations": [{"from": "human", "value": "<video>\nDescribe what happens in the video in one sentence."}],
         "references": ["a dog plays"]},
    ]
    assert result.problems == []  # video1 is in the validate split; video77's caption is outside the split
    evaluation = load_eval_set(result.out, tmp_path)
    assert [(r.id, len(r.references)) for r in evaluation.records] == [("video0", 2), ("video2", 1)]
    assert evaluation.records[0].question == "<video>\nDescribe what happens in the video in one sentence."
    # Training cannot use evaluation records (no gpt answer): they are skipped there, not misread.
    assert load_records([result.out], tmp_path)[0] == []


def test_msrvtt_rejects_a_file_of_another_shape(tmp_path):
    source = jsonl(tmp_path / "train.json", [{"video_id": "video0"}])
    with pytest.raises(AnnotationConversionError, match='not an MSR-VTT annotation file .*"videos" and "sentences"'):
        convert_annotations("msrvtt", source, tmp_path / "out.jsonl")


MSVD_TXT = """# MSR Video Description Corpus (English descriptions)
# Format: <clip> <description>
-4wsuPCjDBc_5_15 a squirrel is eating a peanut in it's shell
-4wsuPCjDBc_5_15 a chipmunk is eating
-7KMZQEsJW4_205_208 a woman is slicing a tomato
-7KMZQEsJW4_205_208
"""


def test_msvd_descriptions_file(tmp_path):
    root = touch(tmp_path / "msvd", "YouTubeClips/-4wsuPCjDBc_5_15.avi", "YouTubeClips/-7KMZQEsJW4_205_208.avi")
    source = tmp_path / "AllVideoDescriptions.txt"
    source.write_text(MSVD_TXT)
    result = convert_annotations("msvd", source, tmp_path / "msvd.jsonl", data_root=root)

    assert [(r["id"], r["video"], r["conversations"][1]["value"]) for r in rows(result.out)] == [
        ("-4wsuPCjDBc_5_15#1", ["YouTubeClips/-4wsuPCjDBc_5_15.avi"], "a squirrel is eating a peanut in it's shell"),
        ("-4wsuPCjDBc_5_15#2", ["YouTubeClips/-4wsuPCjDBc_5_15.avi"], "a chipmunk is eating"),
        ("-7KMZQEsJW4_205_208#1", ["YouTubeClips/-7KMZQEsJW4_205_208.avi"], "a woman is slicing a tomato"),
    ]
    assert reasons(result) == {f"{source}:6": "clip -7KMZQEsJW4_205_208 has an empty caption on this line"}


def test_msvd_corpus_csv_keeps_one_language(tmp_path):
    source = tmp_path / "MSR Video Description Corpus.csv"
    source.write_text(
        "VideoID,Start,End,WorkerID,Source,AnnotationTime,Language,Description\n"
        "mv89psg6zh4,33,46,1,clean,17,English,A bird in a sink keeps getting water poured on it.\n"
        "mv89psg6zh4,33,46,2,unverified,18,German,Ein Vogel sitzt in einem Waschbecken.\n"
        'mv89psg6zh4,33,46,3,clean,20,English,"A bird is bathing in a sink, splashing."\n'
    )
    result = convert_annotations("msvd", source, tmp_path / "eval.jsonl", captions="eval")
    assert rows(result.out) == [{
        "id": "mv89psg6zh4_33_46", "video": ["mv89psg6zh4_33_46.avi"],
        "conversations": [{"from": "human", "value": "<video>\nDescribe what happens in the video in one sentence."}],
        "references": ["A bird in a sink keeps getting water poured on it.", "A bird is bathing in a sink, splashing."],
    }]
    german = convert_annotations("msvd", source, tmp_path / "de.jsonl", captions="eval", language="German")
    assert rows(german.out)[0]["references"] == ["Ein Vogel sitzt in einem Waschbecken."]


def test_vatex_clip_files_or_the_full_video_with_the_window_from_the_id(tmp_path):
    root = touch(tmp_path / "vatex", "clips/Ptf_2VRj-V0_000122_000132.mp4", "full/abc-DEF_1.mp4")
    source = json_list(tmp_path / "vatex_training_v1.0.json", [
        {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["A man plays the drums.", "Someone is drumming."],
         "chCap": ["一个男人在打鼓。"]},
        {"videoID": "abc-DEF_1_000001_000011", "enCap": ["A girl dances."], "chCap": ["一个女孩在跳舞。"]},
        {"videoID": "private_000000_000010"},
    ])
    result = convert_annotations("vatex", source, tmp_path / "vatex.jsonl", data_root=root)

    out = rows(result.out)
    assert [(r["id"], r["video"], r.get("start"), r.get("end")) for r in out] == [
        ("Ptf_2VRj-V0_000122_000132#1", ["clips/Ptf_2VRj-V0_000122_000132.mp4"], None, None),
        ("Ptf_2VRj-V0_000122_000132#2", ["clips/Ptf_2VRj-V0_000122_000132.mp4"], None, None),
        ("abc-DEF_1_000001_000011#1", ["full/abc-DEF_1.mp4"], 1.0, 11.0),
    ]
    assert reasons(result) == {f"{source}:4": 'no "enCap" list (the private test set has no captions)'}
    chinese = convert_annotations("vatex", source, tmp_path / "zh.jsonl", data_root=root, language="zh",
                                  captions="eval")
    assert [r["references"] for r in rows(chinese.out)] == [["一个男人在打鼓。"], ["一个女孩在跳舞。"]]
    records = load_records([result.out], root)[0]
    assert [(p.start, p.end) for p in records[2].conversation.media] == [(1.0, 11.0)]


# ---------------------------------------------------------------------------------------------------------------------
# LLaMA-Factory


def test_llamafactory_sharegpt_with_videos_and_a_system_prompt(tmp_path):
    root = touch(tmp_path / "data", "mllm_demo_data/1.mp4", "mllm_demo_data/2.jpg")
    source = json_list(tmp_path / "mllm_video_demo.json", [
        {"conversations": [{"from": "human", "value": "<video>Why is this video funny?"},
                           {"from": "gpt", "value": "Because a baby is reading."}],
         "system": "Be brief.", "videos": ["mllm_demo_data/1.mp4"]},
        {"conversations": [{"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "{}"},
                           {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}],
         "tools": "[]"},
        {"conversations": [{"from": "human", "value": "<image><image>Compare."}, {"from": "gpt", "value": "Same."}],
         "images": ["mllm_demo_data/2.jpg"]},
        {"conversations": [{"from": "human", "value": "<audio>What is said?"}, {"from": "gpt", "value": "Hi."}],
         "audios": ["mllm_demo_data/1.mp3"]},
    ])
    result = convert_annotations("sharegpt", source, tmp_path / "out.jsonl", data_root=root)

    assert rows(result.out) == [{
        "video": ["mllm_demo_data/1.mp4"],
        "conversations": [{"from": "system", "value": "Be brief."},
                          {"from": "human", "value": "<video>Why is this video funny?"},
                          {"from": "gpt", "value": "Because a baby is reading."}],
    }]
    assert reasons(result) == {
        f"{source}:3": 'has "tools" (tool calling), which vidlab records cannot hold',
        f"{source}:4": "has 1 image(s) but 2 <image> placeholder(s); LLaMA-Factory and vidlab both need one <image> "
                       "per file",
        f"{source}:5": 'has "audios"; vidlab trains on video and images only',
    }


def test_llamafactory_openai_messages_multi_turn_with_images(tmp_path):
    root = touch(tmp_path / "data", "mllm_demo_data/1.jpg")
    source = json_list(tmp_path / "mllm_demo.json", [{
        "messages": [
            {"content": "<image>Who are they?", "role": "user"},
            {"content": "They're Kane and Gretzka from Bayern Munich.", "role": "assistant"},
            {"content": "What are they doing?<image>", "role": "user"},
            {"content": "They are celebrating on the soccer field.", "role": "assistant"},
        ],
        "images": ["mllm_demo_data/1.jpg", "mllm_demo_data/1.jpg"],
    }])
    result = convert_annotations("openai", source, tmp_path / "out.jsonl", data_root=root)

    [record] = load_records([result.out], root)[0]
    turns = record.conversation.turns
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert [p.type for p in turns[0].parts] == ["image", "text"]
    assert [p.type for p in turns[2].parts] == ["text", "image"]


def test_llamafactory_column_and_tag_names_from_dataset_info(tmp_path):
    source = json_list(tmp_path / "clinic.json", [{
        "dialog": [{"speaker": "client", "text": "<video>What is wrong?"}, {"speaker": "agent", "text": "Nothing."}],
        "clips": ["visit.mp4"],
    }])
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"clinic": {
        "file_name": "clinic.json", "formatting": "sharegpt", "columns": {"messages": "dialog", "videos": "clips"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "client", "assistant_tag": "agent"}}}))
    result = convert_annotations("sharegpt", source, tmp_path / "out.jsonl", dataset_info=info, dataset="clinic")
    assert rows(result.out) == [{"video": ["visit.mp4"], "conversations": [
        {"from": "human", "value": "<video>What is wrong?"}, {"from": "gpt", "value": "Nothing."}]}]
    with pytest.raises(AnnotationConversionError, match="no data set named 'other'"):
        convert_annotations("sharegpt", source, tmp_path / "out.jsonl", dataset_info=info, dataset="other")


def test_records_back_to_sharegpt_and_again(tmp_path):
    records = [
        {"id": "a1", "video": ["clips/a1.mp4"], "conversations": [
            {"from": "system", "value": "Be brief."}, {"from": "human", "value": "<video>\nWhat happens?"},
            {"from": "gpt", "value": "A dog catches a ball."}, {"from": "human", "value": "And then?"},
            {"from": "gpt", "value": "It runs off."}]},
        {"id": "i1", "image": ["x.jpg"], "conversations": [
            {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Blue."}]},
        {"id": "clip", "video": ["clips/b.mp4"], "start": 2.0, "end": 9.5, "conversations": [
            {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "x"}]},
        {"id": "ev", "video": ["clips/c.mp4"], "conversations": [{"from": "human", "value": "<video>\nWhat?"}],
         "references": ["a", "b"]},
    ]
    source = jsonl(tmp_path / "train.jsonl", records)
    exported = convert_annotations("records", source, tmp_path / "vidlab_train.json", to="sharegpt")

    shared = json.loads(exported.out.read_text())
    assert shared[0] == {"conversations": [
        {"from": "human", "value": "<video>What happens?"}, {"from": "gpt", "value": "A dog catches a ball."},
        {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "It runs off."}],
        "system": "Be brief.", "videos": ["clips/a1.mp4"], "id": "a1"}
    assert shared[1]["images"] == ["x.jpg"] and shared[1]["conversations"][0]["value"] == "<image>Colour?"
    assert set(reasons(exported)) == {f"{source}:3", f"{source}:4"}
    assert "clip window" in reasons(exported)[f"{source}:3"] and "references" in reasons(exported)[f"{source}:4"]
    assert exported.dataset_info == {"file_name": "vidlab_train.json", "formatting": "sharegpt", "columns": {
        "messages": "conversations", "system": "system", "images": "images", "videos": "videos"}}

    back = convert_annotations("sharegpt", exported.out, tmp_path / "back.jsonl")
    for original, returned in zip(records[:2], rows(back.out)):
        assert parse_record(returned).turns == parse_record(original).turns


def test_the_command_writes_records_and_reports_problems(tmp_path):
    source = tmp_path / "train_val_videodatainfo.json"
    source.write_text(json.dumps(MSRVTT))
    out = tmp_path / "msrvtt.jsonl"
    done = subprocess.run([sys.executable, "-m", "vidlab.cli", "data", "convert", "msrvtt", str(source), str(out),
                           "--captions", "eval"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote 3 record(s) to {out} from 4 msrvtt item(s); 1 not converted" in done.stdout
    assert "sentences[4]: caption of video 'video77'" in done.stdout
    assert len(rows(out)) == 3

    bad = subprocess.run([sys.executable, "-m", "vidlab.cli", "data", "convert", "webvid", str(source), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error: unknown source format 'webvid'; use one of: llava, video-chatgpt" in bad.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Published layouts the converters met in the wild


def test_a_json_list_on_one_line_gives_each_problem_its_own_place(tmp_path):
    # Video-ChatGPT's training json as its script writes it: json.dump, the whole list on line 1.
    root = touch(tmp_path / "activitynet", "v_a.mp4", "v_c.mp4")
    items = [{"id": f"v_{name}", "video": f"v_{name}.pkl", "conversations": [
        {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "Something."}]}
        for name in ("a", "b", "c")]
    source = tmp_path / "video_chatgpt_training.json"
    with open(source, "w") as handle:
        json.dump(items, handle)
    result = convert_annotations("video-chatgpt", source, tmp_path / "out.jsonl", data_root=root)
    assert [r["id"] for r in rows(result.out)] == ["v_a", "v_c"]
    assert list(reasons(result)) == [f"{source}:1 (record 2)"]


def test_a_wrong_data_root_says_so_and_lists_every_item(tmp_path):
    source = json_list(tmp_path / "llava_video.json", LLAVA[:3])
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(AnnotationConversionError, match=r"(?s)media of every item \(3\) are missing under the data "
                                                        r"root .*elsewhere.*Check --data-root") as err:
        convert_annotations("llava", source, tmp_path / "out.jsonl", data_root=tmp_path / "elsewhere")
    assert "llava format" not in str(err.value)
    skipped = rows(tmp_path / "out.skipped.jsonl")
    assert [row["kind"] for row in skipped] == ["missing media"] * 3 and not (tmp_path / "out.jsonl").exists()


def test_llava_onevision_parquet_with_the_images_inside(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(colour) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (28, 28), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    # The columns of lmms-lab/LLaVA-OneVision-Data: id, image (a datasets Image), conversations, data_source.
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn_type = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
    table = pa.table({
        "id": ["identity_1", "identity_2", "text_only", "empty"],
        "image": pa.array([{"bytes": png("red"), "path": None}, {"bytes": png("blue"), "path": None}, None,
                           {"bytes": png("green"), "path": None}], image_type),
        "conversations": pa.array([
            [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."}],
            [{"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Blue."}],
            [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}],
            [],
        ], turn_type),
        "data_source": ["CLEVR-Math(MathV360K)"] * 4,
    })
    source = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, source)
    out = tmp_path / "converted" / "onevision.jsonl"
    out.parent.mkdir()
    result = convert_annotations("llava", source, out)

    written = rows(out)
    assert [r["id"] for r in written] == ["identity_1", "identity_2", "text_only"]
    assert written[0]["image"] == ["onevision_media/0000001_identity_1.png"]
    assert written[1]["conversations"][0]["value"] == "<image>\nWhat colour?"  # placeholder added, as LLaVA does
    assert reasons(result) == {f"{source} row 4": 'the conversation is empty ("conversations" has no turns)'}
    records, skipped = load_records([out])
    assert len(records) == 3 and not skipped
    with Image.open(out.parent / written[0]["image"][0]) as image:
        assert image.getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(DataFileError, match=r"not UTF-8 text.*vidlab data convert llava FILE OUT\.jsonl"):
        load_records([source])  # training is told how to read it


def test_video_chatgpt_consistency_qa_gives_a_record_per_question(tmp_path):
    source = json_list(tmp_path / "consistency_qa.json", [
        {"Q1": "What is the man doing?", "Q2": "What activity is the man engaged in?", "A": "He is skiing.",
         "video_name": "v_abc"},
        {"Q1": "Where?", "A": "Here.", "video_name": "v_def"},
    ])
    result = convert_annotations("video-chatgpt", source, tmp_path / "out.jsonl")
    assert [(r["id"], r["conversations"][0]["value"], r["conversations"][1]["value"]) for r in rows(result.out)] == [
        ("v_abc#1", "<video>\nWhat is the man doing?", "He is skiing."),
        ("v_abc#2", "<video>\nWhat activity is the man engaged in?", "He is skiing."),
    ]
    assert reasons(result) == {f"{source}:3": '"Q2" must be a string, got NoneType'}


def test_llamafactory_video_given_as_its_frames(tmp_path):
    frames = [f"mllm_demo_data/4/{n:02d}.jpg" for n in range(3)]
    root = touch(tmp_path / "data", *frames, "mllm_demo_data/mixed/00.jpg", "mllm_demo_data/mixed/extra.jpg")
    source = json_list(tmp_path / "mllm_video_frames.json", [
        {"conversations": [{"from": "human", "value": "<video>What is she doing?"},
                           {"from": "gpt", "value": "Knitting."}], "videos": [frames]},
        {"conversations": [{"from": "human", "value": "<video>And here?"}, {"from": "gpt", "value": "x"}],
         "videos": [["mllm_demo_data/mixed/00.jpg"]]},
    ])
    result = convert_annotations("sharegpt", source, tmp_path / "out.jsonl", data_root=root)
    assert [r["video"] for r in rows(result.out)] == [["mllm_demo_data/4"]]
    assert "holds 1 image(s) besides its 1 frames" in reasons(result)[f"{source}:3"]
    [record] = load_records([result.out], root)[0]
    assert record.conversation.media[0].path == "mllm_demo_data/4"
