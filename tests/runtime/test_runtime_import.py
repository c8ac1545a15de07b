"""`import ponder.runtime` must work on a device without torch (DESIGN.md, "Layout and layering")."""

import subprocess
import sys

HEAVY = ("torch", "executorch", "onnxruntime", "triton", "jsonschema")


def test_import_ponder_runtime_does_not_import_torch():
    probe = (
        "import ponder.runtime as r, sys\n"
        "r.Bundle, r.Manifest, r.write_manifest\n"
        "r.SimulatedDevice, r.NvmlProbe, r.detect_probes, r.day_trace, r.ReplayProbe\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "ponder.runtime" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_validating_a_manifest_does_not_import_torch():
    probe = (
        "import sys\n"
        "from ponder.runtime import validate_manifest\n"
        "from ponder import BundleError\n"
        "try:\n"
        "    validate_manifest({'format': 'ponder-bundle', 'schema_version': '1.0'})\n"
        "except BundleError:\n"
        "    pass\n"
        "print('torch' in sys.modules, 'jsonschema' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
