"""The zoo: what people save, generated from the libraries' own public lists.

Each item names one thing to pickle (a fitted net holding a callback, a layer, an optimizer,
a scheduler; a Pipeline with a scikit-learn step before a net; a search object around a net;
a container and protocol). The lists come from ``__all__`` of skorch.callbacks, torch.nn.modules,
torch.optim, torch.optim.lr_scheduler, the scikit-learn modules people put before a net, and
skorch itself, so a new release grows the zoo by itself. What an item needs beyond defaults is in
the small tables here; what is not built, still refuses, or can't be compared is in ``UNBUILT``,
``REFUSED`` and ``UNPREDICTABLE``, each with its reason, in one place: nothing is left out
silently.

Items are built when a test runs, never at collection, each fitted for one epoch on tiny data;
what several items share (the plain fitted net) is built once per process.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import pickle
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch
from torch import nn

N = 24
RNG = np.random.RandomState(0)
X = RNG.rand(N, 4).astype("float32")
Y = np.arange(N) % 2
Y_FLOAT = RNG.rand(N, 1).astype("float32")
X_MISSING = X.astype("float64")
X_MISSING[::5, 0] = np.nan
CATEGORIES = np.array(["red", "green", "blue"], dtype=object)[np.arange(N) % 3]
X_CATEGORICAL = CATEGORIES.reshape(-1, 1)
X_MIXED = np.concatenate([X.astype(object), X_CATEGORICAL], axis=1)

# -- the exceptions, each with its reason: the zoo's one list ----------------------------------

# What is not built: no item of its kind, or it cannot be.
UNBUILT: dict[str, str] = {
    "callbacks:WarmRestartLR": "a scheduler policy: its item is LRScheduler[WarmRestartLR]",
    "layers:Module": "the base class: every other item is one",
    "layers:Container": "a deprecated alias",
    "optimizers:Optimizer": "the base class: every other item is one",
    "optimizers:SparseAdam": "needs sparse gradients: a module of sparse embeddings, not a net "
    "on features",
    "schedulers:LRScheduler": "the base class: every other scheduler item is one",
    "schedulers:SequentialLR": "takes schedulers built on the optimizer: LRScheduler(policy=...) "
    "passes only keyword values",
    "schedulers:ChainedScheduler": "takes schedulers built on the optimizer: "
    "LRScheduler(policy=...) passes only keyword values",
    "sklearn.preprocessing:LabelBinarizer": "transforms y, not X",
    "sklearn.preprocessing:LabelEncoder": "transforms y, not X",
    "sklearn.preprocessing:MultiLabelBinarizer": "transforms y, not X",
    "sklearn.preprocessing:KernelCenterer": "needs a kernel matrix as input",
}
# The loggers that need their service's client library: built where it is installed.
CALLBACK_CLIENTS = {
    "TensorBoard": "torch.utils.tensorboard",
    "WandbLogger": "wandb",
    "NeptuneLogger": "neptune",
    "MlflowLogger": "mlflow",
    "SacredLogger": "sacred",
}
for _name, _module in CALLBACK_CLIENTS.items():
    try:
        importlib.import_module(_module)
    except ImportError:
        UNBUILT[f"callbacks:{_name}"] = f"needs its client library {_module}, not installed here"
del _name, _module

# Items whose predictions can't be compared: only their weights are.
UNPREDICTABLE = {"weights:bfloat16": "skorch's to_numpy can't convert bfloat16 predictions"}

# What load() still refuses (the target: none).
REFUSED: dict[str, str] = {}

# -- the modules the nets are made of -------------------------------------------------------


class Holder(nn.Module):
    """A tiny module holding ``layer``: used in forward where it can be, a submodule if not.

    ``shape``: how forward reshapes its (N, 4) input for the layer (None: it is only held);
    ``width``: the size of the layer's output, flattened per sample, that the head reads;
    ``input_dim``: the width of the input when the layer is only held (InputShapeSetter sets it).
    """

    def __init__(
        self,
        layer: nn.Module | None = None,
        shape: tuple[int, ...] | None = None,
        width: int = 4,
        outputs: int = 2,
        bias: bool = True,
        input_dim: int = 4,
    ) -> None:
        super().__init__()
        self.layer, self.shape = layer, shape
        self.head = nn.Linear(width if shape is not None else input_dim, outputs, bias=bias)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.head.weight.dtype)  # the weights' dtype: float16, bfloat16, float64 too
        if self.shape is not None:
            found = self.layer(x.reshape(x.shape[0], *self.shape))  # type: ignore[misc]
            x = (found[0] if isinstance(found, tuple) else found).reshape(x.shape[0], -1)
        out = self.head(x.to(self.head.weight.dtype))
        return out.squeeze(-1) if self.outputs == 1 else out


class Lazy(nn.Module):
    """A module for a net after a scikit-learn step: its input width is known only at fit."""

    def __init__(self, outputs: int = 2) -> None:
        super().__init__()
        self.head = nn.LazyLinear(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.float())  # type: ignore[no-any-return]


def constant_factor(epoch: int) -> float:
    """A user's lr_lambda: a function of their own module, allowed by the caller."""
    return 1.0


def first_column(x: Any) -> Any:
    """A user's FunctionTransformer function."""
    return x[:, :1]


ALLOW = [Holder, Lazy, constant_factor, first_column]  # the caller's own classes and functions

# -- items --------------------------------------------------------------------------------


def dumps_pickle(obj: Any, protocol: int) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def dumps_cloudpickle(obj: Any, protocol: int) -> bytes:
    return cloudpickle.dumps(obj, protocol=protocol)  # type: ignore[no-any-return]


def dumps_joblib(compress: str | None) -> Callable[[Any, int], bytes]:
    def dumps(obj: Any, protocol: int) -> bytes:
        import joblib

        file = io.BytesIO()
        joblib.dump(obj, file, compress=(compress, 3) if compress else 0, protocol=protocol)
        return file.getvalue()

    return dumps


def dumps_torch(obj: Any, protocol: int) -> bytes:
    import torch

    file = io.BytesIO()
    torch.save(obj, file, pickle_protocol=protocol)
    return file.getvalue()


# The containers this zoo writes: every protocol item runs through pickle and cloudpickle, and
# each container item through one of the others, at its writer's default protocol.
CONTAINERS: dict[str, Callable[[Any, int], bytes]] = {
    "pickle": dumps_pickle,
    "cloudpickle": dumps_cloudpickle,
}
COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz"] + (["lz4"] if find_spec("lz4") else [])
OTHER_CONTAINERS: dict[str, Callable[[Any, int], bytes]] = {
    "joblib": dumps_joblib(None),
    **{f"joblib {name}": dumps_joblib(name) for name in COMPRESSORS},
    "torch.save": dumps_torch,
}
WRITERS = {**CONTAINERS, **OTHER_CONTAINERS}


def loads_trusted(data: bytes, container: str) -> Any:
    """What a user who trusts the file calls: each container's own reader."""
    if container.startswith("joblib"):
        import joblib

        return joblib.load(io.BytesIO(data))
    if container == "torch.save":
        import torch

        return torch.load(io.BytesIO(data), weights_only=False)
    return pickle.loads(data)


@dataclass(frozen=True)
class Item:
    category: str
    name: str
    build: Callable[[Path], Any] = field(compare=False, repr=False)
    inputs: str = "X"  # what the loaded object predicts on: a name of this module
    container: str = "pickle"
    protocol: int = pickle.DEFAULT_PROTOCOL

    @property
    def id(self) -> str:
        return f"{self.category}:{self.name}"

    def dumps(self, obj: Any) -> bytes:
        return WRITERS[self.container](obj, self.protocol)


def outputs(obj: Any, inputs: np.ndarray, *, predicts: bool = True) -> list[np.ndarray]:
    """What a loaded object must reproduce: its predictions, and a net's weights as stored."""
    found = []
    for method in ("predict_proba", "predict"):
        if predicts and hasattr(obj, method):
            found.append(np.asarray(getattr(obj, method)(inputs), dtype="float64"))
            break
    module = getattr(obj, "module_", None)
    if module is not None:
        for value in module.state_dict().values():
            dense = value.to_dense() if value.is_sparse else value
            found.append(dense.detach().float().numpy())
    return found


def net(cls_name: str = "NeuralNetClassifier", module: Any = None, **kwargs: Any) -> Any:
    import skorch

    cls = getattr(skorch, cls_name)
    options: dict[str, Any] = {"max_epochs": 1, "verbose": 0, "lr": 0.05}
    if cls_name == "NeuralNet":
        options["criterion"] = nn.CrossEntropyLoss
    outputs = 1 if cls_name in ("NeuralNetRegressor", "NeuralNetBinaryClassifier") else 2
    return cls(module if module is not None else Holder(outputs=outputs), **{**options, **kwargs})


def fitted(cls_name: str = "NeuralNetClassifier", module: Any = None, **kwargs: Any) -> Any:
    target = Y_FLOAT if cls_name == "NeuralNetRegressor" else Y
    if cls_name == "NeuralNetBinaryClassifier":
        target = Y.astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return net(cls_name, module, **kwargs).fit(X, target)


@functools.cache
def shared_net() -> Any:
    """The plain fitted net several items pickle as it is: built once per process."""
    from skorch.callbacks import EarlyStopping

    return fitted(callbacks=[EarlyStopping()])


# -- skorch.callbacks ---------------------------------------------------------------------

# What each callback needs beyond its defaults, and the arguments people pass (each a variant).
CALLBACK_ARGS: dict[str, dict[str, Callable[[Path], dict[str, Any]]]] = {
    "Checkpoint": {"dirname": lambda tmp: {"dirname": str(tmp)}},
    "TrainEndCheckpoint": {"dirname": lambda tmp: {"dirname": str(tmp)}},
    "LoadInitState": {"checkpoint": lambda tmp: {"checkpoint": _checkpoint(tmp)}},
    "Freezer": {"pattern": lambda tmp: {"patterns": "head.weight"}},
    "Unfreezer": {"pattern": lambda tmp: {"patterns": "head.weight", "at": 1}},
    "ParamMapper": {
        "freeze": lambda tmp: {"patterns": "head.*", "fn": _skorch_utils().freeze_parameter},
        "unfreeze": lambda tmp: {"patterns": "head.*", "fn": _skorch_utils().unfreeze_parameter},
    },
    "Initializer": {"init": lambda tmp: {"patterns": "head.weight", "fn": nn.init.zeros_}},
    "EpochScoring": {
        "accuracy": lambda tmp: {"scoring": "accuracy"},
        "on_train": lambda tmp: {"scoring": "f1", "on_train": True, "lower_is_better": False},
    },
    "BatchScoring": {"accuracy": lambda tmp: {"scoring": "accuracy"}},
    "PassthroughScoring": {"valid_loss": lambda tmp: {"name": "valid_loss"}},
    "EarlyStopping": {"default": lambda tmp: {}, "threshold": lambda tmp: {"patience": 2}},
    "GradientNormClipping": {"norm": lambda tmp: {"gradient_clip_value": 1.0}},
    "LRScheduler": {
        name: (
            lambda tmp, name=name, policy=policy: {"policy": policy, **SCHEDULER_ARGS.get(name, {})}
        )
        for name, policy in (
            ("StepLR", "StepLR"),
            ("CyclicLR", torch.optim.lr_scheduler.CyclicLR),  # skorch 0.12 has no such name
            ("ReduceLROnPlateau", "ReduceLROnPlateau"),
            ("WarmRestartLR", "WarmRestartLR"),
        )
    },
}


def _skorch_utils() -> Any:
    import skorch.utils

    return skorch.utils


def _checkpoint(tmp: Path) -> Any:
    from skorch.callbacks import Checkpoint

    return Checkpoint(dirname=str(tmp / "init"))


def _callback_items() -> Iterator[Item]:
    import skorch.callbacks

    for name in skorch.callbacks.__all__:
        cls = getattr(skorch.callbacks, name)
        if not isinstance(cls, type) or f"callbacks:{name}" in UNBUILT:
            continue
        for variant, args in CALLBACK_ARGS.get(name, {"default": lambda tmp: {}}).items():
            yield Item(
                "callbacks", f"{name}[{variant}]", functools.partial(_with_callback, cls, args)
            )


def _with_callback(cls: type, args: Callable[[Path], dict[str, Any]], tmp: Path) -> Any:
    callback = cls(**args(tmp))
    # Two layers, so that a callback freezing the head leaves one to train; InputShapeSetter
    # sets module__input_dim, so the module is given as a class.
    module: Any = Holder if cls.__name__ == "InputShapeSetter" else Holder(nn.Linear(4, 4), (4,))
    return fitted(module=module, optimizer=torch.optim.SGD, callbacks=[("zoo", callback)])


# -- torch.nn layers ----------------------------------------------------------------------

# Constructor arguments tried in turn for a layer with required parameters: small sizes first.
CANDIDATE_ARGS: list[tuple[Any, ...]] = [
    (),
    (4,),
    (4, 4),
    (4, 4, 1),
    (4, 4, 4),
    (4, 1),
    ((2, 2),),
    (4, 4, 4, 4),
]
# Inputs tried in turn for forward: (N, 4) reshaped to each.
CANDIDATE_SHAPES: list[tuple[int, ...]] = [(4,), (1, 4), (4, 1), (1, 2, 2), (1, 1, 4), (1, 1, 2, 2)]


def _encoder(width: int = 4) -> nn.Module:
    return nn.TransformerEncoderLayer(width, 1, dim_feedforward=8)


def _decoder(width: int = 4) -> nn.Module:
    return nn.TransformerDecoderLayer(width, 1, dim_feedforward=8)


# Layers whose minimal arguments no candidate gives (each says what it needs).
LAYER_ARGS: dict[str, Callable[[], nn.Module]] = {
    "Transformer": lambda: nn.Transformer(4, 1, 1, 1, 8),  # defaults: 44M parameters
    "TransformerEncoder": lambda: nn.TransformerEncoder(_encoder(), 1),
    "TransformerDecoder": lambda: nn.TransformerDecoder(_decoder(), 1),
    "TransformerEncoderLayer": lambda: _encoder(),
    "TransformerDecoderLayer": lambda: _decoder(),
    "MultiheadAttention": lambda: nn.MultiheadAttention(4, 2),
    "RNNBase": lambda: nn.RNNBase("RNN_TANH", 4, 4),
    "Embedding": lambda: nn.Embedding(4, 4),
    "EmbeddingBag": lambda: nn.EmbeddingBag(4, 4),
    "AdaptiveLogSoftmaxWithLoss": lambda: nn.AdaptiveLogSoftmaxWithLoss(4, 4, [2]),
    "Sequential": lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU()),
    "ModuleList": lambda: nn.ModuleList([nn.Linear(4, 4)]),
    "ModuleDict": lambda: nn.ModuleDict({"linear": nn.Linear(4, 4)}),
    "ParameterList": lambda: nn.ParameterList([nn.Parameter(torch.ones(2))]),
    "ParameterDict": lambda: nn.ParameterDict({"p": nn.Parameter(torch.ones(2))}),
    "Unflatten": lambda: nn.Unflatten(1, (2, 2)),
    "Fold": lambda: nn.Fold((2, 2), (1, 1)),
    "Unfold": lambda: nn.Unfold((1, 1)),
    "LPPool1d": lambda: nn.LPPool1d(2, 1),
    "LPPool2d": lambda: nn.LPPool2d(2, 1),
    "LPPool3d": lambda: nn.LPPool3d(2, 1),
    "Upsample": lambda: nn.Upsample(scale_factor=2),
    "UpsamplingNearest2d": lambda: nn.UpsamplingNearest2d(scale_factor=2),
    "UpsamplingBilinear2d": lambda: nn.UpsamplingBilinear2d(scale_factor=2),
    "ChannelShuffle": lambda: nn.ChannelShuffle(1),
    "CrossMapLRN2d": lambda: nn.CrossMapLRN2d(1),
    "LocalResponseNorm": lambda: nn.LocalResponseNorm(1),
    "GroupNorm": lambda: nn.GroupNorm(1, 1),
    "RMSNorm": lambda: nn.RMSNorm(4),
    "LayerNorm": lambda: nn.LayerNorm(4),
    "PixelShuffle": lambda: nn.PixelShuffle(1),
    "PixelUnshuffle": lambda: nn.PixelUnshuffle(1),
    "CircularPad1d": lambda: nn.CircularPad1d(1),
    "CircularPad2d": lambda: nn.CircularPad2d(1),
    "CircularPad3d": lambda: nn.CircularPad3d(1),
}


def _layer_items() -> Iterator[Item]:
    import torch.nn.modules

    for name in torch.nn.modules.__all__:
        cls = getattr(torch.nn.modules, name)
        if isinstance(cls, type) and issubclass(cls, nn.Module) and f"layers:{name}" not in UNBUILT:
            yield Item("layers", name, functools.partial(_with_layer, name, cls))


def construct(name: str, cls: type) -> nn.Module:
    """The layer with the first candidate arguments its constructor takes."""
    if name in LAYER_ARGS:
        return LAYER_ARGS[name]()
    for args in CANDIDATE_ARGS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(*args)  # type: ignore[no-any-return]
        except Exception:
            continue
    raise LookupError(f"no candidate arguments construct {name}: add it to LAYER_ARGS")


def holder(layer: nn.Module) -> Holder:
    """A Holder using ``layer`` in forward with the first input shape it takes, else holding
    it (a loss, a container): the pickle holds the same layer either way."""
    probe = torch.as_tensor(X[:3])
    for shape in CANDIDATE_SHAPES:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = layer(probe.reshape(3, *shape))
            found = found[0] if isinstance(found, tuple) else found
            if isinstance(found, torch.Tensor) and found.is_floating_point() and len(found) == 3:
                return Holder(layer, shape, found.reshape(3, -1).shape[1])
        except Exception:
            continue
    return Holder(layer)


def _with_layer(name: str, cls: type, tmp: Path) -> Any:
    module = holder(construct(name, cls))
    return fitted(module=module, optimizer=torch.optim.SGD)


# -- torch.optim and torch.optim.lr_scheduler -------------------------------------------------

OPTIMIZER_ARGS: dict[str, dict[str, Any]] = {
    "Muon": {"module": Holder(bias=False)},  # Muon takes 2-D parameters only
}
SCHEDULER_ARGS: dict[str, dict[str, Any]] = {
    "LambdaLR": {"lr_lambda": constant_factor},
    "MultiplicativeLR": {"lr_lambda": constant_factor},
    "StepLR": {"step_size": 1},
    "MultiStepLR": {"milestones": [1]},
    "ExponentialLR": {"gamma": 0.9},
    "CosineAnnealingLR": {"T_max": 2},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2},
    "CosineAnnealingWarmRestarts": {"T_0": 1},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 10},
}


def _optimizer_items() -> Iterator[Item]:
    for name in torch.optim.__all__:
        cls = getattr(torch.optim, name)
        optimizer = isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)
        if optimizer and f"optimizers:{name}" not in UNBUILT:
            yield Item("optimizers", name, functools.partial(_with_optimizer, name, cls))
    schedulers = torch.optim.lr_scheduler
    for name in schedulers.__all__:
        cls = getattr(schedulers, name)
        if isinstance(cls, type) and f"schedulers:{name}" not in UNBUILT:
            yield Item("schedulers", name, functools.partial(_with_scheduler, name))


def _with_optimizer(name: str, cls: type, tmp: Path) -> Any:
    module = OPTIMIZER_ARGS.get(name, {}).get("module", Holder())
    return fitted(module=module, optimizer=cls)


def _with_scheduler(name: str, tmp: Path) -> Any:
    from skorch.callbacks import LRScheduler

    callback = LRScheduler(
        policy=getattr(torch.optim.lr_scheduler, name), **SCHEDULER_ARGS.get(name, {})
    )
    return fitted(module=Holder(), optimizer=torch.optim.SGD, callbacks=[("lr", callback)])


# -- scikit-learn steps before a net --------------------------------------------------------

SKLEARN_MODULES = "preprocessing compose impute decomposition feature_selection pipeline"


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def _column_transformer() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer(
        [("num", StandardScaler(), [0, 1, 2, 3]), ("cat", OneHotEncoder(), [4])]
    )


def _sklearn(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(f"sklearn.{module}"), name)


# What a step needs beyond its defaults, and its input when not X.
STEP_ARGS: dict[str, Callable[[], dict[str, Any]]] = {
    "ColumnTransformer": lambda: {"transformers": _column_transformer().transformers},
    "FeatureUnion": lambda: {
        "transformer_list": [("pca", _sklearn("decomposition.PCA")(2)), ("id", "passthrough")]
    },
    "Pipeline": lambda: {"steps": [("scale", _sklearn("preprocessing.StandardScaler")())]},
    "FunctionTransformer": lambda: {"func": first_column},
    "RFE": lambda: {"estimator": _logistic(), "n_features_to_select": 2},
    "RFECV": lambda: {"estimator": _logistic(), "cv": 2},
    "SelectFromModel": lambda: {"estimator": _logistic()},
    "SequentialFeatureSelector": lambda: {
        "estimator": _logistic(),
        "n_features_to_select": 2,
        "cv": 2,
    },
    "SelectKBest": lambda: {"k": 2},
    "SparseCoder": lambda: {"dictionary": RNG.rand(2, 4)},
    # A generator of its own: numpy's global one, random_state=None, pickles its SeedSequence
    # only until something in the process calls np.random.seed (then it has none).
    "MiniBatchDictionaryLearning": lambda: {
        "n_components": 2,
        "random_state": np.random.RandomState(),
    },
    "QuantileTransformer": lambda: {"n_quantiles": 10},
    "KBinsDiscretizer": lambda: {"n_bins": 2},  # quantile_method: scikit-learn >= 1.7 only
    "OneHotEncoder": lambda: {"sparse_output": False},
}
STEP_INPUTS = {
    "ColumnTransformer": "X_MIXED",
    "OneHotEncoder": "X_CATEGORICAL",
    "OrdinalEncoder": "X_CATEGORICAL",
    "TargetEncoder": "X_CATEGORICAL",
    "SimpleImputer": "X_MISSING",
    "KNNImputer": "X_MISSING",
    "MissingIndicator": "X_MISSING",
}


def _step_items() -> Iterator[Item]:
    from sklearn.base import BaseEstimator
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401

    for module_name in SKLEARN_MODULES.split():
        module = importlib.import_module(f"sklearn.{module_name}")
        for name in module.__all__:
            cls = getattr(module, name)
            estimator = isinstance(cls, type) and issubclass(cls, BaseEstimator)
            category = f"sklearn.{module_name}"
            if estimator and f"{category}:{name}" not in UNBUILT:
                inputs = STEP_INPUTS.get(name, "X")
                build = WRAPPERS.get(name) or functools.partial(_with_step, name, cls, inputs)
                yield Item(category, name, build, inputs)


def _with_step(name: str, cls: type, inputs: str, tmp: Path) -> Any:
    from sklearn.pipeline import Pipeline

    try:
        kwargs = STEP_ARGS.get(name, dict)()
        step = cls(**kwargs)
    except TypeError:  # n_components: the minimal argument of decompositions
        step = cls(n_components=2)
    if "n_components" in inspect.signature(cls).parameters and name not in STEP_ARGS:
        step.set_params(n_components=2)
    pipe = Pipeline([("step", step), ("net", net(module=Lazy(), optimizer=torch.optim.SGD))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipe.fit(globals()[inputs], Y)


def _target_regressor(tmp: Path) -> Any:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import StandardScaler

    wrapped = TransformedTargetRegressor(
        net("NeuralNetRegressor", module=Holder(outputs=2)), transformer=StandardScaler()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # two targets: it squeezes one to 1-d, which skorch 0.12's regressor refuses
        return wrapped.fit(X, Y_FLOAT.repeat(2, axis=1))


# Public classes of those modules that wrap a net rather than stand before it.
WRAPPERS = {"TransformedTargetRegressor": _target_regressor}


# -- nets, weights, protocols, search objects ------------------------------------------------


def _net_items() -> Iterator[Item]:
    import skorch

    for name in skorch.__all__:
        cls = getattr(skorch, name)
        if isinstance(cls, type) and issubclass(cls, skorch.NeuralNet):
            yield Item("nets", name, lambda tmp, name=name: fitted(name))


def _with_weights(dtype: torch.dtype, tmp: Path) -> Any:
    fit = fitted(module=Holder())
    fit.module_.to(dtype)
    return fit


def _with_sparse_buffer(tmp: Path) -> Any:
    fit = fitted(module=Holder())
    fit.module_.register_buffer("mask", torch.eye(4).to_sparse())
    return fit


def _weight_items() -> Iterator[Item]:
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        name = str(dtype).rpartition(".")[2]
        yield Item("weights", name, functools.partial(_with_weights, dtype))
    yield Item("weights", "sparse buffer", _with_sparse_buffer)


def _shared(tmp: Path) -> Any:
    return shared_net()


def _mixed(tmp: Path) -> Any:
    """A Pipeline of numeric and categorical columns (OneHotEncoder stores numpy.float64)."""
    return _with_step("ColumnTransformer", _sklearn("compose.ColumnTransformer"), "X_MIXED", tmp)


def _protocol_items() -> Iterator[Item]:
    for container in CONTAINERS:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            name = f"{container} protocol {protocol}"
            yield Item("protocols", f"{name} net", _shared, "X", container, protocol)
            yield Item("protocols", f"{name} pipeline", _mixed, "X_MIXED", container, protocol)


def _container_items() -> Iterator[Item]:
    protocols = {"torch.save": 2}  # torch.save's default; joblib's is pickle's
    for container in OTHER_CONTAINERS:
        protocol = protocols.get(container, pickle.DEFAULT_PROTOCOL)
        yield Item("containers", f"{container} net", _shared, "X", container, protocol)
        yield Item("containers", f"{container} pipeline", _mixed, "X_MIXED", container, protocol)


SEARCHES = "GridSearchCV RandomizedSearchCV HalvingGridSearchCV HalvingRandomSearchCV"


def _search_items() -> Iterator[Item]:
    import sklearn.model_selection
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401

    for name in SEARCHES.split():
        cls = getattr(sklearn.model_selection, name, None)
        if cls is not None:  # the halving ones are experimental, and may go
            for around in ("net", "pipeline"):
                yield Item("search", f"{name}({around})", functools.partial(_search, cls, around))


def _search(cls: type, around: str, tmp: Path) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    inner = net(module=Holder(), optimizer=torch.optim.SGD, train_split=None)  # few samples
    grid: dict[str, Any] = {"lr": [0.01, 0.05]}
    if around == "pipeline":
        inner = Pipeline([("scale", StandardScaler()), ("net", inner)])
        grid = {"net__lr": grid["lr"]}
    kwargs: dict[str, Any] = {"cv": 2}
    if "Random" in cls.__name__:
        kwargs["n_iter" if "Halving" not in cls.__name__ else "n_candidates"] = 2
    if "Halving" in cls.__name__:
        kwargs["min_resources"] = 12
    search = cls(inner, grid, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(X, Y)


# -- the whole zoo, and what is expected of it ---------------------------------------------------


def items() -> list[Item]:
    """Every item, generated; cheap (nothing is built)."""
    return [
        *_callback_items(),
        *_layer_items(),
        *_optimizer_items(),
        *_step_items(),
        *_net_items(),
        *_weight_items(),
        *_protocol_items(),
        *_container_items(),
        *_search_items(),
    ]


UNPREDICTABLE = {"weights:bfloat16": "skorch's to_numpy can't convert bfloat16 predictions"}

REFUSED: dict[str, str] = {}


def counts() -> Counter[str]:
    return Counter(item.category for item in items())


if __name__ == "__main__":
    for category, count in sorted(counts().items()):
        sys.stdout.write(f"{category:28} {count}\n")
