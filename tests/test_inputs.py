"""Conversation + media -> processor inputs: time stamps, token counts, DiffFP, images, text."""

import re

import numpy as np
import pytest
import torch
from conftest import DECODERS, gradient_frames
from PIL import Image
from transformers import AutoProcessor

from vidlab.conversation import parse_record
from vidlab.inputs import build_inputs, load_media
from vidlab.media.writer import write_video
from vidlab.settings import MediaSettings


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return AutoProcessor.from_pretrained(tiny_model_dir)


def video_record(path, question="What happens?"):
    return parse_record({"video": [str(path)], "conversations": [{"from": "human", "value": f"<video>\n{question}"}]})


def prompt_of(inputs, processor) -> str:
    return processor.tokenizer.decode(inputs.tensors["input_ids"][0])


def test_one_time_stamp_per_frame_in_order_and_token_counts_agree(processor, sample_video):
    conv = video_record(sample_video)
    media = load_media(conv, settings=MediaSettings(fps=1))
    inputs = build_inputs(conv, media, processor)
    prompt = prompt_of(inputs, processor)
    stamps = re.findall(r"Time (\d+\.\d)s:", prompt)
    assert stamps == [f"{t:.1f}" for t in media[0].stamps] == ["0.0", "1.0", "2.0", "3.0"]
    video_tokens = int((inputs.tensors["input_ids"] == processor.video_token_id).sum())
    assert video_tokens == inputs.stats[0].visual_tokens == int(inputs.tensors["video_compression_mask"].sum())
    assert inputs.stats[0].text_tokens == inputs.tensors["input_ids"].shape[1] - video_tokens
    assert inputs.stats[0].frames == [[0.0, 1.0, 2.0, 3.0]]
    # The original VideoLLaMA3 layout: frames joined by commas, then a newline, then the question.
    assert prompt.startswith("<|im_start|>user\nTime 0.0s:<|video_pad|>")
    assert re.search(r"<\|video_pad\|>,Time 1\.0s:<\|video_pad\|>", prompt)
    assert prompt.endswith("<|video_pad|>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n")


def test_variable_rate_times_reach_the_prompt(processor, tmp_path):
    times = [0.0, 0.3, 1.3, 2.4, 2.6]
    path = write_video(tmp_path / "vfr.mp4", gradient_frames(len(times)), fps=10, times=times)
    conv = video_record(path)
    media = load_media(conv, settings=MediaSettings(fps=1, frame_rule="on_screen"))
    inputs = build_inputs(conv, media, processor)
    # On screen at 0, 1, 2 s: the frames shown at 0.0, 0.3 and 1.3 s, announced at their true times.
    assert re.findall(r"Time (\d+\.\d)s:", prompt_of(inputs, processor)) == ["0.0", "0.3", "1.3"]
    # VideoLLaMA3's rule: the video ends at 2.7 s, so 2 ticks (0, 1 s): the last frames before 1 and 2 s.
    media = load_media(conv, settings=MediaSettings(fps=1))
    assert [int(round(t * 10)) for t in media[0].timestamps] == [3, 13]
    assert re.findall(r"Time (\d+\.\d)s:", prompt_of(build_inputs(conv, media, processor), processor)) == [
        "0.0", "1.0"]


def test_clip_stamps(processor, sample_video):
    conv = parse_record(
        {"video": str(sample_video), "start": 1.0, "end": 3.0,
         "conversations": [{"from": "human", "value": "<video>\nWhat?"}]}
    )
    # VideoLLaMA3 announces times in the video; the on_screen rule counts from the clip start.
    inputs = build_inputs(conv, load_media(conv), processor)
    assert re.findall(r"Time (\d+\.\d)s:", prompt_of(inputs, processor)) == ["1.0", "2.0"]
    inputs = build_inputs(conv, load_media(conv, settings=MediaSettings(frame_rule="on_screen")), processor)
    assert re.findall(r"Time (\d+\.\d)s:", prompt_of(inputs, processor)) == ["0.0", "1.0"]


def test_difffp_prunes_a_static_video_and_can_be_switched_off(processor, tmp_path):
    # Frame folders (lossless PNG): the DiffFP threshold is far below what a lossy codec changes.
    folders = {}
    for name, moving in [("static", False), ("moving", True)]:
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i, frame in enumerate(gradient_frames(8, moving=moving)):
            Image.fromarray(frame).save(folders[name] / f"{i}.png")
    static = folders["static"]
    stats = {}
    for name, path in folders.items():
        conv = video_record(path)
        stats[name] = build_inputs(conv, load_media(conv, settings=MediaSettings(folder_fps=2)), processor).stats[0]
    assert stats["static"].visual_tokens_before_pruning == stats["moving"].visual_tokens_before_pruning
    per_frame = stats["static"].visual_tokens_before_pruning // 4
    # A static video keeps its first frame whole and one token for each later frame.
    assert stats["static"].visual_tokens == per_frame + 3
    assert stats["moving"].visual_tokens == stats["moving"].visual_tokens_before_pruning
    conv = video_record(static)
    unpruned = build_inputs(conv, load_media(conv, settings=MediaSettings(folder_fps=2)), processor,
                            MediaSettings(compression=False))
    assert unpruned.stats[0].visual_tokens == unpruned.stats[0].visual_tokens_before_pruning
    assert int((unpruned.tensors["input_ids"] == processor.video_token_id).sum()) == unpruned.stats[0].visual_tokens


def test_images_single_and_several(processor, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(56, 56), (84, 42)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(paths[-1])
    conv = parse_record(
        {"image": [str(p) for p in paths], "conversations": [{"from": "human", "value": "<image>\n<image>\nSame?"}]}
    )
    inputs = build_inputs(conv, load_media(conv), processor)
    grids = inputs.tensors["image_grid_thw"]
    assert grids.tolist() == [[1, 4, 4], [1, 3, 6]]  # 56x56 and 42x84 pixels in 14-pixel patches, merge 1
    image_tokens = int((inputs.tensors["input_ids"] == processor.image_token_id).sum())
    assert image_tokens == inputs.stats[0].visual_tokens == 16 + 18
    assert inputs.stats[0].visual_tokens_before_pruning == inputs.stats[0].visual_tokens
    assert inputs.stats[0].frames == []


def test_text_only(processor):
    conv = parse_record({"conversations": [{"from": "human", "value": "Hello there"}]})
    inputs = build_inputs(conv, [], processor)
    assert inputs.stats[0].visual_tokens == 0
    assert prompt_of(inputs, processor) == "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    assert inputs.stats[0].text_tokens == inputs.tensors["input_ids"].shape[1]


def test_relative_paths_resolve_against_the_data_root(processor, sample_video):
    conv = video_record(sample_video.name)
    media = load_media(conv, data_root=sample_video.parent)
    assert media[0].path == str(sample_video)


def test_a_video_three_pixels_high_changes_no_other_video(processor, tmp_path, sample_video):
    thin = tmp_path / "thin"  # frames 3 pixels high: (frames, 3, 96, 3) looks channels-first to a guess
    thin.mkdir()
    for i in range(8):
        Image.fromarray(np.full((3, 96, 3), 20 * i, np.uint8)).save(thin / f"{i}.png")
    normal = video_record(sample_video)
    together = parse_record({"video": [str(thin), str(sample_video)],
                             "conversations": [{"from": "human", "value": "<video>\n<video>\nSame?"}]})
    alone = build_inputs(normal, load_media(normal), processor)
    both = build_inputs(together, load_media(together), processor)
    grids = both.tensors["video_grid_thw"].tolist()
    assert grids[1] == alone.tensors["video_grid_thw"].tolist()[0]
    assert grids[0][1] < grids[0][2]  # the thin video stays wide, not tall
    patches = int(torch.tensor(grids[0]).prod())
    assert torch.equal(both.tensors["pixel_values_videos"][patches:], alone.tensors["pixel_values_videos"])


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_scaled_while_decoding_give_the_same_tokens_and_nearly_the_same_pixels(processor, tmp_path, decoder):
    settings = MediaSettings(decoder=decoder)

    rows, columns = np.mgrid[0:360, 0:640]
    frames = [np.stack([(columns + 7 * i) % 256, rows % 256, (columns + rows) // 4 % 256], -1).astype(np.uint8)
              for i in range(12)]
    path = write_video(tmp_path / "wide.mp4", frames, fps=4, encoder_options={"preset": "ultrafast"})
    conv = video_record(path)
    full = build_inputs(conv, load_media(conv, settings=settings), processor)
    media = load_media(conv, processor, settings)  # decoded straight to the processor's size
    assert media[0].frames.shape[1:3] == (168, 336)  # the tiny processor: 3 frames share 256 tokens of 28x28
    assert media[0].decoder == decoder
    small = build_inputs(conv, media, processor)
    assert torch.equal(small.tensors["input_ids"], full.tensors["input_ids"])  # same grid, same tokens
    for key in ("video_grid_thw", "video_compression_mask"):
        assert torch.equal(small.tensors[key], full.tensors[key]), key
    difference = (small.tensors["pixel_values_videos"] - full.tensors["pixel_values_videos"]).abs()
    # Two resamplings of the same picture (FFmpeg's bicubic while decoding, or torchcodec's antialiased bilinear;
    # the processor's antialiased bicubic at full size). In normalised units (one grey level is about 0.015) they
    # differ by about one grey level on average here; on pure noise, the worst case, by about nine.
    assert difference.mean() < 0.03
