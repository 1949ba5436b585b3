"""Driving the page in a real browser (Playwright on a system Chromium), for the browser tests and the
screenshots: find the browser, and the steps a person takes on each tab. Playwright is a dev dependency
(`pip install -e ".[dev]"`); the browser is Debian's `chromium` package (`apt-get install chromium`)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
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


# gradio shows a status tracker on each output of an event while the event is queued, runs or streams (its
# `hide` class is off); a failed event leaves it showing "Error" (not running).
BUSY = "[data-testid=status-tracker]:not(.hide):not(:has(.error))"


def _wait(page, script: str, arg, what: str, timeout_ms: int = WAIT_MS) -> None:
    """page.wait_for_function, failing with `what` was awaited and what the page's status lines said."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, arg=arg, timeout=timeout_ms)
    except PlaywrightTimeout:
        said = page.evaluate("() => [...document.querySelectorAll('[id$=-status], [id$=-tokens], [id$=-summary]')]"
                             ".map(e => `${e.id}: ${e.innerText.trim().slice(0, 300)}`)")
        busy = page.evaluate(f"() => [...document.querySelectorAll({BUSY!r})]"
                             ".map(t => t.closest('[id]')?.id || '?')")
        raise AssertionError(f"{what}: not within {timeout_ms / 1000:.0f} s. Still running on: {busy or 'nothing'}. "
                             f"The page said: {said}") from None


def settle(page, what: str = "the page's earlier events to end") -> None:
    """Wait until no event of the page is queued or running (no output shows gradio's progress), so that what
    the next action waits for cannot be an earlier action's result."""
    _wait(page, f"() => !document.querySelector({BUSY!r})", None, what)


def watch(page, element: str) -> None:
    """Record, from now on, every text `element` shows and whether an event updating it has started (its status
    tracker shown), for `wait_status`. Call it after `settle` and just before the action."""
    page.evaluate(
        "([sel, busy]) => { const w = window.__watched = window.__watched || {};"
        " if (w[sel]) w[sel].observer.disconnect();"
        " const el = document.querySelector(sel); if (!el) throw new Error(sel + ': not on the page');"
        " const seen = w[sel] = {texts: [], started: false};"
        " seen.observer = new MutationObserver(() => { seen.texts.push(el.innerText);"
        "   if (el.querySelector(busy)) seen.started = true; });"
        " seen.observer.observe(el, {subtree: true, childList: true, characterData: true, attributes: true,"
        "   attributeFilter: ['class']}); }", [element, BUSY])


def wait_status(page, element: str, done: str | None = None, what: str | None = None) -> str:
    """Wait for the event started since `watch(page, element)` to end: `element`'s status tracker was shown and
    is gone, and (`done`) its text includes `done` or an error (⚠). Returns the element's text.

    (While an event runs, gradio redraws its outputs with their old text, and an earlier event's text may still
    be on the page: only the end of an event that started after `watch` counts.)"""
    _wait(page, "([sel, busy, done]) => { const seen = (window.__watched || {})[sel];"
                " if (!seen) throw new Error('wait_status(' + sel + ') without watch()');"
                " const el = document.querySelector(sel);"
                " if (el.querySelector(busy)) { seen.started = true; return false; }"
                " const text = el.innerText;"
                " return seen.started && (done === null || text.includes(done) || text.includes('⚠')); }",
          [element, BUSY, done], what or f"{element}: an event that ends with {done or 'any text'!r}")
    return page.locator(element).inner_text()


@contextmanager
def event(page, element: str, done: str | None = None, what: str | None = None):
    """`with event(page, "#chat-status", "follow-up"): <one action>`: waits for the page's earlier events to end
    before the action and for the action's own event (one updating `element`) to end after it."""
    settle(page, f"before {what or element}: the page's earlier events to end")
    watch(page, element)
    yield
    wait_status(page, element, done, what)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def set_number(page, element: str, value: float) -> None:
    box = page.locator(f"{element} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def upload(page, prefix: str, path: str | Path) -> str:
    """Upload a file on the Chat ("chat") or Compare ("compare") tab and wait for its own event to end: its
    frame strip, or an error naming it. Returns the status line."""
    name = Path(path).name
    with event(page, f"#{prefix}-status", what=f"the upload of {name}"):
        page.locator(f"#{prefix}-upload input[type=file]").set_input_files(str(path))
    status = page.locator(f"#{prefix}-status").inner_text()
    tokens = page.locator(f"#{prefix}-tokens").inner_text()
    shown = "visual tokens" in tokens and "No video" not in tokens and "⚠" not in status
    assert shown or "⚠" in status and name in status, \
        f"the upload of {name} ended with neither its frames nor a message naming it: {status!r}; {tokens!r}"
    return status


def ask(page, question: str) -> str:
    """Ask on the Chat tab; wait for the whole answer (or its error); returns the status line."""
    page.locator("#chat-question textarea").fill(question)  # (leaving a settings box starts its event here)
    with event(page, "#chat-status", "follow-up", what=f"the answer to {question!r}"):
        page.locator("#chat-ask").click()
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
    with event(page, "#compare-status", "Done", what=f"the comparison's answers to {question!r}"):
        page.locator("#compare-ask").click()
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
    with event(page, "#results-summary", what=f"opening {', '.join(labels)}"):
        page.locator("#results-open").click()
    return page.locator("#results-summary").inner_text()


def sample_ids(page) -> list[str]:
    """The sample list's id column, top to bottom."""
    cells = page.locator("#results-samples [role=row] [role=gridcell].first-column").all_inner_texts()
    return [cell.strip() for cell in cells]


def open_sample(page, sample_id: str) -> str:
    """Click a sample in the list (another than the one shown) and wait for its detail; returns the detail."""
    with event(page, "#results-detail", sample_id, what=f"the detail of sample {sample_id}"):
        page.locator("#results-samples [role=gridcell]").get_by_text(sample_id, exact=True).first.click()
    return page.locator("#results-detail").inner_text()
