"""Training data: records and skips, assistant-only labels, token budgets, data set retries, batches."""

import json
import pickle
import re

import pytest
import torch
from conftest import gradient_frames
from PIL import Image

from vidlab.errors import DataFileError, SampleError, VidlabError
from vidlab.inputs import IGNORE_INDEX, assistant_label_mask, label_assistant_turns
from vidlab.media.writer import write_video
from vidlab.settings import MediaSettings
from vidlab.training.data import Collator, SkipNote, TrainDataset, encode_record, load_records, raise_if_fatal

VIDEO_QA = [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "<video>\nWhat happens?"},
    {"from": "gpt", "value": "A red ball moves left."},
    {"from": "human", "value": "Is it fast?"},
    {"from": "gpt", "value": "No, slowly."},
]
IMAGE_QA = [{"from": "human", "value": "<image>\nWhat is in this image?"}, {"from": "gpt", "value": "A blue square."}]
TEXT_QA = [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]


@pytest.fixture(scope="module")
def processor(tiny_model):
    return tiny_model[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Media for the records: 2 s videos of 112x112 and 224x224, images of 84x112 and 224x224, a broken video."""
    folder = tmp_path_factory.mktemp("train_data")
    write_video(folder / "small.mp4", gradient_frames(20, 112, 112), fps=10)
    write_video(folder / "large.mp4", gradient_frames(20, 224, 224), fps=10)
    Image.fromarray(gradient_frames(1, 84, 112)[0]).save(folder / "picture.png")
    Image.fromarray(gradient_frames(1, 224, 224)[0]).save(folder / "big.png")
    (folder / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return folder


def write_lines(path, rows):
    """Rows (JSON values, or raw strings for broken lines) as a JSONL file; returns its path."""
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def one_record(folder, name, record):
    records, skipped = load_records([write_lines(folder / f"{name}.jsonl", [record])])
    assert not skipped, skipped
    return records[0]


def labelled_spans(sample, tokenizer) -> list[str]:
    """The decoded runs of consecutive learned positions."""
    labels = sample.tensors["labels"]
    spans, current = [], []
    for label in labels.tolist():
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(span) for span in spans]


def encoded(record, processor, max_length: int = 16384, **settings):
    """The training encoding of a record with these media settings."""
    return encode_record(record, processor, MediaSettings(**settings), max_length)


def as_batch(sample) -> dict:
    return Collator(0)([{"sample": sample, "skipped": []}])["inputs"]


# ---------------------------------------------------------------------------------------------------------------------
# Labels


def test_labels_are_exactly_the_assistant_replies_with_their_end_token(processor, data_dir):
    record = one_record(data_dir, "labels_video", {"video": "small.mp4", "conversations": VIDEO_QA})
    sample = encoded(record, processor, fps=2)
    tokenizer = processor.tokenizer
    ids, labels = sample.tensors["input_ids"], sample.tensors["labels"]
    assert labelled_spans(sample, tokenizer) == ["A red ball moves left.<|im_end|>", "No, slowly.<|im_end|>"]

    # Token by token: a learned position carries its own token; the rest are -100.
    learned = labels != IGNORE_INDEX
    assert torch.equal(labels[learned], ids[learned])
    assert torch.equal(learned, assistant_label_mask(ids, tokenizer))
    video_positions = ids == processor.video_token_id
    assert int(video_positions.sum()) == sample.stats.visual_tokens > 0
    assert not learned[video_positions].any()
    # The prefix "<|im_start|>assistant\n" right before each reply is not learned, nor is the trailing "\n".
    starts = learned.int().diff(prepend=torch.zeros(1, dtype=torch.int)).eq(1).nonzero().flatten().tolist()
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for start in starts:
        assert ids[start - len(header) : start].tolist() == header
    assert tokenizer.decode(ids[-1:]) == "\n" and labels[-1] == IGNORE_INDEX
    assert tokenizer.decode(ids[~learned]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTime")


def test_labels_for_text_only_and_image_samples(processor, data_dir):
    tokenizer = processor.tokenizer
    text = encoded(one_record(data_dir, "labels_text", {"conversations": TEXT_QA}), processor)
    assert labelled_spans(text, tokenizer) == ["yes<|im_end|>"]
    assert "pixel_values" not in text.tensors and "pixel_values_videos" not in text.tensors
    image_record = one_record(data_dir, "labels_image", {"image": ["picture.png"], "conversations": IMAGE_QA})
    image = encoded(image_record, processor)
    assert labelled_spans(image, tokenizer) == ["A blue square.<|im_end|>"]
    image_positions = image.tensors["input_ids"] == processor.image_token_id
    assert image_positions.sum() > 0 and (image.tensors["labels"][image_positions] == IGNORE_INDEX).all()


def test_label_mask_finds_replies_in_raw_ids(processor):
    tokenizer = processor.tokenizer
    text = (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
        "<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\nno"  # cut off: labelled to the end
    )
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    labels = label_assistant_turns(ids, tokenizer)
    assert tokenizer.decode(labels[labels != IGNORE_INDEX]) == "yes<|im_end|>no"
    with pytest.raises(ValueError, match="one sample"):
        assistant_label_mask(ids[None], tokenizer)


class MergingTokenizer:
    """A tokenizer whose "\n\n" is one token (as in Qwen's), so a reply starting with "\n" merges with the header."""

    vocab = {"<|im_start|>": 1, "<|im_end|>": 2, "assistant": 3, "\n": 4, "\n\n": 5, "yes": 6, "user": 7}
    unk_token_id = None

    def convert_tokens_to_ids(self, token):
        return self.vocab.get(token)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": {"assistant\n": [3, 4], "assistant": [3]}[text]}

    def decode(self, ids):
        names = {v: k for k, v in self.vocab.items()}
        return "".join(names[i] for i in ids)


def test_label_mask_when_the_reply_merges_with_the_role_newline():
    tokenizer = MergingTokenizer()
    #                     <s> user \n yes </s> \n <s> assistant \n\n yes </s> \n
    ids = torch.tensor([1, 7, 4, 6, 2, 4, 1, 3, 5, 6, 2, 4])
    assert assistant_label_mask(ids, tokenizer).nonzero().flatten().tolist() == [8, 9, 10]


# ---------------------------------------------------------------------------------------------------------------------
# Batches


def test_mixed_batch_runs_and_padding_changes_no_sample(tiny_model, processor, data_dir):
    model = tiny_model[0].eval()
    records = [
        one_record(data_dir, "mixed_video", {"video": "small.mp4", "conversations": VIDEO_QA}),
        one_record(data_dir, "mixed_text", {"conversations": TEXT_QA}),
        one_record(data_dir, "mixed_image", {"image": "picture.png", "conversations": IMAGE_QA}),
    ]
    samples = [encoded(r, processor, fps=2) for r in records]
    collate = Collator(processor.tokenizer.pad_token_id)
    skip = SkipNote("x.jsonl", 3, None, "broken")
    batch = collate([{"sample": s, "skipped": [skip] if i == 1 else []} for i, s in enumerate(samples)])
    inputs = batch["inputs"]
    lengths = [len(s) for s in samples]
    assert inputs["input_ids"].shape == (3, max(lengths))
    assert batch["num_samples"] == 3 and batch["skipped"] == [skip] and len(batch["stats"]) == 3
    for row, n in enumerate(lengths):  # right padding
        assert inputs["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert (inputs["input_ids"][row, n:] == processor.tokenizer.pad_token_id).all()
        assert (inputs["labels"][row, n:] == IGNORE_INDEX).all()
    assert torch.equal(inputs["pixel_values_videos"], samples[0].tensors["pixel_values_videos"])
    assert torch.equal(inputs["pixel_values"], samples[2].tensors["pixel_values"])

    with torch.no_grad():
        together = model(**inputs)
        alone = [model(**as_batch(s)) for s in samples]
    counts = [collate([{"sample": s, "skipped": []}])["num_label_tokens"] for s in samples]
    shifted = sum(int((s.tensors["labels"][1:] != IGNORE_INDEX).sum()) for s in samples)
    assert batch["num_label_tokens"] == sum(counts) == shifted
    weighted = sum(out.loss * n for out, n in zip(alone, counts)) / sum(counts)
    assert torch.isfinite(together.loss)
    assert abs(together.loss.item() - weighted.item()) < 1e-4
    for row, (out, n) in enumerate(zip(alone, lengths)):  # causal attention: pads after a row change nothing
        assert torch.allclose(together.logits[row, :n], out.logits[0], atol=1e-4)


def test_collator_needs_a_pad_token():
    with pytest.raises(VidlabError, match="pad token"):
        Collator(None)


# ---------------------------------------------------------------------------------------------------------------------
# Budgets


def test_max_visual_tokens_shrinks_the_grid(processor, data_dir):
    record = one_record(data_dir, "budget_visual", {"video": "large.mp4", "conversations": VIDEO_QA})
    sampling = 2  # fps: 4 frames
    full = encoded(record, processor, fps=sampling)
    small = encoded(record, processor, fps=sampling, max_visual_tokens=16)
    assert full.stats.visual_tokens_before_pruning > 16
    assert small.stats.visual_tokens_before_pruning <= 16 and small.shrunk is None
    assert small.tensors["video_grid_thw"].tolist() == [[4, 4, 4]]  # 4 frames of 2x2 tokens (28x28 px each)
    assert len(small.stats.frames[0]) == 4
    # Fewer tokens than frames: the video keeps as many evenly spaced frames as it can pay for.
    tiny = encoded(record, processor, fps=sampling, max_visual_tokens=2)
    assert tiny.stats.visual_tokens_before_pruning <= 2 and tiny.stats.frames == [[0.0, 1.5]]
    assert tiny.shrunk.startswith("frames 4->2")
    assert processor.video_processor.size["longest_edge"] == 256 * 28 * 28  # the budget was per call only


def test_image_merge_size_two_keeps_the_token_budget_and_runs(tiny_model, processor, data_dir):
    model = tiny_model[0].eval()
    record = one_record(data_dir, "merge_image", {"image": "big.png", "conversations": IMAGE_QA})
    own = encoded(record, processor)
    merged = encoded(record, processor, image_merge_size=2)
    assert own.tensors["image_merge_sizes"].tolist() == [1] and merged.tensors["image_merge_sizes"].tolist() == [2]
    # The tiny processor allows 64 image tokens: 112x112 pixels in 14x14 blocks, or 224x224 in 28x28 blocks.
    assert own.tensors["image_grid_thw"].tolist() == [[1, 8, 8]] and own.stats.visual_tokens == 64
    assert merged.tensors["image_grid_thw"].tolist() == [[1, 16, 16]] and merged.stats.visual_tokens == 64
    assert int((merged.tensors["input_ids"] == processor.image_token_id).sum()) == 64
    assert processor.image_processor.merge_size == 1  # the caller's processor is not changed
    with torch.no_grad():
        assert torch.isfinite(model(**as_batch(merged)).loss)


def test_long_sample_gets_smaller_then_fewer_frames_and_still_runs(tiny_model, processor, data_dir):
    model = tiny_model[0].eval()
    record = one_record(data_dir, "budget_length", {"video": "large.mp4", "conversations": VIDEO_QA})
    sampling = 4  # fps: 8 frames, 0.0 to 1.75 s
    full = encoded(record, processor, fps=sampling)
    n = len(full)
    per_frame = full.tensors["video_grid_thw"][0, 1:].prod().item() // 4
    assert full.shrunk is None and per_frame > 4

    smaller = encoded(record, processor, n - 20, fps=sampling)
    assert len(smaller) <= n - 20
    assert re.fullmatch(rf"{per_frame}->\d+ tokens/frame", smaller.shrunk)
    assert smaller.stats.frames == full.stats.frames

    text_and_stamps = full.stats.text_tokens
    fewer = encoded(record, processor, text_and_stamps - 10, fps=sampling)
    assert len(fewer) <= text_and_stamps - 10
    assert re.fullmatch(rf"frames 8->\d, {per_frame}->1 tokens/frame", fewer.shrunk)
    kept = fewer.stats.frames[0]
    assert 1 <= len(kept) < 8 and set(kept) <= set(full.stats.frames[0]) and kept[0] == 0.0
    prompt = processor.tokenizer.decode(fewer.tensors["input_ids"])
    assert re.findall(r"Time (\d+\.\d)s:", prompt) == [f"{t:.1f}" for t in kept]

    with torch.no_grad():
        for sample in (smaller, fewer):
            assert torch.isfinite(model(**as_batch(sample)).loss)


def test_text_longer_than_the_budget_is_an_error(processor, data_dir):
    long_text = " ".join(["the video shows a red ball"] * 40)
    conversations = [{"from": "human", "value": long_text}, {"from": "gpt", "value": "yes"}]
    text_only = one_record(data_dir, "over_text", {"conversations": conversations})
    with pytest.raises(SampleError, match=r"over_text\.jsonl:1: over budget: \d+ tokens > model_max_length 50"):
        encoded(text_only, processor, 50)
    with_video = [{"from": "human", "value": "<video>\n" + long_text}, conversations[1]]
    video = one_record(data_dir, "over_video", {"video": "small.mp4", "conversations": with_video})
    with pytest.raises(SampleError, match="over budget.*1 frame per video"):
        encoded(video, processor, 50)


def test_media_settings_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"(?s)fps.*finite.*max_visual_tokens.*image_merge_size"):
        MediaSettings(fps=float("inf"), max_visual_tokens=0, image_merge_size=3)


# ---------------------------------------------------------------------------------------------------------------------
# Records and skipping


def test_bad_records_become_skip_notes(tmp_path, data_dir):
    rows = [
        {"id": "good", "video": str(data_dir / "small.mp4"), "conversations": VIDEO_QA},
        {"id": "gone", "video": "missing.mp4", "conversations": VIDEO_QA},
        '{"id": "torn", "video": ',
        {"id": "quiet", "conversations": [{"from": "human", "value": "hello"}]},
        [1, 2],
        {"conversations": TEXT_QA},
    ]
    path = write_lines(tmp_path / "mixed.jsonl", rows)
    records, skipped = load_records([path])
    assert [(r.id, r.line, r.index) for r in records] == [("good", 1, 0), ("mixed.jsonl:6", 6, 1)]
    assert records[0].source == f"{path}:1" and records[0].data_root == tmp_path
    assert [(s.file, s.line, s.id) for s in skipped] == [(str(path), 2, "gone"), (str(path), 3, None),
                                                        (str(path), 4, "quiet"), (str(path), 5, None)]
    reasons = [s.reason for s in skipped]
    assert reasons[0].startswith(f"video not found: {tmp_path / 'missing.mp4'}")
    assert reasons[1].startswith("not valid JSON")
    assert "no assistant" in reasons[2]
    assert "JSON object" in reasons[3]
    assert not any(str(path) in r for r in reasons)  # the place is in its own fields
    assert skipped[0].to_dict() == {"file": str(path), "line": 2, "id": "gone", "reason": reasons[0], "index": 1,
                                    "kind": "missing"}
    assert [s.kind for s in skipped] == ["missing", "not json", "no answer", "wrong field types"]

    with pytest.raises(SampleError, match=r"mixed\.jsonl:2 \(id gone\): video not found.*strict"):
        load_records([path], strict=True)


def test_data_root_and_json_lists(tmp_path, data_dir):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"video": "small.mp4", "conversations": VIDEO_QA},
                                {"image": "picture.png", "conversations": IMAGE_QA}], indent=1))
    records, skipped = load_records([path], data_root=data_dir)
    assert not skipped and [r.data_root for r in records] == [data_dir, data_dir]
    assert [r.index for r in records] == [0, 1] and records[1].line > records[0].line
    _, skipped = load_records([path])  # relative to the annotation file's folder: not there
    assert [s.reason.split(":")[0] for s in skipped] == ["video not found", "image not found"]


def test_a_json_list_on_one_line_gives_each_record_its_own_position(tmp_path, data_dir):
    # json.dump writes the whole list on one line (as Video-ChatGPT's training json is published).
    path = tmp_path / "videochatgpt_train.json"
    with open(path, "w") as handle:
        json.dump([{"video": "small.mp4", "conversations": VIDEO_QA},
                   {"id": "v_2", "video": "gone.mp4", "conversations": VIDEO_QA},
                   {"video": "small.mp4", "conversations": VIDEO_QA}], handle)
    assert path.read_text().count("\n") == 0
    records, skipped = load_records([path], data_root=data_dir)
    assert [(r.line, r.position.index, r.id) for r in records] == [
        (1, 0, "videochatgpt_train.json:1#1"), (1, 2, "videochatgpt_train.json:1#3")]
    assert records[1].source == f"{path}:1 (record 3)"
    assert [(s.line, s.index, s.id, s.kind) for s in skipped] == [(1, 1, "v_2", "missing")]


def test_missing_annotation_file_is_an_error(tmp_path):
    with pytest.raises(DataFileError, match=r"nope\.jsonl: no such annotation file.*Check the paths"):
        load_records([tmp_path / "nope.jsonl"])


def test_undecodable_media_is_a_sample_error(processor, data_dir):
    record = one_record(data_dir, "broken", {"id": "b", "video": "broken.mp4", "conversations": VIDEO_QA})
    with pytest.raises(SampleError, match=r"broken\.jsonl:1: .*broken\.mp4: not a readable video"):
        encoded(record, processor)


# ---------------------------------------------------------------------------------------------------------------------
# Data set


@pytest.fixture(scope="module")
def dataset_records(data_dir):
    """Six records, the third with a video that cannot be decoded."""
    rows = [{"id": f"r{i}", "video": "small.mp4", "conversations": VIDEO_QA} for i in range(6)]
    rows[1] = {"id": "r1", "conversations": TEXT_QA}
    rows[2] = {"id": "bad", "video": "broken.mp4", "conversations": VIDEO_QA}
    records, skipped = load_records([write_lines(data_dir / "dataset.jsonl", rows)])
    assert not skipped
    return records


def test_dataset_replaces_a_failing_record_with_the_next(processor, dataset_records):
    dataset = TrainDataset(dataset_records, processor, MediaSettings(fps=1))
    assert len(dataset) == 6
    item = dataset[2]
    assert item["record"].id == "r3"
    [note] = item["skipped"]
    assert (note.line, note.id) == (3, "bad") and "not a readable video" in note.reason
    # Same item again: same sample; the known failure is not reported twice by this process.
    again = dataset[2]
    assert again["record"].id == "r3" and again["skipped"] == []
    text_item = dataset[1]
    assert text_item["skipped"] == [] and text_item["record"].id == "r1"
    assert pickle.loads(pickle.dumps(dataset))[0]["record"].id == "r0"

    # Strict: the failure comes back as a message the main process raises (not a worker's traceback).
    strict = TrainDataset(dataset_records, processor, MediaSettings(), strict=True)
    item = strict[2]
    assert item["sample"] is None and "strict mode" in item["fatal"]
    with pytest.raises(SampleError, match=r"dataset\.jsonl:3: .*not a readable video"):
        raise_if_fatal(Collator(0)([strict[0], item]))


def test_dataset_gives_up_when_everything_fails(processor, dataset_records):
    bad = [r for r in dataset_records if r.id == "bad"] * 3
    with pytest.raises(VidlabError, match="data seems broken.*not a readable video"):
        TrainDataset(bad, processor, max_retries=2)[0]
    with pytest.raises(VidlabError, match="no training records"):
        TrainDataset([], processor)


def test_dataset_in_worker_processes(processor, dataset_records):
    dataset = TrainDataset(dataset_records, processor, MediaSettings(fps=1))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2, timeout=120, collate_fn=Collator(processor.tokenizer.pad_token_id)
    )
    batches = list(loader)
    assert [b["num_samples"] for b in batches] == [2, 2, 2]
    ids = [stats for b in batches for stats in b["stats"]]
    assert len(ids) == 6
    assert [(s.line, s.id) for b in batches for s in b["skipped"]] == [(3, "bad")]
    assert all(b["num_label_tokens"] > 0 for b in batches)


# ---------------------------------------------------------------------------------------------------------------------
# One road: training and evaluation encode a record the same way


def test_training_and_evaluation_encode_a_record_into_the_same_tensors(processor, data_dir):
    from vidlab.evaluation.records import annotation_record
    from vidlab.evaluation.run import RunOptions, _with_media
    from vidlab.inputs import encode

    settings = MediaSettings(fps=2, max_visual_tokens=12, image_merge_size=2, compression=False)
    items = [
        {"id": "v", "video": "large.mp4", "start": 0.5, "conversations": VIDEO_QA},
        {"id": "i", "image": "big.png", "conversations": IMAGE_QA},
    ]
    records, _ = load_records([write_lines(data_dir / "one_road.jsonl", items)])
    for record, item in zip(records, items):
        trained = encode_record(record, processor, settings, max_length=16384)
        evaluated = annotation_record(item, record.source, 0, item["id"])
        [(_, media)] = _with_media([evaluated], data_dir, RunOptions(settings=settings, workers=0), processor)
        prompt = encode(evaluated.conversation_for(media), media, processor, settings)
        # The prompt is the conversation up to the last reply, then `<|im_start|>assistant\n`: the same
        # tokens as training's, which go on with the reply.
        n = len(prompt)
        assert torch.equal(trained.tensors["input_ids"][:n], prompt.tensors["input_ids"])
        reply = processor.tokenizer.decode(trained.tensors["input_ids"][n:])
        assert reply.startswith(item["conversations"][-1]["value"])
        vision = [k for k in prompt.tensors if k not in ("input_ids", "attention_mask")]
        assert vision and set(vision) == set(trained.tensors) - {"input_ids", "attention_mask", "labels"}
        for key in vision:
            assert torch.equal(trained.tensors[key], prompt.tensors[key]), key
        assert trained.stats.frames == prompt.stats.frames and trained.stats.visual_tokens == prompt.stats.visual_tokens
    assert trained.tensors["image_merge_sizes"].tolist() == [2]  # the settings reached both roads


GENERATION_TEMPLATE = (  # vidlab's chat template with transformers' {% generation %} markers around each reply
    "{%- macro body(message) -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|image_pad|>\n' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|video_pad|>\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{%- endmacro -%}"
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{- body(message) + '<|im_end|>' -}}{% endgeneration %}"
    "{%- else -%}{{- body(message) + '<|im_end|>' -}}{%- endif -%}{{- '\n' -}}{%- endfor -%}"
)


@pytest.mark.parametrize("reply", ["A red ball moves left.", "\nStarts with a newline."])
def test_label_mask_agrees_with_transformers_assistant_mask_on_a_video_conversation(processor, reply):
    import numpy as np

    frames = np.stack(gradient_frames(4, 56, 56))
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": reply}]},
        {"role": "user", "content": [{"type": "text", "text": "Fast?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
    ]
    metadata = {"fps": 1.0, "total_num_frames": 4, "frames_indices": [0, 1, 2, 3], "duration": 4.0}
    theirs = processor.apply_chat_template(
        messages, chat_template=GENERATION_TEMPLATE, tokenize=True, return_dict=True, return_tensors="pt",
        return_assistant_tokens_mask=True, processor_kwargs={"video_metadata": [metadata], "do_sample_frames": False},
    )
    ids = theirs["input_ids"][0]
    assert int((ids == processor.video_token_id).sum()) > 0
    assert torch.equal(assistant_label_mask(ids, processor.tokenizer), theirs["assistant_masks"][0].bool())
