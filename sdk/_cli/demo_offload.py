"""The last step of `ponder demo`: a digits ViT split after its third block, the cloud half
served by `ponder serve` on loopback, the device offloading to it under a latency budget, and
then — the server stopped by its process id — the device answering every request itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SPLIT_BLOCK = 3
LATENCY_MS = 50.0  # the demo's budget per request
REQUESTS = 40  # test images sent one by one in each of the three runs


def offload_demo(out: Path, echo: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    """Train the digits ViT, export its split bundle, serve and offload; the figures seen."""
    from ponder._bench.serve_links import one_by_one
    from ponder._bench.serve_process import ServeProcess
    from ponder._convert.checkpoint import save
    from ponder.export import export_checkpoint
    from ponder.models import DIGITS_VIT_RECIPE
    from ponder.models.recipes import fit_recipe, load_recipe_data
    from ponder.runtime import Offloader, PolicySpec

    torch.manual_seed(0)
    splits = load_recipe_data(DIGITS_VIT_RECIPE)
    model, stats = fit_recipe(DIGITS_VIT_RECIPE, splits, progress)
    echo(
        f"      digits ViT ({DIGITS_VIT_RECIPE['num_blocks']} blocks, width "
        f"{DIGITS_VIT_RECIPE['width']}) trained in {stats['seconds']:.1f} s: test accuracy "
        f"{stats['test_acc']:.2%}"
    )
    extra = {"data": {"name": "digits", "seed": DIGITS_VIT_RECIPE.get("seed", 0)}}
    save(model, out / "vit", extra=extra)
    bundle = out / "split-bundle"
    export_checkpoint(out / "vit", bundle, split=SPLIT_BLOCK, echo=lambda line: None)
    echo(
        f"      split bundle after block {SPLIT_BLOCK}: {bundle} (device half, cloud half, "
        "local model, offload points measured on the calibration split)"
    )
    x, y = splits.test.x[:REQUESTS].numpy(), splits.test.y[:REQUESTS].numpy()
    spec = PolicySpec.simple(latency_ms=LATENCY_MS)
    result: dict[str, Any] = {}
    with ServeProcess(bundle) as server:
        echo(f"      ponder serve {bundle} on {server.url} (pid {server.pid})")
        device = Offloader(bundle, server.url, timeout_s=2.0)
        policy = device.policy(spec)
        try:
            result["always"] = one_by_one(device, x, y, REQUESTS, keep=0.5, codec="int8")
            result["up"] = one_by_one(device, x, y, REQUESTS, policy=policy)
            pid = server.pid
            server.stop()  # SIGTERM by its process id
            echo(f"      stopped the server (pid {pid})")
            result["down"] = one_by_one(device, x, y, REQUESTS, policy=policy)
        finally:
            device.close()
    from ponder._core.report import write_json

    write_json(out / "offload.json", result)
    runs = (("always", "every request offloaded"), ("up", f"policy, {LATENCY_MS:g} ms budget"),
            ("down", "policy, server stopped"))  # fmt: skip
    for when, words in runs:
        r = result[when]
        chose = f" (policy chose {r['chosen']})" if r["chosen"] else ""
        echo(
            f"      {words}: {r['requests']} requests answered by {r['sources']}{chose}; "
            f"accuracy {r['accuracy']:.2%}, latency p50 {r['p50_ms']:.2f} ms"
        )
        if r["explain"]:
            echo("      why, for the last request:")
            echo("\n".join(f"        {line}" for line in r["explain"]))
    return result
