"""LLaMA-VID's long-video (movie) path against the original's own code, and the subtitle reader it shares.

tests/data/seeds/llama_vid/movie.json (tools/seeds/record_llama_vid.py --only-movie) holds what the original
did with awkward subtitle files: its SRT reader (scripts/extra_tool/extract_movienet_features.py), its
`load_video_input` (the same function in extract_video_features_subtitles.py) at fixed frame times, and the
prompt and token ids of llamavid/serve/run_llamavid_movie.py's `run_inference` (run, its model call captured)
with the tiny tokenizer; movie.safetensors the logits of its long-video path (features as its extractor saves
them, the basic case's prompt). Where vidlab differs on purpose (docs/models.md), the recording has a twin
file written as vidlab reads the awkward one, and the original's outcome on the twin is what vidlab must give.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vidlab.conversation import parse_messages, parse_record
from vidlab.errors import ConversationError, SampleError, VidlabError
from vidlab.inputs import build_inputs, load_media
from vidlab.media import VideoClip
from vidlab.media.subtitles import Cue, SubtitleError, read_subtitles
from vidlab.models.llama_vid.convert import convert_llama_vid
from vidlab.models.llama_vid.movie import frame_lines, movie_text
from vidlab.models.load import load_model
from vidlab.settings import MediaSettings

DATA = Path(__file__).parent / "data" / "seeds" / "llama_vid"
MOVIE = json.loads((DATA / "movie.json").read_text(encoding="utf-8"))
TENSORS = load_file(DATA / "movie.safetensors")
FRAMES = load_file(DATA / "recorded.safetensors")["frames"]  # 3 fixed frames (48 x 72)
PICTURE = -200  # the original's IMAGE_TOKEN_INDEX


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    out = convert_llama_vid(DATA / "checkpoint", tmp_path_factory.mktemp("llama_vid") / "model",
                            bert=DATA / "bert-base-uncased")
    return load_model(out, dtype="fp32", device="cpu")


def _clip(indices: list[int], fps: float, duration: float, cues: list[Cue] | None, frames=None) -> VideoClip:
    if frames is None:
        frames = np.zeros((len(indices), 16, 16, 3), dtype=np.uint8)
    times = [i / fps for i in indices]
    return VideoClip(path="movie.mp4", frames=frames, timestamps=times, stamps=times, frame_indices=indices,
                     source_fps=fps, duration=duration, end=duration, subtitles=cues)


def _question():
    return parse_messages([{"role": "user", "content": [{"type": "video", "video": "movie.mp4"},
                                                        {"type": "text", "text": MOVIE["question"]}]}])


def _original_ids(ids: list[int], token: int) -> list[int]:
    return [PICTURE if i == token else i for i in ids]


def _expected(case: dict) -> dict:
    return case.get("original_on_twin") or case["original"]


@pytest.mark.parametrize("name", list(MOVIE["cases"]))
def test_subtitles_go_by_their_frames_as_the_original_puts_them(tmp_path, name):
    case = MOVIE["cases"][name]
    path = tmp_path / case["file"]
    path.write_bytes(case["text"].encode("utf-8"))
    times = [i / case["fps"] for i in case["indices"]]
    expected = _expected(case)
    assert times == expected["frame_time"]
    lines = frame_lines(read_subtitles(path), times, 0.0, case["duration"])
    assert movie_text(lines, "<image>") == \
        "Below is a movie. Memorize the content and answer my question after watching this movie." \
        + expected["video_input"] + "Now the movie end."


@pytest.mark.parametrize("name", list(MOVIE["cases"]))
def test_movie_prompt_ids_and_qformer_text_match_the_original(loaded, tmp_path, name):
    _, processor = loaded
    case = MOVIE["cases"][name]
    path = tmp_path / case["file"]
    path.write_bytes(case["text"].encode("utf-8"))
    clip = _clip(case["indices"], case["fps"], case["duration"], read_subtitles(path))
    batch = build_inputs(_question(), [clip], processor)
    expected = _expected(case)
    ids = batch.tensors["input_ids"][0].tolist()
    assert _original_ids(ids, processor.image_token_id) == expected["input_ids"]
    # one <image> per frame in vidlab's text, video_token (2) of them in the original's
    assert batch.texts[0].replace("<image>", "<image><image>") == expected["prompt"]
    assert expected["prompts"] == [[MOVIE["question"]]]  # the Q-Former reads the question
    qformer = processor.qformer_tokenizer.decode(batch.tensors["qformer_input_ids"], skip_special_tokens=True)
    assert qformer == MOVIE["question"].lower()
    assert batch.tensors["movie_pictures"].tolist() == [True]


def test_the_differences_from_the_original_are_the_documented_ones():
    cases = MOVIE["cases"]
    assert cases["vtt_styling"]["original"] == {"error": "ValueError"}  # its reader takes SRT only
    assert "<i>Hello</i>" in cases["srt_tags"]["original"]["video_input"]  # it keeps SRT markup
    # a cue at 0 s and one past the end: it puts both on the last frame
    assert cases["past_end"]["original"]["video_input"].endswith("at zero after the last frame past the end")
    assert cases["past_end"]["original_on_twin"]["video_input"].endswith("after the last frame")


def test_movie_logits_match_the_original_long_video_path(loaded, tmp_path):
    """Its long-video path reads saved features (class token cut off, float16); vidlab reads the frames so."""
    model, processor = loaded
    case = MOVIE["cases"]["basic"]
    (tmp_path / case["file"]).write_bytes(case["text"].encode("utf-8"))
    clip = _clip([0, 25, 50], 25.0, 5.0, read_subtitles(tmp_path / case["file"]), frames=FRAMES.numpy())
    batch = build_inputs(_question(), [clip], processor)
    logits_case = MOVIE["logits_case"]
    assert _original_ids(batch.tensors["input_ids"][0].tolist(), processor.image_token_id) == \
        logits_case["input_ids"]
    with torch.no_grad():
        logits = model(**batch.tensors).logits[0]
        short = model(**{**batch.tensors, "movie_pictures": torch.tensor([False])}).logits[0]
    expected = TENSORS["movie/logits"]
    scale = expected.abs().max()
    assert float((logits - expected).abs().max() / scale) < 1e-5
    assert float((short - expected).abs().max() / scale) > 1e-4  # the Q-Former reading the class token differs


def test_a_record_and_chat_messages_bring_subtitles_with_their_video(tmp_path):
    (tmp_path / "movie.srt").write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n")
    conversation = parse_record({"video": "movie.mp4", "subtitles": "movie.srt",
                                 "conversations": [{"from": "human", "value": "<video>\nWho?"}]}, "data.jsonl:3")
    assert conversation.media[0].subtitles == "movie.srt"
    with pytest.raises(ConversationError, match=r'data.jsonl:3: "subtitles" names 2 file\(s\) for 1 video'):
        parse_record({"video": "movie.mp4", "subtitles": ["a.srt", "b.srt"],
                      "conversations": [{"from": "human", "value": "<video>\nWho?"}]}, "data.jsonl:3")
    with pytest.raises(ConversationError, match="data.jsonl:4.*must be the path of an .srt or .vtt"):
        parse_messages([{"role": "user", "content": [{"type": "video", "video": "m.mp4", "subtitles": "m.txt"}]}],
                       "data.jsonl:4")


def test_load_media_reads_the_subtitles_beside_the_decoded_clip(tmp_path):
    media = Path(__file__).parent / "data" / "fidelity" / "media" / "cfr25.mp4"
    (tmp_path / "movie.srt").write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n")
    conversation = parse_record({"video": str(media), "subtitles": "movie.srt",
                                 "conversations": [{"from": "human", "value": "<video>\nWho?"}]})
    clip, = load_media(conversation, data_root=tmp_path)
    assert clip.subtitles == [Cue(0.5, 1.5, "Hello", ("Hello",))]


def test_a_family_without_a_movie_prompt_refuses_subtitles():
    from vidlab.inputs import encode

    clip = _clip([0, 25], 25.0, 2.0, [Cue(0.0, 1.0, "Hi", ("Hi",))])
    with pytest.raises(SampleError, match="only LLaMA-VID models put subtitles"):
        encode(_question(), [clip], processor=object())


@pytest.mark.parametrize("text, message", [
    (b"1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:0x,000 --> 00:00:03,000\nbad\n",
     r"bad.srt:6: cannot read the cue times in '00:00:0x,000 --> 00:00:03,000'. Write them as"),
    (b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n", r"bad.srt:3: not UTF-8 text .*iconv -f latin1"),
    (b"just some words\nand more\n", r"bad.srt: no subtitle cue in the file"),
    (b"1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03.000 - 00:00:04.000\nlost\n",
     r"bad.srt:6: '00:00:03.000 - 00:00:04.000' looks like cue times without the `-->`"),
])
def test_a_garbled_subtitle_file_is_named_with_its_line_and_the_fix(tmp_path, text, message):
    (tmp_path / "bad.srt").write_bytes(text)
    with pytest.raises(SubtitleError, match=message):
        read_subtitles(tmp_path / "bad.srt")


def test_a_missing_subtitle_file_is_named(tmp_path):
    with pytest.raises(SubtitleError, match=r"nope.vtt: cannot read the subtitle file .*Check the path"):
        read_subtitles(tmp_path / "nope.vtt")


def test_the_reader_takes_vtt_utf16_and_a_byte_order_mark(tmp_path):
    vtt = ("WEBVTT\n\n00:01.000 --> 00:02.500 line:0\n<v Ann>Hi</v> <00:00:01.500>there\n\n"
           "1\n00:00:03.000 --> 00:00:04.000\n1984\n")
    (tmp_path / "a.vtt").write_text(vtt, encoding="utf-16")
    (tmp_path / "b.vtt").write_text(vtt, encoding="utf-8-sig")
    expected = [Cue(1.0, 2.5, "Hi there", ("Hi there",)), Cue(3.0, 4.0, "1984", ("1984",))]
    assert read_subtitles(tmp_path / "a.vtt") == expected == read_subtitles(tmp_path / "b.vtt")


# --- each family's own frame rule is the default of chat, serve and eval (an option still wins) ---------------

@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    from typer.testing import CliRunner

    from vidlab.cli import app

    folders = {}
    for family in ("tinyllava-video", "llama-vid"):
        folders[family] = tmp_path_factory.mktemp(family) / "tiny"
        built = CliRunner().invoke(app, ["model", "tiny", str(folders[family]), "--family", family])
        assert built.exit_code == 0, built.output
    return folders


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from vidlab.data.synthetic import Scene, write_scene

    return write_scene(tmp_path_factory.mktemp("clip") / "clip.mp4", Scene(seconds=3))


def test_a_family_folder_names_its_frame_rule_and_options_override_it(tiny_folders, tmp_path):
    from vidlab.cli_common import MediaOptions
    from vidlab.models.frame_rules import family_frame_rule, family_media_settings

    assert family_frame_rule(tiny_folders["llama-vid"]) == {"frame_rule": "stride"}
    assert family_frame_rule(tiny_folders["tinyllava-video"]) == {"frame_rule": "uniform", "num_frames": 16}
    (tmp_path / "config.json").write_text('{"model_type": "video_llama_3"}')
    assert family_frame_rule(tmp_path) == {} == family_frame_rule("DAMO-NLP-SG/VideoLLaMA3-2B")
    tiny = tiny_folders["tinyllava-video"]
    assert MediaOptions({}).settings(model=tiny).num_frames == 16
    one_fps = MediaOptions({"max_frames": 16}).settings(model=tiny)  # its 1 fps models: the count is the user's
    assert (one_fps.frame_rule, one_fps.num_frames, one_fps.max_frames) == ("uniform", None, 16)
    other = MediaOptions({"frame_rule": "videollama3"}).settings(model=tiny)
    assert (other.frame_rule, other.num_frames) == ("videollama3", None)
    assert family_media_settings(tiny_folders["llama-vid"], fps=2.0).model_dump() == \
        MediaSettings(frame_rule="stride", fps=2.0).model_dump()


def test_chat_takes_the_family_frame_rule_unless_told(tiny_folders, scene):
    from typer.testing import CliRunner

    from vidlab.chat import Chat
    from vidlab.cli import app

    def frames(*options: str) -> int:
        result = CliRunner().invoke(app, ["chat", "--model", str(tiny_folders["tinyllava-video"]), "--video",
                                          str(scene), "--max-new-tokens", "2", "--device", "cpu", "--json",
                                          *options, "What happens?"])
        assert result.exit_code == 0, result.output
        return len(json.loads(result.output.strip().splitlines()[-1])["frames"])

    assert frames() == 16  # TinyLLaVA-Video's 16 frames spread over the whole clip
    assert frames("--num-frames", "4") == 4
    assert frames("--frame-rule", "videollama3") == 3  # VideoLLaMA3's 1 fps over 3 seconds
    assert Chat(str(tiny_folders["llama-vid"]), device="cpu").settings.frame_rule == "stride"


def test_serve_and_eval_take_the_family_frame_rule_unless_told(tiny_folders, scene, tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app
    from vidlab.serve import ServeOptions, create_app

    folder = tiny_folders["llama-vid"]
    assert create_app(str(folder), device="cpu").state.engine.options.media.frame_rule == "stride"
    told = ServeOptions(media=MediaSettings(frame_rule="on_screen"))
    assert create_app(str(folder), device="cpu", options=told).state.engine.options.media.frame_rule == "on_screen"

    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "video": [str(scene)], "conversations": [
        {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A shape moves."}]}) + "\n")
    for options, rule in (((), "stride"), (("--frame-rule", "uniform"), "uniform")):
        out = tmp_path / f"eval-{rule}"
        result = CliRunner().invoke(app, ["eval", "run", "--model", str(folder), "--data", str(data), "--out",
                                          str(out), "--max-new-tokens", "2", "--device", "cpu", *options])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "run.json").read_text())["settings"]["frame_rule"] == rule


# --- the web page's frame-rule setting ---------------------------------------------------------------------------

def test_the_web_page_has_a_frame_rule_setting_starting_from_the_given_rule():
    gr = pytest.importorskip("gradio")
    from vidlab.settings import GenerationOptions
    from vidlab.web.controls import read_settings, settings_controls
    from vidlab.web.remote import request_settings

    with gr.Blocks():
        controls = settings_controls(MediaSettings(frame_rule="stride"))
    assert controls.frame_rule.value == "stride" and controls.frame_rule in controls.inputs
    assert set(controls.frame_rule.choices and [c[0] for c in controls.frame_rule.choices]) == \
        {"videollama3", "on_screen", "uniform", "stride"}
    settings = read_settings(1.0, "exactly", 16, "uniform", 0, 0, True, 0.0, 64, "")
    assert (settings.media.frame_rule, settings.media.num_frames) == ("uniform", 16)
    with pytest.raises(VidlabError, match="frame rule: input should be 'videollama3'"):
        read_settings(1.0, "at most", 16, "every other", 0, 0, True, 0.0, 64, "")
    sent = request_settings(settings.media, GenerationOptions())["extra_body"]["mm_processor_kwargs"]
    assert sent["frame_rule"] == "uniform"  # a server behind the page samples as the page's strip shows


def test_a_movie_chat_answers_and_follows_up(tiny_folders, scene, tmp_path):
    """`Chat.ask(..., subtitles=...)` on a LLaMA-VID model: the movie prompt, then a follow-up from the prefix cache."""
    from vidlab.chat import Chat
    from vidlab.settings import GenerationOptions

    (tmp_path / "clip.srt").write_text("1\n00:00:00,200 --> 00:00:01,400\nLook, a square.\n\n"
                                       "2\n00:00:01,500 --> 00:00:02,600\nIt moves.\n")
    chat = Chat(str(tiny_folders["llama-vid"]), device="cpu", generation=GenerationOptions(max_new_tokens=3))
    first = chat.prepare("What moves?", video=scene, subtitles=tmp_path / "clip.srt")
    assert "Below is a movie." in first.sample.text and "<image>It moves.Now the movie end." in first.sample.text
    chat.ask(first)
    follow_up = chat.prepare("And then?")
    assert follow_up.sample.text.startswith(first.sample.text)  # the movie stays the conversation's start
    chat.ask(follow_up)
    assert chat.last_reply.generated_tokens > 0


def test_a_movie_record_trains_on_its_answer_only(loaded, tmp_path):
    """A training record with subtitles: the movie prompt, and the labels learn the answer and its </s> only."""
    _, processor = loaded
    (tmp_path / "m.srt").write_text("1\n00:00:00,500 --> 00:00:01,500\nHello there.\n")
    record = parse_record({"video": "m.mp4", "subtitles": "m.srt", "conversations": [
        {"from": "human", "value": "<video>\nWho speaks?"}, {"from": "gpt", "value": "A man."}]}, "train.jsonl:1")
    clip = _clip([0, 25, 50], 25.0, 3.0, read_subtitles(tmp_path / "m.srt"))
    sample = processor.encode_conversation(record, [clip], labels=True)
    assert "this movie.<image><image>Hello there.<image>Now the movie end.\nWho speaks? ASSISTANT: A man.</s>" \
        in sample.text
    learned = [i for i in sample.tensors["labels"].tolist() if i != -100]
    assert processor.tokenizer.decode(learned) == "A man.</s>"


def test_the_long_models_stretched_positions_convert_and_match_the_original(loaded, tmp_path):
    """Its long-video training writes rope_scaling {"type": "linear", "factor": F} into config.json (64K tokens on
    Vicuna's 4096): the tiny checkpoint with factor 4, converted, against the original's logits on the movie."""
    import shutil

    source = shutil.copytree(DATA / "checkpoint", tmp_path / "checkpoint")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "rope_scaling": {"type": "linear", "factor": 4.0}}))
    shutil.copy(DATA / "eva_vit_g.pth", tmp_path / "eva_vit_g.pth")  # where its config names them, one folder up
    shutil.copytree(DATA / "processor", tmp_path / "processor")
    folder = convert_llama_vid(source, tmp_path / "model", bert=DATA / "bert-base-uncased")
    model, processor = load_model(folder, dtype="fp32", device="cpu")
    text = model.config.text_config
    assert text.rope_parameters["rope_type"] == "linear" and text.rope_parameters["factor"] == 4.0
    assert text.max_position_embeddings == 4 * config["max_position_embeddings"]  # the context it holds
    case = MOVIE["cases"]["basic"]
    (tmp_path / case["file"]).write_bytes(case["text"].encode("utf-8"))
    clip = _clip([0, 25, 50], 25.0, 5.0, read_subtitles(tmp_path / case["file"]), frames=FRAMES.numpy())
    batch = build_inputs(_question(), [clip], processor)
    with torch.no_grad():
        logits = model(**batch.tensors).logits[0][-16:]
        unscaled = loaded[0](**batch.tensors).logits[0][-16:]
    expected = TENSORS["movie/rope_linear_4/logits"]
    scale = expected.abs().max()
    assert float((logits - expected).abs().max() / scale) < 1e-5
    assert float((unscaled - expected).abs().max() / scale) > 1e-3  # the positions' stretch matters


def test_another_rope_scaling_is_refused_by_name(tmp_path):
    import shutil

    from vidlab.errors import CheckpointConversionError

    source = shutil.copytree(DATA / "checkpoint", tmp_path / "checkpoint")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "rope_scaling": {"type": "dynamic", "factor": 2.0}}))
    shutil.copy(DATA / "eva_vit_g.pth", tmp_path / "eva_vit_g.pth")
    with pytest.raises(CheckpointConversionError, match="rope_scaling .*dynamic.*linear scaling only"):
        convert_llama_vid(source, tmp_path / "model", bert=DATA / "bert-base-uncased")
    assert not (tmp_path / "model").exists()


def test_the_frames_features_equal_the_ones_its_extractor_saves(loaded):
    """Its extractor saves the tower's output in float16; vidlab's movie reading rounds the same way."""
    model, processor = loaded
    pixels = processor.pixels(_clip([0, 25, 50], 25.0, 3.0, None, frames=FRAMES.numpy()))
    with torch.no_grad():
        features = model.model.frame_features(pixels).to(torch.float16).float()
    saved = TENSORS["movie/features"]
    assert features.shape == saved.shape == (3, 1 + 16, 88)
    # float32 sums that differ in their last bits may round to the neighbouring float16 value (a step is at most
    # 2^-10 of the value), or, near zero, differ by float32's own error on the whole (1e-5 of the largest)
    bound = torch.maximum(saved.abs() * 2**-10, 1e-5 * saved.abs().max())
    assert bool(((features - saved).abs() <= bound).all())
    assert float((features != saved).float().mean()) < 1e-2


def test_vidlab_chat_takes_subtitles_and_names_a_bad_file(tiny_folders, scene, tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app

    def chat(model: str, subtitles: Path):
        return CliRunner().invoke(app, ["chat", "--model", model, "--video", str(scene), "--subtitles",
                                        str(subtitles), "--max-new-tokens", "2", "--device", "cpu", "--json", "Who?"])

    good, bad = tmp_path / "good.srt", tmp_path / "bad.srt"
    good.write_text("1\n00:00:00,200 --> 00:00:01,400\nHello.\n")
    bad.write_text("1\n00:00:00,200 --> 00:00:01,400\nHello.\n\n2\n00:00:02,000 -> 00:00:02,500\nBye.\n"
                   "\n3\n00:00:0z,000 --> 00:00:03,000\nOops.\n")
    result = chat(str(tiny_folders["llama-vid"]), good)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["generated_tokens"] > 0
    # a user error is a VidlabError (the `vidlab` entry point prints it as one `error:` line and exits 2)
    result = chat(str(tiny_folders["llama-vid"]), bad)
    assert isinstance(result.exception, SubtitleError)
    assert str(result.exception).startswith(f"{bad}:6: '00:00:02,000 -> 00:00:02,500' looks like cue times without")
    result = chat(str(tiny_folders["llama-vid"]), tmp_path / "none.srt")
    assert isinstance(result.exception, VidlabError) and "none.srt: no such file" in str(result.exception)
    result = chat(str(tiny_folders["tinyllava-video"]), good)
    assert isinstance(result.exception, SampleError)
    assert "only LLaMA-VID models put subtitles" in str(result.exception)
