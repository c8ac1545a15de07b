"""Ray Serve scale-out of `ponder serve`: the same Starlette app (`make_app`) in every replica of
a Ray Serve deployment, a fixed number of replicas or an autoscaling range, and a local
single-node Ray instance to run it on (`ray_serving`). Ray is imported only when called."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder._core.errors import ConfigError, MissingDependencyError
from ponder.runtime._serve.app import ServeConfig, make_app

__all__ = ["REPLICA_HEADER", "Autoscaling", "ray_deployment", "ray_serving"]

REPLICA_HEADER = "x-ponder-replica"  # every answer names the replica that gave it


@dataclass(frozen=True)
class Autoscaling:
    """Ray Serve's autoscaling range: between `min_replicas` and `max_replicas` replicas,
    aiming at `target_ongoing_requests` requests in flight per replica."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"autoscaling wants 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                f"got {self.min_replicas}:{self.max_replicas}"
            )
        if self.target_ongoing_requests <= 0:
            raise ConfigError(
                f"target_ongoing_requests must be > 0, got {self.target_ongoing_requests}"
            )

    @classmethod
    def parse(cls, text: str) -> Autoscaling:
        """`MIN:MAX` (as `ponder serve --autoscale` takes it)."""
        low, sep, high = text.partition(":")
        if not (sep and low.strip().isdigit() and high.strip().isdigit()):
            raise ConfigError(f"--autoscale wants MIN:MAX replicas, e.g. 1:4; got {text!r}")
        return cls(int(low), int(high))

    def to_ray(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": max(self.min_replicas, 1),
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


def _ray() -> tuple[Any, Any]:
    """The `ray` and `ray.serve` modules, or an error that says how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise MissingDependencyError("ray[serve]", "ray", "Serving on Ray Serve") from e
    return ray, serve


def ray_deployment(
    bundle: str | Path | ServeConfig,
    *,
    replicas: int = 2,
    autoscaling: Autoscaling | None = None,
    name: str = "ponder",
    **options: Any,
) -> Any:
    """A Ray Serve application (a bound deployment) serving `bundle`'s cloud half: each replica
    loads the bundle and runs `make_app` on it, answering with its id in `x-ponder-replica`.

    bundle: a split bundle folder, or a `ServeConfig` for the token and limits.
    replicas: a fixed count; autoscaling: a range instead (then `replicas` is ignored).
    options: more `serve.deployment` options (`ray_actor_options`, `max_queued_requests`, ...).
    By default a replica takes `config.max_concurrency` requests at once, so Ray queues the
    rest instead of the app refusing them with 503. Run it with `serve.run(app)` on a cluster
    or with `ray_serving(app)` on a local one."""
    _, serve = _ray()
    config = bundle if isinstance(bundle, ServeConfig) else ServeConfig(bundle)
    if autoscaling is None and replicas < 1:
        raise ConfigError(f"replicas must be >= 1, got {replicas}")
    scale = (
        {"autoscaling_config": autoscaling.to_ray()}
        if autoscaling is not None
        else {"num_replicas": replicas}
    )
    options = {"max_ongoing_requests": config.max_concurrency, **scale, **options}

    @serve.deployment(name=name, **options)
    @serve.ingress()  # the app is built in each replica, by __serve_build_asgi_app__
    class PonderServe:
        def __init__(self, config: ServeConfig):
            self.config = config

        def __serve_build_asgi_app__(self) -> Any:
            replica = serve.get_replica_context().replica_id.unique_id
            return _ReplicaHeader(make_app(self.config), f"{replica} pid={os.getpid()}")

    return PonderServe.bind(config)


class _ReplicaHeader:
    """ASGI middleware that adds `x-ponder-replica: <id>` to every HTTP answer."""

    def __init__(self, app: Any, replica: str):
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


@contextlib.contextmanager
def ray_serving(
    application: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int | None = None,
    name: str = "ponder",
) -> Iterator[str]:
    """Start a local single-node Ray instance (no dashboard), Ray Serve's HTTP proxy on
    `host:port` and `application` on it; yield the base URL; shut Serve and Ray down on exit.
    Meanwhile SIGTERM (in the main thread) raises KeyboardInterrupt, so that it stops the same.

    num_cpus: the CPUs Ray may hand out (each replica takes one unless its
    `ray_actor_options` say otherwise); None: Ray's count of this machine's cores."""
    ray, serve = _ray()
    ray.init(
        address="local", include_dashboard=False, num_cpus=num_cpus, log_to_driver=False,
        configure_logging=False,
    )  # fmt: skip
    # Ray's own SIGTERM handler killed the process mid-start and left two of its agents
    # running (seen with 2.60): turn SIGTERM into KeyboardInterrupt, which stops everything
    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application, name=name, route_prefix="/")
        yield f"http://{host}:{port}"
    finally:
        try:
            serve.shutdown()
        finally:  # Ray stops even when Serve did not
            ray.shutdown()
            if main:
                signal.signal(signal.SIGTERM, before)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
