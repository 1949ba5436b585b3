"""vidlab's frames, stamps and `Time X.Xs` text against VideoLLaMA3's own loader, case by case.

tests/data/fidelity/frames.json was recorded by tools/fidelity/record_frames.py: the original's
`load_video` (videollama3/mm_utils.py at a pinned commit, run with its own pins and the system
FFmpeg) on the committed corpus in tests/data/fidelity/media (each frame shows its index in
binary), called as its chat example, training loader and evaluation call it; its prompt text is
rendered with its own chat template. Here vidlab loads the same file with the same settings and
must pick the same source frames, give the same stamps and write the same prompt text. The
few cases where the original is broken are vidlab's written choices (docs/fidelity.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from vidlab.inputs.processing import video_metadata
from vidlab.media import load_video
from vidlab.settings import Sampling

DATA = Path(__file__).parent / "data" / "fidelity"
MEDIA = DATA / "media"
RECORDED = json.loads((DATA / "frames.json").read_text())
CASES = {case["id"]: case for case in RECORDED["cases"]}
BITS = 10

# Cases where the original is broken and vidlab does otherwise on purpose (docs/fidelity.md).
NO_FRAMES = "the original outputs no frame for a video shorter than one tick; vidlab shows its first frame"
INDEX_READER = "the original's index reader (decord) shows another frame than its stamp says; vidlab the stamp's"
BROKEN = {
    **{f"{name}|whole|fps={fps}|max={most}|num=None|None-None|precise=False": NO_FRAMES
       for name in ("short.mp4", "one_frame.mp4") for fps, most in ((1.0, 180), (2.0, 180), (1.0, 4))},
    "editlist.mp4|window|fps=1.0|max=180|num=None|1.2-1.9|precise=False": INDEX_READER + " (it ignores edit lists)",
    "mpeg2.mpg|window|fps=1.0|max=180|num=None|1.2-1.9|precise=False": INDEX_READER + " (its MPEG-PS seek misses)",
    "rotated.mp4|window|fps=1.0|max=180|num=None|1.2-1.9|precise=False":
        "the original's index reader (decord) fails on a rotated file; vidlab reads it as an unrotated one",
}
# Where the original writes fewer stamps than frames, its chat template fails on the missing stamp.
TEMPLATE_FAILS = "the original's template fails (fewer stamps than frames); vidlab stamps the extra frames"


def index_of(frame: np.ndarray) -> int:
    """The index a corpus frame shows (drawn by tools/fidelity/frames_corpus.py); an upright frame is turned back."""
    if frame.shape[0] > frame.shape[1]:
        frame = np.rot90(frame, -1)
    bar = frame.shape[1] // BITS
    return sum(1 << bit for bit in range(BITS) if frame[:, bit * bar:(bit + 1) * bar].mean() > 127)


def sampling_of(case: dict) -> Sampling:
    if case["num_frames"] is not None:
        return Sampling(num_frames=case["num_frames"], precise_time=case["precise_time"])
    return Sampling(fps=case["fps"], max_frames=case["max_frames"], precise_time=case["precise_time"])


def prompt_stamps(prompt: str) -> list[str]:
    return re.findall(r"Time [^:]*s:", prompt)


def vidlab_of(case: dict) -> dict:
    clip = load_video(MEDIA / case["file"], sampling_of(case), case["start"], case["end"])
    # the native processor writes f"Time {t:.1f}s:" for each of the metadata's timestamps
    texts = [f"Time {t:.1f}s:" for t in video_metadata(clip).timestamps]
    return {"codes": [index_of(f) for f in clip.frames], "stamps": clip.stamps, "texts": texts, "clip": clip}


def differences(case: dict, mine: dict) -> list[str]:
    found = []
    if mine["codes"] != case["codes"]:
        found.append(f"frames {mine['codes']} != original's {case['codes']}")
    if len(mine["stamps"]) != len(case["stamps"]) or not np.allclose(mine["stamps"], case["stamps"], atol=1e-6):
        found.append(f"stamps {mine['stamps']} != original's {case['stamps']}")
    if case.get("prompt") is not None and mine["texts"] != prompt_stamps(case["prompt"]):
        found.append(f"prompt {mine['texts']} != original's {prompt_stamps(case['prompt'])}")
    return found


@pytest.mark.parametrize("case_id", [i for i in CASES if i not in BROKEN])
def test_frames_stamps_and_prompt_are_the_originals(case_id):
    case = CASES[case_id]
    mine = vidlab_of(case)
    if "prompt_crash" in case:  # the original announces fewer times than frames; vidlab goes on at the same step
        assert mine["codes"] == case["codes"], TEMPLATE_FAILS
        assert mine["stamps"][: len(case["stamps"])] == pytest.approx(case["stamps"])
        step = 1 / case["fps"]
        assert np.allclose(np.diff(mine["stamps"]), step)
        return
    assert differences(case, mine) == []
    # the same pixels, to the byte (PyAV's bundled FFmpeg and the system FFmpeg convert alike)
    assert [hashlib.md5(np.ascontiguousarray(f).tobytes()).hexdigest() for f in mine["clip"].frames] == case["md5"]


def test_every_case_is_recorded_and_compared():
    assert len(CASES) == len(RECORDED["cases"]) >= 200  # ids are unique
    assert set(BROKEN) <= set(CASES)
    assert sum("crash" in c for c in CASES.values()) == 1  # only the rotated index read: listed in BROKEN


@pytest.mark.parametrize("case_id", list(BROKEN))
def test_where_the_original_is_broken_vidlab_does_what_docs_say(case_id):
    case = CASES[case_id]
    mine = vidlab_of(case)
    if BROKEN[case_id] == NO_FRAMES:
        assert case["codes"] == [] and case["stamps"] == []
        assert mine["codes"] == [0] and mine["stamps"] == [0.0]
    elif "crash" in case:
        twin = CASES[case_id.replace("rotated.mp4", "cfr25.mp4")]
        assert mine["codes"] == twin["codes"] and mine["stamps"] == pytest.approx(twin["stamps"])
    else:  # the same stamps, and the frame each stamp names (index = stamp x 25 fps)
        assert mine["stamps"] == pytest.approx(case["stamps"])
        assert mine["texts"] == prompt_stamps(case["prompt"])
        assert mine["clip"].frame_indices == [round(t * 25) for t in case["stamps"]]
        assert mine["codes"] != case["codes"]


def test_numpy_rounding_reaches_the_native_processors_prompt(tiny_model_dir):
    """2.15 -> "2.2" and 0.85 -> "0.8" in the text the model reads, as the original's template writes them."""
    from transformers import AutoProcessor

    from vidlab.conversation import parse_record
    from vidlab.inputs import build_inputs, load_media
    from vidlab.settings import MediaSettings

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for case_id in ["cfr25.mp4|window|fps=1.0|max=180|num=None|2.15-4.4|precise=True",
                    "ntsc2997.mp4|window|fps=2.0|max=180|num=None|0.35-3.9|precise=False"]:
        case = CASES[case_id]
        record = parse_record({"video": str(MEDIA / case["file"]), "start": case["start"], "end": case["end"],
                               "conversations": [{"from": "human", "value": "<video>\nQ"}]})
        settings = MediaSettings(**sampling_of(case).model_dump())
        inputs = build_inputs(record, load_media(record, processor, settings), processor)
        text = processor.tokenizer.decode(inputs.tensors["input_ids"][0])
        assert prompt_stamps(text) == prompt_stamps(case["prompt"])
        assert any(t.endswith("5") for t in np.round(np.asarray(case["stamps"]) * 100).astype(int).astype(str))


def test_rotated_frames_are_upright_where_the_original_scrambles_them():
    case = CASES["rotated.mp4|whole|fps=1.0|max=180|num=None|None-None|precise=False"]
    assert case["reshaped_with_stored_size"]  # the original's array has the stored shape, its bytes the turned one's
    clip = vidlab_of(case)["clip"]
    assert clip.frames.shape[1:3] == (80, 48)  # upright: height 80, width 48
    assert [index_of(f) for f in clip.frames] == case["codes"]


@pytest.mark.parametrize("precise", [None, False])
def test_eval_reads_windows_as_the_originals_evaluation_and_chat_as_its_default(precise):
    """vidlab eval: precise_time=True unless set (the original's evaluation); load_video elsewhere: False."""
    from vidlab.conversation import parse_record
    from vidlab.evaluation.records import EvalRecord
    from vidlab.evaluation.run import RunOptions, _with_media
    from vidlab.settings import MediaSettings

    window = "cfr25.mp4|window|fps=1.0|max=180|num=None|1.3-3.4|precise="
    record = EvalRecord("a", "test:1", 0, parse_record(
        {"video": "cfr25.mp4", "start": 1.3, "end": 3.4, "conversations": [{"from": "human", "value": "<video>\nQ"}]}
    ), ["x"])
    options = RunOptions(settings=MediaSettings(precise_time=precise), workers=0, progress=False)
    [(_, media)] = list(_with_media([record], MEDIA, options))
    expected = CASES[window + ("True" if precise is None else "False")]
    assert [index_of(f) for f in media[0].frames] == expected["codes"]
    chat_default = load_video(MEDIA / "cfr25.mp4", Sampling(), 1.3, 3.4)
    assert [index_of(f) for f in chat_default.frames] == CASES[window + "False"]["codes"]
    assert CASES[window + "True"]["codes"] != CASES[window + "False"]["codes"]
