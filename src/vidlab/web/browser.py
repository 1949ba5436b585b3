"""Driving the page in a real browser (Playwright on a system Chromium), for the browser tests and the
screenshots: find the browser, and the steps a person takes on each tab. Playwright is a dev dependency
(`pip install -e ".[dev]"`); the browser is Debian's `chromium` package (`apt-get install chromium`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WAIT_MS = 60_000  # longest wait for one step of the page (an answer on a slow, shared CPU)


def find_chromium() -> str | None:
    """A Chromium to drive: $VIDLAB_CHROMIUM, else the first of CHROMIUM_NAMES on PATH; None if none."""
    given = os.environ.get("VIDLAB_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def open_browser(playwright, executable: str):
    # --no-sandbox: Chromium's sandbox refuses to start as root, which is how CI and containers run it.
    return playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])


def watch(page, element: str) -> None:
    """Record every text `element` shows from now on, so that `wait_status` sees an answer's end even when the
    line reads the same as after the previous answer."""
    page.evaluate(
        "(sel) => { window.__seen = window.__seen || {}; const seen = window.__seen[sel] = [];"
        " const el = document.querySelector(sel);"
        " new MutationObserver(() => seen.push(el.innerText))"
        ".observe(el, {subtree: true, childList: true, characterData: true}); }", element)


def wait_status(page, element: str, done: str) -> None:
    """Wait until `element` (watched since the click) has said "answering", then `done`; or shown an error (⚠).
    (While an event runs, gradio redraws its outputs with their old text: that must not count.)"""
    page.wait_for_function(
        "([sel, done]) => { const seen = (window.__seen || {})[sel] || [];"
        " const start = seen.findIndex(t => t.includes('answering'));"
        " return seen.some(t => t.includes('⚠')) || start >= 0 && seen.slice(start + 1).some(t => t.includes(done)); }",
        arg=[element, done], timeout=WAIT_MS)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def set_number(page, element: str, value: float) -> None:
    box = page.locator(f"{element} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def upload(page, prefix: str, path: str | Path) -> None:
    """Upload a file on the Chat ("chat") or Compare ("compare") tab and wait for its frame strip or an error
    naming it."""
    page.locator(f"#{prefix}-upload input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "([tokens, status, name]) => { const t = document.querySelector(tokens)?.innerText || '';"
        " const s = document.querySelector(status)?.innerText || '';"
        " return t.includes('visual tokens') && !t.includes('No video') && !s.includes('⚠')"
        " || s.includes('⚠') && s.includes(name); }",
        arg=[f"#{prefix}-tokens", f"#{prefix}-status", Path(path).name], timeout=WAIT_MS)


def ask(page, question: str) -> str:
    """Ask on the Chat tab; wait for the whole answer; returns the status line."""
    page.locator("#chat-question textarea").fill(question)
    watch(page, "#chat-status")
    page.locator("#chat-ask").click()
    wait_status(page, "#chat-status", "follow-up")
    return page.locator("#chat-status").inner_text()


def chat_messages(page) -> list[str]:
    """The conversation's text messages, the user's and the model's in turn (the media message left out)."""
    return [m.strip() for m in page.locator("#chat-answers [data-testid=user]:not(:has(video, img)), "
                                            "#chat-answers [data-testid=bot]").all_inner_texts()]


def chat_media(page) -> int:
    """How many videos and images the conversation shows."""
    return page.locator("#chat-answers [data-testid=user] video, #chat-answers [data-testid=user] img").count()


def strip_captions(page, prefix: str = "chat") -> list[str]:
    return [c.strip() for c in page.locator(f"#{prefix}-strip .caption-label").all_inner_texts()]


def compare(page, question: str) -> list[str]:
    """Ask on the Compare tab; wait for every answer; returns them in the page's order."""
    page.locator("#compare-question textarea").fill(question)
    watch(page, "#compare-status")
    page.locator("#compare-ask").click()
    wait_status(page, "#compare-status", "Done")
    return [box.input_value() for box in page.locator("[id^=compare-answer-] textarea").all()]


def pick_option(page, element: str, label: str) -> None:
    """Choose `label` in a dropdown (its list opens outside the element)."""
    page.locator(f"{element} input").click()
    page.get_by_role("option", name=label, exact=True).click()


def open_results(page, labels: list[str]) -> str:
    """Open results folders on the Results tab (by their labels in the list); returns the summary."""
    for label in labels:
        pick_option(page, "#results-folders", label)
    page.keyboard.press("Escape")
    page.locator("#results-open").click()
    page.wait_for_function("document.querySelector('#results-summary')?.innerText.includes(' vs ') || "
                           "document.querySelector('#results-summary')?.innerText.includes('⚠') || "
                           "document.querySelector('#results-summary')?.innerText.includes('samples')",
                           timeout=WAIT_MS)
    return page.locator("#results-summary").inner_text()


def sample_ids(page) -> list[str]:
    """The sample list's id column, top to bottom."""
    cells = page.locator("#results-samples [role=row] [role=gridcell].first-column").all_inner_texts()
    return [cell.strip() for cell in cells]


def open_sample(page, sample_id: str) -> str:
    page.locator("#results-samples [role=gridcell]").get_by_text(sample_id, exact=True).first.click()
    page.wait_for_function("(id) => (document.querySelector('#results-detail')?.innerText || '').includes(id)",
                           arg=sample_id, timeout=WAIT_MS)
    return page.locator("#results-detail").inner_text()
