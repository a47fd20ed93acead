"""Defaults shared by the pipeline, the server and the command line, in one place.

TF Serving's conventions (its ports, the ``/models`` mount of its Docker image)
and where this project writes by default.
"""

OUTPUT_DIR = "outputs"  # runner.py's --output-dir
SERVING_DIR = "outputs/serving"  # OUTPUT_DIR/serving: what `runner.py serve` serves
# base_path prefix written into models.config: the tensorflow/serving image's mount point.
CONFIG_BASE_PATH = "/models"
HOST = "127.0.0.1"  # the server binds loopback unless told otherwise
REST_PORT = 8501  # TF Serving's --rest_api_port in its Docker image
GRPC_PORT = 8500  # TF Serving's --port
POLL_INTERVAL = 0.5  # seconds between scans of the serving root for new versions
MAX_BODY_BYTES = 64 * 1024 * 1024  # larger REST request bodies get 413
