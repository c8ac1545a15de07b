"""`ponder serve`: the cloud half of a split bundle behind the Open Inference Protocol, on
uvicorn (ponder.runtime's app; no torch is imported), or with `--ray` as a Ray Serve deployment
of the same app on a local Ray instance (`serve_ray.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ponder._core.errors import ConfigError


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the bearer token requests must send (Authorization: Bearer ...); "
    "the health routes stay open. Default: no token.",
)
@click.option("--max-body-mb", default=64.0, show_default=True, help="Largest request body.")
@click.option(
    "--max-concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Inferences at once; more get 503 with Retry-After.",
)
@click.option(
    "--max-batch",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="Rows (samples) per tail call when concurrent requests of the same token count are "
    "batched; 1 turns batching off.",
)
@click.option(
    "--batch-wait-ms",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Longest a request waits for others to share its tail call (only while other "
    "requests are in the server); 0 turns batching off.",
)
@click.option(
    "--timeout-s",
    default=30.0,
    show_default=True,
    help="Per inference request, body included: later gets 504.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Server processes on the one port (each loads the bundle and keeps its own metrics).",
)
@click.option(
    "--log-requests/--no-log-requests",
    default=True,
    show_default=True,
    help="One JSON line per inference request on stderr (status, ms, bytes); not with --ray "
    "(Ray Serve writes its own access logs under /tmp/ray/session_latest/logs/serve).",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Serve the same app as a Ray Serve deployment on a local single-node Ray instance "
    "(needs pip install 'ponder[ray]'; Ray Serve takes 20-30 s and ~1.5 GB to start).",
)
@click.option(
    "--replicas",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="With --ray: replicas of the app, each loading the bundle.",
)
@click.option(
    "--autoscale",
    metavar="MIN:MAX",
    help="With --ray: scale between MIN and MAX replicas (2 requests in flight per replica as "
    "the target) instead of a fixed --replicas.",
)
def serve(
    bundle, host, port, token_file, max_body_mb, max_concurrency, max_batch, batch_wait_ms,
    timeout_s, workers, log_requests, use_ray, replicas, autoscale,
) -> None:  # fmt: skip
    """Serve BUNDLE's cloud half (a split bundle from `ponder export --split`) over HTTP:
    POST /v2/models/<model>/infer with JSON or binary tensors, health and metadata routes."""
    import logging

    import uvicorn

    from ponder.runtime._serve.app import CONFIG_ENV, ServeConfig, make_app

    token = None
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ConfigError(f"{token_file} is empty; put the bearer token in it")
    config = ServeConfig(
        bundle, token=token, max_body_bytes=int(max_body_mb * (1 << 20)),
        max_concurrency=max_concurrency, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
        timeout_s=timeout_s,
    )  # fmt: skip
    if use_ray and workers > 1:
        raise click.UsageError("--workers is for the plain server; with --ray give --replicas")
    if use_ray:
        from ponder._cli.serve_ray import serve_on_ray

        serve_on_ray(config, host=host, port=port, replicas=replicas, autoscale=autoscale)
        return
    if autoscale is not None:
        raise ConfigError("--autoscale works with --ray only")
    app = make_app(config)  # loads and checks the bundle before binding
    if log_requests:
        requests = logging.getLogger("ponder.serve")
        requests.setLevel(logging.INFO)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        requests.addHandler(handler)
    click.echo(f"serving {bundle} on http://{host}:{port}/v2 (Ctrl-C stops)")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    # worker processes build their own app from the config in the environment (the token
    # travels there, never on a command line)
    os.environ[CONFIG_ENV] = config.to_json()
    uvicorn.run(
        "ponder.runtime._serve.app:app_from_env", factory=True, workers=workers, host=host,
        port=port, log_level="warning",
    )  # fmt: skip
