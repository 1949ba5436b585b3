"""The web page as a newcomer meets it, in a real browser (Playwright driving headless Chromium): the chat's
trash icon resets the model's conversation too, a new upload replaces a bad one, a setting of 0 is a message
naming its field with the page still usable, an evaluation made elsewhere plays its samples, the frame strip
shows every stamp at common widths, a phone reaches Ask, SIGTERM cleans up. One page server for the module."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web_support import free_port, needs_chromium, opened_page, running_chromium, write_clip

from vidlab.evaluation.run import RunOptions, run_predictions
from vidlab.settings import GenerationOptions
from vidlab.web import browser

pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
pytestmark = needs_chromium

QUESTION = "Which direction does the shape move?"


@pytest.fixture(scope="module")
def site(tiny_model, tiny_model_dir, tmp_path_factory):
    """A project folder where an evaluation was run with relative paths (as a user types them), and the page
    started from another folder, on the tiny model, with the project's videos as the media root."""
    from vidlab.web.app import launch
    from vidlab.web.options import WebOptions

    project = tmp_path_factory.mktemp("project")
    clip = write_clip(project / "data" / "clips" / "red-left.mp4", seconds=8.0)  # 8 frames at 1 fps
    record = {"id": "r1", "video": ["clips/red-left.mp4"],
              "conversations": [{"from": "human", "value": f"<video>\n{QUESTION}"}, {"from": "gpt", "value": "left"}]}
    (project / "data" / "eval.jsonl").write_text(json.dumps(record) + "\n")
    here = Path.cwd()
    os.chdir(project)
    try:
        run_predictions(tiny_model, "data/eval.jsonl", "runs/new",
                        options=RunOptions(generation=GenerationOptions(max_new_tokens=4), progress=False))
    finally:
        os.chdir(here)
    old = shutil.copytree(project / "runs" / "new", project / "runs" / "old")
    info = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**info, "data_root": "data"}))  # as vidlab wrote it before
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.chdir(elsewhere)  # the page starts from another folder than the evaluation
    try:
        options = WebOptions(port=free_port(), runs=project / "runs", media_root=project / "data", max_upload_mb=1,
                             generation=GenerationOptions(max_new_tokens=8))
        server = launch(tiny_model_dir, options=options, device="cpu", block=False)
    finally:
        os.chdir(here)
    try:
        yield {"server": server, "clip": clip, "project": project}
    finally:
        server.close()


@pytest.fixture(scope="module")
def chromium():
    with running_chromium() as launched:
        yield launched


@pytest.fixture
def page(site, chromium):
    with opened_page(chromium, site["server"].url) as opened:
        yield opened


def _prompt_tokens(page) -> int:
    return int(re.search(r"prompt (\d+) tokens", page.locator("#chat-tokens").inner_text()).group(1))


def _no_error_badges(page) -> None:
    """gradio marks a failed event's outputs with an "Error" badge and a toast: the page must show neither."""
    assert page.locator(".error").filter(has_text=re.compile(r"^\s*Error\s*$")).count() == 0
    assert page.locator("[data-testid=toast-body]").count() == 0


def test_trash_icon_resets_the_conversation_and_regenerate_answers_again(site, page):
    browser.upload(page, "chat", site["clip"])
    browser.ask(page, QUESTION)
    first = _prompt_tokens(page)
    answer = browser.chat_messages(page)[1]
    assert browser.chat_media(page) == 1, "the conversation shows the video it is about"
    browser.ask(page, "And the colour?")
    assert _prompt_tokens(page) > first, "a follow-up carries the history"

    with browser.event(page, "#chat-status", "forgot", what="the trash icon"):
        page.locator("#chat-answers button[aria-label=Clear]").click()
    browser.ask(page, QUESTION)
    assert _prompt_tokens(page) == first, "after the trash icon the model starts over too"
    assert browser.chat_messages(page) == [QUESTION, answer]

    browser.ask(page, "And the colour?")
    with browser.event(page, "#chat-status", "follow-up", what="Regenerate"):
        page.locator("#chat-regenerate").click()
    messages = browser.chat_messages(page)
    assert messages[:2] == [QUESTION, answer] and len(messages) == 4, "Regenerate replaces the last answer"
    assert _prompt_tokens(page) > first

    assert "answers as base" in page.locator("#web-header").inner_text(), "the header names the model answering"


def test_a_bad_upload_then_a_good_one(site, page, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all")
    status = browser.upload(page, "chat", fake)
    assert status.startswith("⚠") and "notes.mp4" in status
    assert "vidlab-web-" not in status and "gradio" not in status, "the upload is named by its own name"

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert "empty.mp4: the file is empty (0 bytes)" in browser.upload(page, "chat", empty)

    assert "⚠" not in browser.upload(page, "chat", site["clip"]), "a good upload replaces the bad files"
    assert "8 frames" in page.locator("#chat-tokens").inner_text()
    assert page.locator("#chat-upload").get_by_text(".mp4").count() == 1, "the box holds the last upload only"

    # A pick replaces the upload (and the other way round): one choice at a time.
    with browser.event(page, "#chat-status", what="a pick after an upload"):
        browser.pick_option(page, "#chat-pick", "clips/red-left.mp4")
    assert "red-left.mp4" not in page.locator("#chat-upload").inner_text()
    other = shutil.copyfile(site["clip"], tmp_path / "other.mp4")
    browser.upload(page, "chat", other)
    assert page.locator("#chat-pick input").input_value() == ""


def _leave_frames(page, what: str, done: str | None = None) -> str:
    """Leave the N box for fps (leaving applies it: no Enter) and wait for the event that starts; returns the
    status line."""
    with browser.event(page, "#chat-status", done, what=what):
        page.locator("#set-fps input[type=number]").click()
    return page.locator("#chat-status").inner_text()


def test_a_setting_of_zero_names_its_field_and_the_page_stays_usable(site, page, capfd):
    browser.upload(page, "chat", site["clip"])
    page.locator("#web-settings button").first.click()  # unfold the settings
    frames = page.locator("#set-frames input[type=number]")
    frames.fill("0")
    status = _leave_frames(page, "N set to 0", "N (frames)")
    assert "N (frames)" in status and "greater than or equal to 1" in status
    _no_error_badges(page)

    frames.fill("4")
    assert "⚠" not in _leave_frames(page, "N set to 4")
    assert "4 frames" in page.locator("#chat-tokens").inner_text()
    max_tokens = page.locator("#set-max-tokens input[type=number]")
    max_tokens.fill("0")
    page.locator("#chat-question textarea").fill(QUESTION)
    with browser.event(page, "#chat-status", "max tokens", what="asking with max tokens 0"):
        page.locator("#chat-ask").click()
    assert "max tokens" in page.locator("#chat-status").inner_text()
    _no_error_badges(page)
    max_tokens.fill("8")
    max_tokens.press("Tab")  # the box's value is the page's once it is left
    frames.fill("5")
    assert "⚠" not in _leave_frames(page, "N set to 5"), "a frame change redraws the strip, clears the message"
    assert "5 frames" in page.locator("#chat-tokens").inner_text()
    assert "follow-up" in browser.ask(page, QUESTION), "the page still answers"
    assert "Traceback" not in capfd.readouterr().err


def test_ask_right_after_leaving_a_setting_answers(site, page):
    """Leaving a frame box starts its preview; an Ask clicked at once waits for it, rather than being told the tab
    is "still answering"."""
    browser.upload(page, "chat", site["clip"])
    page.locator("#chat-question textarea").fill(QUESTION)
    page.locator("#web-settings button").first.click()
    page.locator("#set-frames input[type=number]").fill("6")
    browser.watch(page, "#chat-status")
    page.locator("#chat-ask").click()  # leaves N (its preview starts) and asks at once
    browser.wait_status(page, "#chat-status", "follow-up", what="the answer asked during a preview")
    browser.settle(page)
    said = page.evaluate("window.__watched['#chat-status'].texts")
    assert not [text for text in said if "⚠" in text], f"no message but the answer's: {said}"
    assert len(browser.chat_messages(page)) == 2 and "follow-up" in page.locator("#chat-status").inner_text(), said
    assert "6 frames" in page.locator("#chat-tokens").inner_text()


def test_results_made_elsewhere_play_their_samples(site, page):
    info = json.loads((site["project"] / "runs" / "new" / "run.json").read_text())
    assert Path(info["data_root"]).is_absolute(), "run.json's data root does not depend on where it was made"
    for name in ("new", "old"):
        browser.tab(page, "Results")
        page.reload()
        browser.tab(page, "Results")
        browser.open_results(page, [f"{name} (eval run)"])
        assert "prediction of" in page.locator("#results-samples").inner_text()
        detail = browser.open_sample(page, "r1")
        assert "not there any more" not in detail
        page.wait_for_function("document.querySelector('#results-video video')?.src")
        playable = page.evaluate("fetch(document.querySelector('#results-video video').src).then(r => r.status)")
        assert playable in (200, 206), f"{name}: the sample's video is served"


STRIP_CLIPPED = """() => [...document.querySelectorAll('#chat-strip .caption-label')].map(c => {
  const r = c.getBoundingClientRect();
  if (r.width === 0 || r.right > window.innerWidth || r.left < 0) return c.innerText + ': off the page';
  for (let a = c.parentElement; a; a = a.parentElement) {
    const st = getComputedStyle(a);
    if (st.overflowX === 'visible' && st.overflowY === 'visible') continue;
    const b = a.getBoundingClientRect();
    if (r.left < b.left - 1 || r.right > b.right + 1 || r.top < b.top - 1 || r.bottom > b.bottom + 1)
      return c.innerText + ': clipped';
  }
  return null; }).filter(x => x)"""


@pytest.mark.parametrize("width,height", [(1280, 800), (1920, 1080)])
def test_the_strip_shows_every_stamp(site, chromium, width, height):
    with opened_page(chromium, site["server"].url, {"width": width, "height": height}) as page:
        browser.upload(page, "chat", site["clip"])
        assert browser.strip_captions(page) == [f"Time {s:.1f}s" for s in range(8)]
        assert page.evaluate(STRIP_CLIPPED) == []


def test_the_frame_rule_setting_picks_the_strip_frames(site, page):
    """The settings' frame rule starts as the page was started (here VideoLLaMA3's) and a choice redraws the strip
    with that rule's frames."""
    from vidlab.media import load_video
    from vidlab.settings import Sampling

    browser.upload(page, "chat", site["clip"])
    page.locator("#web-settings button").first.click()
    assert page.locator("#set-frame-rule input").input_value() == "videollama3"
    with browser.event(page, "#chat-status", what="frame rule set to uniform"):
        browser.pick_option(page, "#set-frame-rule", "uniform")
    uniform = load_video(site["clip"], Sampling(frame_rule="uniform")).stamps  # 8 spread over its 64 frames
    assert uniform != list(range(8))
    assert browser.strip_captions(page) == [f"Time {s:.1f}s" for s in uniform]
    assert "⚠" not in page.locator("#chat-status").inner_text()
    _no_error_badges(page)


def test_a_phone_reaches_ask_without_closing_a_panel(site, chromium):
    phone = {"width": 390, "height": 844}
    with opened_page(chromium, site["server"].url, phone, is_mobile=True, has_touch=True) as page:
        browser.upload(page, "chat", site["clip"])
        page.locator("#chat-question textarea").fill(QUESTION)
        ask = page.locator("#chat-ask")
        ask.scroll_into_view_if_needed()
        box = ask.bounding_box()
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('#chat-ask') !== null",
                               [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert on_top, "nothing covers Ask"
        with browser.event(page, "#chat-status", "follow-up", what="Ask on a phone"):
            ask.click(timeout=5000)
        assert "follow-up" in page.locator("#chat-status").inner_text()


def test_sigterm_removes_the_upload_folder(tmp_path):
    """`vidlab web` stopped by SIGTERM (a service manager, `kill`) cleans up as Ctrl-C does."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", "from vidlab.cli import main; main()", "web", "--runs", str(tmp_path / "runs"),
               "--port", str(free_port())]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("vidlab web: http"), process.stderr.read() if process.poll() is not None else line
        folders = list(temp.glob("vidlab-web-*"))
        assert len(folders) == 1 and folders[0].is_dir()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 5
    while folders[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folders[0].exists(), f"the upload folder is removed (exit {process.returncode}: " \
        f"{process.stderr.read()[-2000:]})"


def test_stop_ends_generation_and_leaves_the_conversation_as_it_was(site):
    """What the Stop button does to the model: gradio closes the answer's stream; generation ends at once (the
    model is free), and the stopped question is not part of the conversation."""
    import threading

    from vidlab.settings import MediaSettings
    from vidlab.web.backend import MediaChoice

    backend = site["server"].backend
    talk = backend.conversation("base", None, MediaSettings(), GenerationOptions(max_new_tokens=3500))
    threads = threading.active_count()
    pieces = talk.stream(QUESTION, MediaChoice(video=site["clip"]))
    next(pieces), next(pieces)
    assert backend.lock.locked()
    pieces.close()
    assert not backend.lock.locked() and threading.active_count() == threads, "generation stopped with the stream"
    talk.set_generation(GenerationOptions(max_new_tokens=4))
    fresh = backend.conversation("base", None, MediaSettings(), GenerationOptions(max_new_tokens=4))
    "".join(fresh.stream(QUESTION, MediaChoice(video=site["clip"])))
    "".join(talk.stream(QUESTION, MediaChoice(video=site["clip"])))
    assert talk.last.prompt_tokens == fresh.last.prompt_tokens, "the stopped question left nothing behind"
    talk.forget_last()
    "".join(talk.stream(QUESTION, MediaChoice(video=site["clip"])))
    assert talk.last.prompt_tokens == fresh.last.prompt_tokens, "forget_last (Regenerate) leaves nothing behind"
