"""Server-side batching with TensorFlow Serving's semantics and parameter file.

``--enable_batching`` in TF Serving wraps each session in a ``BatchingSession``
(``tensorflow_serving/batching/batching_session.cc``) whose queues live in one
``SharedBatchScheduler`` (``tensorflow/core/kernels/batching_util/shared_batch_scheduler.h``)
shared by every model. This module does the same around any callable
``run(key, arrays) -> dict[str, np.ndarray]`` (a signature key, numpy inputs by alias),
so it does not depend on how a servable is loaded:

- Concurrent requests to the same signature whose inputs have the same aliases, dtypes
  and non-batch dimensions go to one queue; a batch is formed from a queue's tasks, their
  inputs are concatenated along dimension 0, the signature runs once, and every output is
  split back along dimension 0 (``MergeInputTensors`` / ``SplitOutputTensors``).
- Queue rules (``Queue::Schedule``, ``Queue::ScheduleBatch``, ``IsOpenBatchSchedulable``):
  the newest batch of a queue is open; a task that does not fit into it closes it and
  opens a new one, unless the queue already holds ``max_enqueued_batches`` batches: then
  the request fails with ``UNAVAILABLE`` ("The batch scheduling queue to which this task
  was submitted is full", REST 503). A task larger than ``max_batch_size`` fails with
  ``INVALID_ARGUMENT``. A closed batch is ready at once; the open batch when it is full or
  ``batch_timeout_micros`` after its first task arrived. ``num_batch_threads`` threads,
  shared by all queues, take ready batches round-robin over the queues.
- ``allowed_batch_sizes``: a batch is padded to the next allowed size with copies of the
  first row of its last task, and the padding's outputs are dropped.
  ``pad_variable_length_inputs``: tasks whose non-batch dimensions differ share a queue and
  are padded to the largest size of each dimension with the tensor's first element;
  outputs are split but not un-padded (both as TF Serving).
- Defaults for fields the file leaves out are TF Serving's (``SharedBatchScheduler``
  ``Options``/``QueueOptions``): ``max_batch_size`` 1000, ``batch_timeout_micros`` 0,
  ``max_enqueued_batches`` 10, ``num_batch_threads`` = the number of CPUs.

Where this module deliberately differs from TF Serving (documented, so nothing that works
there fails here):

- A request that cannot be merged runs alone, on the caller's thread, instead of failing:
  a scalar input, inputs with different dimension-0 sizes, an empty batch, or a signature
  whose declared shapes have no batch dimension (:func:`batchable_signature`; e.g. the
  seed ``fun_runif``'s ``N: int32 []``). TF Serving answers INVALID_ARGUMENT
  ("Batching Run() input tensors must have at least one dimension").
- When the merged call of a batch of several tasks fails, or its outputs cannot be split
  along dimension 0, each task is run alone and gets its own answer: one bad request does
  not fail its neighbours (TF Serving fails the whole batch). If every task then succeeds
  alone, the signature cannot run merged inputs (e.g. it reshapes its input to a scalar:
  one item per call, whatever its declared shape), and it is no longer batched.
- ``enable_large_batch_splitting`` is not implemented; a file that turns it on is refused.

Parameter files are the ``BatchingParameters`` text proto of
``tensorflow_serving/servables/tensorflow/session_bundle_config.proto`` (the
``tensorflow-serving-api`` package does not ship that module); :func:`parse_batching_parameters`
parses them with protobuf's own text format against a declared copy of that message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfserving.status import ServingError, invalid_argument

RunFn = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

# Queues of one BatchingSession with distinct input shapes beyond which a new shape runs
# alone (idle queues are evicted first): bounds memory when clients vary their shapes.
MAX_QUEUES_PER_SESSION = 64


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters``; defaults are TF Serving's when a field is unset."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=_cpus)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        # TF Serving's checks: SharedBatchScheduler::Create / AddQueue,
        # CreateBatchScheduler (bundle_factory_util.h), CreateBatchingSession.
        if self.max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive; was {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be non-negative; was "
                             f"{self.batch_timeout_micros}")
        if self.max_enqueued_batches < 0:
            raise ValueError("max_enqueued_batches must be non-negative; was "
                             f"{self.max_enqueued_batches}")
        if self.num_batch_threads <= 0:
            raise ValueError(f"num_batch_threads must be positive; was "
                             f"{self.num_batch_threads}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] <= 0:
                raise ValueError("allowed_batch_sizes entries must be positive and "
                                 f"monotonically increasing; was {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError("Last entry in allowed_batch_sizes must match max_batch_size; "
                                 f"last entry was {sizes[-1]}; expected {self.max_batch_size}")

    def padded_size(self, size: int) -> int:
        """The smallest allowed batch size >= ``size`` (``RoundToLowestAllowedBatchSize``)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


# field name -> (number, kind); kinds: wrapper message type names, or repeated/plain scalars.
_FIELDS: dict[str, tuple[int, str]] = {
    "max_batch_size": (1, "Int64Value"),
    "batch_timeout_micros": (2, "Int64Value"),
    "max_enqueued_batches": (3, "Int64Value"),
    "num_batch_threads": (4, "Int64Value"),
    "thread_pool_name": (5, "StringValue"),
    "allowed_batch_sizes": (6, "repeated int64"),
    "pad_variable_length_inputs": (7, "bool"),
    "enable_large_batch_splitting": (8, "BoolValue"),
    "max_execution_batch_size": (9, "Int64Value"),
}
_MESSAGE_CLASS: list[Any] = []


def _message_class() -> Any:
    """The BatchingParameters message class, declared once in a private descriptor pool."""
    if _MESSAGE_CLASS:
        return _MESSAGE_CLASS[0]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfx_servables/session_bundle_config_batching.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    types = descriptor_pb2.FieldDescriptorProto
    for name, (number, kind) in _FIELDS.items():
        f = message.field.add(name=name, number=number, label=types.LABEL_OPTIONAL)
        if kind == "repeated int64":
            f.label, f.type = types.LABEL_REPEATED, types.TYPE_INT64
        elif kind == "bool":
            f.type = types.TYPE_BOOL
        else:
            f.type, f.type_name = types.TYPE_MESSAGE, f".google.protobuf.{kind}"
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    get_class = getattr(message_factory, "GetMessageClass", None)
    cls = get_class(descriptor) if get_class else \
        message_factory.MessageFactory(pool).GetPrototype(descriptor)
    _MESSAGE_CLASS.append(cls)
    return cls


def parse_batching_parameters(text: str, source: str = "batching parameters") -> \
        BatchingParameters:
    """Parses a ``BatchingParameters`` text proto (TF Serving's ``--batching_parameters_file``).

    Raises ValueError naming ``source``, the field and what is valid.
    """
    from google.protobuf import text_format

    message = _message_class()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        hint = ""
        if "has no field named" in str(err):
            hint = f" (valid fields: {', '.join(_FIELDS)})"
        raise ValueError(f"{source}: not a BatchingParameters text proto: {err}{hint}") from None
    if message.HasField("enable_large_batch_splitting") and \
            message.enable_large_batch_splitting.value:
        raise ValueError(f"{source}: field 'enable_large_batch_splitting': true is not "
                         "supported by this server (only false); requests larger than "
                         "max_batch_size are refused, as TF Serving does without it")
    values: dict[str, Any] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads", "thread_pool_name"):
        if message.HasField(name):
            values[name] = getattr(message, name).value
    values["allowed_batch_sizes"] = tuple(message.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = message.pad_variable_length_inputs
    try:
        return BatchingParameters(**values)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def read_batching_parameters(path: str) -> BatchingParameters:
    """Reads and parses a ``--batching_parameters_file``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ValueError(f"batching parameters file {path!r}: {err.strerror or err}") from None
    return parse_batching_parameters(text, source=f"batching parameters file {path!r}")


# ------------------------------------------------------------------------- scheduling


@dataclass(eq=False)
class _Task:
    key: str
    arrays: Mapping[str, np.ndarray]
    size: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.monotonic)


class _Batch:
    __slots__ = ("tasks", "size")

    def __init__(self) -> None:
        self.tasks: list[_Task] = []
        self.size = 0


class _Queue:
    """One SharedBatchScheduler queue: a deque of batches, the last one open.

    Every method runs under the scheduler's lock.
    """

    def __init__(self, session: BatchingSession, key: str) -> None:
        self.session = session
        self.key = key
        self.params = session.params
        self.batches: list[_Batch] = [_Batch()]
        self.open_started = 0.0
        self.processing = 0
        self.closed = False

    def schedule(self, task: _Task) -> None:
        if task.size > self.params.max_batch_size:
            raise invalid_argument(f"Task size {task.size} is larger than maximum batch size "
                                   f"{self.params.max_batch_size}")
        if self.batches[-1].size + task.size > self.params.max_batch_size:
            if len(self.batches) >= self.params.max_enqueued_batches:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this "
                                   "task was submitted is full")
            self.batches.append(_Batch())
        open_batch = self.batches[-1]
        if not open_batch.tasks:
            self.open_started = time.monotonic()
        open_batch.tasks.append(task)
        open_batch.size += task.size

    def open_ready_at(self) -> float | None:
        """When the open batch becomes schedulable (monotonic seconds); None if empty."""
        open_batch = self.batches[-1]
        if not open_batch.tasks:
            return None
        if self.closed or open_batch.size >= self.params.max_batch_size:
            return 0.0
        return self.open_started + self.params.batch_timeout_micros / 1e6

    def take(self, now: float) -> _Batch | None:
        """The next ready batch (``ScheduleBatch``), or None."""
        if len(self.batches) == 1:
            ready = self.open_ready_at()
            if ready is None or ready > now:
                return None
            self.batches.append(_Batch())
        self.processing += 1
        return self.batches.pop(0)

    def idle(self) -> bool:
        return self.processing == 0 and len(self.batches) == 1 and not self.batches[0].tasks


class SharedBatchScheduler:
    """``num_batch_threads`` threads serving the ready batches of every queue, round-robin."""

    def __init__(self, num_batch_threads: int | None = None,
                 thread_pool_name: str = "batch_threads") -> None:
        self.num_batch_threads = num_batch_threads or _cpus()
        if self.num_batch_threads <= 0:
            raise ValueError(f"num_batch_threads must be positive; was {num_batch_threads}")
        self._cv = threading.Condition()
        self._queues: list[_Queue] = []
        self._next = 0
        self._stopping = False
        self._threads = [threading.Thread(target=self._thread_logic, daemon=True,
                                          name=f"{thread_pool_name}_{i}")
                         for i in range(self.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    # -- called by BatchingSession, under self._cv
    def _add_queue(self, queue: _Queue) -> None:
        self._queues.append(queue)

    def _drop_queue(self, queue: _Queue) -> None:
        index = self._queues.index(queue)
        del self._queues[index]
        if self._next > index:
            self._next -= 1
        if self._next >= len(self._queues):
            self._next = 0

    def _next_batch(self) -> tuple[_Queue, _Batch] | float | None:
        """A ready batch, else the monotonic time the next one is due (None: no work)."""
        now = time.monotonic()
        for queue in [q for q in self._queues if q.closed and q.idle()]:
            self._drop_queue(queue)  # a closed session's drained queue
        due: float | None = None
        for _ in range(len(self._queues)):
            queue = self._queues[self._next]
            self._next = (self._next + 1) % len(self._queues)
            batch = queue.take(now)
            if batch is not None:
                return queue, batch
            ready = queue.open_ready_at() if len(queue.batches) == 1 else None
            if ready is not None:
                due = ready if due is None else min(due, ready)
        return due

    def _thread_logic(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopping and not any(q.batches[0].tasks for q in self._queues):
                        return
                    found = self._next_batch()
                    if isinstance(found, tuple):
                        break
                    timeout = None if found is None else max(0.0, found - time.monotonic())
                    self._cv.wait(timeout)
            queue, batch = found
            try:
                queue.session._process(queue.key, batch)
            finally:
                with self._cv:
                    queue.processing -= 1
                    self._cv.notify_all()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Lets the threads finish the enqueued batches, then ends them."""
        with self._cv:
            self._stopping = True
            for queue in self._queues:
                queue.closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)


def batchable_signature(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> bool:
    """Whether a signature's declared shapes have a batch dimension to merge along.

    ``inputs``/``outputs`` map aliases to specs with a ``shape``: None for an unknown rank,
    else a sequence of sizes with -1 (or None) for an unknown size. A signature is
    batchable unless an input or output has rank 0 or a fixed dimension 0; an unknown
    rank is allowed (TF Serving batches whatever it is given; a failed merged call then
    falls back to single runs, see the module doc).
    """
    if not inputs:
        return False
    for spec in (*inputs.values(), *outputs.values()):
        shape = getattr(spec, "shape", None)
        if shape is None:
            continue
        if len(shape) == 0 or shape[0] not in (-1, None):
            return False
    return True


class BatchingSession:
    """Batching around ``run(key, arrays)``: TF Serving's BatchingSession for one servable.

    ``batchable(key)`` says whether signature ``key`` may be batched at all (see
    :func:`batchable_signature`); default: every key. Use :meth:`schedule` from an event
    loop (await ``asyncio.wrap_future`` of the result) and :meth:`run` from threads.
    """

    def __init__(self, run: RunFn, scheduler: SharedBatchScheduler,
                 params: BatchingParameters | None = None,
                 batchable: Callable[[str], bool] | None = None) -> None:
        self._run = run
        self.scheduler = scheduler
        self.params = params or BatchingParameters(num_batch_threads=scheduler.num_batch_threads)
        self._batchable = batchable or (lambda key: True)
        self._queues: dict[tuple, _Queue] = {}
        self._unbatchable: set[str] = set()
        self._closed = False

    def _merge_key(self, key: str, arrays: Mapping[str, np.ndarray]) -> tuple | None:
        """(queue key, task size), or None when the request cannot be batched."""
        if not arrays or key in self._unbatchable or not self._batchable(key):
            return None
        size = None
        parts = []
        for alias in sorted(arrays):
            arr = arrays[alias]
            if not isinstance(arr, np.ndarray) or arr.ndim == 0:
                return None
            if size is None:
                size = arr.shape[0]
            elif arr.shape[0] != size:
                return None
            rest = arr.ndim if self.params.pad_variable_length_inputs else arr.shape[1:]
            parts.append((alias, arr.dtype.str, rest))
        if not size:
            return None
        return (key, tuple(parts)), size

    def schedule(self, key: str, arrays: Mapping[str, np.ndarray]) -> \
            concurrent.futures.Future | None:
        """Enqueues one request; a Future of its outputs, or None if it must run alone.

        Raises ServingError: ``UNAVAILABLE`` when its queue is full, ``INVALID_ARGUMENT``
        when it is larger than ``max_batch_size``.
        """
        merge = self._merge_key(key, arrays)
        if merge is None or self._closed:
            return None
        queue_key, size = merge
        task = _Task(key, arrays, size)
        with self.scheduler._cv:
            queue = self._queues.get(queue_key)
            if queue is None:
                if len(self._queues) >= MAX_QUEUES_PER_SESSION and not self._evict_idle():
                    return None
                queue = self._queues[queue_key] = _Queue(self, key)
                self.scheduler._add_queue(queue)
            queue.schedule(task)
            self.scheduler._cv.notify()
        return task.future

    def _evict_idle(self) -> bool:
        idle = [k for k, q in self._queues.items() if q.idle()]
        for k in idle:
            self.scheduler._drop_queue(self._queues.pop(k))
        return bool(idle)

    def run(self, key: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Blocking: the outputs of one request, batched with concurrent ones when possible."""
        future = self.schedule(key, arrays)
        if future is None:
            return dict(self._run(key, arrays))
        return future.result()

    def close(self) -> None:
        """No new batches; enqueued tasks still run (a version being unloaded)."""
        with self.scheduler._cv:
            self._closed = True
            for queue in self._queues.values():
                queue.closed = True
            self.scheduler._cv.notify_all()

    # -- batch threads
    def _process(self, key: str, batch: _Batch) -> None:
        # A request whose waiter was cancelled (its client left) is dropped here; the
        # others can no longer be cancelled, so their answers can always be delivered.
        tasks = [t for t in batch.tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        size = sum(t.size for t in tasks)
        if len(tasks) == 1 and not self.params.allowed_batch_sizes:
            self._run_alone(tasks[0])
            return
        try:
            merged = self._merge(tasks, size)
            outputs = self._run(key, merged)
            split = self._split(outputs, tasks, self.params.padded_size(size))
        except Exception as err:  # noqa: BLE001 - any failure: each task gets its own answer
            if len(tasks) == 1:
                _fail(tasks[0].future, err)
                return
            ok = 0
            for task in tasks:
                ok += self._run_alone(task)
            if ok == len(tasks):
                self._unbatchable.add(key)
            return
        for task, result in zip(tasks, split, strict=True):
            task.future.set_result(result)

    def _run_alone(self, task: _Task) -> bool:
        try:
            task.future.set_result(dict(self._run(task.key, task.arrays)))
            return True
        except Exception as err:  # noqa: BLE001 - delivered to the waiting request
            _fail(task.future, err)
            return False

    def _merge(self, tasks: Sequence[_Task], size: int) -> dict[str, np.ndarray]:
        padding = self.params.padded_size(size) - size
        merged = {}
        for alias in tasks[0].arrays:
            parts = [t.arrays[alias] for t in tasks]
            if self.params.pad_variable_length_inputs:
                target = np.max([p.shape[1:] for p in parts], axis=0)
                parts = [_pad(p, target) for p in parts]
            if padding:
                last = parts[-1]
                parts.append(np.repeat(last[:1], padding, axis=0))
            merged[alias] = np.concatenate(parts, axis=0)
        return merged

    @staticmethod
    def _split(outputs: Mapping[str, np.ndarray], tasks: Sequence[_Task],
               total: int) -> list[dict[str, np.ndarray]]:
        results: list[dict[str, np.ndarray]] = [{} for _ in tasks]
        for alias, value in outputs.items():
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != total:
                raise ValueError(f"Batched output tensor '{alias}' has shape {value.shape}: "
                                 f"its 0th dimension does not equal the batch size {total}")
            start = 0
            for result, task in zip(results, tasks, strict=True):
                result[alias] = value[start:start + task.size]
                start += task.size
        return results


def _pad(arr: np.ndarray, target: Sequence[int]) -> np.ndarray:
    """``arr`` padded at the end of every non-batch dimension to ``target``, with its first
    element (TF Serving's ``AddPadding``)."""
    if tuple(arr.shape[1:]) == tuple(target):
        return arr
    if arr.size == 0:
        raise invalid_argument("Cannot pad an empty tensor")
    out = np.full((arr.shape[0], *target), arr.flat[0], dtype=arr.dtype)
    out[tuple(slice(0, n) for n in arr.shape)] = arr
    return out


async def settled(future: concurrent.futures.Future) -> Callable[[], Any]:
    """Waits on the event loop for a request scheduled with :meth:`BatchingSession.schedule`;
    returns its ``result`` (which raises the call's error), so that the caller reads a
    batched call's outputs as it reads a direct one (``Limits.outputs``). Cancelling the
    wait cancels the request if its batch has not started."""
    waited = asyncio.wrap_future(future)
    with contextlib.suppress(Exception):  # raised again by waited.result()
        await waited
    return waited.result


def _fail(future: concurrent.futures.Future, err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)


class ServerBatching:
    """A server's batching: one shared scheduler, one :class:`BatchingSession` per loaded
    version (created on its first request, closed when the version is released).

    ``servable`` objects need ``run(key, arrays)`` and ``signatures`` (key -> a spec with
    ``inputs``/``outputs`` whose entries have a ``shape``; see :func:`batchable_signature`).
    """

    def __init__(self, params: BatchingParameters) -> None:
        import weakref

        self.params = params
        self.scheduler = SharedBatchScheduler(params.num_batch_threads, params.thread_pool_name)
        self._sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def session(self, servable: Any) -> BatchingSession:
        """The batching session of ``servable`` (one per loaded version)."""
        import weakref

        with self._lock:
            session = self._sessions.get(servable)
            if session is None:
                signatures = servable.signatures

                def batchable(key: str) -> bool:
                    sig = signatures.get(key)
                    return sig is not None and batchable_signature(sig.inputs, sig.outputs)

                # Weakly: the session must not keep an unloaded version alive.
                run_ref = weakref.WeakMethod(servable.run)

                def run(key: str, arrays: Mapping[str, np.ndarray]) -> \
                        Mapping[str, np.ndarray]:
                    method = run_ref()
                    if method is None:
                        raise ServingError("UNAVAILABLE", "The model version was unloaded")
                    return method(key, arrays)

                session = BatchingSession(run, self.scheduler, self.params, batchable)
                self._sessions[servable] = session
                # An unloaded version's queues drain and leave the scheduler.
                weakref.finalize(servable, session.close)
            return session

    def schedule(self, servable: Any, key: str, arrays: Mapping[str, np.ndarray]) -> \
            concurrent.futures.Future | None:
        """:meth:`BatchingSession.schedule` on ``servable``'s session."""
        return self.session(servable).schedule(key, arrays)

    def stop(self) -> None:
        """Finishes the enqueued batches and ends the batch threads."""
        self.scheduler.stop()
