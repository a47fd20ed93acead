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

# Limits and robustness (serving/limits.py, serving/connections.py; README "Limits and
# robustness"). Per request:
MAX_REQUEST_VALUES = 8 * 1024 * 1024  # JSON values in one body (numbers, strings, arrays, ...)
MAX_DECODED_BYTES = 256 * 1024 * 1024  # decoded inputs of one request, images at decoded size
MAX_RESPONSE_ELEMENTS = 4 * 1024 * 1024  # tensor elements in one response
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a response body's size, estimated before encoding
HEAVY_BODY_BYTES = 1024 * 1024  # bodies over this count as heavy requests
# Per connection (seconds):
HEADER_TIMEOUT = 10.0  # a request's line and headers must arrive within this
BODY_TIMEOUT = 60.0  # its body within this, counted while the server is reading
KEEP_ALIVE_TIMEOUT = 5.0  # an idle keep-alive connection is closed after this
FD_RESERVE = 128  # descriptors kept free for loading models; connections get the rest
# Pusher retention: a version beyond --keep is deleted only once the version that replaced it
# has been published this long (TF Serving may still be loading the new one and serving it).
RETENTION_GRACE_SECONDS = 600
