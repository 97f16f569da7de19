"""`python -m tether.bridge`: the same command as `tether bridge`."""

import argparse
import sys

from . import add_arguments, main

parser = argparse.ArgumentParser(
    prog="tether bridge",
    description="live sessions over WebSocket, for hosts that cannot speak gRPC",
)
add_arguments(parser)
sys.exit(main(parser.parse_args()))
