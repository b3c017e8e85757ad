"""A read-only file over bytes in memory that hands out views instead of copies."""

from __future__ import annotations

import io
import pickle
from typing import Any


class MemoryFile(io.RawIOBase):
    """A read-only file over bytes in memory that ``view`` reads from without copying.

    ``io.BytesIO`` shares a ``bytes`` object it is given but copies a memoryview, and
    each of its reads is a copy: a nested tensor stream read through it costs its
    size twice over before torch copies it into the tensor.
    """

    def __init__(self, data: bytes | memoryview) -> None:
        super().__init__()
        self._data, self._position = memoryview(data).cast("B"), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}
        self._position = max(0, start[whence] + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._remaining()
        return bytes(self.view(remaining if size is None or size < 0 else min(size, remaining)))

    def readline(self, size: int | None = -1) -> bytes:
        start, stop = self._position, len(self._data)
        if size is not None and size >= 0:
            stop = min(stop, start + size)
        for chunk in range(start, stop, 4096):  # in chunks: a memoryview has no find()
            found = bytes(self._data[chunk : min(chunk + 4096, stop)]).find(b"\n")
            if found >= 0:
                return self.read(chunk + found + 1 - start)
        return self.read(max(0, stop - start))

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        chunk = self.view(min(len(target), self._remaining()))
        target[: len(chunk)] = chunk
        return len(chunk)

    def view(self, size: int) -> memoryview:
        if size > self._remaining():
            raise pickle.UnpicklingError("pickle data was truncated")
        chunk = self._data[self._position : self._position + size]
        self._position += size
        return chunk

    def _remaining(self) -> int:
        return max(0, len(self._data) - self._position)
