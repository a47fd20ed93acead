"""tfx-servables command line: run | status | serve | openapi | compile.

    python runner.py                 # = run: export, evaluate and push every servable
    python runner.py status          # what is published, and by which run
    python runner.py serve           # TF Serving's REST (127.0.0.1:8501) and gRPC (:8500) APIs
    python runner.py openapi         # the published models' OpenAPI 3.1 document
    python runner.py compile --target kubeflow --out pipeline.json

Everything a run writes goes under ./outputs unless told otherwise.

Exit status of run (what a CI job can test):
  0  every selected servable is blessed and published, or unchanged (its newest
     version already holds the same model)
  1  a servable was not blessed or failed: each one is named on stderr
     ("error: NAME not blessed: ..." / "error: NAME failed: ...") with a one-line
     reason and the path of its report.md; the others are still published
  2  usage or catalog error: nothing was run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tfserving import defaults


def main(argv: list[str] | None = None) -> int:
    """Parses the command line and runs the chosen command; returns the exit code."""
    args = _parser().parse_args(argv)
    _quiet_tensorflow(args.verbose)
    return args.command_fn(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--catalog", default=None,
                         help="servable catalog YAML (default: servables/catalog.yaml)")
        sub.add_argument("--output-dir", default=defaults.OUTPUT_DIR,
                         help="where the pipeline root, metadata.sqlite and (unless "
                              "--serving-dir) the serving root go (default: ./outputs)")
        sub.add_argument("--serving-dir", default=None,
                         help="serving root TF Serving watches (default: OUTPUT_DIR/serving)")
        sub.add_argument("--metadata", default=None, metavar="PATH",
                         help="ML Metadata SQLite file, always local (default: "
                              "OUTPUT_DIR/metadata.sqlite, or ./outputs/metadata.sqlite when "
                              "--output-dir is a bucket such as s3://BUCKET/run)")
        sub.add_argument("--verbose", action="store_true",
                         help="show TensorFlow's, TFX's and Beam's own logs and tracebacks")

    run = commands.add_parser(
        "run", help="export, evaluate and push (the default command); exit 0 all published, "
        "1 a servable not blessed or failed, 2 usage/catalog error",
        description="Exports, evaluates and publishes the catalog's servables.\n\n"
        + __doc__[__doc__.index("Exit status"):],
        formatter_class=argparse.RawTextHelpFormatter)
    common(run)
    _add_run_flags(run)
    run.set_defaults(command_fn=_cmd_run)

    status = commands.add_parser("status", help="published versions and their provenance")
    common(status)
    status.set_defaults(command_fn=_cmd_status)

    serve = commands.add_parser(
        "serve", help="serve the serving root over TF Serving's REST and gRPC APIs")
    common(serve)
    from serving import main as server_main

    server_main.add_arguments(serve, serving_dir=False)
    serve.set_defaults(command_fn=_cmd_serve, parser=serve)

    openapi = commands.add_parser(
        "openapi", help="print the OpenAPI 3.1 document of the published models")
    common(openapi)
    openapi.add_argument("--model", default=None, help="only this model (default: all)")
    openapi.set_defaults(command_fn=_cmd_openapi)

    compile_ = commands.add_parser("compile", help="compile the pipeline for another orchestrator")
    common(compile_)
    compile_.add_argument("--target", choices=["kubeflow"], default="kubeflow",
                          help="orchestrator to compile for (default: kubeflow)")
    compile_.add_argument("--out", default="pipeline.json", help="output file")
    compile_.add_argument("--image", default="tfx-servables:latest",
                          help="container image with this project installed")
    compile_.add_argument("--pipeline-root", default=None,
                          help="pipeline root, e.g. gs://bucket/tfx-servables or "
                               "s3://bucket/tfx-servables")
    compile_.add_argument("--servables", default=None, help="comma-separated subset")
    compile_.add_argument("--project-dir-in-image", default=None, metavar="DIR",
                          help="where the image holds the project (default: /app, as the "
                               "Dockerfile puts it)")
    compile_.set_defaults(command_fn=_cmd_compile)

    # `python runner.py` with no command (or only run flags) means `run`.
    common(parser)
    _add_run_flags(parser)
    parser.set_defaults(command_fn=_cmd_run)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servables", default=None,
                        help="comma-separated subset of the catalog (default: all)")
    parser.add_argument("--orchestrator", choices=["beam", "local"], default="beam",
                        help="TFX BeamDagRunner (default) or LocalDagRunner")
    parser.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                        help="Beam pipeline argument for Beam-based components, repeatable, e.g. "
                             "--beam-arg=--direct_num_workers=2")
    parser.add_argument("--no-cache", action="store_true",
                        help="re-run every step even when its inputs are unchanged")
    parser.add_argument("--keep", type=_positive_int, default=None, metavar="K",
                        help="keep only the newest K versions of each pushed model (overrides "
                             "the catalog's serving.keep; default: keep every version). "
                             "Versions pinned or labelled in models.config are never removed")
    parser.add_argument("--config-base-path", default=defaults.CONFIG_BASE_PATH,
                        help="base_path prefix written to models.config (default: /models, "
                             "where the docker recipe mounts the serving root; '' writes the "
                             "serving root's own path)")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return number


def _quiet_tensorflow(verbose: bool) -> None:
    """Hides TensorFlow's C++ start-up noise and library INFO logs unless --verbose."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    # TFX's INFO records stay in the absl logger, where the progress lines are
    # made from them; only errors reach the terminal, except TFX's "Execution N
    # failed.": the run names the failed servable with its error at the end.
    absl_logger = logging.getLogger("absl")
    absl_logger.propagate = False
    if not any(getattr(h, "_tfx_servables", False) for h in absl_logger.handlers):
        errors = logging.StreamHandler(sys.stderr)
        errors.setLevel(logging.ERROR)
        errors.addFilter(lambda record: record.msg != "Execution %d failed.")
        errors._tfx_servables = True  # one handler, however often main() runs
        absl_logger.addHandler(errors)
    # Beam logs a failing step's exception with the framework's whole traceback
    # (ERROR:apache_beam.runners.common:...); the run reports it as the
    # servable's error, with the user's own frames.
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    # TensorFlow's Python warnings (deprecations of the APIs a library calls).
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _paths(args: argparse.Namespace) -> tuple[str, str, str]:
    """(pipeline root, serving root, metadata file). Roots may be URIs (gs://, s3://);
    ML Metadata is a local SQLite file either way."""
    from tfserving.filesystems import is_remote, join

    remote = is_remote(args.output_dir)
    output_dir = args.output_dir.rstrip("/") if remote else os.path.abspath(args.output_dir)
    serving_root = args.serving_dir or join(output_dir, "serving")
    if not is_remote(serving_root):
        serving_root = os.path.abspath(serving_root)
    metadata = args.metadata or os.path.join(
        defaults.OUTPUT_DIR if remote else output_dir, "metadata.sqlite")
    return join(output_dir, "pipeline"), serving_root, os.path.abspath(metadata)


def _load_catalog_or_exit(args: argparse.Namespace):
    from pipeline.catalog import CatalogError, load_catalog

    try:
        catalog = load_catalog(args.catalog)
        selected = _split(getattr(args, "servables", None))
        catalog.select(selected)
        return catalog, selected
    except CatalogError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _cmd_run(args: argparse.Namespace) -> int:
    catalog, selected = _load_catalog_or_exit(args)
    pipeline_root, serving_root, metadata_path = _paths(args)
    from pipeline import tfx_imports

    tfx_imports.lazy_tfx_components()  # imports the run does not need (BENCHMARKS.md)
    with tfx_imports.frozen_imports(args.orchestrator):  # no collections over the import heap
        from pipeline import local, report

    names = [s.name for s in catalog.select(selected)]
    print(f"tfx-servables: {', '.join(names)} ({args.orchestrator} orchestrator)",
          file=sys.stderr)
    outcome = local.run_pipeline(
        catalog, pipeline_root=pipeline_root, serving_root=serving_root,
        metadata_path=metadata_path, servables=selected, orchestrator=args.orchestrator,
        enable_cache=not args.no_cache, beam_pipeline_args=args.beam_arg,
        config_base_path=args.config_base_path, keep=args.keep,
        progress=local.print_progress)
    run = report.summarize(outcome, metadata_path, serving_root, catalog)
    print(f"\n{run.table()}")
    steps = run.next_steps()
    if steps:
        print(f"\n{steps}")
    errors = run.errors()
    if errors:
        sys.stdout.flush()  # the verdict comes last, after the table
        print(f"\n{errors}", file=sys.stderr)
    return run.exit_code


def _cmd_status(args: argparse.Namespace) -> int:
    catalog, _ = _load_catalog_or_exit(args)
    _, serving_root, metadata_path = _paths(args)
    from pipeline import report

    print(report.status(catalog.names(), serving_root, metadata_path))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving import main as server_main

    args.serving_dir = _paths(args)[1]
    return server_main.run(args.parser, args)


def _cmd_openapi(args: argparse.Namespace) -> int:
    import json

    from tfserving import openapi

    serving_root = _paths(args)[1]
    try:
        doc = openapi.read_root_document(serving_root, model=args.model)
    except ValueError as e:  # no such root or model, or a broken models.config
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2))
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    catalog, selected = _load_catalog_or_exit(args)
    from pipeline.kubeflow import IMAGE_PROJECT_DIR, compile_kubeflow

    # The roots are paths for the cluster (gs://, s3://, or a path inside the
    # containers), not for this machine: passed through as given. --serving-dir
    # defaults to PIPELINE_ROOT/serving; --output-dir does not apply.
    path = compile_kubeflow(catalog, out=args.out, image=args.image,
                            pipeline_root=args.pipeline_root, serving_root=args.serving_dir,
                            servables=selected,
                            project_dir_in_image=args.project_dir_in_image or IMAGE_PROJECT_DIR)
    if not args.pipeline_root:
        print("note: no --pipeline-root; the spec uses a placeholder (override it when "
              "submitting)", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def _main_exit_code() -> int:
    """main()'s exit code, also for SystemExit and uncaught errors (traceback printed)."""
    try:
        return main()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - printed as Python would, then exit 1
        import traceback

        traceback.print_exc()
        return 1


if __name__ == "__main__":
    # Every outcome ends in os._exit below: a process that used tensorflow-io's S3
    # filesystem can abort in the interpreter's teardown ("pure virtual method
    # called", tensorflow/io#2039), which would replace the real exit code with 134.
    exit_code = _main_exit_code()
    # Everything is written and committed by now (ML Metadata, serving root,
    # the summary). Interpreter shutdown with TensorFlow, Beam and TFX loaded
    # takes ~1.6 s of finalizers that do nothing for the user: skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(exit_code)
