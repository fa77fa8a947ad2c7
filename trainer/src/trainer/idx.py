"""The IDX file format MNIST ships in (big-endian header, then raw uint8 values)."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

# Magic numbers: two zero bytes, the type code (0x08 = unsigned byte), the number of dimensions.
_UBYTE = 0x08


def encode_idx(values: npt.NDArray[np.uint8]) -> bytes:
    """An IDX file holding a uint8 array of any rank (images: N×28×28, labels: N)."""
    if values.dtype != np.uint8:
        raise TypeError(f"IDX ubyte files hold uint8 values, not {values.dtype}")
    header = struct.pack(">BBBB", 0, 0, _UBYTE, values.ndim)
    dims = struct.pack(f">{values.ndim}I", *values.shape)
    return header + dims + np.ascontiguousarray(values).tobytes()


def decode_idx(data: bytes) -> npt.NDArray[np.uint8]:
    """The uint8 array stored in an IDX ubyte file."""
    zero_a, zero_b, type_code, ndim = struct.unpack_from(">BBBB", data)
    if (zero_a, zero_b, type_code) != (0, 0, _UBYTE):
        raise ValueError("not an IDX file of unsigned bytes (bad magic number)")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"IDX header says {shape} but {values.size} values follow")
    return values.reshape(shape)
