"""`ponder serve --ray`: the same app as a Ray Serve deployment on a local single-node Ray
instance, its HTTP proxy on the given host (loopback by default), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import time
from typing import Any

import click


def serve_on_ray(
    config: Any, *, host: str, port: int, replicas: int, autoscale: str | None
) -> None:
    """Deploy `config`'s bundle on Ray Serve (`replicas` of it, or the `MIN:MAX` autoscaling
    range) and serve until interrupted; Serve and Ray are shut down on the way out."""
    from ponder.runtime import Autoscaling, SplitBundle, ray_deployment, ray_serving

    scaling = Autoscaling.parse(autoscale) if autoscale is not None else None
    app = ray_deployment(config, replicas=replicas, autoscaling=scaling)  # checks for ray
    SplitBundle.load(config.bundle)  # a broken bundle fails here, not in every replica
    most = scaling.max_replicas if scaling is not None else replicas
    # each replica reserves one of Ray's CPUs: let all of them fit on this one node
    cpus = max(os.cpu_count() or 1, most)
    shape = (
        f"{scaling.min_replicas} to {scaling.max_replicas} replicas"
        if scaling is not None
        else f"{replicas} replica{'s' if replicas != 1 else ''}"
    )
    click.echo(f"starting a local Ray instance and Ray Serve with {shape} (20-30 s)")
    try:
        with ray_serving(app, host=host, port=port, num_cpus=cpus) as url:
            click.echo(f"serving {config.bundle} on {url}/v2 with {shape} (Ctrl-C stops)")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("Ray Serve and Ray stopped")
