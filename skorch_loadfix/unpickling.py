"""The unpickler every guarded or static read builds on.

The pure-Python one, for two reasons: its opcodes can be taken over (``load()``
restores a net's state itself), and its copyreg extension codes can be made to go
through ``find_class`` every time. Both unpicklers of the standard library cache
what an extension code resolved to, process-wide, and later hand it back without
asking ``find_class``: a guard would never see it, and a static read would leave
its stand-ins behind for the next real load.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import struct
from collections.abc import Callable
from typing import IO, Any, ClassVar


def _sized(size_format: str, handler: Callable[[Any, int], None]) -> Callable[[Any], None]:
    """An opcode whose argument is a size or code in ``size_format``, passed to ``handler``."""
    width = struct.calcsize(size_format)

    def load(unpickler: Any) -> None:
        handler(unpickler, struct.unpack(size_format, unpickler.read(width))[0])

    return load


class Unpickler(pickle._Unpickler):
    """Also hands ``tensor_stream`` its bytes as a view of a ``MemoryFile``, not a copy."""

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    stack: list[Any]
    tensor_stream: Callable[[Any], Any] | None = None

    def __init__(self, file: IO[bytes] | MemoryFile, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._memory = file if isinstance(file, MemoryFile) else None

    def _bytes(self, size: int) -> None:
        # torch.storage._load_from_bytes(b) pickles as: the function, then b, TUPLE1, REDUCE.
        frame = self._unframer.current_frame  # type: ignore[attr-defined]
        in_frame = frame is not None and frame.tell() < len(frame.getbuffer())
        if (
            self._memory is None
            or in_frame
            or not self.stack
            or self.stack[-1] is not self.tensor_stream
        ):
            self.append(self.read(size))  # type: ignore[attr-defined]
        else:  # large bytes are written outside any frame
            self._unframer.current_frame = None  # type: ignore[attr-defined]
            self.append(self._memory.view(size))  # type: ignore[attr-defined]

    def _extension(self, code: int) -> None:
        key = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
        if key is None:
            raise pickle.UnpicklingError(f"unregistered extension code {code}")
        self.append(self.find_class(*key))  # type: ignore[attr-defined]

    for opcode, size_format, handler in [
        (pickle.SHORT_BINBYTES, "<B", _bytes),
        (pickle.BINBYTES, "<I", _bytes),
        (pickle.BINBYTES8, "<Q", _bytes),
        (pickle.EXT1, "<B", _extension),
        (pickle.EXT2, "<H", _extension),
        (pickle.EXT4, "<i", _extension),
    ]:
        dispatch[opcode[0]] = _sized(size_format, handler)
    del opcode, size_format, handler


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
