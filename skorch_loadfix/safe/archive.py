"""Which records a ``torch.save`` zip may hold, read with the parser ``torch.load`` uses.

``torch.load`` hands any zip with a ``constants.pkl`` record to ``torch.jit.load``, which
never uses ``pickle_module``: TorchScript code in the archive would run in C++, out of the
restricted unpickler's and the audit hook's sight. So a guarded read checks the archive
before ``torch.load`` sees it, and the audit checks it the same way: only the records a
plain ``torch.save`` writes (torch 1.6 to 2.x) are allowed.

Two zip parsers can disagree about the same bytes (Python's ``zipfile`` opens the last of two
entries with one name, torch's miniz may open the first), so the audit must read exactly what
the loader reads: both take ``data.pkl`` from torch's own ``PyTorchFileReader``, and any
archive on which the parsers could disagree (a duplicate name, a local header whose name
differs from the central directory's, a record outside the one top folder) is refused.
"""

from __future__ import annotations

import re
import struct
import zipfile
from typing import IO, Any, cast

from .memoryfile import MemoryFile

# What torch.save writes besides data/<key>: .data/version up to torch 2.0, then
# .data/serialization_id, byteorder from 2.1, .format_version and .storage_alignment from 2.4.
PLAIN_RECORDS = frozenset(
    [
        "data.pkl",
        "version",
        "byteorder",
        ".format_version",
        ".storage_alignment",
        ".data/version",
        ".data/serialization_id",
    ]
)
_STORAGE = re.compile(r"data/[^/]+")  # data/<key>: one storage, named by its pickled key
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


def refusals(data: bytes | memoryview, level: str) -> dict[str, str]:
    """Why the archive ``data`` may not be read by ``torch.load`` at ``level``: {record: why}."""
    where = f"(in the {level})"
    central = zipfile.ZipFile(MemoryFile(data)).infolist()
    names = [info.filename for info in central]
    found = {
        name: f"a second zip entry of this name: zip readers disagree on which is read {where}"
        for name in {n for n in names if names.count(n) > 1}
    }
    view = memoryview(data).cast("B")
    for info in central:
        if info.compress_type != zipfile.ZIP_STORED:  # a record could inflate to any size
            found.setdefault(info.filename, f"compressed: torch.save stores every record {where}")
        start = info.header_offset
        signature, name_length, _ = _LOCAL_HEADER.unpack(bytes(view[start : start + 30]))
        local = bytes(view[start + 30 : start + 30 + name_length])
        if signature != b"PK\x03\x04" or local != info.orig_filename.encode("utf-8"):
            found.setdefault(
                info.filename,
                f"its local header names another entry: zip readers disagree {where}",
            )
    folders = {name.partition("/")[0] for name in names}
    if len(folders) != 1 or any("/" not in name for name in names):
        found["the archive's folders"] = f"torch.save writes every record in one folder {where}"
    for record in torch_records(data):
        if record not in PLAIN_RECORDS and not _STORAGE.fullmatch(record):
            found[record] = (
                f"torch.save never writes this record; an archive with it (TorchScript) would "
                f"run code outside the restricted unpickler {where}"
            )
    return found


def storage_sizes(data: bytes | memoryview) -> dict[str, int]:
    """The size of each storage record by its key, for an archive ``refusals`` passed (one
    folder, no parsers' disagreement): torch reads a storage only if its id says this size."""
    found = {}
    for info in zipfile.ZipFile(MemoryFile(data)).infolist():
        record = info.filename.partition("/")[2]
        if _STORAGE.fullmatch(record):
            found[record[len("data/") :]] = info.file_size
    return found


def torch_records(data: bytes | memoryview) -> list[str]:
    return list(_reader(data).get_all_records())


def data_pickle(data: bytes | memoryview) -> bytes:
    """The ``data.pkl`` record, exactly as ``torch.load`` reads it."""
    return bytes(_reader(data).get_record("data.pkl"))


def _reader(data: bytes | memoryview) -> Any:
    import torch

    return torch._C.PyTorchFileReader(cast(IO[bytes], MemoryFile(data)))
