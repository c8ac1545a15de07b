"""ponder.runtime: read and verify device bundles without torch (backends and engine to come).

`import ponder.runtime` must not import torch; jsonschema is imported on first validation.
"""

from ponder.runtime._bundle import Bundle, write_manifest
from ponder.runtime._digest import manifest_digest, sha256_file
from ponder.runtime._files import FileCheck
from ponder.runtime._manifest import ExitRuleSpec, FileEntry, Manifest, StageSpec, TensorSpec
from ponder.runtime._telemetry import (
    BatteryState,
    Ina3221Probe,
    PowerSupplyProbe,
    ProbeUnavailable,
    RaplProbe,
)
from ponder.runtime._validate import FORMAT, SCHEMA_VERSION, load_schema, validate_manifest

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "BatteryState",
    "Bundle",
    "ExitRuleSpec",
    "FileCheck",
    "FileEntry",
    "Ina3221Probe",
    "Manifest",
    "PowerSupplyProbe",
    "ProbeUnavailable",
    "RaplProbe",
    "StageSpec",
    "TensorSpec",
    "load_schema",
    "manifest_digest",
    "sha256_file",
    "validate_manifest",
    "write_manifest",
]
