"""The Java core's .npz reader (dev.ponder.core.Npz, what the Android demo reads a bundle's
samples.npz with) on files numpy writes here: the same arrays through np.savez (stored) and
np.savez_compressed (deflated); every Java test must run and pass."""

from __future__ import annotations

import os

import numpy as np
import pytest
from java_core import run_java_tests


def _arrays() -> dict[str, np.ndarray]:
    # the values NpzTest.java expects, in this order
    return {
        "f32": (np.arange(12, dtype=np.float32) / 8).reshape(3, 4),
        "i64": np.array([[-1, 2**40], [3, -(2**62)]], np.int64),
        "i32": np.array([7, -8, 2**31 - 1], np.int32),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "flags": np.array([True, False]),
        "f64": np.array([1.5]),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "big": np.array([1, 2], ">i4"),
    }


@pytest.mark.slow
def test_the_java_npz_reader_reads_what_numpy_writes(tmp_path):
    stored, deflated = tmp_path / "stored.npz", tmp_path / "deflated.npz"
    np.savez(stored, **_arrays())
    np.savez_compressed(deflated, **_arrays())
    env = {
        "PONDER_TEST_NPZ": os.pathsep.join(map(str, (stored, deflated))),
        "PONDER_JAVA_BUILD": str(tmp_path / "java-build"),  # not the source tree's build/
    }
    run_java_tests(["--select-class", "dev.ponder.core.NpzTest"], env, expected=3 * 2 + 1)
