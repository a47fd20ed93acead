"""Errors with TensorFlow status codes, and TF Serving's mapping of them to HTTP.

Every failure the REST API reports is a :class:`ServingError` carrying a
canonical ``tensorflow.error.Code`` name. The HTTP status comes from the same
table TF Serving uses (``tensorflow_serving/model_servers/http_server.cc``), so
a client sees the same status code from this server and from the real one.
"""

from __future__ import annotations

# tensorflow.error.Code name -> HTTP status, as in TF Serving's ToHTTPStatusCode().
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# Numeric values of tensorflow.error.Code, for mapping tf.errors.OpError.error_code.
CODE_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}

# Longest piece of client-supplied text echoed back in an error message.
MAX_ECHO = 200


class ServingError(Exception):
    """A request failed; ``code`` is a tensorflow.error.Code name."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def invalid_argument(message: str) -> ServingError:
    """A 400: the request is malformed or does not fit the signature."""
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    """A 404: unknown model or version."""
    return ServingError("NOT_FOUND", message)


def echo(text: str) -> str:
    """Client-supplied text, shortened for inclusion in an error message."""
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "...(truncated)"


def tf_error_message(message: str) -> str:
    """A TF runtime error without eager's preamble and Python stack trace.

    Eager wraps graph errors as "Graph execution error: Detected at node X
    defined at (most recent call last): <indented traceback>", which would
    leak server paths; TF Serving reports only the error itself.
    """
    if not message.startswith("Graph execution error:"):
        return message.strip()
    lines = message.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Detected at node")), None)
    if start is None:
        return message.strip()
    rest = lines[start + 1:]
    while rest and (not rest[0].strip() or rest[0].startswith(" ")
                    or rest[0] == "<stack traces unavailable>"):
        rest = rest[1:]
    return "\n".join(rest).strip() or message.strip()
