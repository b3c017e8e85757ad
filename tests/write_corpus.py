"""Write pickles with the installed skorch, for other skorch versions' test runs to load.

Usage: python tests/write_corpus.py FOLDER. Writes the net as this skorch pickles it
and, through skorch_loadfix.formats, in both blob formats, each with its predictions.
"""

import pickle
import sys
from pathlib import Path

import numpy as np
import skorch
from models import X, fit

from skorch_loadfix.formats import WRITERS, dumps

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
net = fit()
files = {"native": pickle.dumps(net), **{writer: dumps(net, writer) for writer in WRITERS}}
for name, data in files.items():
    path = folder / f"skorch-{skorch.__version__}-{name}.pkl"
    path.write_bytes(data)
    np.save(path.with_suffix(".npy"), net.predict_proba(X))
