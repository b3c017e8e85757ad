"""A compressed file read as the pickle it holds, decompressed only as far as it is read.

``joblib.dump(..., compress=...)`` writes a zlib, gzip, bz2, lzma, xz or lz4 stream of its
pickle. A small file can announce any size (a pickle's bytes length, an array's shape) and
decompress to any size: memory here follows what the stream yields, never what it
announces. Each read decompresses at most what was asked for, at most ``CHUNK`` at a time;
a stream that ends before it yields what the pickle announced is truncated. The
decompressors check the stream's own sums and sizes (gzip's length, xz's index).
"""

from __future__ import annotations

import bz2
import io
import lzma
import pickle
import zlib
from typing import Any

from .memoryfile import MemoryFile

CHUNK = 1 << 20
_DECOMPRESSORS: dict[str, Any] = {
    "zlib": lambda: zlib.decompressobj(),
    "gzip": lambda: zlib.decompressobj(wbits=31),  # one gzip member, as joblib writes
    "bz2": bz2.BZ2Decompressor,
    "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
    "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
}
try:  # imported now: a guarded load's audit hook refuses imports
    from lz4.frame import LZ4FrameDecompressor

    _DECOMPRESSORS["lz4"] = LZ4FrameDecompressor
except ImportError:
    pass


def decompressor(compression: str) -> Any:
    """A fresh decompressor for ``compression``; lz4 only where the lz4 package is installed."""
    if compression == "lz4" and "lz4" not in _DECOMPRESSORS:
        raise pickle.UnpicklingError(
            "an lz4-compressed file (joblib.dump(..., compress='lz4')): reading it needs "
            "the lz4 package; pip install lz4, then load it again"
        )
    return _DECOMPRESSORS[compression]()


class Inflating(io.RawIOBase):
    """The decompressed content of ``data``, a file compressed with ``compression``."""

    def __init__(self, data: bytes | memoryview, compression: str) -> None:
        super().__init__()
        self.compression = compression
        self._source = MemoryFile(data)
        # Compressed bytes are copied in here (readinto hands a mapped file's pages back as
        # it goes: they would count once more); each decompressor keeps what it needs.
        self._input = memoryview(bytearray(CHUNK))
        self._decompressor = decompressor(compression)
        self._position = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            chunk = self._inflate(len(target) - done)
            if not chunk:
                break
            target[done : done + len(chunk)] = chunk
            done += len(chunk)
        return done

    def read(self, size: int | None = -1) -> bytes:
        """At most ``size`` bytes, and never more memory than the stream yields."""
        if size is None or size < 0:
            return self.readall()
        return bytes(self.view(size, exact=False))

    def readall(self) -> bytes:
        parts = []
        while chunk := self._inflate(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def view(self, size: int, *, exact: bool = True) -> memoryview:
        """The next ``size`` bytes, read-only: what the in-place reading takes a net's blob as.

        Grown as the stream yields them, so a length the stream does not back costs only
        what it yielded.
        """
        buffer = bytearray()
        while len(buffer) < size:
            chunk = self._inflate(min(size - len(buffer), CHUNK))
            if not chunk:
                if exact:
                    raise pickle.UnpicklingError(self.truncated())
                break
            buffer += chunk
        return memoryview(buffer).toreadonly()

    def truncated(self) -> str:
        return f"the {self.compression} stream ends before the pickle in it does: truncated"

    def _inflate(self, most: int) -> bytes:
        """Up to ``most`` bytes (at least one, unless the stream has ended)."""
        inflater = self._decompressor
        while not inflater.eof:
            tail = getattr(inflater, "unconsumed_tail", b"")  # zlib keeps what it did not use
            data = tail
            if not tail and getattr(inflater, "needs_input", True):
                data = self._input[: self._source.readinto(self._input)]
            try:
                out: bytes = inflater.decompress(data, min(most, CHUNK))
            except (zlib.error, OSError, lzma.LZMAError, EOFError, RuntimeError) as error:
                raise pickle.UnpicklingError(
                    f"the {self.compression} stream is corrupt ({error})"
                ) from None
            if out:
                self._position += len(out)
                return out
            if not data and not inflater.eof:
                raise pickle.UnpicklingError(self.truncated())
        return b""


def opened(data: bytes | memoryview, compression: str | None) -> MemoryFile | Inflating:
    """The pickle a whole file holds, decompressed as it is read if it is compressed."""
    return MemoryFile(data) if compression is None else Inflating(data, compression)
