"""The device half's payloads in Java (dev.ponder.core.offload.Payloads) against Python: the
tokens `select_tokens` keeps, the bytes `encode_payload(..., zstd_level=None)` and
`SplitBundle.send` (with the split's zstd off) write, from the tiny ViT split's real device half
(ONNX Runtime) and from a masked, tie-heavy stand-in for it, and the logits a real `ponder serve`
answers for Java's own payloads. Every Java test must run and pass (none skipped)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from java_core import run_java_tests, tiny_vit_split, write_le

from ponder._bench.serve_process import ServeProcess
from ponder.runtime import SplitBundle
from ponder.runtime._offload.payload import decode_payload, encode_payload
from ponder.runtime._offload.split import select_tokens
from ponder.runtime._serve.client import OffloadClient

TOKEN = "java-payload"
CODECS = ["int8", "fp32", "fp16", "int4", "int4-g32"]
JAVA_TESTS = 8  # 4 self-checks + 4 against Python's files and the server


@pytest.fixture(scope="module")
def split_bundle(tmp_path_factory):
    """The tiny ViT split after block 1, with every codec."""
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ponder[serve]'")
    return tiny_vit_split(tmp_path_factory.mktemp("java-payload"), CODECS)


def _selections(rng):
    """select_tokens on random scores with ties, masks (some empty), keeps and both anchors."""
    out = []
    for i in range(200):
        t = int(rng.integers(1, 13))
        scores = rng.integers(-3, 4, t).astype(np.float32) / 2  # ties, and -0.0 vs 0.0
        if i % 3 == 0:
            scores = rng.standard_normal(t).astype(np.float32)
        real = rng.random(t) < (0.0 if i % 17 == 0 else 0.7)
        keep = float(rng.choice([0.1, 0.25, 0.3, 0.5, 0.75, 1.0]))
        anchor = "last" if i % 2 else "first"
        index, kept = select_tokens(scores[None], real[None], keep, anchor)
        out.append({"scores": [float(s) for s in scores], "real": [bool(r) for r in real],
                    "keep": keep, "anchor": anchor, "want": index[0, kept[0]].tolist()})  # fmt: skip
    return out


def _encodes(rng, folder):
    """encode_payload with zstd off: odd and multi-group widths, zero rows, values past fp16's
    range, codes that are ties (x.5), uint8 and uint16 positions, params that need Python's float repr and ASCII escapes."""
    out = []
    for width in (5, 16, 40):
        for codec in CODECS:
            count = int(rng.integers(4, 7))
            x = (rng.standard_normal((count, width)) * 3).astype(np.float32)
            x[0] = 0
            x[1, 0] = 7e4
            ties = np.resize([0.5, 1.5, 2.5, -2.5, -0.5, 3.5, -3.5], width)  # x.5: to even
            x[2], x[2, 0] = ties, 127  # int8 scale 1
            x[3], x[3, 0] = ties, 7  # int4 scale 1
            index = None
            if width != 16:
                top = 300 if width == 40 else 200
                index = np.sort(rng.choice(top, count, replace=False))
            params = {"split_block": 1, "name": "caf\u00e9", "eps": 1e-05, "big": 1e16,
                      "list": [1, 2.5, True, None], "keep": 0.3, "codec": codec}  # fmt: skip
            extra = None if index is None else {"index": index.astype(
                np.uint8 if index.max() < 256 else np.uint16)}  # fmt: skip
            payload = encode_payload(
                {"tokens": x[None]}, codec, extra=extra, params=params, zstd_level=None
            )
            name = f"encode_{width}_{codec}"
            (folder / f"{name}.bin").write_bytes(payload)
            write_le(folder / f"{name}.f32", x, np.float32)
            out.append({"tokens": f"{name}.f32", "shape": [count, width], "codec": codec,
                        "index": None if index is None else index.tolist(), "params": params,
                        "payload": f"{name}.bin"})  # fmt: skip
    return out


def _floats(rng):
    values = [0.1, 0.5, 1.0, 1e-05, 0.0001, 1e16, 1e15, 5e-324, 1.7976931348623157e308, 2e22]
    values += list(rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200))
    values += list(rng.random(50).astype(np.float32).astype(np.float64))
    return [float(v) for v in values]


@pytest.mark.slow
def test_java_payloads_are_pythons_byte_for_byte_and_get_the_same_logits(split_bundle, tmp_path):
    root, x = split_bundle
    rng = np.random.default_rng(7)
    bundle = SplitBundle.load(root)
    bundle.manifest["split"]["zstd_level"] = None  # send as Java does: never compressed
    reference = SplitBundle.load(root)  # zstd as exported: what the logits must match
    width = bundle.split["width"]
    out = bundle.edge({"x": x})
    # a masked stand-in for a text model's device half: padding, an empty sample, tied scores
    b, t = 5, 12
    mask = (np.arange(t)[None] < np.array([12, 7, 1, 0, 9])[:, None]).astype(np.int64)
    hidden = rng.standard_normal((b, t, width)).astype(np.float32)
    hidden[0, 3] = 0
    hidden[1, 2, 5] = 1e5
    scores = (rng.integers(0, 3, (b, t)) / 2).astype(np.float32)
    masked = SplitBundle.load(root)
    masked.manifest["split"]["zstd_level"] = None
    masked.manifest["split"]["anchor"] = "last"
    masked.edge = lambda inputs: {"hidden": hidden, "token_scores": scores}
    edges = [
        ("vit", bundle, {"x": x}, out["hidden"], out["token_scores"], None, [1.0, 0.5, 0.25, 0.1]),
        ("masked", masked, {"x": x, "attention_mask": mask}, hidden, scores, mask, [1.0, 0.5, 0.3]),
    ]
    cases = {
        "split_params": bundle.split["params"],
        "floats": _floats(rng),
        "selections": _selections(rng),
        "encodes": _encodes(rng, tmp_path),
        "edges": [],
    }
    sent = 0
    with ServeProcess(root, token=TOKEN) as server:
        client = OffloadClient(server.url, "model", token=TOKEN, timeout_s=30)
        try:
            for name, runner, feeds, h, s, m, keeps in edges:
                write_le(tmp_path / f"{name}_hidden.f32", h, np.float32)
                write_le(tmp_path / f"{name}_scores.f32", s, np.float32)
                if m is not None:
                    write_le(tmp_path / f"{name}_mask.i64", m, np.int64)
                edge = {"name": name, "hidden": f"{name}_hidden.f32",
                        "scores": f"{name}_scores.f32", "shape": list(h.shape),
                        "mask": None if m is None else f"{name}_mask.i64",
                        "anchor": runner.split["anchor"], "cases": []}  # fmt: skip
                for keep in keeps:
                    for codec in CODECS:
                        payloads = runner.send(feeds, keep, codec)
                        assert all(decode_payload(p).zstd_level is None for p in payloads)
                        logits = client.infer_payloads(payloads, runner.params(keep, codec))
                        # the server takes uncompressed payloads, and answers as the tail does
                        np.testing.assert_allclose(
                            logits, reference.receive(payloads), rtol=1e-6, atol=1e-6
                        )
                        files = []
                        for i, p in enumerate(payloads):
                            files.append(f"{name}_{keep}_{codec}_{i}.bin")
                            (tmp_path / files[-1]).write_bytes(p)
                        write_le(tmp_path / f"{name}_{keep}_{codec}.f32", logits, np.float32)
                        edge["cases"].append({"keep": keep, "codec": codec, "payloads": files,
                                              "logits": f"{name}_{keep}_{codec}.f32"})  # fmt: skip
                        sent += 1
                cases["edges"].append(edge)
        finally:
            client.close()
        cases["send_cases"] = sent
        (tmp_path / "cases.json").write_text(json.dumps(cases))
        env = {
            "PONDER_JAVA_BUILD": str(tmp_path / "java-build"),
            "PONDER_TEST_SERVE_URL": server.url,
            "PONDER_TEST_SERVE_MODEL": "model",
            "PONDER_TEST_SERVE_TOKEN": TOKEN,
            "PONDER_TEST_PAYLOAD_DIR": str(tmp_path),
        }
        output = run_java_tests(
            ["--select-class", "dev.ponder.core.offload.PayloadTest"], env, JAVA_TESTS
        )
    assert "sendGivesPythonsPayloadsByteForByteAndTheServerTheSameLogits() ✔" in output
