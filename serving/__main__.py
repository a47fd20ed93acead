"""``python -m serving``: serve a serving root with TF Serving's REST API."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs the server until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a serving root (<root>/<model>/<version>/saved_model.pb, optional "
                    "<root>/models.config) with TensorFlow Serving's REST API.")
    parser.add_argument("--serving-dir", default="outputs/serving",
                        help="the serving root (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=int, default=8501, help="port (default: %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="seconds between scans for new versions (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024,
                        help="larger request bodies get 413 (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads running TensorFlow (default: CPUs + 4, at most 32)")
    parser.add_argument("--intra-op-threads", type=int, default=None, metavar="N",
                        help="threads TensorFlow may use inside one op, as TF Serving's "
                             "--tensorflow_intra_op_parallelism (0: TensorFlow's default, one "
                             "per CPU; default: 1 on machines with at most 2 CPUs, where "
                             "concurrent requests already use both, else 0)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    if args.intra_op_threads is not None and args.intra_op_threads < 0:
        parser.error("--intra-op-threads must be >= 0")
    if not os.path.isdir(args.serving_dir):
        parser.error(f"--serving-dir {args.serving_dir!r} is not a directory")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    from serving.models import ConfigError, read_models_config
    from serving.server import serve

    try:
        read_models_config(args.serving_dir)
    except (ConfigError, OSError) as err:
        parser.error(str(err))

    serve(args.serving_dir, args.host, args.port, poll_interval=args.poll_interval,
          max_body_bytes=args.max_body_bytes, workers=args.workers,
          intra_op_threads=args.intra_op_threads, access_log=args.access_log,
          log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
