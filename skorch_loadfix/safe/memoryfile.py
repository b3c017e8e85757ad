"""A read-only file over bytes in memory that hands out views instead of copies."""

from __future__ import annotations

import io
import mmap
import pickle
from typing import Any

# How much of a mapped file is copied before its pages are handed back (see readinto).
RELEASE_EVERY = 4 << 20


class MemoryFile(io.RawIOBase):
    """A read-only file over bytes in memory that ``view`` reads from without copying.

    ``io.BytesIO`` shares a ``bytes`` object it is given but copies a memoryview, and
    each of its reads is a copy: a nested tensor stream read through it costs its
    size twice over before torch copies it into the tensor.

    Over a view of a memory-mapped file, the pages ``readinto`` has copied from are handed
    back as it goes: they count in the process's RSS until then, and the tensors they were
    copied into already do.
    """

    def __init__(self, data: bytes | memoryview) -> None:
        super().__init__()
        self._data, self._position = memoryview(data).cast("B"), 0
        mapping = self._data.obj
        self._mapping = mapping if isinstance(mapping, mmap.mmap) else None
        if not hasattr(mmap, "MADV_DONTNEED"):  # not on Windows
            self._mapping = None
        self._copied = 0

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
        remaining = self.remaining()
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
        size = min(len(target), self.remaining())
        for start in range(0, size, RELEASE_EVERY):
            chunk = self.view(min(RELEASE_EVERY, size - start))
            target[start : start + len(chunk)] = chunk
            self._release(len(chunk))
        return size

    def _release(self, copied: int) -> None:
        # The whole mapping: a view's offset in it is unknown, and a page dropped too
        # early is read again from the page cache, unchanged (the file is mapped read-only).
        if self._mapping is None:
            return
        self._copied += copied
        if self._copied >= RELEASE_EVERY:
            self._mapping.madvise(mmap.MADV_DONTNEED)
            self._copied = 0

    def view(self, size: int) -> memoryview:
        if size > self.remaining():
            raise pickle.UnpicklingError("pickle data was truncated")
        chunk = self._data[self._position : self._position + size]
        self._position += size
        return chunk

    def remaining(self) -> int:
        return max(0, len(self._data) - self._position)
