#!/usr/bin/env bash
# Every test: the Rust tests (`cargo test`), then the Python package: the wheel built by maturin
# (dev profile, into the root target/), installed in a virtual environment, and its pytest suite
# (python/tests). The README's test command; `.ci/run` runs it after installing what it needs.
#
#   tests/run_all.sh
#
# The virtual environment is $SUBPRUNE_VENV, else target/ci-venv (which .ci/run makes); it needs
# numpy, onnx, onnxruntime, maturin and pytest. SUBPRUNE_PYTHON (the ONNX checks of the Rust
# tests) defaults to its python.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv="${SUBPRUNE_VENV:-target/ci-venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
if ! "$venv/bin/python" -c "import numpy, onnx, onnxruntime, pytest" >/dev/null 2>&1 \
  || ! [ -x "$venv/bin/maturin" ]; then
  echo "error: $venv is not a virtual environment with numpy, onnx, onnxruntime, maturin and" \
    "pytest: run .ci/run once (it makes target/ci-venv), or set SUBPRUNE_VENV" >&2
  exit 1
fi
export SUBPRUNE_PYTHON="${SUBPRUNE_PYTHON:-$venv/bin/python}"

start=$SECONDS
cargo test
echo "cargo test (build and run) took $((SECONDS - start))s"

# The Python package. The wheel goes to a folder of its own, emptied first, so that the one
# installed is the one just built.
wheels="$root/target/python-wheels"
rm -rf "$wheels"
start=$SECONDS
CARGO_TARGET_DIR="$root/target" "$venv/bin/maturin" build --manifest-path python/Cargo.toml \
  --interpreter "$venv/bin/python" --out "$wheels"
echo "python wheel built in $((SECONDS - start))s"
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$wheels"/subprune-*.whl
# Run from the repository root, so that `import subprune` is the installed wheel, not the
# sources in python/. The command line binary the tests compare with is the one cargo test built.
set +e
SUBPRUNE_BIN="$root/target/debug/subprune" "$venv/bin/pytest" python/tests -p no:cacheprovider
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests in python/tests" >&2
  exit 1
fi
exit "$status"
