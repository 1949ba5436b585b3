"""Video compressors: the setting's arithmetic, the prompt layout, the modules, the model subclass
(chunked encoder, forward, generation, caches) and its save/load paths, on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import gradient_frames

import vidlab
from vidlab.errors import ModelLoadError, SettingsError
from vidlab.inputs import build_inputs, collate, encode, load_media
from vidlab.inputs.compressed import question_ids, video_segments
from vidlab.media.writer import write_video
from vidlab.models.compressors import CompressedVideoLlama3ForConditionalGeneration
from vidlab.models.load import load_model, load_processor, load_weights, model_compressor
from vidlab.settings import GenerationOptions, MediaSettings, VideoCompressor, build, group_bounds

KINDS = {
    "llamavid": VideoCompressor(kind="llamavid", heads=4, content_tokens=4),
    "group_resampler": VideoCompressor(kind="group_resampler", heads=4, groups=3, latents=2, layers=2),
    "pool": VideoCompressor(kind="pool", pool_size=1),
}
QUESTION = "What colour is the shape?"


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    """7 s at 2 fps, 56x56, every frame different."""
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", gradient_frames(14, 56, 56), fps=2)


@pytest.fixture(scope="module")
def compressed(tiny_model_dir):
    """kind -> (model, processor) with a fresh compressor of that kind (weights seeded)."""
    built = {}
    for kind, spec in KINDS.items():
        torch.manual_seed(0)
        model = load_weights(str(tiny_model_dir), spec).eval()
        built[kind] = (model, load_processor(str(tiny_model_dir), model_compressor(model)))
    return built


def _conversation(clip: Path, question: str = QUESTION, answer: str | None = None):
    turns = [{"from": "human", "value": f"<video>\n{question}"}]
    if answer is not None:
        turns.append({"from": "gpt", "value": answer})
    return vidlab.parse_record({"video": [str(clip)], "conversations": turns}, where="test")


def _sample(processor, clip, settings=MediaSettings(), question=QUESTION, answer=None, **kwargs):
    conversation = _conversation(clip, question, answer)
    media = load_media(conversation, settings=settings)
    return encode(conversation, media, processor, settings, labels=answer is not None, **kwargs)


# ---------------------------------------------------------------- the setting


def test_group_bounds_cover_every_frame_once_in_order():
    for frames in (1, 5, 16, 17, 100, 3600):
        bounds = group_bounds(frames, 16)
        assert bounds[0][0] == 0 and bounds[-1][1] == frames
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [stop - start for start, stop in bounds]
        assert len(bounds) == min(16, frames) and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_visual_tokens_per_kind():
    assert VideoCompressor(kind="llamavid", content_tokens=4).visual_tokens(3600) == 3600 * 5
    assert VideoCompressor(kind="pool", pool_size=3).visual_tokens(10) == 90
    resampler = VideoCompressor(kind="group_resampler", groups=16, latents=32)
    assert resampler.visual_tokens(3600) == resampler.visual_tokens(16) == 512
    assert resampler.visual_tokens(5) == 5 * 32
    assert resampler.max_frames_within(100) is None
    assert VideoCompressor(kind="llamavid").max_frames_within(7200) == 3600


def test_content_tokens_must_be_square():
    with pytest.raises(SettingsError, match="content_tokens 3 is not a square number"):
        build(VideoCompressor, {"kind": "llamavid", "content_tokens": 3})


# ---------------------------------------------------------------- the prompt


@pytest.mark.parametrize("kind", list(KINDS))
def test_prompt_announces_each_frame_or_group_and_its_tokens(compressed, clip_path, kind):
    model, processor = compressed[kind]
    spec = KINDS[kind]
    sample = _sample(processor, clip_path, MediaSettings(fps=2))
    stamps = sample.stats.frames[0]
    assert len(stamps) == 14
    ids = sample.tensors["input_ids"]
    video_id = processor.video_token_id
    assert int((ids == video_id).sum()) == spec.visual_tokens(14) == sample.stats.visual_tokens
    assert "video_compression_mask" not in sample.tensors  # DiffFP does not apply under a compressor
    assert sample.stats.visual_tokens_before_pruning == int(sample.tensors["video_grid_thw"].prod() // 4)
    text = processor.tokenizer.decode(ids)
    expected = ",".join(label + "<|video_pad|>" * count for label, count in video_segments(spec, stamps))
    assert expected in text
    if kind == "group_resampler":
        assert "Time 0.0-1.5s:" in text and "Time 4.5-6.5s:" in text  # 14 frames at 2 fps in 3 groups: 4, 5, 5
        assert text.count("Time ") == 3
    else:
        assert text.count("Time ") == 14 and "Time 6.5s:" in text


def test_llamavid_sample_carries_its_question(compressed, clip_path):
    _, processor = compressed["llamavid"]
    sample = _sample(processor, clip_path, question="Which way does it move?")
    expected = processor.tokenizer("Which way does it move?", add_special_tokens=False)["input_ids"]
    assert sample.tensors["video_query_ids"].tolist() == expected
    assert sample.tensors["video_query_lengths"].tolist() == [len(expected)]
    # pool and the resampler do not read the question
    assert "video_query_ids" not in _sample(compressed["pool"][1], clip_path).tensors


def test_question_of_each_video_is_its_own_turns_text(clip_path):
    from vidlab.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(512)
    conversation = vidlab.parse_messages([
        {"role": "user", "content": [{"type": "video", "video": str(clip_path)}, {"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "video", "video": str(clip_path)}]},
    ])
    assert question_ids(conversation, tokenizer) == [tokenizer("first", add_special_tokens=False)["input_ids"],
                                                      tokenizer("second", add_special_tokens=False)["input_ids"]]


def test_visual_budget_keeps_fewer_frames_under_a_compressor(compressed, clip_path):
    _, processor = compressed["llamavid"]  # 5 tokens per frame
    sample = _sample(processor, clip_path, MediaSettings(fps=2, max_visual_tokens=30))
    assert len(sample.stats.frames[0]) == 6 and sample.stats.visual_tokens == 30
    full = _sample(processor, clip_path, MediaSettings(fps=2))
    shrunk = _sample(processor, clip_path, MediaSettings(fps=2), max_length=len(full) - 30)
    assert len(shrunk) <= len(full) - 30 and shrunk.shrunk.startswith("frames 14->")
    kept = shrunk.stats.frames[0]
    assert kept[0] == 0.0 and kept == sorted(kept)  # evenly spaced, true times


def test_encoder_frame_tokens_sizes_the_encoders_frames(tiny_model_dir, clip_path):
    spec = VideoCompressor(kind="pool", pool_size=1, encoder_frame_tokens=1)
    processor = load_processor(str(tiny_model_dir), spec)
    sample = _sample(processor, clip_path, MediaSettings(fps=2))
    assert sample.tensors["video_grid_thw"][0].tolist() == [14, 2, 2]  # one 28x28 block per frame
    assert _sample(load_processor(str(tiny_model_dir), KINDS["pool"]), clip_path,
                   MediaSettings(fps=2)).tensors["video_grid_thw"][0].tolist() == [14, 4, 4]


# ---------------------------------------------------------------- the model


def test_chunked_encoder_gives_the_native_features(compressed, tiny_model, clip_path):
    model, processor = compressed["pool"]
    tensors = _sample(processor, clip_path).tensors
    args = (tensors["pixel_values_videos"], tensors["video_grid_thw"], tensors["video_merge_sizes"])
    native_model, _ = tiny_model
    with torch.no_grad():
        native = native_model.model.get_video_features(*args).pooler_output[0]
        for chunk in (1, 3, 64):
            model.config.video_compressor = {**model.config.video_compressor, "encoder_chunk_frames": chunk}
            features = model.model.get_video_features(*args)
            torch.testing.assert_close(features.pooler_output[0], native, rtol=1e-5, atol=1e-5)
            assert features.video_grid_thw.tolist() == tensors["video_grid_thw"].tolist()


def test_pool_is_the_frames_average(compressed, clip_path):
    model, processor = compressed["pool"]
    tensors = _sample(processor, clip_path, MediaSettings(fps=2)).tensors
    with torch.no_grad():
        features = model.model.get_video_features(tensors["pixel_values_videos"], tensors["video_grid_thw"],
                                                  tensors["video_merge_sizes"])
        pooled = model.model.compress_videos(features).pooler_output[0]
    per_frame = features.pooler_output[0].reshape(14, -1, pooled.shape[-1]).mean(1)
    torch.testing.assert_close(pooled, per_frame)


def test_llamavid_context_follows_the_question_content_does_not(compressed, clip_path):
    model, processor = compressed["llamavid"]
    compressor = model.model.video_compressor
    with torch.no_grad():  # as trained weights do: the untrained ones attend almost evenly whatever the question
        compressor.query[1].weight.mul_(50)
        compressor.key.weight.mul_(50)
    outputs = {}
    for question in ("What colour is the shape?", "How many frames are there?"):
        tensors = _sample(processor, clip_path, MediaSettings(fps=2), question=question).tensors
        with torch.no_grad():
            features = model.model.get_video_features(tensors["pixel_values_videos"], tensors["video_grid_thw"],
                                                      tensors["video_merge_sizes"])
            tokens = model.model.compress_videos(features, video_query_ids=tensors["video_query_ids"],
                                                 video_query_lengths=tensors["video_query_lengths"])
        outputs[question] = tokens.pooler_output[0].reshape(14, 5, -1)
    first, second = outputs.values()
    torch.testing.assert_close(first[:, 1:], second[:, 1:])  # content: the frame pooled 2x2
    assert (first[:, 0] - second[:, 0]).abs().max() > 1e-4  # context: attended with the question
    with pytest.raises(ValueError, match="needs the question"):
        model.model.compress_videos(features)


def test_resampler_position_code_orders_frames_within_a_group():
    from vidlab.models.compressors import GroupResamplerCompressor

    torch.manual_seed(0)
    frames = torch.randn(4, 2, 2, 16)
    swapped = frames[[1, 0, 2, 3]]  # two frames of the first group (frames 0-1) swapped
    for code, same in ((False, True), (True, False)):
        module = GroupResamplerCompressor(16, groups=2, latents=3, layers=1, heads=2, position_code=code)
        module.init_weights(torch.nn.init)
        a = module.compress(frames, None).reshape(2, 3, 16)
        b = module.compress(swapped, None).reshape(2, 3, 16)
        torch.testing.assert_close(a[1], b[1])  # the second group did not change
        assert torch.allclose(a[0], b[0], atol=1e-5) == same


@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_and_generation_with_caches(compressed, clip_path, kind):
    from vidlab.generate import generate
    from vidlab.media.cache import ClipCache
    from vidlab.vision_cache import VisionCache

    model, processor = compressed[kind]
    train = _sample(processor, clip_path, answer="red")
    batch = collate([train, train], processor.tokenizer.pad_token_id)
    inputs = dict(batch.tensors)
    inputs.pop("labels")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape

    conversation = _conversation(clip_path)
    clip = ClipCache().load(clip_path, MediaSettings().sampling())  # a clip with a key: cacheable
    prompt = build_inputs(conversation, [clip], processor)
    short = GenerationOptions(max_new_tokens=6)
    plain = generate(model, processor, prompt, short)
    cache = VisionCache()
    first = generate(model, processor, prompt, short, vision_cache=cache)
    again = generate(model, processor, prompt, short, vision_cache=cache)
    assert plain.token_ids == first.token_ids == again.token_ids
    assert (cache.misses, cache.hits) == (1, 1)


def test_chat_follow_up_reuses_the_videos_tokens(compressed, clip_path):
    chat = vidlab.Chat(compressed["llamavid"], settings=MediaSettings(fps=2),
                       generation=GenerationOptions(max_new_tokens=6))
    chat.ask("What colour is the shape?", video=clip_path)
    misses = chat.vision_cache.misses
    chat.ask("And then?")
    assert chat.vision_cache.misses == misses  # no vision encoder run for the follow-up
    assert chat.last_reply.visual_tokens == 14 * 5  # the first question's context tokens are kept
    chat.reset()
    chat.ask("Which way does it move?")  # a new question with the video: new context tokens, cached features
    assert chat.vision_cache.misses == misses and chat.vision_cache.hits >= 1


# ---------------------------------------------------------------- saving and loading


@pytest.fixture(scope="module")
def saved(compressed, tmp_path_factory):
    model, processor = compressed["group_resampler"]
    folder = tmp_path_factory.mktemp("saved") / "resampler"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_saved_folder_says_what_it_is(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "vidlab_video_llama_3"
    assert config["video_compressor"]["kind"] == "group_resampler" and config["video_compressor"]["latents"] == 2
    assert config["auto_map"]["AutoModelForImageTextToText"].startswith("vidlab_compressor.")
    assert "from vidlab.models.compressors.model import" in (saved / "vidlab_compressor.py").read_text()
    assert json.loads((saved / "processor_config.json").read_text())["processor_class"] == "VideoLlama3Processor"
    info = vidlab.models.render_model_info(vidlab.models.model_info(saved))
    assert "compressor  group_resampler (groups 3, latents 2, layers 2" in info


def test_load_model_rebuilds_the_compressor(saved, compressed, clip_path):
    model, processor = load_model(saved, device="cpu")
    assert isinstance(model, CompressedVideoLlama3ForConditionalGeneration)
    assert processor.video_compressor == KINDS["group_resampler"]
    inputs = collate([_sample(processor, clip_path)], processor.tokenizer.pad_token_id).tensors
    original, _ = compressed["group_resampler"]
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, original(**inputs).logits)


def test_auto_classes_load_it_once_vidlab_is_imported(saved):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(saved)
    assert isinstance(model, CompressedVideoLlama3ForConditionalGeneration)


def _plain_load(folder: Path, hide_vidlab: bool, trust: bool) -> str:
    script = (
        "import sys\n"
        + ("sys.path[:] = [p for p in sys.path if not p.rstrip('/').endswith('src')]\n" if hide_vidlab else "")
        + "from transformers import AutoModelForImageTextToText\n"
        f"try:\n    AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code={trust})\n"
        "    print('LOADED')\nexcept Exception as err:\n    print('ERROR', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    return done.stdout


def test_plain_transformers_load_says_what_it_needs(saved):
    assert "pass the argument `trust_remote_code=True`" in _plain_load(saved, hide_vidlab=False, trust=False)
    missing = _plain_load(saved, hide_vidlab=True, trust=True)
    assert "requires the following packages that were not found in your environment: vidlab" in missing
    assert "LOADED" in _plain_load(saved, hide_vidlab=False, trust=True)


def test_asking_for_another_compressor_than_the_models_is_refused(saved):
    with pytest.raises(ModelLoadError, match="already has a group_resampler video compressor"):
        load_weights(str(saved), KINDS["llamavid"])


def test_convert_says_a_compressed_folder_is_already_native(saved, tmp_path):
    from vidlab.errors import CheckpointConversionError

    with pytest.raises(
        CheckpointConversionError, match="already a native transformers VideoLLaMA3 checkpoint .model_type "
                                              "vidlab_video_llama_3"
    ):
        vidlab.convert_checkpoint(saved, tmp_path / "out")
