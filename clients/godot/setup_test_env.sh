#!/usr/bin/env bash
# Prepare this machine for the bridge's and the addon's tests (tests/test_bridge*.py,
# tests/test_godot.py): Chromium from Debian's packages, for the viewer page's
# headless-browser test (skipped when already installed), and the bridge's extra library,
# websockets, in the project venv. Godot 4 itself is not installable here (Debian has only
# Godot 3), so the addon's GDScript is not run: gdtoolkit (the dev extra) parses, lints and
# format-checks it, and the tests speak its wire format. Idempotent. Installing Chromium
# needs root (apt-get).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! "$python" -c "import websockets" >/dev/null 2>&1; then
    "$python" -m pip install --quiet --disable-pip-version-check "websockets>=13"
fi

echo "godot bridge test environment ready: $(command -v chromium)"
