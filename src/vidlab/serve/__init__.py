"""`vidlab serve`: an OpenAI-compatible server for VideoLLaMA3 (video, adapters, batching; replicas on Ray Serve).

    from vidlab.serve import create_app, ServeOptions
    app = create_app("runs/quickstart/runs/base", adapters={"direction": "runs/quickstart/runs/lora"},
                     options=ServeOptions(media_root="runs/quickstart/data"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "create_app": "vidlab.serve.app",
    "build_app": "vidlab.serve.app",
    "ServeOptions": "vidlab.serve.options",
    "ServeError": "vidlab.serve.errors",
    "Engine": "vidlab.serve.engine",
    "serve": "vidlab.serve.run",
    "serve_ray": "vidlab.serve.ray_serve",
    "RayOptions": "vidlab.serve.ray_serve",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
