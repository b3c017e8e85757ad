"""What a file is, told by its first bytes: every reader of untrusted files asks this first.

People hand ``load()``, ``inspect`` and ``upgrade`` whatever they saved: ``pickle.dump`` and
``joblib.dump`` files (compressed or not), ``torch.save(net)`` zips, but also the
``state_dict`` they saved beside it, an ``.npz``, an empty file from an interrupted save.
Each reader reads the containers it can and, for the others, says in one sentence what the
file is and what to do, instead of whatever error a pickle reader makes of the bytes.
"""

from __future__ import annotations

# zipfile decodes a name without the UTF-8 flag (numpy.savez writes such) from cp437, which
# it imports on first use: a guarded load's audit hook refuses imports.
import encodings.cp437  # noqa: F401
import pickle
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .safe.memoryfile import MemoryFile

# joblib's compressors (joblib/compressor.py), each read with the standard library's.
COMPRESSED = {
    "gzip": b"\x1f\x8b",
    "bz2": b"BZh",
    "xz": b"\xfd7zXZ\x00",
    "lzma": b"\x5d\x00\x00",
    "lz4": b"\x04\x22\x4d\x18",
}


@dataclass(frozen=True)
class Content:
    """``kind``: pickle, compressed, torch.save, torch.save (stream) are read; the rest are
    not, and ``unsupported`` says so."""

    kind: str
    compression: str | None = None

    @property
    def readable(self) -> bool:
        return self.kind in ("pickle", "compressed") or self.torch_save

    @property
    def torch_save(self) -> bool:
        return self.kind in ("torch.save", "torch.save (stream)")

    @property
    def name(self) -> str:
        if self.kind == "compressed":
            return f"a {self.compression}-compressed file (joblib.dump(..., compress=...))"
        return _NAMES[self.kind]

    def unsupported(self) -> str:
        """One sentence: what the file is, that it holds no pickled net, and what to do."""
        return f"{self.name}: {_ADVICE[self.kind]}"


_NAMES = {
    "pickle": "a pickle (pickle.dump, cloudpickle or an uncompressed joblib.dump)",
    "torch.save": "a torch.save zip",
    "torch.save (stream)": "a torch.save stream (torch < 1.6)",
    "empty": "an empty file (0 bytes)",
    "text": "a text file",
    "npy": "a NumPy .npy array",
    "npz": "a NumPy .npz archive",
    "zip": "a zip archive that torch.save did not write",
    "safetensors": "a safetensors file",
    "old joblib": "a compressed file of joblib < 0.10",
    "unknown": "a file of no format skorch-loadfix knows",
}
_ADVICE = {
    "empty": "nothing was saved in it (an interrupted save?); save the net again",
    "text": "it holds no pickled net; pass the file that pickle.dump, joblib.dump or "
    "torch.save wrote",
    "npy": "it holds one array, not a net; read it with numpy.load(path, allow_pickle=False)",
    "npz": "it holds arrays, not a net; read it with numpy.load(path, allow_pickle=False)",
    "zip": "it is no torch.save file; unpack it and pass the pickled net inside",
    "safetensors": "it holds only tensors (a state_dict), not a net; build the net, call "
    "net.initialize(), then net.load_params(f_params=path, use_safetensors=True)",
    "old joblib": "its format is not supported; load it with joblib.load if you trust it, "
    "and save it again with a current joblib",
    "unknown": "it is not a pickle, a joblib file or a torch.save file; pass the file that "
    "pickle.dump, joblib.dump or torch.save wrote",
}


def recognize(data: bytes | memoryview) -> Content:
    """What the file whose bytes are ``data`` is.

    A zip is told by its names: ``torch.save``, ``.npz`` or another. Anything not recognized
    by its first bytes is tried as a pickle (protocols 0 and 1 are text): ``unreadable``
    names a file that then fails to read.
    """
    from .safe.verifier import ZIP_MAGIC, is_torch_save

    head = bytes(memoryview(data)[:64])
    if not head:
        return Content("empty")
    if head.startswith(ZIP_MAGIC):
        return Content(_zip_kind(data))
    if is_torch_save(head):
        return Content("torch.save (stream)")
    for name, magic in COMPRESSED.items():
        if head.startswith(magic):
            return Content("compressed", name)
    if _is_zlib(head):
        return Content("compressed", "zlib")
    if head.startswith(b"ZF"):  # joblib < 0.10's zlib files: "ZF", a length, then zlib
        return Content("old joblib")
    if head.startswith(b"\x93NUMPY"):
        return Content("npy")
    if _is_safetensors(head):
        return Content("safetensors")
    return Content("pickle")


class NotAPickledNet(pickle.UnpicklingError):
    """The file is something else: the message says what, and what to do with it."""


def readable(data: bytes | memoryview) -> Content:
    """What ``data`` is, if a reader of pickled nets can read it; else the one sentence."""
    content = recognize(data)
    if not content.readable:
        raise NotAPickledNet(content.unsupported())
    return content


@contextmanager
def explaining(data: bytes | memoryview) -> Iterator[None]:
    """A file that no pickle reader can read, and that is framed as no pickle is (a protocol
    2+ pickle starts with PROTO; every pickle ends with STOP), is named (text, unknown)
    instead of the reader's error on its bytes."""
    from .errors import UntrustedPickleError

    try:
        yield
    except (UntrustedPickleError, NotAPickledNet):
        raise
    except pickle.UnpicklingError:
        view = memoryview(data)
        framed = bytes(view[:1]) == b"\x80" or bytes(view[-1:]) == pickle.STOP
        if recognize(data).kind != "pickle" or framed:
            raise
        raise NotAPickledNet(unreadable(data).unsupported()) from None


def unreadable(data: bytes | memoryview) -> Content:
    """What a file that no pickle reader could read is, for the error: text or unknown."""
    text = bytes(memoryview(data)[:64])
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = ""
    printable = decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded)
    return Content("text" if printable else "unknown")


def _is_zlib(head: bytes) -> bool:
    """A zlib header (RFC 1950): deflate, a window up to 32 KiB, and its check bits."""
    return len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0


def _is_safetensors(head: bytes) -> bool:
    """An 8-byte header length, then the JSON header itself."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < 100 << 20 and head[8:9] == b"{"


def _zip_kind(data: bytes | memoryview) -> str:
    """torch.save writes ``<folder>/data.pkl``; numpy.savez ``<name>.npy`` entries."""
    try:
        names = zipfile.ZipFile(MemoryFile(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "zip"
    if any(name.count("/") == 1 and name.endswith("/data.pkl") for name in names):
        return "torch.save"
    if names and all(name.endswith(".npy") for name in names):
        return "npz"
    return "zip"
