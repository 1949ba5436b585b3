"""Media options generated from the settings: every command that uses media offers every setting that applies to
it, with the schema's help and default; the server's request keys come from the same fields; a new field reaches
all of them without touching them. Also: compressor kinds asked of the settings, and no library module importing
a CLI module."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

import vidlab
from vidlab.cli_common import MEDIA_PANEL, MediaOptions, media_options
from vidlab.errors import SettingsError
from vidlab.serve.errors import ServeError
from vidlab.serve.protocol import ChatRequest
from vidlab.serve.request_settings import PROCESSOR_KEYS, VIDEO_IO_KEYS, media_settings
from vidlab.settings import MediaSettings, Sampling, VideoCompressor, changed_flags, flag, option_help, request_fields

SRC = Path(vidlab.__file__).parents[1]
# command -> the media settings it does not offer, and why.
NOT_OFFERED = {
    ("chat",): {"allow_partial"},  # a chat takes a cut video as far as it goes
    ("web",): {"allow_partial"},  # so does the page
    ("eval", "run"): set(),
    ("serve",): set(),
    ("data", "check"): set(),
    # the token arithmetic: no decoding, no images, no clip windows, before DiffFP
    ("data", "tokens"): {"folder_fps", "frame_rule", "keyframes", "allow_partial", "decoder", "gop_workers",
                         "image_merge_size", "compression", "precise_time"},
}


def _command(path: tuple[str, ...]):
    from vidlab.cli import app

    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _options(path: tuple[str, ...]) -> dict[str, object]:
    """The command's options by their first flag."""
    return {param.opts[0]: param for param in _command(path).params if param.opts[0].startswith("--")}


@pytest.mark.parametrize("path", list(NOT_OFFERED), ids=" ".join)
def test_every_command_offers_every_media_setting_that_applies(path):
    options = _options(path)
    for name in MediaSettings.model_fields:
        if name in NOT_OFFERED[path]:
            assert flag(name) not in options
            continue
        option = options[flag(name)]
        assert option.help == option_help(MediaSettings, name)  # the schema's description and default
        assert option.default is None  # not given: the library default
        if MediaSettings.model_fields[name].annotation is bool:
            assert option.secondary_opts == [flag("no_" + name)]


def _parsed(*args: str) -> MediaSettings:
    app = typer.Typer()
    seen = []

    @app.command()
    @media_options()
    def show(media_options: MediaOptions = MediaOptions()) -> None:
        seen.append(media_options.settings())

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return seen[0]


def test_options_build_the_settings_and_leave_out_means_default():
    assert _parsed() == MediaSettings()
    settings = _parsed("--fps", "2", "--min-frames", "4", "--no-compression", "--keyframes", "--frame-rule",
                       "on_screen", "--image-merge-size", "2")
    assert settings == MediaSettings(fps=2, min_frames=4, compression=False, keyframes=True, frame_rule="on_screen",
                                     image_merge_size=2)
    with pytest.raises(SettingsError, match="^--min-frames: input should be greater than or equal to 1"):
        _parsed("--min-frames", "0")
    with pytest.raises(SettingsError,
                       match="--frame-rule: input should be 'videollama3', 'on_screen', 'uniform' or 'stride'"):
        _parsed("--frame-rule", "middle")


def test_given_options_apply_over_a_base():
    base = MediaSettings(compression=False, fps=3)
    assert MediaOptions({"fps": 2.0}).settings(base) == MediaSettings(compression=False, fps=2)
    assert MediaOptions({"compression": True}).settings(base) == MediaSettings(fps=3)


def test_changed_flags_rebuild_the_settings():
    settings = MediaSettings(fps=2, num_frames=8, keyframes=True, compression=False, decoder="pyav")
    assert changed_flags(settings) == ["--fps", "2", "--num-frames", "8", "--keyframes", "--decoder", "pyav",
                                       "--no-compression"]
    assert _parsed(*changed_flags(settings)) == settings


def test_min_frames_reaches_chat_and_eval_before_any_model_loads(tmp_path):
    from vidlab.cli import app

    for args in (["chat", "--model", str(tmp_path / "none"), "--min-frames", "0", "hi"],
                 ["eval", "run", "--model", "m", "--data", "d.jsonl", "--out", str(tmp_path), "--min-frames", "0"]):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, SettingsError), result.output
        assert str(result.exception).startswith("--min-frames: input should be greater than or equal to 1")


def test_data_check_decodes_with_the_media_options(tiny_model_dir, sample_video, tmp_path):
    from vidlab.cli import app

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"video": [str(sample_video)], "conversations": [
        {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "It moves."}]}) + "\n")
    frames = {}
    for flags in ([], ["--num-frames", "3", "--no-compression"]):
        out = tmp_path / ("check" + "".join(flags))
        done = CliRunner().invoke(app, ["data", "check", str(data), "--model", str(tiny_model_dir), "--out", str(out),
                                        "--workers", "0", "--no-progress", *flags])
        assert done.exit_code == 0, done.output
        report = json.loads((out / "check.json").read_text())
        frames[tuple(flags)] = json.loads((out / "samples.jsonl").read_text().splitlines()[0])["frames"]
        assert report["settings"] == MediaSettings.model_validate(
            {"num_frames": 3, "compression": False} if flags else {}).model_dump(mode="json")
    assert frames == {(): 4, ("--num-frames", "3", "--no-compression"): 3}  # 4 s at 1 fps; then exactly 3


def test_data_check_media_options_are_for_a_check_without_a_config(tmp_path):
    from vidlab.cli import app

    result = CliRunner().invoke(app, ["data", "check", "--config", str(tmp_path / "train.yaml"), "--fps", "2"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "with --config the media settings are its data section" in result.output


def test_web_starts_from_the_quickstarts_settings_and_the_options_change_them(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import vidlab.web.app
    from vidlab.cli import app

    started = []

    def launch(model, adapters, api, api_key, options, **kwargs):
        started.append(options.media)
        raise KeyboardInterrupt  # stop before a server starts

    monkeypatch.setattr(vidlab.web.app, "launch", launch)
    (tmp_path / "quickstart.json").write_text("{}")
    for flags in ([], ["--compression", "--fps", "2"]):
        CliRunner().invoke(app, ["web", "--quickstart", str(tmp_path), *flags])
    assert started == [MediaSettings(compression=False), MediaSettings(fps=2)]


def _request(**kwargs) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kwargs)


def test_request_keys_are_the_settings_fields():
    operator = {"folder_fps", "allow_partial", "decoder", "gop_workers"}
    assert set(request_fields(MediaSettings)) == set(MediaSettings.model_fields) - operator
    assert set(PROCESSOR_KEYS) == set(request_fields(MediaSettings)) | {"use_token_compression"}
    assert set(VIDEO_IO_KEYS) == set(Sampling.model_fields) - operator
    got = media_settings(_request(mm_processor_kwargs={"min_frames": 4, "use_token_compression": False},
                                  media_io_kwargs={"video": {"frame_rule": "on_screen"}}), MediaSettings())
    assert got == MediaSettings(min_frames=4, compression=False, frame_rule="on_screen")
    for key in sorted(operator):
        with pytest.raises(ServeError, match=f"mm_processor_kwargs.{key}: unknown setting"):
            media_settings(_request(mm_processor_kwargs={key: "pyav"}), MediaSettings())


# Run in a fresh interpreter: a test-only field added to the settings before any command or the server's request
# reader is imported, as a maintainer adding a setting would (nothing but settings.py changes).
NEW_FIELD = """
import json, sys
from pydantic import Field
import vidlab.settings as settings

class Sampling(settings.Sampling):
    sharpness: float = Field(1.0, gt=0, description="How sharp the frames are (test-only).")

class MediaSettings(Sampling, settings.MediaSettings):
    pass

settings.Sampling, settings.MediaSettings = Sampling, MediaSettings

from typer.main import get_command
from typer.testing import CliRunner
from vidlab.cli import app
from vidlab.serve.protocol import ChatRequest
from vidlab.serve.request_settings import PROCESSOR_KEYS, VIDEO_IO_KEYS, media_settings
from vidlab.training.cli import help_epilog
from vidlab.training.config import TrainConfig

command = get_command(app)
options = {}
for path in (["chat"], ["web"], ["eval", "run"], ["serve"], ["data", "check"]):
    found = command
    for name in path:
        found = found.commands[name]
    options[" ".join(path)] = {p.opts[0]: p.help for p in found.params}
request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                      mm_processor_kwargs={"sharpness": 2}, media_io_kwargs={"video": {"sharpness": 2}})
refused = CliRunner().invoke(app, ["chat", "--model", "nowhere", "--sharpness", "-1", "hi"])
print(json.dumps({
    "help": {name: found.get("--sharpness") for name, found in options.items()},
    "processor": "sharpness" in PROCESSOR_KEYS, "video_io": "sharpness" in VIDEO_IO_KEYS,
    "request": media_settings(request, MediaSettings()).sharpness,
    "config": TrainConfig.model_fields["data"].annotation(train=["t.jsonl"], sharpness=3).media_settings().sharpness,
    "epilog": "sharpness" in help_epilog(),
    "refused": str(refused.exception),
}))
"""


def test_a_new_setting_reaches_every_command_and_the_server():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", NEW_FIELD], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    help_text = "How sharp the frames are (test-only). Default: 1."
    assert seen["help"] == {name: help_text for name in ("chat", "web", "eval run", "serve", "data check")}
    assert seen["processor"] and seen["video_io"] and seen["request"] == 2
    assert seen["config"] == 3 and seen["epilog"]
    assert seen["refused"].startswith("--sharpness: input should be greater than 0")


def test_media_panel_groups_the_options():
    assert all(param.rich_help_panel == MEDIA_PANEL for param in _command(("chat",)).params
               if param.name in MediaSettings.model_fields)


def test_compressor_kinds_come_from_the_settings():
    assert VideoCompressor.kinds() == ("none", "llamavid", "group_resampler", "pool")
    assert [kind for kind in VideoCompressor.kinds() if VideoCompressor(kind=kind).has_weights] == \
        list(VideoCompressor.weighted_kinds())
    from vidlab.data.plan_tokens import default_options

    assert list(default_options()) == list(VideoCompressor.kinds())


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_library_module_imports_a_cli_module():
    package = SRC / "vidlab"
    cli_modules = {"vidlab.cli", "vidlab.cli_common"} | {
        "vidlab." + ".".join(p.relative_to(package).with_suffix("").parts) for p in package.rglob("cli.py")}
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if path.name not in ("cli.py", "cli_common.py") and _imports(path) & cli_modules]
    assert not offenders
