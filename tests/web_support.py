"""What the web page tests share: scored eval folders made by vidlab's own scoring, clips, and the browser set-up
(a free port, one headless Chromium per module, a page opened and settled)."""

from __future__ import annotations

import json
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from vidlab.data.synthetic import Scene, write_scene
from vidlab.web import browser

CHROMIUM = browser.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install "
                                    "chromium, or set VIDLAB_CHROMIUM): the browser tests need one")
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_chromium():
    """Debian's Chromium driven by Playwright (a module's tests share one; each opens its own pages)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = browser.open_browser(playwright, CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def opened_page(chromium, url: str, viewport: dict = VIEWPORT, **options):
    """A new page (its own browser context: its own gradio session) on `url`, drawn and with no event running;
    every wait as long as an answer's on a shared, busy CPU."""
    page = chromium.new_page(viewport=viewport, **options)
    try:
        page.set_default_timeout(browser.WAIT_MS)
        page.goto(url)
        page.locator("#web-header").wait_for()
        browser.settle(page, "the page's first events to end")
        yield page
    finally:
        page.close()


def write_clip(path: Path, colour: str = "red", direction: str = "left", seconds: float = 4.0) -> Path:
    """A short moving-shape clip (the quickstart's kind of video)."""
    write_scene(path, Scene(shape="circle", colour=colour, direction=direction, size=112, seconds=seconds, fps=8))
    return path


def scored_run(folder: Path, data_root: Path, rows: list[dict]) -> Path:
    """An eval run folder: predictions.jsonl as `vidlab eval run` writes it, run.json, scored by `vidlab.score`.

    Each row gives id, prediction, references and optionally task and media (relative to data_root)."""
    import vidlab

    folder.mkdir(parents=True)
    with open(folder / "predictions.jsonl", "w") as out:
        for line, row in enumerate(rows, start=1):
            out.write(json.dumps({
                "id": row["id"], "source": f"data.jsonl:{line}", "kind": "open",
                "prompt": "<video>\nWhich direction does the shape move?", "media": row.get("media", []),
                "prediction": row["prediction"], "references": row["references"],
                "meta": {"task": row.get("task", "direction")}, "frames": [[0.0, 1.0, 2.0, 3.0]],
                "visual_tokens": 40, "visual_tokens_before_pruning": 64, "prompt_tokens": 90, "generated_tokens": 2,
                "seconds": 0.01,
            }) + "\n")
    (folder / "run.json").write_text(json.dumps({
        "model": "tiny", "adapter": None, "data": str(data_root / "data.jsonl"), "format": "records",
        "data_root": str(data_root), "settings": {"fps": 1.0, "max_frames": 180, "compression": True},
        "max_new_tokens": 8,
    }))
    vidlab.score(folder / "predictions.jsonl", metrics=["exact_match", "sacrebleu"])
    return folder
