"""Every CPU-level build of the kernels either has a kernel or refuses it loudly.

The portable build has no channel-vector kernel (nor the Winograd route built on it), and
only AVX-512 builds have the pixel-vector weight gradient. Called anyway, these entry points
raise RuntimeError instead of returning with their output unwritten. The planner never
calls them there (fastconv.functional asks the build first); these tests call the kernel
modules directly, in a child Python per CPU level, since the level is chosen at import.
"""
import json
import subprocess
import sys

import pytest

from _isolated import child_env
from fastconv._kernels import CPU_LEVELS, _cpu_features, build_info

_CHILD = r"""
import json
import numpy as np
from fastconv._kernels import _conv, cpu_level

def attempt(fn):
    try:
        fn()
        return "ran"
    except RuntimeError as exc:
        return "RuntimeError: " + str(exc)

f = np.float32
x = np.ones((2, 3, 8, 8), f)
go = np.ones((2, 4, 8, 8), f)
sentinel = np.full((2, 4, 8, 8), 7, f)
lanes, most = _conv.kvec_block_limits(4)
lanes, most = lanes or 16, most[1] or 1  # sizes where the build has no kernel
taps = np.arange(27, dtype=np.intp)
work = np.zeros(1 << 16, f)
partials = np.zeros(1 << 14, f)
out = {"level": cpu_level(), "kvec_lanes": _conv.kvec_block_limits(4)[0],
       "pixvec_lanes": _conv.pixvec_lanes(4)}
out["direct_kvec"] = attempt(lambda: _conv.conv2d_direct_kvec(
    x, np.zeros(27 * lanes, f), np.empty(0, f), sentinel, work, 1 << 15, taps,
    np.zeros((8, 2), np.intp), np.zeros(8, np.intp), 3, 1, 1, 1, 1, 10, 10, 1, 1, 1, True,
    1))
out["unwritten"] = bool((sentinel == 7).all())
out["weight_grad_kvec"] = attempt(lambda: _conv.conv2d_weight_grad_kvec(
    go, x, np.zeros(27 * lanes, f), work, 1 << 15, partials, 2, taps, 1, 1, 1, 1, 10, 10, 1,
    1, most, 8, 1))
out["winograd"] = attempt(lambda: _conv.conv2d_winograd(
    x, np.zeros(16 * 3 * lanes, f), np.empty(0, f), np.empty((2, 4, 8, 8), f),
    np.zeros(2, np.uint8), work, 1 << 15, np.arange(3, dtype=np.intp) * 16, 1, 1, 16, 1, 4, 1))
out["weight_grad_pixvec"] = attempt(lambda: _conv.conv2d_weight_grad_pixvec(
    go, x, np.zeros(4 * 3 * 9, f), work, 1 << 15, partials, 2, 3, 3, 1, 1, 1, 1, 10, 10, 1))
print(json.dumps(out))
"""


def _run(level):
    env = child_env(FASTCONV_CPU=level)
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# the portable build, and each CPU-level build of _conv that this machine runs
LEVELS = ["generic"] + [
    level for level in build_info().get("cpu_variants", {}).get("_conv", [])
    if all(_cpu_features().get(feature) for feature in CPU_LEVELS[level])]


@pytest.mark.parametrize("level", LEVELS)
def test_kernels_a_build_lacks_raise_and_the_others_run(level):
    r = _run(level)
    assert r["level"] == level
    has_kvec, has_pixvec = r["kvec_lanes"] > 0, r["pixvec_lanes"] > 0
    assert has_kvec == (level != "generic")
    assert has_pixvec == (level == "x86_64_v4")
    for name, present in [("direct_kvec", has_kvec), ("weight_grad_kvec", has_kvec),
                          ("winograd", has_kvec), ("weight_grad_pixvec", has_pixvec)]:
        if present:
            assert r[name] == "ran", (name, r[name])
        else:
            assert r[name].startswith("RuntimeError: this build of fastconv._kernels._conv "
                                      "has no"), (name, r[name])
    # a refused call leaves its output as it was, and says so
    assert r["unwritten"] == (not has_kvec)
