"""``python -m serving``: the same server as ``runner.py serve``."""

from __future__ import annotations

import argparse
import os
import sys

from serving import main as server_main


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs the server until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a serving root (<root>/<model>/<version>/saved_model.pb, optional "
                    "<root>/models.config) with TensorFlow Serving's REST API.")
    server_main.add_arguments(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return server_main.run(parser, args)


if __name__ == "__main__":
    exit_code = main()
    # With a bucket as serving root, tensorflow-io's S3 filesystem can abort the interpreter's
    # teardown ("pure virtual method called", tensorflow/io#2039): exit with our own code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
