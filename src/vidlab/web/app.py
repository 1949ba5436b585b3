"""The page: Chat, Compare and Results tabs on one gradio app, and the server that runs it.

    server = vidlab.web.launch(model="runs/quickstart/runs/base", adapters={"tuned": "runs/quickstart/runs/lora"},
                               options=vidlab.web.WebOptions(runs="runs/quickstart/eval"), block=False)
    server.url        # http://127.0.0.1:7860/
    server.close()    # stops it and removes its temporary folder
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vidlab.errors import VidlabError
from vidlab.web.backend import Backend
from vidlab.web.options import WebOptions
from vidlab.web.results import find_results, read_run
from vidlab.web.sessions import Sessions

# The frame strips wrap onto as many rows as their frames need (gradio's gallery keeps one row and scrolls it
# sideways without a hint, or clips the stamps under a fixed height); table headers break between words only.
CSS = """
#chat-strip .caption-label, #compare-strip .caption-label, #results-frames .caption-label {font-size: 12px}
#chat-strip .grid-wrap, #compare-strip .grid-wrap {height: auto !important; max-height: none !important;
  min-height: 0 !important; overflow: visible !important}
#chat-strip .grid-container, #compare-strip .grid-container {
  grid-template-columns: repeat(auto-fill, minmax(104px, 1fr)) !important; grid-auto-rows: auto !important}
#results-metrics th, #results-samples th, #results-metrics th *, #results-samples th * {
  word-break: normal !important; overflow-wrap: normal !important; hyphens: none !important}
footer {display: none !important}
"""


def _allowed(options: WebOptions) -> list[Path]:
    """Folders whose files the page may serve: the runs and media roots, and the data roots of the runs."""
    roots = [p for p in (options.runs, options.media_root) if p is not None]
    if options.runs is not None:
        for found in find_results(options.runs):
            if found.kind == "run":
                root = read_run(found.path).data_root
                if root is not None and root.is_dir():
                    roots.append(root)
    return sorted({root.expanduser().resolve() for root in roots})


def build_app(backend: Backend | None, options: WebOptions = WebOptions(), *, temp_dir: str | Path | None = None):
    """The gradio Blocks of the page. `backend` None: only the Results tab works (no model).

    `temp_dir` (default: options.temp_dir or a new temporary folder) receives uploads, frames and copies;
    gradio is pointed at it too, so nothing is written elsewhere.
    """
    temp = Path(temp_dir or options.temp_dir or tempfile.mkdtemp(prefix="vidlab-web-"))
    (temp / "gradio").mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(temp / "gradio")  # gradio's upload and cache folder, read as blocks are built
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from vidlab.web.chat_tab import chat_tab, header_text
    from vidlab.web.compare_tab import compare_tab
    from vidlab.web.controls import settings_controls
    from vidlab.web.results_tab import results_tab

    sessions = Sessions()
    allowed = _allowed(options)
    with gr.Blocks(title="vidlab", analytics_enabled=False) as demo:
        header = gr.Markdown(header_text(backend, backend.model_names()[-1] if backend is not None else None),
                             elem_id="web-header")
        controls = None
        if backend is not None:
            with gr.Sidebar(label="Settings", open=False, elem_id="web-settings"):  # folded: a phone sees the page
                controls = settings_controls(options.media, options.generation)
        with gr.Tabs(elem_id="web-tabs"):
            if backend is not None:
                concurrency = 1 if backend.mode == "in-process" else 8  # a server batches; one local model does not
                with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                    chat_tab(backend, options, sessions, controls, header)
                with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                    compare_tab(backend, options, sessions, controls, concurrency)
            with gr.Tab("Results", id="results", elem_id="tab-results"):
                results_tab(options, sessions, temp, allowed)
    demo.vidlab_temp_dir = temp
    demo.vidlab_allowed = allowed
    return demo


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm():
    """Make SIGTERM stop the page as Ctrl-C does (so its temporary folder is removed); returns the handler it
    replaced (None off the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


@dataclass
class WebServer:
    """A running page: its URL, and `close()` to stop it (and remove the temporary folder it made)."""

    url: str
    app: object  # the gradio Blocks
    backend: Backend | None
    temp_dir: Path
    owns_temp: bool
    closed: bool = field(default=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.app.close()
        if self.backend is not None:
            self.backend.close()
        if self.owns_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def serve_forever(self) -> None:
        """Serve until Ctrl-C or SIGTERM (a service manager's stop, `kill`), then close: either way the
        temporary folder with the uploads is removed."""
        previous = stop_on_sigterm()
        try:
            self.app.block_thread()
        finally:
            self.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_backend(
    model: str | Path | None = None, adapters: Mapping[str, str | Path] | None = None, api: str | None = None,
    api_key: str | None = None, *, dtype: str = "auto", device: str = "auto", max_video_seconds: float | None = None,
) -> Backend | None:
    """An in-process backend (`model`), a client of a server (`api`), or None (neither: Results only)."""
    if model is not None and api is not None:
        raise VidlabError("give --model (the model runs in the page) or --api (a running vidlab serve), not both.")
    if adapters and model is None:
        raise VidlabError("--adapter needs --model (with --api, the server's adapters are listed by the server).")
    if api is not None:
        from vidlab.web.remote import RemoteBackend

        return RemoteBackend(api, api_key, max_video_seconds=max_video_seconds)
    if model is not None:
        from vidlab.web.local import LocalBackend

        return LocalBackend(model, adapters, dtype=dtype, device=device, max_video_seconds=max_video_seconds)
    return None


def launch(
    model: str | Path | None = None, adapters: Mapping[str, str | Path] | None = None, api: str | None = None,
    api_key: str | None = None, options: WebOptions = WebOptions(), *, dtype: str = "auto", device: str = "auto",
    backend: Backend | None = None, block: bool = True, open_browser: bool = False,
) -> WebServer:
    """Start the page (`vidlab web`). With `block` it serves until interrupted, then stops; without, it
    returns the running `WebServer` at once."""
    for name, folder in (("--runs", options.runs), ("--media-root", options.media_root)):
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise VidlabError(f"{name} {folder}: no such folder. Give an existing folder.")
    backend = backend or make_backend(model, adapters, api, api_key, dtype=dtype, device=device,
                                      max_video_seconds=options.max_video_seconds)
    owns_temp = options.temp_dir is None
    temp = Path(options.temp_dir or tempfile.mkdtemp(prefix="vidlab-web-"))
    try:
        url, app = _start(backend, options, temp, open_browser)
    except BaseException:  # a failed start (or Ctrl-C / SIGTERM during it) leaves no temporary folder behind
        if owns_temp:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    server = WebServer(url, app, backend, temp, owns_temp)
    if block:
        server.serve_forever()
    return server


def _start(backend: Backend | None, options: WebOptions, temp: Path, open_browser: bool):
    """Build the page and start serving it; returns (url, app)."""
    app = build_app(backend, options, temp_dir=temp)
    import gradio as gr

    concurrency = 8 if backend is not None and backend.mode != "in-process" else 1
    app.queue(default_concurrency_limit=concurrency)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    try:
        _, url, _ = app.launch(
            server_name=options.host, server_port=options.port, prevent_thread_lock=True, quiet=True,
            max_file_size=int(options.max_upload_mb * 2**20), allowed_paths=[str(p) for p in app.vidlab_allowed],
            ssr_mode=False, run_history=False, mcp_server=False, enable_monitoring=False, theme=theme, css=CSS,
            inbrowser=open_browser, show_error=False,
        )
    except OSError as err:
        raise VidlabError(f"cannot listen on {options.host}:{options.port or 7860} ({err}). Pick another --port.") \
            from None
    return url, app
