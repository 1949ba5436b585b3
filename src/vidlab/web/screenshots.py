"""Screenshots of each tab for the docs, taken in a real browser on a quickstart's models and evaluations.

    python -m vidlab.web.screenshots --quickstart runs/quickstart --out docs/images

Starts the page as `vidlab web --quickstart DIR` does, chats about the first test video with the tuned
model, compares base and tuned on it, opens the base vs tuned direction evaluations, and writes
web-chat.png, web-compare.png and web-results.png. Needs the dev extra (playwright) and a Chromium.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from vidlab.web import browser
from vidlab.web.options import WebOptions, quickstart_paths

QUESTION = "Which direction does the shape move?"
VIEWPORT = {"width": 1400, "height": 960}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def take(quickstart: Path, out: Path, video: str = "test/00000.mp4") -> list[Path]:
    """Write the three screenshots into `out`; returns their paths."""
    from playwright.sync_api import sync_playwright

    from vidlab.web.app import launch

    executable = browser.find_chromium()
    if executable is None:
        raise SystemExit("no Chromium found: apt-get install chromium (or set VIDLAB_CHROMIUM).")
    paths = quickstart_paths(quickstart)
    options = WebOptions(port=_free_port(), runs=paths["runs"], media_root=paths["media_root"], media=paths["media"])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with launch(paths["model"], paths["adapters"], options=options, block=False, device="cpu") as server, \
            sync_playwright() as playwright:
        chromium = browser.open_browser(playwright, executable)
        page = chromium.new_page(viewport=VIEWPORT)
        page.goto(server.url)
        page.locator("#web-settings button").first.click()  # unfold the settings (folded at first)
        browser.set_number(page, "#set-max-tokens", 16)
        page.locator("#web-settings button").first.click()
        browser.upload(page, "chat", paths["media_root"] / video)
        browser.ask(page, QUESTION)
        written.append(out / "web-chat.png")
        page.screenshot(path=written[-1])
        browser.tab(page, "Compare")
        browser.upload(page, "compare", paths["media_root"] / video)
        browser.compare(page, QUESTION)
        written.append(out / "web-compare.png")
        page.screenshot(path=written[-1])
        browser.tab(page, "Results")
        browser.open_results(page, ["base_direction (eval run)", "lora_direction (eval run)"])
        browser.pick_option(page, "#results-sort", "lora_direction vs base_direction: biggest gain first")
        page.wait_for_timeout(500)
        browser.open_sample(page, browser.sample_ids(page)[0])
        page.wait_for_timeout(1000)
        written.append(out / "web-results.png")
        page.screenshot(path=written[-1], full_page=True)
        chromium.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the web page's tabs for the docs.")
    parser.add_argument("--quickstart", type=Path, default=Path("runs/quickstart"),
                        help="A finished `vidlab quickstart` folder (default: runs/quickstart).")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="Folder for the PNG files.")
    args = parser.parse_args()
    for path in take(args.quickstart, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
