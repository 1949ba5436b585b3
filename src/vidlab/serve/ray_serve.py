"""The same server on Ray Serve: N model replicas behind one gateway, on one machine or a Ray cluster.

    gateway (1 replica, no model)  ->  VidlabReplica x N (each its own model, adapters, caches, queue)

The gateway is the app of `build_app` (routes, auth, request checks, metrics of its own and the
replicas', which they send with each health check) over a backend that sends each request to a
replica through a Ray deployment handle. Requests about the same media go to the same live replica, whose
prefix and vision caches hold that media's work (`ray_routing.MediaAffinityRouter`), unless it is saturated;
the others are balanced by queue length.
A replica that dies mid-request does not lose it: the gateway sends it again to another replica
(greedy answers are the same), up to `retries` times, and answers a retryable 503 with Retry-After
only when none could take it. A stream that already sent text cannot be replayed: it ends with an
error event saying to send it again. Ray is an optional extra: `pip install "vidlab[ray]"`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vidlab.errors import VidlabError
from vidlab.serve.errors import ServeError
from vidlab.serve.options import ServeOptions
from vidlab.serve.protocol import ChatRequest, model_list

APP_NAME = "vidlab"
GATEWAY = "Gateway"

log = logging.getLogger(__name__)


class RayOptions(BaseModel):
    """How the model replicas are placed and scaled on Ray."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(1, ge=1, description="Model replicas (each loads its own copy of the model).")
    gpus_per_replica: float = Field(0.0, ge=0, description="GPUs each replica reserves (0: CPU replicas).")
    cpus_per_replica: float = Field(1.0, ge=0, description="CPUs each replica reserves.")
    min_replicas: int | None = Field(
        None, ge=0, description="Autoscaling: fewest replicas (give with --max-replicas; --replicas starts there)."
    )
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling: most replicas.")
    address: str | None = Field(
        None, description="Ray cluster to join (e.g. auto, or ray://host:10001); none: start a local Ray here."
    )
    retries: int = Field(3, ge=0, description="Times a request is sent again when its replica dies.")
    health_check_seconds: float = Field(
        2.0, gt=0, description="How often Ray checks each replica (a dead one is replaced after the next check)."
    )

    def deployment_options(self, options: ServeOptions) -> dict[str, Any]:
        """Options of the replica deployment: resources, replica count or autoscaling bounds, concurrency."""
        resources: dict[str, Any] = {"num_cpus": self.cpus_per_replica}
        if self.gpus_per_replica:
            resources["num_gpus"] = self.gpus_per_replica
        deployment: dict[str, Any] = {
            "ray_actor_options": resources,
            # A replica must see its whole queue, or it could not batch and would never answer 429 itself.
            "max_ongoing_requests": options.max_queue + options.max_batch,
            "health_check_period_s": self.health_check_seconds,
            # Same media, same replica (its caches); imported by name in the gateway, where Ray routes.
            "request_router_config": {
                "request_router_class": "vidlab.serve.ray_routing.MediaAffinityRouter",
                "request_router_kwargs": {"imbalance": max(1, options.max_batch)},
            },
        }
        if self.max_replicas is not None:
            low = self.min_replicas if self.min_replicas is not None else 1
            deployment["autoscaling_config"] = {
                "min_replicas": low, "max_replicas": self.max_replicas, "initial_replicas": max(low, self.replicas),
                "target_ongoing_requests": max(1, options.max_batch),
            }
        else:
            deployment["num_replicas"] = self.replicas
        return deployment


def _require_ray():
    try:
        import ray
        from ray import serve
    except ImportError as err:
        raise VidlabError("--ray needs Ray Serve: pip install 'vidlab[ray]' (or pip install 'ray[serve]').") from err
    return ray, serve


def _cause(err: BaseException) -> BaseException:
    """The exception a replica raised, out of Ray's wrapper."""
    seen = err
    while getattr(seen, "cause", None) is not None and seen.cause is not seen:
        seen = seen.cause
    return seen


def _raise_client_error(err: BaseException) -> None:
    """Raise the replica's own answer to a bad request (a ServeError), out of Ray's wrapper, as it is."""
    cause = _cause(err)
    if isinstance(cause, ServeError):
        raise cause from None


def _replica_lost(err: BaseException) -> bool:
    from ray.exceptions import RayActorError, WorkerCrashedError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    lost = (RayActorError, WorkerCrashedError, ReplicaUnavailableError, DeploymentUnavailableError)
    return isinstance(err, lost) or isinstance(_cause(err), lost)


def _unavailable(what: str) -> ServeError:
    return ServeError(503, f"{what}. Send the request again (after Retry-After seconds).", code="replica_unavailable",
                      retry_after=1)


def adapter_for(name: str, adapters: list[str], model: str | None) -> str | None:
    if model is None or model == name:
        return None
    if model in adapters:
        return model
    raise ServeError(404, f"model: {model!r} is not served here. Use one of: {', '.join([name, *adapters])} (GET "
                     "/v1/models lists them).", code="model_not_found", param="model")


class RayBackend:
    """The gateway's backend: each request goes to a model replica through Ray, again if its replica dies."""

    def __init__(self, handle, name: str, adapters: list[str], retries: int, registry=None):
        from prometheus_client import CollectorRegistry, Counter

        self.handle, self.name, self.adapters, self.retries = handle, name, adapters, retries
        self.resent = Counter("vidlab_serve_replica_retries", "Requests sent again because their replica died.",
                              registry=registry if registry is not None else CollectorRegistry())

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def models(self) -> dict:
        return model_list(self.name, self.adapters)

    def health(self) -> dict:
        return {"status": "ok", "model": self.name, "adapters": self.adapters, "backend": "ray"}

    def adapter_for(self, model: str | None) -> str | None:
        return adapter_for(self.name, self.adapters, model)

    @staticmethod
    def _body(request: ChatRequest) -> dict:
        return request.model_dump(exclude_unset=True)

    @staticmethod
    def _media_key(body: dict) -> str | None:
        from vidlab.serve.ray_routing import media_key

        return media_key(body)

    async def _backoff(self, attempt: int) -> None:
        self.resent.inc()
        await asyncio.sleep(min(2.0, 0.2 * 2**attempt))

    async def complete(self, request: ChatRequest) -> dict:
        body = self._body(request)
        key = self._media_key(body)
        _, answer = await self._first_answer(lambda: self.handle.complete.remote(body, media_key=key),
                                             lambda response: response)
        return answer

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict]:
        body = self._body(request)
        key = self._media_key(body)
        chunks, first = await self._first_answer(lambda: self.handle.options(stream=True).stream.remote(
                                                     body, media_key=key),
                                                 lambda chunks: chunks.__anext__())
        return self._rest(first, chunks)

    async def _first_answer(self, send, first_of) -> tuple:
        """`send()` a request to a replica and await `first_of(call)`; sent again (up to `retries` times) while the
        replica answering it dies. The call and what it gave first."""
        for attempt in range(self.retries + 1):
            call = send()
            try:
                return call, await first_of(call)
            except asyncio.CancelledError:
                call.cancel()  # the client left: the replica drops the request
                raise
            except Exception as err:
                _raise_client_error(err)
                if not _replica_lost(err):
                    raise
            await self._backoff(attempt)
        raise _unavailable(f"no model replica could answer after {self.retries + 1} tries (replicas stopped)")

    async def _rest(self, first: dict, chunks) -> AsyncIterator[dict]:
        finished = False
        try:
            yield first
            try:
                async for item in chunks:
                    yield item
            except Exception as err:
                _raise_client_error(err)
                if _replica_lost(err):
                    raise _unavailable("the model replica answering this stream stopped midway") from None
                raise
            finished = True
        finally:
            if not finished:
                chunks.cancel()


class VidlabReplica:
    """One model replica: an `Engine` serving requests sent by the gateway."""

    def __init__(self, model, adapters: dict, name: str | None, options: ServeOptions, dtype: str, device: str,
                 quantize: str | None):
        from vidlab.serve.engine import Engine

        self.engine = Engine(model, adapters=adapters, name=name, options=options, dtype=dtype, device=device,
                             quantize=quantize)
        self._started: asyncio.Task | None = None
        self._gateway = None

    async def _ready(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self.engine.start())
        await self._started

    async def complete(self, body: dict, media_key: str | None = None) -> dict:  # media_key: for the router
        await self._ready()
        return await self.engine.complete(ChatRequest.model_validate(body))

    async def stream(self, body: dict, media_key: str | None = None) -> AsyncIterator[dict]:
        await self._ready()
        async for item in await self.engine.stream(ChatRequest.model_validate(body)):
            yield item

    async def health(self) -> dict:
        return self.engine.health()

    async def check_health(self) -> None:
        """Ray calls this every `health_check_seconds`; the replica sends the gateway its metrics then. Never raises
        for them: metrics are not worth a restart."""
        from ray import serve

        try:
            if self._gateway is None:
                app = serve.get_replica_context().app_name
                self._gateway = serve.get_deployment_handle(GATEWAY, app_name=app)
            families = list(self.engine.registry.collect())
            await asyncio.wait_for(self._gateway.replica_metrics.remote(self.engine.fingerprint, families), 5)
        except Exception as err:  # the gateway is starting, stopping or busy: the next check sends them
            log.debug("metrics not sent to the gateway: %s", err)

    async def __del__(self) -> None:
        await self.engine.close()


class Gateway:
    """The HTTP ingress: `build_app` over a `RayBackend` to the replicas."""

    def __init__(self, replicas, name: str, adapters: list[str], options: ServeOptions, retries: int,
                 health_check_seconds: float):
        from prometheus_client import CollectorRegistry

        from vidlab.serve.app import build_app
        from vidlab.serve.metrics import ReplicaMetrics

        registry = CollectorRegistry()
        # A replica is forgotten after missing a few health checks (Ray replaces a dead one after one).
        self._replicas = ReplicaMetrics(stale_seconds=max(3 * health_check_seconds, 10.0))
        registry.register(self._replicas)
        # Not `self.app`: Ray's ASGI wrapper owns that name.
        self._asgi = build_app(RayBackend(replicas, name, adapters, retries, registry), options, registry)

    def __serve_build_asgi_app__(self):
        return self._asgi

    def replica_metrics(self, replica: str, families: list) -> None:
        """A replica's metrics snapshot (sent by `VidlabReplica.check_health`)."""
        self._replicas.update(replica, families)


def build_ray_app(
    model: str | Path, *, adapters: Mapping[str, str | Path] | None = None, name: str | None = None,
    options: ServeOptions = ServeOptions(), ray_options: RayOptions = RayOptions(), dtype: str = "auto",
    device: str = "auto", quantize: str | None = None,
):
    """The Ray Serve application (gateway + model replicas), for `serve.run` or a `serve run` config."""
    _, serve = _require_ray()
    adapters = {key: str(value) for key, value in (adapters or {}).items()}
    name = name or str(model)
    replica = serve.deployment(VidlabReplica, name="VidlabReplica", **ray_options.deployment_options(options))
    gateway = serve.deployment(serve.ingress()(Gateway), name=GATEWAY, num_replicas=1,
                               ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100_000)
    replicas = replica.bind(str(model), adapters, name, options, dtype, device, quantize)
    return gateway.bind(replicas, name, list(adapters), options, ray_options.retries,
                        ray_options.health_check_seconds)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class RayServer:
    """A running Ray Serve deployment of vidlab; `stop()` ends it (and the local Ray it started, if any)."""

    url: str
    started_ray: bool

    def stop(self) -> None:
        ray, serve = _require_ray()
        try:
            serve.delete(APP_NAME)
            serve.shutdown()
        finally:
            if self.started_ray:
                ray.shutdown()


def start_ray(
    model: str | Path, *, adapters: Mapping[str, str | Path] | None = None, name: str | None = None,
    options: ServeOptions = ServeOptions(), ray_options: RayOptions = RayOptions(), host: str = "127.0.0.1",
    port: int = 8000, dtype: str = "auto", device: str = "auto", quantize: str | None = None,
    num_cpus: int | None = None,
) -> RayServer:
    """Deploy on Ray and return once every replica is up.

    Without `ray_options.address` a local Ray starts here. When `host` is a loopback address that
    local Ray is kept local too: its node address is 127.0.0.1 and its usage statistics are off.

    Args:
        num_cpus: CPUs the local Ray may hand out (None: Ray counts them).
        Others: as in `serve`, plus `ray_options` (replicas, resources, autoscaling, cluster address).
    """
    ray, serve = _require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "num_cpus": num_cpus}
        if ray_options.address is None and _is_loopback(host):
            # Ray swaps 127.0.0.1 for the machine's address unless told this is not a cluster node.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs["_node_ip_address"] = "127.0.0.1"
        ray.init(address=ray_options.address, **kwargs)
        started = True
    serve.start(http_options={"host": host, "port": port})
    app = build_ray_app(model, adapters=adapters, name=name, options=options, ray_options=ray_options, dtype=dtype,
                        device=device, quantize=quantize)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return RayServer(url=f"http://{host}:{port}", started_ray=started)


def serve_ray(model: str | Path, **kwargs) -> None:
    """`start_ray`, then serve until SIGINT or SIGTERM, then stop (arguments as `start_ray`)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before starting: a stop asked for meanwhile is kept
        signal.signal(sig, lambda *_: done.set())
    server = start_ray(model, **kwargs)
    print(f"vidlab serve: {server.url}/v1 (Ray Serve); Ctrl-C stops", flush=True)
    try:
        done.wait()
    finally:
        server.stop()
