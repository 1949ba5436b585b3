"""Run a server in this process: the app of `create_app`, on uvicorn."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from vidlab.serve.options import ServeOptions


def serve(
    model: str | Path,
    *,
    adapters: Mapping[str, str | Path] | None = None,
    name: str | None = None,
    options: ServeOptions = ServeOptions(),
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str = "auto",
    device: str = "auto",
    quantize: str | None = None,
    log_level: str = "info",
) -> None:
    """Load the model and serve it until interrupted (Ctrl-C or SIGTERM finish the requests in flight first).

    Args:
        host: the address to listen on; 127.0.0.1 (the default) accepts this machine only.
        port: the TCP port.
        log_level: uvicorn's (critical, error, warning, info, debug).
        model, adapters, name, options, dtype, device, quantize: as in `create_app`.
    """
    import uvicorn

    from vidlab.serve.app import create_app

    app = create_app(model, adapters=adapters, name=name, options=options, dtype=dtype, device=device,
                     quantize=quantize)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)
