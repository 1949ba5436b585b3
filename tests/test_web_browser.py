"""The web page in a real browser (Playwright driving headless Chromium): chat about an uploaded video with the
frame strip's stamps and token counts, a comparison of base and tuned, results opened and sorted, bad files and
two tabs at once. The page serves the tiny model in this process, so its answers can be checked against the
same model asked directly."""

from __future__ import annotations

import pytest
from serve_support import make_adapter
from web_support import free_port, needs_chromium, opened_page, running_chromium, scored_run, write_clip

from vidlab.evaluation.report import compare_runs
from vidlab.media import load_video
from vidlab.settings import GenerationOptions, MediaSettings
from vidlab.web import browser
from vidlab.web.backend import MediaChoice

pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
pytestmark = needs_chromium

QUESTION = "Which direction does the shape move?"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def site(tiny_model_dir, tmp_path_factory):
    """The page on the tiny model with a 'tuned' adapter, a media root, and eval folders under --runs."""
    from vidlab.web.app import launch
    from vidlab.web.options import WebOptions

    root = tmp_path_factory.mktemp("web-site")
    media = root / "media"
    clip = write_clip(media / "clips" / "red-left.mp4")
    adapter = make_adapter(tiny_model_dir, root / "tuned", seed=3)
    rows = [("c1", "left", "a red circle moves left", "left"), ("c2", "up", "up", "down"),
            ("c3", "right", "a shape", "right")]
    base = scored_run(root / "eval" / "base", media, [
        {"id": i, "prediction": b, "references": [ref], "media": ["clips/red-left.mp4"]} for i, ref, b, _ in rows])
    tuned = scored_run(root / "eval" / "tuned", media, [
        {"id": i, "prediction": t, "references": [ref], "media": ["clips/red-left.mp4"]} for i, ref, _, t in rows])
    compared = compare_runs([base, tuned], root / "eval" / "compare")
    options = WebOptions(port=free_port(), runs=root / "eval", media_root=media, max_upload_mb=1,
                         generation=GenerationOptions(max_new_tokens=MAX_TOKENS))
    server = launch(tiny_model_dir, {"tuned": adapter}, options=options, device="cpu", block=False)
    try:
        yield {"server": server, "clip": clip, "compared": compared, "root": root}
    finally:
        server.close()
    assert not server.temp_dir.exists(), "the page's temporary folder is removed when it stops"


@pytest.fixture(scope="module")
def chromium():
    with running_chromium() as launched:
        yield launched


@pytest.fixture
def page(site, chromium):
    with opened_page(chromium, site["server"].url) as opened:
        yield opened


def _alone(site, name: str, questions: list[str]) -> list[str]:
    """The same model's answers asked directly (greedy: the page must show exactly these)."""
    backend = site["server"].backend
    talk = backend.conversation(name, None, MediaSettings(), GenerationOptions(max_new_tokens=MAX_TOKENS))
    media = MediaChoice(video=site["clip"])
    return ["".join(talk.stream(q, media if k == 0 else None)) for k, q in enumerate(questions)]


def test_chat_shows_frames_tokens_and_streams_answers(site, page):
    browser.upload(page, "chat", site["clip"])
    stamps = load_video(site["clip"], MediaSettings().sampling()).stamps
    assert browser.strip_captions(page) == [f"Time {s:.1f}s" for s in stamps] == \
        ["Time 0.0s", "Time 1.0s", "Time 2.0s", "Time 3.0s"]
    preview = site["server"].backend.preview(MediaChoice(video=site["clip"]), MediaSettings())
    tokens = page.locator("#chat-tokens").inner_text()
    assert f"{preview.visual_tokens} after DiffFP, {preview.visual_tokens_before_pruning} before" in tokens
    assert preview.visual_tokens < preview.visual_tokens_before_pruning

    misses = site["server"].backend.cache.clips.misses
    assert "follow-up" in browser.ask(page, QUESTION)
    assert "follow-up" in browser.ask(page, "And the colour?")
    expected = _alone(site, "tuned", [QUESTION, "And the colour?"])
    assert browser.chat_messages(page) == [QUESTION, expected[0], "And the colour?", expected[1]]
    assert site["server"].backend.cache.clips.misses == misses, "follow-ups do not decode the video again"
    assert "prompt" in page.locator("#chat-tokens").inner_text()

    assert "answers as tuned" in page.locator("#web-header").inner_text()
    with browser.event(page, "#web-header", "answers as base", what="choosing the base model"):
        browser.pick_option(page, "#chat-model", "base")  # another model: a new conversation
    browser.ask(page, QUESTION)
    assert browser.chat_messages(page) == [QUESTION, _alone(site, "base", [QUESTION])[0]]
    assert "New conversation" in page.locator("#chat-status").inner_text()


def test_compare_base_and_tuned_side_by_side(site, page):
    browser.tab(page, "Compare")
    with browser.event(page, "#compare-status", what="picking a video on Compare"):
        browser.pick_option(page, "#compare-pick", "clips/red-left.mp4")
    assert "after DiffFP" in page.locator("#compare-tokens").inner_text()
    base, tuned = browser.compare(page, QUESTION)
    assert [base, tuned] == [_alone(site, "base", [QUESTION])[0], _alone(site, "tuned", [QUESTION])[0]]
    assert base != tuned
    assert "Done. base:" in page.locator("#compare-status").inner_text()


def test_results_open_sort_and_show_a_sample(site, page):
    browser.tab(page, "Results")
    summary = browser.open_results(page, ["compare (eval compare)"])
    versus = site["compared"]["versus_baseline"][0]
    assert f"{versus['wins']} wins, {versus['losses']} losses, {versus['ties']} ties" in summary
    assert browser.sample_ids(page) == ["c1", "c2", "c3"]
    browser.pick_option(page, "#results-sort", "tuned vs base: biggest loss first")
    page.wait_for_function("() => { const c = document.querySelector('#results-samples [role=gridcell]');"
                           " return c && c.innerText.trim() === 'c2'; }")
    assert browser.sample_ids(page)[0] == "c2"  # tuned said "down" where base said "up" (right)
    detail = browser.open_sample(page, "c2")
    assert "down" in detail and "up" in detail and "Which direction does the shape move?" in detail
    page.wait_for_function("document.querySelector('#results-video video')?.src")
    assert page.locator("#results-video track").count() == 1, "the sampled frames are marked on the video"
    assert [c.strip() for c in page.locator("#results-frames .caption-label").all_inner_texts()] == \
        ["Time 0.0s", "Time 1.0s", "Time 2.0s", "Time 3.0s"]


def test_bad_files_and_two_tabs_at_once(site, page, chromium, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all")
    browser.upload(page, "chat", fake)
    status = page.locator("#chat-status").inner_text()
    assert status.startswith("⚠") and "notes.mp4" in status and "Traceback" not in status
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(b"\0" * (2 * 2**20))
    page.locator("#chat-upload input[type=file]").set_input_files(str(huge))
    page.get_by_text("exceed the maximum allowed size").first.wait_for()

    page.reload()
    with opened_page(chromium, site["server"].url) as other:
        for tab in (page, other):
            browser.upload(tab, "chat", site["clip"])
            tab.locator("#chat-question textarea").fill(QUESTION)
        for tab in (page, other):
            browser.settle(tab)
            browser.watch(tab, "#chat-status")
        page.locator("#chat-ask").click()
        other.locator("#chat-ask").click()
        expected = _alone(site, "tuned", [QUESTION])[0]
        for tab in (page, other):
            assert "follow-up" in browser.wait_status(tab, "#chat-status", "follow-up", what="two tabs' answers")
            assert browser.chat_messages(tab) == [QUESTION, expected]


def test_results_work_without_a_model(site, chromium):
    from vidlab.web.app import launch
    from vidlab.web.options import WebOptions

    with launch(options=WebOptions(port=free_port(), runs=site["root"] / "eval"), block=False) as server:
        assert server.backend is None
        with opened_page(chromium, server.url) as page:
            assert "no model loaded" in page.locator("#web-header").inner_text()
            assert page.get_by_role("tab", name="Chat").count() == 0
            summary = browser.open_results(page, ["tuned (eval run)"])
            assert "tuned" in summary and "3 samples" in summary
            assert browser.sample_ids(page) == ["c1", "c2", "c3"]
