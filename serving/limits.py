"""Bounded work per request, and allocation failures as RESOURCE_EXHAUSTED (HTTP 429).

A request is small on the wire but can ask for a lot: ``{"inputs": {"N": 400000000}}``
makes ``fun_runif`` return 1.6 GB of floats (4 GB of JSON), a 1.5 MB JPEG can declare
20000x20000 pixels. TF Serving leaves this to the operator; here every request is
bounded before each expensive step, and a refusal is TF Serving's ``RESOURCE_EXHAUSTED``
(HTTP 429) naming the limit and its flag:

1. the body (``--max-body-bytes``, HTTP 413, :mod:`serving.http`);
2. the JSON values in it, counted on the raw bytes before parsing
   (``--max-request-values``): a value costs 24-80 bytes once parsed, so this bounds the
   parser's memory. The count is an upper bound (commas, colons and brackets inside
   strings count too), so it can only refuse early, never admit more;
3. the decoded inputs (``--max-decoded-bytes``): the tensors' bytes, and for string
   inputs holding JPEG, PNG, GIF or BMP images the bytes decoding them will allocate,
   read from their headers (:mod:`serving.image_headers`) before the graph runs;
4. the response (``--max-response-elements``, ``--max-response-bytes``): checked on the
   output arrays before anything is encoded, with an upper bound of the JSON text's
   size. Encoding is where a too-large response would hurt most: orjson crashes the
   process (SIGSEGV) when its output buffer cannot grow, and the float text of 5 M
   values takes seconds and about 1 GB of Python strings;
5. heavy requests (bodies over 1 MiB, or of unknown length) run at most
   ``--max-heavy-requests`` at a time; the others wait before their body is read.

What cannot be predicted (a graph allocating a tensor sized by an input value) is left
to TensorFlow, whose allocator reports a failed allocation as ``ResourceExhaustedError``;
a ``MemoryError`` anywhere in decoding or encoding becomes the same 429. Before encoding
or parsing anything large, :func:`ensure_headroom` maps (without touching) the memory
the step may need, so that an address-space limit is met as a MemoryError here rather
than inside orjson.

Memory held after a large request, and where it goes back to the OS:

- TensorFlow's tensors: on x86 Linux TensorFlow 2.16 runs with oneDNN, whose CPU
  allocator is a BFC pool that keeps its high-water mark for good (one 1.6 GB output
  stays resident). Turning oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``) returns it but made
  a MobileNetV2 call 1.5x slower here, so instead the pool is capped:
  ``--tensorflow-memory-limit`` (oneDNN's ``TF_MKL_ALLOC_MAX_BYTES``, default half of
  the machine's or the container's memory). A call that needs more fails inside
  TensorFlow with ``ResourceExhaustedError`` (429), and the pool never holds more.
- Python and numpy objects (JSON parsing and encoding): glibc keeps what worker
  threads freed in their arenas; :class:`MemoryReleaser` hands it back
  (``malloc_trim``) after large requests. tcmalloc and jemalloc (LD_PRELOAD) were
  measured too and kept more than glibc with the trim (README: Limits and robustness).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import containment, events
from serving.image_headers import image_info
from tfserving import defaults
from tfserving.heap import malloc_trim
from tfserving.status import ServingError

log = logging.getLogger("serving")

# Steps larger than this get an address-space probe first (see ensure_headroom).
_PROBE_FROM_BYTES = 1024 * 1024
# Python string objects float_texts() makes per float element while encoding.
_FLOAT_TEXT_OVERHEAD = 64


def resource_exhausted(message: str) -> ServingError:
    """A 429: the request needs more than this server gives one request."""
    return ServingError("RESOURCE_EXHAUSTED", message)


def _mib(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class Limits:
    """Per-request and per-connection bounds (defaults in :mod:`tfserving.defaults`).

    ``max_heavy_requests``, ``max_connections`` and ``tensorflow_memory_limit`` of 0
    mean "derive": the number of CPUs, the descriptor limit minus a reserve
    (:mod:`serving.connections`), half of the memory (:func:`memory_available`).
    """

    max_request_values: int = defaults.MAX_REQUEST_VALUES
    max_decoded_bytes: int = defaults.MAX_DECODED_BYTES
    max_response_elements: int = defaults.MAX_RESPONSE_ELEMENTS
    max_response_bytes: int = defaults.MAX_RESPONSE_BYTES
    max_heavy_requests: int = 0
    heavy_body_bytes: int = defaults.HEAVY_BODY_BYTES
    header_timeout: float = defaults.HEADER_TIMEOUT
    body_timeout: float = defaults.BODY_TIMEOUT
    keep_alive_timeout: float = defaults.KEEP_ALIVE_TIMEOUT
    max_connections: int = 0
    tensorflow_memory_limit: int = 0

    def heavy_slots(self) -> int:
        """How many heavy requests may run at once."""
        return self.max_heavy_requests or max(1, _cpus())

    # -- the checks, in the order a request meets them

    def check_body(self, body: bytes) -> None:
        """Step 2: refuses a body with too many JSON values, before it is parsed."""
        limit = self.max_request_values
        if len(body) > limit:  # every value takes at least one byte
            values = (body.count(b",") + body.count(b":") + body.count(b"[")
                      + body.count(b"{") + 1)
            if values > limit:
                raise resource_exhausted(
                    f"Request has up to {values} JSON values, more than this server's limit "
                    f"of {limit} per request (--max-request-values)")
        if len(body) > _PROBE_FROM_BYTES:
            ensure_headroom(4 * len(body), "parsing the request")

    def check_inputs(self, tensors: Mapping[str, Any]) -> None:
        """Step 3: refuses inputs whose decoded size (images at their pixel size) is too big."""
        limit = self.max_decoded_bytes
        total = 0
        for alias, value in tensors.items():
            arr = np.asarray(value)
            if arr.dtype != object:
                total += arr.nbytes
            else:
                for index, item in enumerate(arr.flat):
                    if not isinstance(item, bytes | bytearray):
                        item = str(item).encode("utf-8", "replace")
                    total += len(item)
                    info = image_info(item)
                    if info is None:
                        continue
                    total += info.decoded_bytes
                    if info.decoded_bytes > limit:
                        raise resource_exhausted(
                            f"Input '{alias}' element {index} is a {info.describe()}: "
                            f"decoding it takes {_mib(info.decoded_bytes)}, more than this "
                            f"server's limit of {_mib(limit)} per request "
                            "(--max-decoded-bytes)")
            self.check_decoded_bytes(total)

    def check_decoded_bytes(self, nbytes: int) -> None:
        """Step 3 on a size known before decoding (gRPC: from each ``TensorProto``'s dtype,
        shape and field sizes), with :meth:`check_inputs`'s message."""
        limit = self.max_decoded_bytes
        if nbytes > limit:
            raise resource_exhausted(
                f"Decoded inputs (images at their pixel size) take more than this "
                f"server's limit of {_mib(limit)} per request (--max-decoded-bytes)")

    def response_error(self, outputs: Mapping[str, Any], row_format: bool = False,
                       encoding: str = "JSON") -> ServingError | None:
        """Step 4: the 429 for a response too large to encode (from the arrays alone), or None.

        ``encoding``: ``"JSON"`` (REST) or ``"protobuf"`` (gRPC's typed TensorProto
        fields, :func:`protobuf_size`). Returned, not raised: a raised error's traceback
        would keep ``outputs`` (which can be gigabytes) alive until the garbage collector
        breaks the cycle; the caller drops its reference first, then raises.
        """
        if encoding == "JSON":
            elements, size, float_elements = response_size(outputs, row_format)
            # The text and its bytes, plus a Python string per float (float_texts()).
            needed = 2 * size + _FLOAT_TEXT_OVERHEAD * float_elements
        else:
            elements, size = protobuf_size(outputs)
            # The packed payload, its framed copy, the proto and grpc's serialized message.
            needed = 4 * size
        if elements > self.max_response_elements:
            return resource_exhausted(
                f"Response would have {elements} tensor elements, more than this server's "
                f"limit of {self.max_response_elements} (--max-response-elements)")
        if size > self.max_response_bytes:
            return resource_exhausted(
                f"Response would take up to {_mib(size)} of {encoding}, more than this server's "
                f"limit of {_mib(self.max_response_bytes)} (--max-response-bytes)")
        if size > _PROBE_FROM_BYTES:
            try:
                ensure_headroom(needed, "encoding the response")
            except ServingError as err:
                return err
        return None

    def outputs(self, run: Callable[[], Mapping[str, Any]], serving_root: str,
                row_format: bool = False, encoding: str = "JSON") -> Mapping[str, Any]:
        """``run()``'s outputs as a client may receive them, REST or gRPC, batched or not.

        A model's error loses the server's paths (:func:`serving.containment.public_error`:
        TensorFlow's messages name files); a response too large to encode is refused
        (step 4, :meth:`response_error`) with nothing else holding the outputs.
        """
        try:
            outputs = run()
        except ServingError as err:
            raise containment.public_error(err, serving_root) from None
        error = self.response_error(outputs, row_format, encoding)
        if error is not None:
            del outputs  # not kept alive by the error's traceback
            raise error
        return outputs

    def is_heavy(self, method: str, content_length: str | None) -> bool:
        """True for a POST whose body is over ``heavy_body_bytes`` or of unknown length."""
        if method != "POST":
            return False
        if content_length is None or not content_length.isdigit():
            return True  # chunked: its size is only known once read
        return int(content_length) > self.heavy_body_bytes


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


# ------------------------------------------------------------------ response size

# Longest JSON text of one element plus its separator, per numpy dtype kind.
def _text_width(dtype: np.dtype) -> int:
    kind = dtype.kind
    if kind == "f":
        return 25 if dtype.itemsize > 4 else 16  # "-2.2250738585072014e-308", "-1.17549435e-38"
    if kind == "b":
        return 6  # "false,"
    if kind == "i":
        return len(str(np.iinfo(dtype).min)) + 1
    if kind == "u":
        return len(str(np.iinfo(dtype).max)) + 1
    return 64


def _string_bytes(arr: np.ndarray) -> int:
    if arr.dtype.kind in "SU":
        return arr.dtype.itemsize * arr.size
    return sum(len(item) if isinstance(item, bytes | bytearray | str) else len(str(item))
               for item in arr.flat)


def response_size(outputs: Mapping[str, Any], row_format: bool = False) -> tuple[int, int, int]:
    """(elements, upper bound of the JSON body's bytes, float elements) of ``outputs``.

    Bounds per element: the longest text of its dtype; for strings 6 bytes per byte
    (``\\u00XX`` escapes) or base64 for ``*_bytes`` outputs; plus brackets and keys.
    """
    elements = 0
    floats = 0
    size = 32
    for name, value in outputs.items():
        arr = np.asarray(value)
        count = arr.size
        elements += count
        if arr.dtype == object or arr.dtype.kind in "SU":
            data = _string_bytes(arr)
            if name.endswith("_bytes"):
                size += 4 * (data // 3) + count * 16  # base64 + '{"b64":"",},'
            else:
                size += 6 * data + count * 3
        else:
            size += count * _text_width(arr.dtype)
            if arr.dtype.kind == "f":
                floats += count
        shape = arr.shape
        nested = sum(math.prod(shape[:k]) for k in range(len(shape)))
        size += 3 * nested + len(name) + 8
        if row_format and shape:
            size += shape[0] * (len(name) + 6)
    return elements, size, floats


# Longest protobuf encoding of one element in TensorProto's typed (packed) fields.
def _wire_width(dtype: np.dtype) -> int:
    kind = dtype.kind
    if kind in "fc":
        return 3 if dtype.itemsize == 2 else dtype.itemsize  # half_val: a varint of 16 bits
    if kind == "b":
        return 1
    if kind == "u":
        return -(-dtype.itemsize * 8 // 7)  # ceil(bits / 7)
    return 10  # signed: negative values are sign-extended to 64 bits


def protobuf_size(outputs: Mapping[str, Any]) -> tuple[int, int]:
    """(elements, upper bound of the serialized bytes) of ``outputs`` as gRPC sends them.

    Predict writes each output in its dtype's typed field (``tfserving.tensor_proto``):
    per element the longest encoding of its dtype; strings their bytes plus a tag and a
    length (6 bytes); plus the map entry, dtype and shape of each output.
    """
    elements = 0
    size = 16
    for name, value in outputs.items():
        arr = np.asarray(value)
        elements += arr.size
        if arr.dtype == object or arr.dtype.kind in "SU":
            size += _string_bytes(arr) + 6 * arr.size
        else:
            size += arr.size * _wire_width(arr.dtype)
        size += len(name) + 32 + 12 * arr.ndim
    return elements, size


# ------------------------------------------------------------------ memory

_ONEDNN_LIMIT_ENV = "TF_MKL_ALLOC_MAX_BYTES"


def memory_available() -> int:
    """Physical memory, or the cgroup's limit when that is lower (bytes)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def limit_tensorflow_memory(limits: Limits) -> int | None:
    """Caps TensorFlow's CPU tensor pool (oneDNN's allocator); returns the cap, or None.

    Must run before TensorFlow is imported; an operator's own ``TF_MKL_ALLOC_MAX_BYTES``
    wins over the default (not over an explicit ``--tensorflow-memory-limit``).
    """
    wanted = limits.tensorflow_memory_limit
    if "tensorflow" in sys.modules:
        log.warning("TensorFlow is already imported: its memory limit stays as it is")
        return None
    if not wanted and os.environ.get(_ONEDNN_LIMIT_ENV, "").isdigit():
        return int(os.environ[_ONEDNN_LIMIT_ENV])
    cap = wanted or memory_available() // 2
    os.environ[_ONEDNN_LIMIT_ENV] = str(cap)
    return cap

def ensure_headroom(nbytes: int, step: str) -> None:
    """Maps ``nbytes`` of address space and unmaps it; a failure is a 429, not a crash.

    The pages are never touched, so this costs one mmap/munmap. Under an address-space
    limit (``RLIMIT_AS``) or strict overcommit it fails exactly where the next step would,
    and is reported instead of letting a C extension meet the failure (orjson then
    crashes the process).
    """
    try:
        probe = np.empty(int(nbytes), dtype=np.uint8)
    except MemoryError:
        raise resource_exhausted(
            f"Out of memory: {step} needs up to {_mib(int(nbytes))}, which this server "
            "cannot allocate now") from None
    del probe


def as_resource_exhausted(err: BaseException) -> ServingError | None:
    """A RESOURCE_EXHAUSTED error for an allocation failure, else None.

    MemoryError (numpy, Python), and the SystemError orjson raises when an allocation
    fails while it builds objects.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, MemoryError):
            return resource_exhausted("Out of memory while processing the request")
        seen = seen.__cause__ or seen.__context__
    return None


class HeavyGate:
    """At most ``slots`` heavy requests at a time; the others wait (FIFO)."""

    def __init__(self, slots: int):
        self.slots = slots
        self._semaphore: Any = None

    @contextlib.asynccontextmanager
    async def hold(self, heavy: bool) -> AsyncIterator[None]:
        """Holds a slot for the block when ``heavy``; a no-op otherwise."""
        if not heavy:
            yield
            return
        if self._semaphore is None:  # created on the event loop that uses it
            import anyio

            self._semaphore = anyio.Semaphore(self.slots)
        async with self._semaphore:
            yield


class MemoryReleaser:
    """Returns freed heap memory to the OS after large requests (glibc ``malloc_trim``).

    glibc keeps memory freed by worker threads in their arenas; after one large
    request the process would hold it for good. ``malloc_trim(0)`` releases the free
    pages of every arena. It runs on its own thread shortly after a large request
    (when its response has been sent and freed), at most once per ``interval`` seconds.
    Elsewhere than glibc it does nothing.
    """

    def __init__(self, interval: float = 1.0, delay: float = 0.2):
        self.interval = interval
        self.delay = delay
        self.trims = 0
        self._trim = malloc_trim()
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """True when the C library has ``malloc_trim``."""
        return self._trim is not None

    def request(self) -> None:
        """Asks for a trim soon (cheap; called after every large request)."""
        if self._trim is None:
            return
        self._wanted.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="serving-trim",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            time.sleep(self.delay)
            self._wanted.clear()
            self._trim(0)
            self.trims += 1
            events.count("memory_trims")
            time.sleep(self.interval)


# ------------------------------------------------------------------ flags

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The limit flags of ``runner.py serve`` / ``python -m serving``."""
    group = parser.add_argument_group(
        "limits", "bounded work per request and connection (README: Limits and robustness)")
    group.add_argument("--max-request-values", type=int, default=defaults.MAX_REQUEST_VALUES,
                       metavar="N", help="JSON values (numbers, strings, arrays, objects) in "
                       "one request body, counted before parsing; more get 429 "
                       "(default: %(default)s)")
    group.add_argument("--max-decoded-bytes", type=int, default=defaults.MAX_DECODED_BYTES,
                       metavar="BYTES", help="decoded inputs of one request, JPEG/PNG/GIF/BMP "
                       "images in string inputs at their pixel size (read from their "
                       "headers); more get 429 (default: %(default)s)")
    group.add_argument("--max-response-elements", type=int,
                       default=defaults.MAX_RESPONSE_ELEMENTS, metavar="N",
                       help="tensor elements in one response; more get 429 "
                       "(default: %(default)s)")
    group.add_argument("--max-response-bytes", type=int, default=defaults.MAX_RESPONSE_BYTES,
                       metavar="BYTES", help="one response body, estimated (upper bound) from "
                       "the outputs before encoding; more get 429 (default: %(default)s)")
    group.add_argument("--max-heavy-requests", type=int, default=0, metavar="N",
                       help="requests with bodies over 1 MiB (or of unknown length) running "
                       "at once; more wait (default: the number of CPUs)")
    group.add_argument("--header-timeout", type=float, default=defaults.HEADER_TIMEOUT,
                       metavar="SECONDS", help="a request's line and headers must arrive "
                       "within this; else the connection is closed (default: %(default)s)")
    group.add_argument("--body-timeout", type=float, default=defaults.BODY_TIMEOUT,
                       metavar="SECONDS", help="a request's body must arrive within this "
                       "(time the server waits for its own work not counted); else the "
                       "connection is closed (default: %(default)s)")
    group.add_argument("--keep-alive-timeout", type=float, default=defaults.KEEP_ALIVE_TIMEOUT,
                       metavar="SECONDS", help="idle keep-alive connections are closed after "
                       "this (default: %(default)s)")
    group.add_argument("--max-connections", type=int, default=0, metavar="N",
                       help="open client connections; more are refused with 503 and closed "
                       "(default: the descriptor limit, raised to its hard limit, minus "
                       f"{defaults.FD_RESERVE} kept for loading models)")
    group.add_argument("--tensorflow-memory-limit", type=int, default=0, metavar="BYTES",
                       help="memory TensorFlow's CPU allocator (oneDNN, x86) may hold for "
                       "tensors, all calls together; a call needing more gets 429, and no "
                       "more stays resident after large calls (default: half of the "
                       "machine's or container's memory)")


def from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Limits:
    """:class:`Limits` from the flags of :func:`add_arguments` (parser.error if invalid)."""
    for flag in ("max_request_values", "max_decoded_bytes", "max_response_elements",
                 "max_response_bytes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("max_heavy_requests", "max_connections", "tensorflow_memory_limit"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0 (0: derived)")
    for flag in ("header_timeout", "body_timeout", "keep_alive_timeout"):
        if not getattr(args, flag) > 0:
            parser.error(f"--{flag.replace('_', '-')} must be > 0 seconds")
    return Limits(max_request_values=args.max_request_values,
                  max_decoded_bytes=args.max_decoded_bytes,
                  max_response_elements=args.max_response_elements,
                  max_response_bytes=args.max_response_bytes,
                  max_heavy_requests=args.max_heavy_requests,
                  header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                  keep_alive_timeout=args.keep_alive_timeout,
                  max_connections=args.max_connections,
                  tensorflow_memory_limit=args.tensorflow_memory_limit)
