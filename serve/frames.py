"""The NNIA packed-array format of nninteractive-client 2.6.0 (its `serialization.py`), read with bounds.

A frame is, little-endian:

    b"NNIA" | version u8 (1) | codec u8 (1 zstd, 2 lz4) | ndim u8 | dtype name length u8 | dtype name (ascii)
    | shape: ndim x i64 | chunk count u32 | per chunk: raw length u64, compressed length u64, a blosc2 chunk

Reading checks the header first (`read_header`): magic, version, codec, a dtype from a short list (no
object or structured dtypes: nothing is ever unpickled), non-negative dimensions, and the declared size
against the caller's limit, so a frame claiming 50 GB is refused before anything is allocated. Each
chunk's lengths are checked against the frame, its blosc2 header and the array before it is decompressed
straight into the preallocated array (blosc2 does not reliably refuse a too-small destination itself).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import blosc2
import numpy as np

MAGIC = b"NNIA"
VERSION = 1
CODECS = {1: blosc2.Codec.ZSTD, 2: blosc2.Codec.LZ4}
LZ4 = 2  # what responses use: segmentation regions, where speed matters more than ratio
# blosc2.compress2 takes its length as a C int: the client chunks at 1 GiB, and so does pack.
CHUNK_BYTES = 1 << 30
MAX_NDIM = 8
# What an image, a segmentation or a mask may arrive as; anything else is refused by name.
DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                    "float16", "float32", "float64"})
_PREFIX = struct.Struct("<4sBBBB")
_CHUNK = struct.Struct("<QQ")


class FrameError(ValueError):
    """A frame that cannot be read (malformed, or of a dtype or shape not accepted); one-line message."""


class FrameTooLarge(FrameError):
    """A frame whose declared array is larger than allowed (refused before allocation)."""


@dataclass(frozen=True)
class FrameHeader:
    """A frame's declared array (nothing decompressed): dtype, shape, and where its chunks start."""

    dtype: np.dtype
    shape: tuple[int, ...]
    payload_offset: int

    @property
    def nbytes(self) -> int:
        """Bytes of the declared array (Python ints: a forged shape cannot overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


def read_header(frame: bytes | memoryview) -> FrameHeader:
    """The header of an NNIA frame; raise FrameError when it is not one this server reads."""
    view = memoryview(frame)
    if len(view) < _PREFIX.size:
        raise FrameError(f"packed array too short ({len(view)} bytes)")
    magic, version, codec, ndim, name_length = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise FrameError(f"not an NNIA packed array (magic {bytes(magic)!r})")
    if version != VERSION:
        raise FrameError(f"unsupported NNIA version {version} (this server reads {VERSION})")
    if codec not in CODECS:
        raise FrameError(f"unsupported codec id {codec} (known: 1 zstd, 2 lz4)")
    if ndim > MAX_NDIM:
        raise FrameError(f"{ndim} dimensions (at most {MAX_NDIM})")
    offset = _PREFIX.size
    shape_end = offset + name_length + 8 * ndim
    if len(view) < shape_end + 4:
        raise FrameError("packed array header truncated")
    try:
        name = bytes(view[offset : offset + name_length]).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("dtype name is not ascii") from None
    if name not in DTYPES:
        raise FrameError(f"unsupported dtype {name[:32]!r} (accepted: {', '.join(sorted(DTYPES))})")
    shape = struct.unpack_from(f"<{ndim}q", view, offset + name_length)
    if any(side < 0 for side in shape):
        raise FrameError(f"negative dimension in shape {list(shape)}")
    return FrameHeader(np.dtype(name), tuple(int(side) for side in shape), shape_end)


def unpack(frame: bytes | memoryview, max_bytes: int, header: FrameHeader | None = None) -> np.ndarray:
    """An NNIA frame -> its array (C-contiguous, native byte order), at most `max_bytes` once decompressed.

    Raises FrameTooLarge (before allocating) when the declared array exceeds `max_bytes`, FrameError for
    anything malformed: a truncated or oversized chunk, lengths that disagree, trailing bytes.
    """
    view = memoryview(frame).cast("B")
    header = header or read_header(view)
    total = header.nbytes
    if total > max_bytes:
        raise FrameTooLarge(f"array of shape {list(header.shape)} {header.dtype} needs {total} bytes "
                            f"decompressed, more than the {max_bytes} allowed")
    (chunks,) = struct.unpack_from("<I", view, header.payload_offset)
    offset = header.payload_offset + 4
    if chunks > len(view):  # each chunk takes 16 bytes or more: a count beyond that is a lie, checked cheaply
        raise FrameError(f"{chunks} chunks in a {len(view)}-byte body")
    itemsize = header.dtype.itemsize
    out = np.empty(total // itemsize, header.dtype)
    raw = out.view(np.uint8)
    written = 0
    for index in range(chunks):
        if offset + _CHUNK.size > len(view):
            raise FrameError(f"chunk {index} header truncated")
        length, compressed = _CHUNK.unpack_from(view, offset)
        offset += _CHUNK.size
        if written + length > total or length % itemsize:
            raise FrameError(f"chunk {index} of {length} bytes does not fit the declared array")
        if offset + compressed > len(view):
            raise FrameError(f"chunk {index} truncated ({len(view) - offset} of {compressed} bytes)")
        source = view[offset : offset + compressed]
        try:
            declared, stored, _ = blosc2.get_cbuffer_sizes(source)
        except Exception as error:  # blosc2 raises several kinds for a buffer that is not one of its chunks
            raise FrameError(f"chunk {index} is not a blosc2 chunk ({error})") from None
        if declared != length or stored != compressed:
            raise FrameError(f"chunk {index}: lengths {length}/{compressed} disagree with its blosc2 header "
                             f"{declared}/{stored}")
        if length:
            try:
                blosc2.decompress2(source, dst=raw[written : written + length])
            except Exception as error:
                raise FrameError(f"chunk {index} does not decompress ({error})") from None
        written += length
        offset += compressed
    if written != total:
        raise FrameError(f"chunks hold {written} bytes, the declared array {total}")
    if offset != len(view):
        raise FrameError(f"{len(view) - offset} bytes after the last chunk")
    return out.reshape(header.shape)


def pack(array: np.ndarray, codec: int = LZ4, clevel: int = 1) -> bytes:
    """An array -> an NNIA frame the client's unpack_array reads (little-endian, chunked at CHUNK_BYTES).

    blosc2 is told the element size: the client notes that an all-zero chunk whose length is not a
    multiple of it makes a frame blosc2 cannot read back.
    """
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    name = array.dtype.name.encode("ascii")
    raw = memoryview(array.reshape(-1).view(np.uint8).data)
    chunks = -(-raw.nbytes // CHUNK_BYTES)
    parts = [_PREFIX.pack(MAGIC, VERSION, codec, array.ndim, len(name)) + name,
             struct.pack(f"<{array.ndim}q", *array.shape), struct.pack("<I", chunks)]
    for start in range(0, raw.nbytes, CHUNK_BYTES):
        piece = raw[start : start + CHUNK_BYTES]
        compressed = blosc2.compress2(piece, typesize=array.dtype.itemsize, codec=CODECS[codec], clevel=clevel,
                                      filters=[blosc2.Filter.NOFILTER])
        parts.append(_CHUNK.pack(piece.nbytes, len(compressed)))
        parts.append(compressed)
    return b"".join(parts)
