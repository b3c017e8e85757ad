"""Write what each real net in tests/data/corpus/ outputs, read WITHOUT skorch-loadfix.

The oracle the corpus tests compare against: each file is unpickled by unpatched
skorch (0.12.1 reads the 2019-2022 files, 1.4.0 the 2025 one) with torch's
weights-only default switched off, and its module run in eval mode on fixed input.
The one help it gets: torch 1.0 pickled optimizers without ``defaults``, which
today's ``Optimizer.__setstate__`` needs, so it gets an empty dict here.

Usage (once per release, the outputs are merged into expected.json):
    PYTHONPATH=<skorch 0.12.1> TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 \
        python tests/corpus_reference.py 2019 2021 2022
    PYTHONPATH=<skorch 1.4.0> TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 \
        python tests/corpus_reference.py 2025
"""

import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

CORPUS = Path(__file__).parent / "data" / "corpus"
EXPECTED = CORPUS / "expected.json"


def corpus_input() -> np.ndarray:
    """Every corpus net is an MLPModule with 20 inputs."""
    return np.random.RandomState(0).randn(16, 20).astype("float32")


def main(years: list[str]) -> None:
    setstate = torch.optim.Optimizer.__setstate__

    def with_defaults(self, state):
        state.setdefault("defaults", {})
        setstate(self, state)

    torch.optim.Optimizer.__setstate__ = with_defaults
    expected = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    for path in sorted(CORPUS.glob("*.pkl")):
        if not any(f"-{year}-" in path.name for year in years):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = pickle.loads(path.read_bytes()).module_.eval()
        with torch.no_grad():
            expected[path.name] = module(torch.as_tensor(corpus_input())).tolist()
    lines = [f"{json.dumps(name)}: {json.dumps(expected[name])}" for name in sorted(expected)]
    EXPECTED.write_text("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
