#!/usr/bin/env bash
# Bounds-checked run of the kernel tests.
#
#   scripts/debug_check.sh [PYTEST_ARGS...]
#
# Builds fastconv with FASTCONV_DEBUG=1 (Cython boundscheck and initializedcheck on, -O0 -g)
# in a throwaway copy of the source tree, so the working tree's in-place .so files are never
# touched, and runs the kernel tests against that build (or PYTEST_ARGS instead of the
# default test files). Cython's checks only cover memoryview indexing, and the kernels
# mostly walk raw pointers: so the build also gets AddressSanitizer and UndefinedBehavior-
# Sanitizer when gcc/clang ships libasan (ASAN=0 turns both off): ASan catches any read or
# write outside a heap buffer, UBSan signed overflow, bad shifts, misaligned or null
# pointers, out-of-bounds array indexing; either stops the run at its first report. CPU
# dispatch stays on, so the x86-64-v3 and v4 builds of the SIMD kernels are built this way
# too: the tests run on the CPU's best level, then the kernel tests once more on each other
# level this CPU runs (FASTCONV_CPU).
#
# Environment: PYTHON (default python3) must have numpy, scipy, Cython, setuptools, pytest
# and hypothesis; ASAN=0|1 (default: 1 when libasan is found); KEEP=1 keeps the build copy;
# LEVELS (default: every level the CPU runs, best first, then generic) the FASTCONV_CPU
# values to test.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
start=$SECONDS

if ! "$PYTHON" -c "import Cython, setuptools, numpy, scipy, pytest, hypothesis" 2>/dev/null; then
    echo "debug_check.sh: $PYTHON needs Cython, setuptools, numpy, scipy, pytest and hypothesis" \
         "(pip install Cython setuptools '.[test]')" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-debug.XXXXXX")
if [[ "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi

# The sources: tracked files and untracked ones git does not ignore (no build outputs).
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' f; do
        if [[ -f "$repo/$f" ]]; then
            mkdir -p "$work/$(dirname "$f")"
            cp -p "$repo/$f" "$work/$f"
        fi
    done

asan_lib=$(${CC:-cc} -print-file-name=libasan.so 2>/dev/null || true)
if [[ "${ASAN:-}" == "" ]]; then
    [[ -f "$asan_lib" ]] && ASAN=1 || ASAN=0
fi
if [[ "$ASAN" == 1 ]]; then
    export CFLAGS="${CFLAGS:-} -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    export LDFLAGS="${LDFLAGS:-} -fsanitize=address,undefined"
fi

echo "=== building with FASTCONV_DEBUG=1 (ASan: $ASAN) in $work"
(cd "$work" && FASTCONV_DEBUG=1 "$PYTHON" setup.py -q build_ext --inplace -j 2 >build.log 2>&1) || {
    tail -40 "$work/build.log"
    exit 1
}
echo "=== built in $((SECONDS - start)) s"

run=(env)
if [[ "$ASAN" == 1 ]]; then
    # Python itself is not instrumented: preload the runtime. Leak reports would list every
    # interpreter allocation; a failed huge allocation must return NULL (numpy then raises
    # MemoryError, which tests expect) instead of aborting.
    run+=(LD_PRELOAD="$asan_lib"
          ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:quarantine_size_mb=16:log_path=$work/sanitizer:${ASAN_OPTIONS:-}"
          UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$work/sanitizer:${UBSAN_OPTIONS:-}")
fi
# pytest captures the tests' stderr, and a sanitizer's abort loses it: reports go to files.
failed() {
    for report in "$work"/sanitizer.*; do
        [[ -f "$report" ]] && { echo "=== sanitizer report $report"; cat "$report"; }
    done
    exit 1
}

cd "$work"
# The build in use must be this debug build, not another fastconv on sys.path, with its
# CPU-level builds (on x86-64).
"${run[@]}" "$PYTHON" - <<'EOF'
import json, os, platform
import fastconv._kernels as k
info = json.load(open(os.path.join(os.path.dirname(k.__file__), "_build_info.json")))
assert os.path.dirname(k.__file__).startswith(os.getcwd()), k.__file__
assert info["debug"], info
assert info["cpu_variants"] or platform.machine().lower() not in ("x86_64", "amd64"), info
print("kernels from", os.path.dirname(k.__file__), "with", " ".join(info["compile_args"]),
      "; CPU levels:", info["cpu_variants"])
EOF
if [[ -z "${LEVELS:-}" ]]; then
    LEVELS=$("${run[@]}" "$PYTHON" -c "
import fastconv._kernels as k
runs = [lv for lv, needs in k.CPU_LEVELS.items() if all(k._cpu_features().get(f) for f in needs)]
print(' '.join(runs + ['generic']))")
fi

explicit_args=$(( $# > 0 ))

if [[ $# -eq 0 ]]; then
    # Every test file that calls the kernels; tests that need a GPU or network do not exist.
    set -- $(ls tests/test_conv.py tests/test_im2col.py tests/test_pool*.py tests/test_activation.py \
                tests/test_properties.py tests/test_bad_input.py tests/test_threads_safety.py \
                tests/test_determinism.py tests/test_nan.py tests/test_memory.py \
                tests/test_nn.py tests/test_batchnorm.py tests/test_compile.py 2>/dev/null) -q \
                -p no:cacheprovider
fi
read -r best others <<<"$LEVELS"
echo "=== FASTCONV_CPU=$best pytest $*"
"${run[@]}" FASTCONV_CPU="$best" "$PYTHON" -m pytest "$@" || failed
if [[ $explicit_args == 0 ]]; then
    # The other levels: the kernel test files, and the check that FASTCONV_CPU selected them.
    for level in ${others:-}; do
        echo "=== FASTCONV_CPU=$level pytest (kernel tests)"
        "${run[@]}" FASTCONV_CPU="$level" "$PYTHON" -m pytest -q -p no:cacheprovider \
            tests/test_conv.py tests/test_im2col.py tests/test_pool.py tests/test_activation.py \
            tests/test_batchnorm.py \
            tests/test_config.py::test_the_kernels_in_this_process_are_the_level_fastconv_cpu_asks_for \
            || failed
    done
fi
echo "=== debug check passed in $((SECONDS - start)) s"
