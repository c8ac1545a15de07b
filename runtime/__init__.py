"""ponder.runtime: read and verify device bundles and run them stage by stage on a backend under
a policy, without torch.

`import ponder.runtime` must not import torch; jsonschema is imported on first validation.
"""

import warnings
from typing import Any

from ponder.runtime._backends.base import Backend, list_backends
from ponder.runtime._bundle.bundle import Bundle, write_manifest
from ponder.runtime._bundle.costs import CostTable, StageCost, cost_table_path
from ponder.runtime._bundle.digest import manifest_digest, sha256_file
from ponder.runtime._bundle.files import FileCheck
from ponder.runtime._bundle.manifest import ExitRuleSpec, FileEntry, Manifest, StageSpec, TensorSpec
from ponder.runtime._bundle.validate import FORMAT, SCHEMA_VERSION, load_schema, validate_manifest
from ponder.runtime._engine.engine import Engine
from ponder.runtime._engine.inputs import InputError
from ponder.runtime._engine.requests import ServeReport, run_requests
from ponder.runtime._engine.result import Result
from ponder.runtime._offload.codecs import Encoded, get_codec, list_codecs
from ponder.runtime._offload.payload import Payload, check_params, decode_payload, encode_payload
from ponder.runtime._offload.split import SplitBundle, verify_split
from ponder.runtime._policy.cost_model import CostModel, Prediction
from ponder.runtime._policy.decision import Decision
from ponder.runtime._policy.link import LinkEstimate
from ponder.runtime._policy.offload import OffloadDecision, OffloadPoint, OffloadPolicy
from ponder.runtime._policy.points import ExitDistribution, OperatingPoint, operating_points
from ponder.runtime._policy.policy import Policy
from ponder.runtime._policy.spec import EnergyPacing, PolicyRule, PolicySpec, load_policy
from ponder.runtime._serve.app import ServeConfig
from ponder.runtime._serve.client import OffloadClient, OffloadError
from ponder.runtime._serve.offload import Offloader, OffloadResult
from ponder.runtime._serve.ray_serve import Autoscaling, ray_deployment, ray_serving
from ponder.runtime._sim.device import Battery, SimulatedDevice, StageRun, ThermalModel
from ponder.runtime._sim.simulate import Scenario, SimulationResult, default_policy_spec, simulate
from ponder.runtime._sim.trace import ReplayProbe, Trace, TracePoint, day_trace
from ponder.runtime._telemetry.nvml import NvmlProbe
from ponder.runtime._telemetry.probes import (
    PROBES,
    detect_probes,
    list_probes,
    make_probe,
    read_state,
)
from ponder.runtime._telemetry.state import DeviceState
from ponder.runtime._telemetry.sysfs import (
    BatteryState,
    Ina3221Probe,
    PowerSupplyProbe,
    ProbeUnavailable,
    RaplProbe,
)

__all__ = [
    "FORMAT",
    "PROBES",
    "SCHEMA_VERSION",
    "Autoscaling",
    "Backend",
    "Battery",
    "BatteryState",
    "Bundle",
    "CostModel",
    "CostTable",
    "Decision",
    "DeviceState",
    "Encoded",
    "EnergyPacing",
    "Engine",
    "ExitDistribution",
    "ExitRuleSpec",
    "FileCheck",
    "FileEntry",
    "Ina3221Probe",
    "InputError",
    "LinkEstimate",
    "Manifest",
    "NvmlProbe",
    "OffloadClient",
    "OffloadDecision",
    "OffloadError",
    "OffloadPoint",
    "OffloadPolicy",
    "OffloadResult",
    "Offloader",
    "OperatingPoint",
    "Payload",
    "Policy",
    "PolicyRule",
    "PolicySpec",
    "PowerSupplyProbe",
    "Prediction",
    "ProbeUnavailable",
    "RaplProbe",
    "ReplayProbe",
    "Result",
    "Scenario",
    "ServeConfig",
    "ServeReport",
    "SimulatedDevice",
    "SimulationResult",
    "SplitBundle",
    "StageCost",
    "StageRun",
    "StageSpec",
    "TensorSpec",
    "ThermalModel",
    "Trace",
    "TracePoint",
    "check_params",
    "cost_table_path",
    "day_trace",
    "decode_payload",
    "default_policy_spec",
    "detect_probes",
    "encode_payload",
    "get_codec",
    "list_backends",
    "list_codecs",
    "list_probes",
    "load_policy",
    "load_schema",
    "make_probe",
    "manifest_digest",
    "operating_points",
    "ray_deployment",
    "ray_serving",
    "read_state",
    "run_requests",
    "sha256_file",
    "simulate",
    "validate_manifest",
    "verify_split",
    "write_manifest",
]

# old name -> new name; each warns on access and goes in the release after the one that renamed it
_DEPRECATED = {
    "serve": (
        "run_requests",
        "ponder.runtime.serve was renamed run_requests (`ponder serve` is the coming offload "
        "server); the old name goes in the next release",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, message = _DEPRECATED[name]
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module 'ponder.runtime' has no attribute {name!r}")
