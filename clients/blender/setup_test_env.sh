#!/usr/bin/env bash
# Create (or reuse) the venv in which the Blender tests run Blender as a Python module.
#
# bpy lives in its own venv because the bpy wheel needs numpy<2 while the project venv has
# numpy 2. The Tether SDK is not installed there: tests put sdk/ on PYTHONPATH, exactly as
# the packaged extension ships the SDK source next to the add-on.
#
# Usage: clients/blender/setup_test_env.sh [VENV_DIR]   (default: <repo>/.venv-blender)
# Idempotent: a stamp file records the requirements; an up-to-date venv is left alone.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-$repo/.venv-blender}"
# bpy 5.0.1 is built for CPython 3.11 only (Blender 5.0 bundles 3.11).
python="${PYTHON311:-python3.11}"
requirements=(
    "bpy==5.0.1"
    "numpy<2"
    "grpcio>=1.85.1"
    "protobuf>=7.35.1"
)
stamp="$venv/.tether-requirements"
wanted="$(printf '%s\n' "${requirements[@]}")"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

echo "setup_test_env: creating $venv (bpy is a ~370 MB download)" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
# Prove the venv works before recording it as done: import bpy and the SDK's dependencies.
"$venv/bin/python" -c "import bpy, numpy, grpc, google.protobuf; print('bpy', bpy.app.version_string)" >&2
printf '%s\n' "${requirements[@]}" >"$stamp"
