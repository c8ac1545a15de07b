"""The two error families: the user's mistakes (`PonderError` and subclasses) and our bugs."""

from __future__ import annotations

__all__ = [
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "ExportMismatchError",
    "InternalError",
    "MissingDependencyError",
    "NoEffectWarning",
    "PayloadError",
    "PonderError",
    "UnsupportedModelError",
]

_REPORT = "This is a bug in ponder; please report it with the full traceback."


class PonderError(Exception):
    """Base class of every error caused by how ponder was called or what it was given."""


class ConfigError(PonderError, ValueError):
    """A config or argument has a value ponder cannot use."""


class UnsupportedModelError(PonderError, TypeError):
    """The model has a structure ponder cannot convert without help."""


class CheckpointError(PonderError, ValueError):
    """A checkpoint folder is missing, incomplete or was written by an incompatible version."""


class BundleError(PonderError, ValueError):
    """A device bundle is invalid, corrupt or of an unknown version."""


class PayloadError(PonderError, ValueError):
    """An offload payload is malformed, corrupt, truncated or made for another model half."""


class ExportMismatchError(PonderError):
    """An exported program computes something different from the eager model."""


class MissingDependencyError(PonderError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package {package!r}, which is not installed. "
            f"Install it with: {install_command(package, extra)}"
        )


def install_command(package: str, extra: str) -> str:
    """The pip command that installs `package` for `extra`. torch is in no extra (the runtime
    installs without it, and the build, CPU or CUDA, is the user's choice), so its command
    installs torch first, the CPU build the Makefile pins, and then the extra."""
    if package == "torch":
        return (
            "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu (the CPU "
            f"build; any torch 2.13 build will do), then pip install 'ponder[{extra}]'"
        )
    return f"pip install 'ponder[{extra}]'"


class InternalError(RuntimeError):
    """Something ponder assumed about itself turned out false: a bug, not a user error."""

    def __init__(self, message: str):
        super().__init__(f"{message}\n{_REPORT}")


class NoEffectWarning(UserWarning):
    """A conversion or option was asked for but changed nothing."""
