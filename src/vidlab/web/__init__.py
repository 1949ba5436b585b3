"""The web page: chat with a video, compare base and fine-tuned answers side by side, browse evaluations.

    import vidlab.web
    server = vidlab.web.launch(model="runs/tiny", adapters={"tuned": "runs/lora"},
                               options=vidlab.web.WebOptions(runs="runs/eval"), block=False)
    print(server.url); server.close()

    app = vidlab.web.build_app(vidlab.web.LocalBackend("runs/tiny"))   # the gradio Blocks, to mount or launch

Modules: options (WebOptions), backend (the interface the tabs use), local (the model in this process),
remote (a client of `vidlab serve`), media, results (eval folders, no gradio), controls, sessions, the
tabs (chat_tab, compare_tab, results_tab), app (build_app, launch), cli (`vidlab web`), screenshots.
Names are imported on first use: gradio and torch load only when the page is built.
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "WebOptions": "vidlab.web.options",
    "WebServer": "vidlab.web.app",
    "build_app": "vidlab.web.app",
    "launch": "vidlab.web.app",
    "make_backend": "vidlab.web.app",
    "LocalBackend": "vidlab.web.local",
    "RemoteBackend": "vidlab.web.remote",
    "MediaChoice": "vidlab.web.backend",
    "open_results": "vidlab.web.results",
    "find_results": "vidlab.web.results",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
