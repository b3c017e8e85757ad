"""The zoo (tests/zoo.py): each item, generated from the libraries' public lists, is fitted,
pickled, found clean by the audit, loaded by load(), and predicts as a trusted pickle.loads.

The controls: ``test_each_widening_is_what_loads_its_item`` takes each entry the zoo needed out
of the table again, and its item is refused; the items in ``zoo.REFUSED`` must still be refused.
"""

import importlib
import io
import sys
import warnings

import numpy as np
import pytest
import zoo

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.safe import policy

ITEMS = zoo.items()
SOURCES = {  # the module whose __all__ each category is generated from
    "callbacks": "skorch.callbacks",
    "layers": "torch.nn.modules",
    "optimizers": "torch.optim",
    "schedulers": "torch.optim.lr_scheduler",
}


def built(item: zoo.Item, tmp_path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return item.dumps(item.build(tmp_path))


def load(data: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLLLoss2d and friends warn when created
        return skorch_loadfix.load(io.BytesIO(data), allow=zoo.ALLOW)


def trusted(data: bytes, container: str = "pickle"):
    """What a user who trusts the file does: the container's own reader, skorch's torch.load
    unrestricted (skorch <= 1.1 on torch >= 2.6 would load weights only, and refuse its own
    nets)."""
    skorch_loadfix.apply()
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return zoo.loads_trusted(data, container)
    finally:
        skorch_loadfix.revert()


def test_the_zoo_counts(capsys):
    """The summary, by category, and every exception with its reason (run with -s to see)."""
    counts = zoo.counts()
    with capsys.disabled():
        sys.stdout.write("\nzoo items by category:\n")
        for category, count in sorted(counts.items()):
            sys.stdout.write(f"  {category:28} {count}\n")
        for title, table in [
            ("not built", zoo.UNBUILT),
            ("refused", zoo.REFUSED),
            ("weights compared only", zoo.UNPREDICTABLE),
        ]:
            sys.stdout.write(f"{title}: {len(table)}\n")
            sys.stdout.writelines(f"  {name}: {why}\n" for name, why in table.items())
    ids = [item.id for item in ITEMS]
    assert len(ids) == len(set(ids))
    assert set(zoo.REFUSED) | set(zoo.UNPREDICTABLE) <= set(ids)  # no stale exception
    for key in zoo.UNBUILT:  # each names what a public list holds, and no item
        category, name = key.split(":")
        assert name in importlib.import_module(SOURCES.get(category, category)).__all__, key
        assert key not in ids
    assert counts["layers"] > 100 and counts["callbacks"] > 15  # generated, not picked


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: item.id)
def test_zoo_item_loads_as_trusted(item, tmp_path):
    data = built(item, tmp_path)
    if item.id in zoo.REFUSED:  # still refused, by the audit and the loader alike
        assert skorch_loadfix.untrusted_globals(io.BytesIO(data), allow=zoo.ALLOW) != {}
        with pytest.raises(UntrustedPickleError):
            load(data)
        return
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data), allow=zoo.ALLOW) == {}
    loaded, reference = load(data), trusted(data, item.container)
    assert type(loaded) is type(reference)
    inputs = getattr(zoo, item.inputs)
    predicts = item.id not in zoo.UNPREDICTABLE
    expected = zoo.outputs(reference, inputs, predicts=predicts)
    found = zoo.outputs(loaded, inputs, predicts=predicts)
    assert len(found) == len(expected) >= 1
    for got, want in zip(found, expected, strict=True):
        np.testing.assert_array_equal(got, want)


# Each entry the zoo needed, and an item that needs it.
WIDENED = {
    "builtins.getattr": "callbacks:Freezer[pattern]",
    "skorch.utils.freeze_parameter": "callbacks:ParamMapper[freeze]",
    "torch.nn.init.zeros_": "callbacks:Initializer[init]",
    "torch.optim.lr_scheduler.CyclicLR._triangular_scale_fn": "schedulers:CyclicLR",
    "torch.nn.functional.relu": "layers:TransformerEncoderLayer",
    "torch.nn.modules.linear.NonDynamicallyQuantizableLinear": "layers:MultiheadAttention",
    "torch._tensor._rebuild_from_type_v2": "layers:LazyBatchNorm1d",
    "torch._utils._rebuild_sparse_tensor": "weights:sparse buffer",
    "torch.serialization._get_layout": "weights:sparse buffer",
    "numpy.float64": "sklearn.preprocessing:OneHotEncoder",
    "sklearn.feature_selection._univariate_selection.f_classif": (
        "sklearn.feature_selection:SelectKBest"
    ),
    "copyreg._reconstructor": "protocols:pickle protocol 1 net",
    "builtins.object": "protocols:pickle protocol 0 net",
    "numpy.ma.core._mareconstruct": "search:GridSearchCV(net)",
    "numpy.ma.MaskedArray": "search:GridSearchCV(net)",
    "sklearn.metrics._scorer._PassthroughScorer": "search:RandomizedSearchCV(pipeline)",
    # the halving searches keep their checked cv; the others not on scikit-learn 1.5
    "sklearn.model_selection._split.StratifiedKFold": "search:HalvingGridSearchCV(pipeline)",
    "sklearn.model_selection._search_successive_halving.HalvingGridSearchCV": (
        "search:HalvingGridSearchCV(net)"
    ),
    "numpy.random._pickle.__randomstate_ctor": "sklearn.decomposition:LatentDirichletAllocation",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence": (
        "sklearn.decomposition:MiniBatchDictionaryLearning"
    ),
    "sklearn.impute._iterative._ImputerTriplet": "sklearn.impute:IterativeImputer",
    "scipy.interpolate._bsplines.BSpline": "sklearn.preprocessing:SplineTransformer",
}


@pytest.mark.parametrize("name", WIDENED)
def test_each_widening_is_what_loads_its_item(name, tmp_path, monkeypatch):
    """The control: without its entry, the item is refused, naming it."""
    item = next(item for item in ITEMS if item.id == WIDENED[name])
    data = built(item, tmp_path)
    load(data)
    table = dict(policy.table())
    del table[name]
    monkeypatch.setattr(policy, "table", lambda: table)
    with pytest.raises(UntrustedPickleError) as refused:
        load(data)
    assert name in refused.value.refused, refused.value.refused
