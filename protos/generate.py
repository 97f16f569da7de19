"""Regenerate the Python code for protos/tether/v1 into sdk/tether/_proto.

    python protos/generate.py            # write sdk/tether/_proto
    python protos/generate.py OUT_DIR    # write elsewhere (the freshness test does this)

protoc writes absolute imports (`from tether.v1 import image_pb2`), which would resolve
against the SDK package `tether` itself; the generated modules live in
`tether._proto.tether.v1`, so those imports are made relative as the last step of
generation. The output is never edited by hand.
"""

import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "sdk" / "tether" / "_proto"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    package_dir = out / "tether" / "v1"
    shutil.rmtree(out / "tether", ignore_errors=True)
    package_dir.mkdir(parents=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for path in package_dir.iterdir():
        text = path.read_text()
        path.write_text(re.sub(r"^from tether\.v1 import ", "from . import ", text, flags=re.M))
    for package in (out, out / "tether", package_dir):
        (package / "__init__.py").write_text("")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
