"""`ponder serve`: the cloud half of a split bundle behind the Open Inference Protocol, on
uvicorn (ponder.runtime's app; no torch is imported)."""

from __future__ import annotations

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
    "--log-requests/--no-log-requests",
    default=True,
    show_default=True,
    help="One JSON line per inference request on stderr (status, ms, bytes).",
)
def serve(bundle, host, port, token_file, max_body_mb, max_concurrency, log_requests) -> None:
    """Serve BUNDLE's cloud half (a split bundle from `ponder export --split`) over HTTP:
    POST /v2/models/<model>/infer with JSON or binary tensors, health and metadata routes."""
    import logging

    import uvicorn

    from ponder.runtime._serve.app import ServeConfig, make_app

    token = None
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ConfigError(f"{token_file} is empty; put the bearer token in it")
    config = ServeConfig(
        bundle, token=token, max_body_bytes=int(max_body_mb * (1 << 20)),
        max_concurrency=max_concurrency,
    )  # fmt: skip
    app = make_app(config)  # loads and checks the bundle before binding
    if log_requests:
        requests = logging.getLogger("ponder.serve")
        requests.setLevel(logging.INFO)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        requests.addHandler(handler)
    click.echo(f"serving {bundle} on http://{host}:{port}/v2 (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
