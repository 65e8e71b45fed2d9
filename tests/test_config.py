"""show_config(), the build record, where fastconv is imported from, and readable kernel import errors.

Two environment switches make these tests stricter where the build is known (.ci/run sets both
for the wheel it builds): FASTCONV_EXPECT_OPENMP=1 fails when the kernels lack OpenMP, and
FASTCONV_EXPECT_INSTALLED=1 fails unless fastconv is imported from site-packages.
"""
import importlib.machinery
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import fastconv
from fastconv import _kernels
from fastconv._kernels import build_info
from fastconv._kernels import _runtime


def _expected(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _show_config():
    buf = io.StringIO()
    fastconv.show_config(file=buf)
    return buf.getvalue()


def test_show_config_reports_version_compiler_simd_and_blas():
    text = _show_config()
    info = build_info()
    assert text.startswith(f"fastconv {fastconv.__version__}\n")
    assert f"Compiler: {info['compiler']}\n" in text
    assert f"Compile flags: {' '.join(info['compile_args'])}\n" in text
    assert f"SIMD baseline: {_runtime.simd_baseline()}\n" in text
    assert _runtime.simd_baseline() != "none"
    # NumPy's own BLAS is loaded by now, so threadpoolctl must find at least one.
    assert re.search(r"^BLAS: \w+ \S+ \(", text, re.MULTILINE), text


@pytest.mark.parametrize("n", [1, 2])
def test_show_config_reports_openmp_and_threads(n):
    with fastconv.threads(n):
        text = _show_config()
    if _runtime.openmp_enabled():
        assert f"\nOpenMP: enabled ({n} threads)\n" in text
    else:
        assert "\nOpenMP: disabled\n" in text


def test_openmp_matches_build_record_and_ci_expectation():
    info = build_info()
    assert info, "no _build_info.json next to the kernels: setup.py's build_ext did not write it"
    assert _runtime.openmp_enabled() == info["openmp"]
    if _expected("FASTCONV_EXPECT_OPENMP"):
        assert _runtime.openmp_enabled(), "FASTCONV_EXPECT_OPENMP=1 but the kernels were built without OpenMP"
    if not _runtime.openmp_enabled():
        assert fastconv.get_num_threads() == 1


def test_kernels_import_from_the_package_and_from_site_packages_when_installed():
    package_dir = os.path.dirname(os.path.realpath(fastconv.__file__))
    assert os.path.dirname(os.path.realpath(_runtime.__file__)) == os.path.join(package_dir, "_kernels")
    if not _expected("FASTCONV_EXPECT_INSTALLED"):
        return
    site_dirs = {os.path.realpath(sysconfig.get_path(key)) for key in ("purelib", "platlib")}
    assert os.path.dirname(package_dir) in site_dirs, (
        f"FASTCONV_EXPECT_INSTALLED=1 but fastconv was imported from {package_dir}, not {site_dirs}")
    runtime_requires = [req for req in importlib.metadata.requires("fastconv") or ()
                        if "extra ==" not in req]
    names = {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() for req in runtime_requires}
    assert names and not names & {"torch", "cython"}, runtime_requires


def _run_child(code, **env):
    """Run ``code`` in a fresh interpreter that imports this same fastconv; return its stdout."""
    # Where this fastconv lives (source tree or site-packages) goes first on the child's path.
    home = os.path.dirname(os.path.dirname(os.path.realpath(fastconv.__file__)))
    path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], cwd=home, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_fastconv_runs_without_cython_or_torch():
    """A wheel needs neither at run time: with both unimportable, every kernel loads."""
    code = (
        "import sys\n"
        "for name in ('Cython', 'cython', 'torch'): sys.modules[name] = None  # import fails\n"
        "import os, pkgutil, fastconv, fastconv._kernels as k\n"
        "for m in {m.name for m in pkgutil.iter_modules(k.__path__)} | set(k.build_info()['modules']):\n"
        "    k.load(m)\n"
        "fastconv.show_config(file=open(os.devnull, 'w'))\n"
        "print(fastconv.__file__)\n"
    )
    assert os.path.realpath(_run_child(code).strip()) == os.path.realpath(fastconv.__file__)


def _level_of(module):
    """'generic' for the portable build, else the CPU level folder it was imported from."""
    folder = os.path.basename(os.path.dirname(module.__file__))
    return folder[1:] if folder != "_kernels" else "generic"


def test_cpu_dispatch_imports_a_level_this_cpu_runs():
    features = _kernels._cpu_features()
    levels = _kernels.dispatched_levels()
    assert set(levels) == set(build_info().get("cpu_variants", {}))
    for name, level in levels.items():
        assert level == "generic" or all(features.get(f) for f in _kernels.CPU_LEVELS[level])
        assert _level_of(_kernels.load(name)) == level
        assert sys.modules[f"fastconv._kernels.{name}"] is _kernels.load(name)


_V3 = dict.fromkeys(("AVX", "AVX2", "FMA3", "F16C"), True)
_V4 = {**_V3, **dict.fromkeys(("AVX512F", "AVX512CD", "AVX512_SKX"), True)}


@pytest.mark.parametrize("features, requested, expected, warns", [
    ({}, "", "generic", False),
    (_V3, "", "x86_64_v3", False),
    (_V4, "auto", "x86_64_v4", False),
    (_V4, "generic", "generic", False),
    (_V4, "x86-64-v3", "x86_64_v3", False),
    (_V3, "x86_64_v4", "x86_64_v3", True),   # never a level the CPU cannot run
    (_V4, "avx9000", "x86_64_v4", True),
])
def test_cpu_level_honours_fastconv_cpu_within_what_the_cpu_runs(monkeypatch, features, requested,
                                                                  expected, warns):
    monkeypatch.setattr(_kernels, "_cpu_features", lambda: features)
    monkeypatch.setenv("FASTCONV_CPU", requested)
    if warns:
        with pytest.warns(RuntimeWarning, match="FASTCONV_CPU"):
            assert _kernels.cpu_level() == expected
    else:
        assert _kernels.cpu_level() == expected


@pytest.mark.parametrize("requested, expected", [
    ("", {"_conv": "x86_64_v4", "_pool": "x86_64_v3"}),
    ("x86_64_v3", {"_conv": "x86_64_v3", "_pool": "x86_64_v3"}),
    ("generic", {"_conv": "generic", "_pool": "generic"}),
])
def test_each_module_gets_the_best_level_it_was_built_for(monkeypatch, requested, expected):
    monkeypatch.setattr(_kernels, "_cpu_features", lambda: _V4)
    monkeypatch.setattr(_kernels, "build_info", lambda: {
        "cpu_variants": {"_conv": ["x86_64_v3", "x86_64_v4"], "_pool": ["x86_64_v3"]}})
    monkeypatch.setenv("FASTCONV_CPU", requested)
    assert _kernels.module_levels() == expected


# Every dispatched kernel family on float32 inputs; prints the kernels' levels, saves results.
_DISPATCH_CHILD = """
import numpy as np, fastconv._kernels as k, fastconv.functional as F
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 4, 13, 11), dtype=np.float32)
w = rng.standard_normal((6, 4, 3, 3), dtype=np.float32)
dw = rng.standard_normal((4, 1, 5, 5), dtype=np.float32)
np.savez({path!r},
         gemm=F.conv2d(x, w, padding=1, algorithm="gemm"),
         direct=F.conv2d(x, dw, padding=2, groups=4, algorithm="direct"),
         cols=F.im2col(x, 3, padding=1),
         maxp=F.max_pool2d(x, 3, 2, 1), avgp=F.avg_pool2d(x, 2),
         bn=F.batch_norm(x, None, None, training=True),
         bn_grad=F.batch_norm_backward(x[::-1], x, training=True)[0])
print(sorted(set(k.dispatched_levels().values())))
"""


def test_fastconv_cpu_generic_imports_the_portable_kernels_with_the_same_results(tmp_path):
    generic, dispatched = tmp_path / "generic.npz", tmp_path / "dispatched.npz"
    assert _run_child(_DISPATCH_CHILD.format(path=str(generic)), FASTCONV_CPU="generic").strip() \
        in ("[]", "['generic']")
    _run_child(_DISPATCH_CHILD.format(path=str(dispatched)), FASTCONV_CPU="")
    with np.load(generic) as a, np.load(dispatched) as b:
        for key in a.files:
            # Wider builds may fuse multiply-adds (FMA): float32 rounding, not exact equality.
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-5, err_msg=key)


# Lanes of the channel-vector kernel per float32 vector in each build of _conv: what the
# compiled code itself says about the instruction set it was built for.
_KVEC_LANES = {"generic": 0, "x86_64_v3": 8, "x86_64_v4": 16}
_LEVEL_ORDER = ["x86_64_v4", "x86_64_v3", "generic"]


def _expected_levels(requested):
    """{module: level} that FASTCONV_CPU=requested must give: the best level at or below
    it that the module was built for, else the portable build."""
    allowed = _LEVEL_ORDER[_LEVEL_ORDER.index(requested):]
    return {name: next((lv for lv in allowed if lv in built), "generic")
            for name, built in build_info().get("cpu_variants", {}).items()}


def _assert_kernels_are_level(requested, levels, files, conv_lanes):
    assert levels == _expected_levels(requested)
    for name, level in levels.items():
        folder = os.path.basename(os.path.dirname(files[name]))
        assert folder == ("_kernels" if level == "generic" else "_" + level), (name, files[name])
    conv_level = levels.get("_conv", "generic")
    assert conv_lanes == _KVEC_LANES[conv_level]


_LEVEL_CHILD = """
import json, warnings
warnings.simplefilter("error")  # a FASTCONV_CPU that is ignored warns: fail instead
import fastconv._kernels as k
from fastconv._kernels import _conv
levels = k.dispatched_levels()
print(json.dumps({"cpu_level": k.cpu_level(), "levels": levels,
                  "files": {name: k.load(name).__file__ for name in levels},
                  "conv_lanes": _conv.kvec_block_limits(4)[0]}))
"""


@pytest.mark.parametrize("requested", _LEVEL_ORDER[::-1])
def test_fastconv_cpu_selects_that_level_of_every_kernel_module(requested):
    features = _kernels._cpu_features()
    if requested != "generic" and not all(features.get(f) for f in _kernels.CPU_LEVELS[requested]):
        pytest.skip(f"this CPU does not run {requested}")
    got = json.loads(_run_child(_LEVEL_CHILD, FASTCONV_CPU=requested))
    assert got["cpu_level"] == requested
    _assert_kernels_are_level(requested, got["levels"], got["files"], got["conv_lanes"])


def test_the_kernels_in_this_process_are_the_level_fastconv_cpu_asks_for():
    """.ci/run runs the kernel tests again under FASTCONV_CPU=x86_64_v3 and =generic: those
    runs must test that build, not silently the machine's best."""
    requested = os.environ.get("FASTCONV_CPU", "").strip().lower().replace("-", "_")
    if requested in ("", "auto"):
        requested = _kernels.cpu_level()
    assert _kernels.cpu_level() == requested, "FASTCONV_CPU was ignored (see the warning)"
    from fastconv._kernels import _conv
    levels = _kernels.dispatched_levels()
    _assert_kernels_are_level(requested, levels,
                              {name: _kernels.load(name).__file__ for name in levels},
                              _conv.kvec_block_limits(4)[0])


@pytest.fixture
def extra_kernel_dir(tmp_path, monkeypatch):
    """A directory searched for fastconv._kernels submodules, for planting broken ones."""
    monkeypatch.setattr(_kernels, "__path__", [*_kernels.__path__, str(tmp_path)])
    return tmp_path


def test_broken_kernel_gives_readable_import_error(extra_kernel_dir):
    # Not an ELF file: the dynamic loader refuses it, as it would an undefined symbol.
    (extra_kernel_dir / f"_broken{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"garbage")
    with pytest.raises(ImportError, match="compiled kernels failed to import") as excinfo:
        from fastconv._kernels import _broken  # noqa: F401
    message = str(excinfo.value)
    assert "fastconv._kernels._broken" in message
    assert "pip install --force-reinstall --no-cache-dir ." in message
    assert "python setup.py build_ext --inplace" in message
    assert str(excinfo.value.__cause__) in message
    assert "fastconv._kernels._broken" not in sys.modules


def test_unbuilt_kernel_gives_readable_import_error(extra_kernel_dir):
    (extra_kernel_dir / "_unbuilt.pyx").write_text("# a Cython source never compiled\n")
    with pytest.raises(ImportError, match="compiled kernels are not built") as excinfo:
        _kernels.load("_unbuilt")
    assert "python setup.py build_ext --inplace" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ModuleNotFoundError)


def test_kernel_listed_in_build_record_but_missing_gives_readable_import_error(monkeypatch):
    monkeypatch.setattr(_kernels, "build_info", lambda: {"modules": ["_runtime", "_vanished"]})
    with pytest.raises(ImportError, match="compiled kernels are not built") as excinfo:
        from fastconv._kernels import _vanished  # noqa: F401
    assert "pip install --force-reinstall" in str(excinfo.value)


def test_build_record_lists_the_kernel_modules():
    modules = build_info().get("modules")
    assert modules, "the build record lists no kernel modules: rebuild (setup.py build_ext)"
    assert "_runtime" in modules


def test_missing_dependency_of_a_kernel_is_not_blamed_on_the_build(extra_kernel_dir):
    (extra_kernel_dir / "_needs_dep.py").write_text("import fastconv_no_such_dependency\n")
    with pytest.raises(ModuleNotFoundError) as excinfo:
        from fastconv._kernels import _needs_dep  # noqa: F401
    assert excinfo.value.name == "fastconv_no_such_dependency"


def test_unknown_attribute_is_still_an_attribute_error():
    assert getattr(_kernels, "_no_such_kernel", None) is None
    with pytest.raises(AttributeError):
        _kernels.__no_such_dunder__
