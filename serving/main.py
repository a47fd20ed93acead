"""Starting the server: ``runner.py serve`` and ``python -m serving`` (one code path).

:func:`add_arguments` declares the flags, :func:`run` checks them and calls
:func:`serve`, which sizes TensorFlow's threads and runs uvicorn (httptools and
uvloop when installed) on the app of :mod:`serving.http`, with the gRPC API of
:mod:`serving.grpc_api` on the same event loop (``--grpc-port``, default 8500).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from serving import limits as request_limits
from tfserving import defaults

log = logging.getLogger("serving")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def default_intra_op_threads() -> int:
    """1 on machines with at most 2 CPUs, else 0 (TensorFlow's default: one per CPU).

    With 2 CPUs the parallelism comes from concurrent requests, and splitting each op
    over both only adds hand-offs (figures: BENCHMARKS.md, "Serving").
    Larger machines keep TensorFlow's default, where one large request still gets every
    core.
    """
    return 1 if available_cpus() <= 2 else 0


def set_intra_op_threads(threads: int) -> int:
    """Sizes TensorFlow's intra-op thread pool (0: TensorFlow's default); returns the size set.

    Must run before TensorFlow runs anything in this process; if it already has, the
    current setting stays and a warning says so.
    """
    return _set_threads("intra", threads)


def set_inter_op_threads(threads: int) -> int:
    """Sizes TensorFlow's inter-op thread pool, as :func:`set_intra_op_threads`."""
    return _set_threads("inter", threads)


def _set_threads(kind: str, threads: int) -> int:
    import tensorflow as tf

    get = getattr(tf.config.threading, f"get_{kind}_op_parallelism_threads")
    if threads < 0:
        raise ValueError(f"{kind}-op threads must be >= 0, not {threads}")
    if get() == threads:
        return threads
    try:
        getattr(tf.config.threading, f"set_{kind}_op_parallelism_threads")(threads)
    except RuntimeError as err:  # TensorFlow's runtime is already initialised
        log.warning("cannot set TensorFlow's %s-op threads to %d (%s); keeping %d",
                    kind, threads, err, get())
        return get()
    return threads


def _uvicorn_loop() -> str:
    """uvicorn's ``loop`` option: uvloop if importable, else auto (the HTTP protocol is
    :func:`serving.connections.uvicorn_options`'s)."""
    import importlib.util

    return "uvloop" if importlib.util.find_spec("uvloop") else "auto"


def serve(serving_root: str = defaults.SERVING_DIR, host: str = defaults.HOST,
          port: int = defaults.REST_PORT, *,
          poll_interval: float = defaults.POLL_INTERVAL,
          max_body_bytes: int = defaults.MAX_BODY_BYTES,
          workers: int | None = None, intra_op_threads: int | None = None,
          inter_op_threads: int = 0, access_log: bool = False, log_level: str = "info",
          grpc_port: int = defaults.GRPC_PORT, batching: Any = None,
          limits: Any = None, allow_symlinks_outside_root: bool = False) -> None:
    """Runs the server until interrupted (binds loopback unless ``host`` says otherwise).

    ``intra_op_threads``: threads TensorFlow may use inside one op (0: TensorFlow's
    default, one per CPU; None: :func:`default_intra_op_threads`, 1 on machines with at
    most 2 CPUs). ``inter_op_threads``: ops of one call that may run at once (0:
    TensorFlow's default). Both are TF Serving's ``--tensorflow_intra_op_parallelism`` and
    ``--tensorflow_inter_op_parallelism``: they configure every version's session and
    TensorFlow's process-wide pools (which TensorFlow sizes once, at first use, from
    whichever session or eager context comes first; setting both keeps them equal).
    ``grpc_port``: where the gRPC API listens on ``host`` (0: no gRPC).
    ``batching``: a :class:`serving.batching.BatchingParameters` to merge concurrent
    predict calls as TF Serving's ``--enable_batching`` does (None: no batching).
    """
    limits = limits or request_limits.Limits()
    # Before anything imports TensorFlow: its allocator reads the limit once.
    cap = request_limits.limit_tensorflow_memory(limits)
    import uvicorn

    from serving import connections
    from serving.http import create_app

    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(log_level.upper())
    if not _is_loopback(host):
        log.warning("listening on %s: the server has no authentication and is reachable "
                    "from other machines", host)
    if cap:
        log.info("TensorFlow tensor memory: at most %.1f GiB (--tensorflow-memory-limit)",
                 cap / (1 << 30))
    if intra_op_threads is None:
        intra_op_threads = default_intra_op_threads()
    threads = set_intra_op_threads(intra_op_threads)
    inter_threads = set_inter_op_threads(inter_op_threads)
    options = {"loop": _uvicorn_loop(), **connections.uvicorn_options(limits)}
    log.info("TensorFlow intra-op threads: %s; uvicorn loop %s, http %s",
             threads or f"TensorFlow's default ({available_cpus()} CPUs)", options["loop"],
             "auto" if options["http"] == "auto" else "httptools")
    log.info("TensorFlow inter-op threads: %s",
             inter_threads or "TensorFlow's default")
    app = create_app(serving_root, poll_interval=poll_interval, max_body_bytes=max_body_bytes,
                     workers=workers, batching=batching, intra_op_threads=threads,
                     inter_op_threads=inter_threads, limits=limits,
                     allow_symlinks_outside_root=allow_symlinks_outside_root)
    if batching is not None:
        log.info("batching: on (%s)", batching)
    if grpc_port:
        add_grpc(app, host, grpc_port)
    else:
        log.info("gRPC: off (--grpc-port 0)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                lifespan="on", proxy_headers=False, server_header=False, **options)


def add_grpc(app: Any, host: str, port: int) -> None:
    """Adds TF Serving's gRPC API (:mod:`serving.grpc_api`) to the app's lifespan.

    It runs on uvicorn's event loop over the app's registry, metrics, worker pool and
    request limits, starts once the initial versions have loaded (as TF Serving opens its
    ports) and stops before the registry does. A port that cannot be bound stops the server.
    """
    from serving import grpc_api

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[None]:
        async with inner(app_):
            # One owner: REST's registry, metrics, pool, limits, heavy gate, releaser.
            api = grpc_api.GrpcApi.beside(app.state.api)
            try:
                server = await grpc_api.start(api, host, port)
            except OSError as err:
                log.error("%s; pass --grpc-port N for another port or 0 to turn gRPC off",
                          err)
                raise
            try:
                yield
            finally:
                await server.stop()

    app.router.lifespan_context = lifespan


def add_arguments(parser: argparse.ArgumentParser, *, serving_dir: bool = True) -> None:
    """The server's flags (``--serving-dir`` unless the caller derives it)."""
    if serving_dir:
        parser.add_argument("--serving-dir", default=defaults.SERVING_DIR,
                            help="the serving root (default: %(default)s)")
    parser.add_argument("--host", default=defaults.HOST,
                        help="address to bind (default: %(default)s, loopback only)")
    parser.add_argument("--port", type=int, default=defaults.REST_PORT,
                        help="REST port (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=defaults.GRPC_PORT,
                        help="gRPC port, on the same --host (default: %(default)s; 0: no gRPC)")
    parser.add_argument("--poll-interval", type=float, default=defaults.POLL_INTERVAL,
                        help="seconds between scans for new versions (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.MAX_BODY_BYTES,
                        help="larger request bodies get 413 (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads running TensorFlow (default: CPUs + 4, at most 32)")
    parser.add_argument("--tensorflow-intra-op-parallelism", "--tensorflow_intra_op_parallelism",
                        "--intra-op-threads", dest="intra_op_threads", type=int, default=None,
                        metavar="N",
                        help="threads TensorFlow may use inside one op, TF Serving's "
                             "--tensorflow_intra_op_parallelism (0: TensorFlow's default, one "
                             "per CPU, as TF Serving; default: 1 on machines with at most 2 "
                             "CPUs, where concurrent requests already use both, else 0)")
    parser.add_argument("--tensorflow-inter-op-parallelism", "--tensorflow_inter_op_parallelism",
                        dest="inter_op_threads", type=int, default=0, metavar="N",
                        help="ops of one call TensorFlow may run at once, TF Serving's "
                             "--tensorflow_inter_op_parallelism (default: %(default)s, "
                             "TensorFlow's default, as TF Serving)")
    parser.add_argument("--enable-batching", action="store_true",
                        help="merge concurrent predict requests to the same signature into "
                             "one call, as TF Serving's --enable_batching")
    parser.add_argument("--batching-parameters-file", default=None, metavar="FILE",
                        help="a BatchingParameters text proto, as TF Serving's "
                             "--batching_parameters_file (max_batch_size, "
                             "batch_timeout_micros, max_enqueued_batches, num_batch_threads, "
                             "allowed_batch_sizes, pad_variable_length_inputs); unset fields "
                             "take TF Serving's defaults")
    parser.add_argument("--allow-symlinks-outside-root", action="store_true",
                        help="load versions whose files (at any depth) resolve outside the "
                             "serving root through symlinks; refused by default")
    request_limits.add_arguments(parser)
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Validates the flags of :func:`add_arguments` and serves until interrupted."""
    from serving.source import is_directory, read_config
    from tfserving.model_config import ConfigError

    if args.intra_op_threads is not None and args.intra_op_threads < 0:
        parser.error("--intra-op-threads must be >= 0")
    if args.inter_op_threads < 0:
        parser.error("--tensorflow-inter-op-parallelism must be >= 0")
    if not 0 <= args.grpc_port <= 65535:
        parser.error("--grpc-port must be a port number, or 0 to turn gRPC off")
    if args.grpc_port and args.grpc_port == args.port:
        parser.error(f"--grpc-port and --port are both {args.port}")
    if not is_directory(args.serving_dir):
        parser.error(f"--serving-dir {args.serving_dir!r} is not a directory")
    try:
        read_config(args.serving_dir)
    except (ConfigError, OSError) as err:
        parser.error(str(err))
    batching = None
    if args.batching_parameters_file and not args.enable_batching:
        # TF Serving refuses the same combination (server.cc).
        parser.error("--batching-parameters-file is set without --enable-batching")
    if args.enable_batching:
        from serving.batching import BatchingParameters, read_batching_parameters

        try:
            batching = (read_batching_parameters(args.batching_parameters_file)
                        if args.batching_parameters_file else BatchingParameters())
        except ValueError as err:
            parser.error(str(err))
    serve(args.serving_dir, args.host, args.port, poll_interval=args.poll_interval,
          max_body_bytes=args.max_body_bytes, workers=args.workers,
          intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads,
          access_log=args.access_log,
          log_level=args.log_level, grpc_port=args.grpc_port, batching=batching,
          limits=request_limits.from_args(parser, args),
          allow_symlinks_outside_root=args.allow_symlinks_outside_root)
    return 0
