#!/usr/bin/env bash
# Prepare this machine for the Krita plugin's tests (tests/test_krita_real.py,
# tests/test_krita_live_real.py):
#   - Krita from Debian's packages, for `kritarunner`, and Xvfb, for the scenario that
#     needs a Krita window (each skipped when already installed);
#   - the vendored libraries for Debian Krita's Python 3.11 (pip download into
#     clients/krita/build/, reused offline on later runs), and an unpacked plugin in
#     clients/krita/build/plugin/linux-x86_64-cp311 that can also be copied into
#     ~/.local/share/krita/pykrita by hand.
# Idempotent. Installing Krita needs root (apt-get).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"

packages=()
command -v kritarunner >/dev/null 2>&1 || packages+=(krita)
command -v xvfb-run >/dev/null 2>&1 || packages+=(xvfb)
if [ ${#packages[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

"$python" "$repo/clients/krita/build.py" --target linux-x86_64-cp311 \
    --unpacked "$repo/clients/krita/build/plugin/linux-x86_64-cp311" >/dev/null
echo "krita test environment ready: $(command -v kritarunner)"
