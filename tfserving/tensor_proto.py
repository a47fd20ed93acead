"""``tensorflow.TensorProto`` to numpy and back, as TensorFlow's C++ ``Tensor`` does it.

The gRPC API carries tensors as ``TensorProto``: a dtype, a shape and the
values either as raw little-endian bytes in ``tensor_content`` or in the typed
repeated field of the dtype (``float_val``, ``int_val``, ``string_val``, ...).

Reading follows ``Tensor::FromProto`` (``tensorflow/core/framework/tensor.cc``),
which is what TF Serving's Predict applies to each request input
(``tensorflow/cc/saved_model/util.cc`` ``GetInputValues``):

- the shape must be fully known, with at most 254 dimensions, no negative size
  and no int64 overflow;
- ``tensor_content``, when set, must hold exactly ``num_elements * itemsize``
  bytes (strings: TensorFlow's string-list encoding);
- otherwise the typed field is used: no values means zeros (empty strings),
  fewer values than elements are padded with the last one, extra values are
  ignored.

Decision beyond TensorFlow: a tensor that padding would make larger than
:data:`MAX_TENSOR_BYTES` (the largest gRPC message TF Serving accepts) is
refused, so a request of a few bytes cannot make the server allocate
gigabytes.

Writing follows ``Tensor::AsProtoField`` (TF Serving's default for Predict
responses): the typed field, not ``tensor_content``. Numeric values are
written as one packed field straight from the array's bytes (varints computed
with numpy), without a detour through Python lists. :func:`to_proto` can also
write ``tensor_content`` (what ``tf.make_tensor_proto`` does, and what TF
Serving writes with ``--enable_serialization_as_tensor_content``).

numpy and TensorFlow's generated protos only; no TensorFlow runtime.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfserving.status import echo, invalid_argument

# TensorShape::MaxDimensions().
MAX_DIMS = 254
# The largest tensor a request may decode to: grpc's max message size in TF Serving
# (model_servers/server.cc: builder.SetMaxMessageSize(INT32_MAX)).
MAX_TENSOR_BYTES = 2**31 - 1

# TensorProto typed fields: name, field number, encoding of the packed values.
_FIXED32, _FIXED64, _VARINT, _BYTES = "fixed32", "fixed64", "varint", "bytes"
_FIELDS: dict[str, tuple[str, int, str]] = {
    "DT_FLOAT": ("float_val", 5, _FIXED32),
    "DT_DOUBLE": ("double_val", 6, _FIXED64),
    "DT_INT32": ("int_val", 7, _VARINT),
    "DT_UINT8": ("int_val", 7, _VARINT),
    "DT_INT16": ("int_val", 7, _VARINT),
    "DT_INT8": ("int_val", 7, _VARINT),
    "DT_UINT16": ("int_val", 7, _VARINT),
    "DT_STRING": ("string_val", 8, _BYTES),
    "DT_COMPLEX64": ("scomplex_val", 9, _FIXED32),
    "DT_INT64": ("int64_val", 10, _VARINT),
    "DT_BOOL": ("bool_val", 11, _VARINT),
    "DT_COMPLEX128": ("dcomplex_val", 12, _FIXED64),
    "DT_HALF": ("half_val", 13, _VARINT),
    "DT_BFLOAT16": ("half_val", 13, _VARINT),
    "DT_UINT32": ("uint32_val", 16, _VARINT),
    "DT_UINT64": ("uint64_val", 17, _VARINT),
}
_NUMPY = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_INT32": np.int32,
    "DT_UINT8": np.uint8, "DT_INT16": np.int16, "DT_INT8": np.int8, "DT_UINT16": np.uint16,
    "DT_COMPLEX64": np.complex64, "DT_INT64": np.int64, "DT_BOOL": np.bool_,
    "DT_COMPLEX128": np.complex128, "DT_HALF": np.float16, "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
}
# Element type of the typed field, for reading it with np.fromiter.
_FIELD_NUMPY = {"float_val": np.float32, "double_val": np.float64, "int_val": np.int32,
                "scomplex_val": np.float32, "int64_val": np.int64, "bool_val": np.bool_,
                "dcomplex_val": np.float64, "half_val": np.int32, "uint32_val": np.uint32,
                "uint64_val": np.uint64}


def _bfloat16() -> Any:
    import ml_dtypes  # TensorFlow's own bfloat16 numpy type

    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of a ``DT_*`` name (``object`` for DT_STRING); KeyError if none."""
    if dtype == "DT_STRING":
        return np.dtype(object)
    if dtype == "DT_BFLOAT16":
        return _bfloat16()
    return np.dtype(_NUMPY[dtype])


def dtype_name(array: np.ndarray) -> str:
    """The ``DT_*`` name of a numpy array's dtype; ValueError for types TensorFlow lacks."""
    kind = array.dtype
    if kind.kind in "OSU":
        return "DT_STRING"
    if kind.name == "bfloat16":
        return "DT_BFLOAT16"
    for name, np_type in _NUMPY.items():
        if kind == np_type:
            return name
    raise ValueError(f"numpy dtype {kind} has no TensorFlow dtype")


def _dtype_enum_name(value: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(value)
    except ValueError:
        return f"DataType({value})"


# ------------------------------------------------------------------------- decoding


def to_ndarray(proto: Any) -> np.ndarray:
    """The array a ``TensorProto`` holds, as ``Tensor::FromProto`` reads it.

    Raises ValueError saying what is wrong (the caller names the tensor).
    DT_STRING becomes an object array of ``bytes``.
    """
    dtype = _dtype_enum_name(proto.dtype)
    shape = _shape(proto.tensor_shape)
    if dtype not in _FIELDS:
        raise ValueError(f"dtype {dtype} is not supported")
    np_dtype = numpy_dtype(dtype)
    count = math.prod(shape)
    itemsize = np_dtype.itemsize if dtype != "DT_STRING" else 1
    if count * itemsize > MAX_TENSOR_BYTES:
        raise ValueError(f"shape {list(shape)} of {dtype} is larger than {MAX_TENSOR_BYTES} "
                         "bytes")
    if count == 0:
        return np.empty(shape, dtype=np_dtype)
    content = proto.tensor_content
    if content:
        if dtype == "DT_STRING":
            return _decode_string_list(content, count).reshape(shape)
        expected = count * np_dtype.itemsize
        if len(content) != expected:
            raise ValueError(f"tensor_content has {len(content)} bytes; shape {list(shape)} of "
                             f"{dtype} needs {expected}")
        return np.frombuffer(content, dtype=np_dtype.newbyteorder("<")).reshape(shape)
    field_name = _FIELDS[dtype][0]
    values = getattr(proto, field_name)
    if dtype == "DT_STRING":
        flat = np.empty(min(len(values), count), dtype=object)
        flat[:] = values[:count]
    else:
        flat = _typed_values(proto, dtype, values)
        if dtype in ("DT_COMPLEX64", "DT_COMPLEX128"):
            flat = flat[: len(flat) // 2 * 2].view(np_dtype)
        elif dtype in ("DT_HALF", "DT_BFLOAT16"):
            flat = flat.astype(np.uint16).view(np_dtype)
        elif flat.dtype != np_dtype:
            flat = flat.astype(np_dtype)  # int_val of int8/uint8/int16/uint16: static_cast
        flat = flat[:count]
    if len(flat) == count:
        return flat.reshape(shape)
    out = np.empty(count, dtype=np_dtype)
    if len(flat) == 0:
        out.fill(b"" if dtype == "DT_STRING" else 0)
    else:
        out[: len(flat)] = flat
        out[len(flat):] = flat[-1]
    return out.reshape(shape)


def _typed_values(proto: Any, dtype: str, values: Any) -> np.ndarray:
    """A numeric typed field as a 1-D array of its own element type.

    Iterating a long repeated field creates a Python object per value (about 0.1 s per
    million); past :data:`_ITERATE_MAX` values the field is read from the proto's wire
    bytes instead, where it is one packed run (C++ serialisation, then numpy).
    """
    field_name, number, wire = _FIELDS[dtype]
    element = _FIELD_NUMPY[field_name]
    if len(values) <= _ITERATE_MAX:
        return np.fromiter(values, dtype=element, count=len(values))
    payload = _packed_payload(proto.SerializeToString(), number)
    if payload is None:
        return np.fromiter(values, dtype=element, count=len(values))
    if wire == _VARINT:
        decoded = _decode_varints(payload)
        if element == np.bool_:
            return decoded != 0
        # int32 fields keep the low 32 bits, as protobuf's parser does.
        return decoded.view(np.int64).astype(element) if element != np.uint64 else decoded
    return np.frombuffer(payload, dtype=np.dtype(element).newbyteorder("<"))


# Typed fields with more values than this are decoded from their wire bytes.
_ITERATE_MAX = 256


def _packed_payload(data: bytes, number: int) -> memoryview | bytes | None:
    """The packed payload of field ``number`` in a serialised message (None: not packed)."""
    view = memoryview(data)
    chunks = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if field == number:
                chunks.append(view[pos:pos + length])
            pos += length
        else:
            return None
        if field == number and wire != 2:
            return None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _decode_varints(payload: Any) -> np.ndarray:
    """Concatenated protobuf varints as uint64 (vectorised)."""
    data = np.frombuffer(payload, dtype=np.uint8)
    last = data < 0x80
    if data.size == 0 or not last[-1]:
        raise ValueError("a packed varint field is truncated")
    if last.all():  # every value below 128: one byte each
        return data.astype(np.uint64)
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    position = np.arange(data.size) - np.repeat(starts, np.diff(np.append(starts, data.size)))
    if position.max() > 9:
        raise ValueError("a packed varint field has a value longer than 10 bytes")
    parts = (data & 0x7F).astype(np.uint64) << (position.astype(np.uint64) * np.uint64(7))
    return np.bitwise_or.reduceat(parts, starts)


def _shape(proto: Any) -> tuple[int, ...]:
    """A fully defined shape (``TensorShape::IsValid``); ValueError otherwise."""
    if proto.unknown_rank:
        raise ValueError("the shape has unknown rank")
    dims = tuple(d.size for d in proto.dim)
    if len(dims) > MAX_DIMS:
        raise ValueError(f"the shape has {len(dims)} dimensions; at most {MAX_DIMS} allowed")
    total = 1
    for size in dims:
        if size < 0:
            raise ValueError(f"shape {list(dims)} has a negative dimension")
        total *= size
        if total > 2**63 - 1:
            raise ValueError(f"shape {list(dims)} has more than 2**63-1 elements")
    return dims


def _decode_string_list(content: bytes, count: int) -> np.ndarray:
    """TensorFlow's string list encoding: ``count`` varint32 lengths, then the bytes."""
    lengths = []
    pos = 0
    for _ in range(count):
        value, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise ValueError("tensor_content is not a valid string list")
            byte = content[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        lengths.append(value)
    if pos + sum(lengths) != len(content):
        raise ValueError("tensor_content is not a valid string list")
    out = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = content[pos:pos + length]
        pos += length
    return out


def request_arrays(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A request's ``map<string, TensorProto>`` as arrays.

    A tensor that does not parse is ``INVALID_ARGUMENT: tensor parsing error:
    <alias>`` (TensorFlow's ``GetInputValues`` wording) with the reason after it.
    """
    arrays = {}
    for alias, proto in inputs.items():
        try:
            arrays[alias] = to_ndarray(proto)
        except ValueError as err:
            raise invalid_argument(f"tensor parsing error: {echo(alias)} ({err})") from None
    return arrays


# What :func:`to_ndarray` allocates per DT_STRING element beside its bytes: the object
# array's pointer and the bytes object's header (sys.getsizeof(b"") is 33 on CPython).
_STRING_ELEMENT_BYTES = 8 + 33


def decoded_nbytes(inputs: Mapping[str, Any]) -> int:
    """The memory :func:`request_arrays` would allocate for ``inputs``, without decoding.

    Read from each ``TensorProto``'s dtype and shape (which padding from one value can
    make far larger than the message) and, for strings, the number of elements and the
    serialized size. A tensor :func:`to_ndarray` refuses counts 0: decoding reports it.
    """
    total = 0
    for proto in inputs.values():
        try:
            dtype = _dtype_enum_name(proto.dtype)
            count = math.prod(_shape(proto.tensor_shape))
        except ValueError:
            continue
        if dtype == "DT_STRING":
            # Padding repeats the last object: only the pointers grow with the shape.
            objects = count if proto.tensor_content else min(len(proto.string_val), count)
            total += 8 * count + (_STRING_ELEMENT_BYTES - 8) * objects + proto.ByteSize()
        elif dtype in _FIELDS:
            total += count * numpy_dtype(dtype).itemsize
    return total


# ------------------------------------------------------------------------- encoding


def to_proto(array: Any, *, content: bool = False, proto: Any = None) -> Any:
    """A ``TensorProto`` holding ``array`` (typed field; ``content=True``: tensor_content).

    ``proto`` (e.g. ``response.outputs[alias]``) is filled in place when given.
    ``bytes`` and ``str`` values (also in object arrays) become DT_STRING.
    """
    from tensorflow.core.framework import tensor_pb2, types_pb2

    if proto is None:
        proto = tensor_pb2.TensorProto()
    array = _as_array(array)
    dtype = dtype_name(array)
    proto.dtype = types_pb2.DataType.Value(dtype)
    shape = proto.tensor_shape
    for size in array.shape:
        shape.dim.add().size = size
    if array.size == 0:
        return proto
    if dtype == "DT_STRING":
        values = [_as_bytes(v) for v in array.ravel()]
        if content:
            proto.tensor_content = _encode_string_list(values)
        else:
            proto.string_val.extend(values)
        return proto
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    if content:
        proto.tensor_content = little.tobytes()
        return proto
    _, number, wire = _FIELDS[dtype]
    if wire == _VARINT:
        data = _varints(_varint_values(little, dtype))
    else:
        data = little.tobytes()
    # One packed field, parsed by protobuf's C++ code: the values never become Python objects.
    proto.MergeFromString(_varint_bytes((number << 3) | 2) + _varint_bytes(len(data)) + data)
    return proto


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        out = np.empty((), dtype=object)
        out[()] = _as_bytes(value)
        return out
    return np.asarray(value)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise ValueError(f"a DT_STRING element must be bytes or str, not {type(value).__name__}")


def _varint_values(array: np.ndarray, dtype: str) -> np.ndarray:
    """The uint64 a protobuf varint field stores for each element."""
    flat = array.ravel()
    if dtype in ("DT_HALF", "DT_BFLOAT16"):
        return flat.view(np.uint16).astype(np.uint64)
    if dtype == "DT_BOOL":
        return flat.astype(np.uint64)
    if flat.dtype.kind == "i":
        # int32/int64 fields: negative values are sign-extended to 64 bits (10 bytes).
        return flat.astype(np.int64).view(np.uint64)
    return flat.astype(np.uint64)


_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)  # ten 7-bit groups cover 64 bits


def _varints(values: np.ndarray) -> bytes:
    """Protobuf varints of uint64 ``values``, concatenated (vectorised, one pass per byte)."""
    if values.size == 0:
        return b""
    lengths = np.ones(values.size, dtype=np.int64)
    for shift in _SHIFTS[1:]:
        above = values >= (np.uint64(1) << shift)
        if not above.any():
            break
        lengths += above
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(starts[-1] + lengths[-1]), dtype=np.uint8)
    for k in range(int(lengths.max())):
        byte = (values >> _SHIFTS[k]).astype(np.uint8) & np.uint8(0x7F)
        byte |= (lengths > k + 1).astype(np.uint8) << np.uint8(7)  # continuation bit
        present = lengths > k
        if present.all():
            out[starts + k] = byte
        else:
            out[(starts + k)[present]] = byte[present]
    return out.tobytes()


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_string_list(values: list[bytes]) -> bytes:
    return b"".join([_varint_bytes(len(v)) for v in values] + values)

