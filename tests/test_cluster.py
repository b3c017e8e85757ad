"""Real local Dask and Ray clusters: the patch reaches workers the user's code never ran in.

Runs on skorch 1.1.0 with torch >= 2.6, where every unpatched load of a net fails, in
nox's ``cluster`` session only (its venv has dask and ray). Every case first shows the
unpatched failure on the same cluster, then the patched success. Run it without -n:
the clusters take the machine's cores themselves.
"""

from __future__ import annotations

import os
import pickle
import time

import dask
import joblib
import models
import psutil
import pytest
import ray
from conftest import TESTS, run_python
from distributed import Client, LocalCluster
from ray.util.joblib import register_ray
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import FixedThresholdClassifier, GridSearchCV

import skorch_loadfix
from skorch_loadfix import load_kwargs
from skorch_loadfix.dask import SkorchLoadfix
from skorch_loadfix.ray import runtime_env

UNPATCHED_FAILURE = "Weights only load failed"  # torch's message, as skorch 1.1.0 meets it
TRUSTED = {"weights_only": False}  # what a net holding builtins.len needs to load
CLUSTER = {"n_workers": 2, "processes": True, "threads_per_worker": 1, "dashboard_address": None}


@pytest.fixture(scope="module", autouse=True)
def workers_environment():
    """Workers import this module and models.py by name; none inherits SKORCH_LOADFIX.

    At the end nothing the clusters started may still run.
    """
    assert models.SKORCH_DEFAULT_WEIGHTS_ONLY, "the controls need a skorch that fails unpatched"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        patch.delenv("SKORCH_LOADFIX", raising=False)
        patch.delenv("SKORCH_LOADFIX_KWARGS", raising=False)
        yield
    deadline = time.monotonic() + 30
    while (left := cluster_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"the clusters left processes running: {[p.cmdline() for p in left]}"


def cluster_processes() -> list[psutil.Process]:
    """This interpreter's children, but for the resource trackers of multiprocessing and loky,
    which any pool starts and which exit with this interpreter."""
    children = psutil.Process().children(recursive=True)
    return [p for p in children if "resource_tracker" not in " ".join(p.cmdline())]


def test_importing_the_package_imports_neither_dask_nor_ray():
    code = "import sys, skorch_loadfix, skorch_loadfix.ray\n"
    code += "print({'dask', 'distributed', 'ray'} & set(sys.modules))"
    done = run_python(code)
    assert (done.returncode, done.stdout) == (0, "set()\n"), done.stderr


def load_here(data: bytes) -> tuple[str, str | None]:
    """What a worker makes of a pickled net: "ok" or the error, and how it was patched."""
    try:
        pickle.loads(data)
        outcome = "ok"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return outcome, skorch_loadfix.status().activated_by


def failed_unpatched(results: dict[str, tuple[str, str | None]]) -> bool:
    return all(
        UNPATCHED_FAILURE in outcome and activated_by is None
        for outcome, activated_by in results.values()
    )


def search() -> GridSearchCV:
    """Tunes the decision threshold of a net trained beforehand, on every worker.

    FrozenEstimator is what sends the fitted net to the workers: GridSearchCV clones its
    estimator, and the clone of a plain net is unfitted, with an empty blob that loads
    anywhere, so a search over a plain net's own parameters runs unpatched.
    """
    frozen = FixedThresholdClassifier(FrozenEstimator(models.fit()))
    grid = {"threshold": [0.3, 0.5, 0.7]}
    return GridSearchCV(frozen, grid, cv=2, n_jobs=-1, refit=True, error_score="raise")


# Dask


@pytest.fixture(scope="module")
def dask_client():
    """A cluster whose workers get SKORCH_LOADFIX=1 through the nanny's env=: too late.

    The nanny sets env= inside the new worker process, after site-packages (and so the
    .pth) has been processed: those workers are unpatched, which is what the plugin is for.
    """
    with (
        LocalCluster(**CLUSTER, env={"SKORCH_LOADFIX": "1"}) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def plugin(dask_client):
    """Registers a SkorchLoadfix; always unregistered, so no test leaks into the next."""

    def register(**options: object) -> None:
        dask_client.register_plugin(SkorchLoadfix(**options))

    yield register
    if dask_client.run_on_scheduler(registered):
        dask_client.unregister_worker_plugin(SkorchLoadfix.name)


def registered(dask_scheduler) -> bool:
    return SkorchLoadfix.name in dask_scheduler.worker_plugins


def test_nanny_env_reaches_workers_too_late(dask_client):
    data = pickle.dumps(models.fit())
    seen = dask_client.run(lambda: os.environ.get("SKORCH_LOADFIX"))
    assert set(seen.values()) == {"1"}
    assert failed_unpatched(dask_client.run(load_here, data))


def test_plugin_patches_current_and_future_workers_and_teardown_reverts(dask_client, plugin):
    data = pickle.dumps(models.fit())
    assert failed_unpatched(dask_client.run(load_here, data))  # control
    plugin()
    plugin()  # a second registration replaces the first
    assert set(dask_client.run(load_here, data).values()) == {("ok", "dask worker plugin")}
    dask_client.cluster.scale(3)
    dask_client.wait_for_workers(3, timeout=120)
    results = dask_client.run(load_here, data)
    assert len(results) == 3 and set(results.values()) == {("ok", "dask worker plugin")}
    dask_client.unregister_worker_plugin(SkorchLoadfix.name)
    assert failed_unpatched(dask_client.run(load_here, data))


def test_plugin_passes_its_options_to_every_worker(dask_client, plugin):
    data = pickle.dumps(models.fit(models.ModelWithFunction))
    plugin()
    assert all(
        "builtins.len: not allowed" in o for o, _ in dask_client.run(load_here, data).values()
    )
    plugin(torch_load_kwargs=TRUSTED)
    assert set(dask_client.run(load_here, data).values()) == {("ok", "dask worker plugin")}


def test_grid_search_on_the_dask_joblib_backend(dask_client, plugin):
    """The control loads what the search sends instead of running it: unpatched, a worker
    that can't unpickle a task drops its connection, is restarted, and the search hangs.

    The scheduler unpickles task graphs too; a LocalCluster's runs in this process.
    """
    searcher = search()
    assert failed_unpatched(dask_client.run(load_here, pickle.dumps(searcher.estimator)))
    plugin()
    skorch_loadfix.apply()  # for the scheduler
    try:
        with joblib.parallel_backend("dask"):
            fitted = searcher.fit(models.X, models.y)
    finally:
        skorch_loadfix.revert()
    assert fitted.best_estimator_.predict(models.X).shape == models.y.shape


def test_plugin_rejects_bad_options_in_the_client():
    with pytest.raises(ValueError, match="map_location.*set device"):
        SkorchLoadfix(torch_load_kwargs={"map_location": "cpu"})
    with pytest.raises(TypeError, match="strict must be True or False"):
        SkorchLoadfix(strict="yes")  # type: ignore[arg-type]


def test_workers_sharing_a_process_keep_the_patch_until_the_last_lets_go():
    """LocalCluster(processes=False): each worker sets up its own copy of the plugin."""
    first, second = SkorchLoadfix(), SkorchLoadfix()
    first.setup(worker=None)
    second.setup(worker=None)
    first.teardown(worker=None)
    assert skorch_loadfix.status().activated_by == "dask worker plugin"
    second.teardown(worker=None)
    assert not skorch_loadfix.is_applied()


def test_teardown_restores_the_options_of_an_earlier_apply():
    skorch_loadfix.apply(torch_load_kwargs={"weights_only": True}, strict=True)
    try:
        plugin = SkorchLoadfix(torch_load_kwargs=TRUSTED)
        plugin.setup(worker=None)
        assert (load_kwargs.process_default(), load_kwargs.is_strict()) == (TRUSTED, False)
        plugin.teardown(worker=None)
        assert skorch_loadfix.status().activated_by == "apply()"
        assert (load_kwargs.process_default(), load_kwargs.is_strict()) == (
            {"weights_only": True},
            True,
        )
    finally:
        skorch_loadfix.revert()


def test_variable_before_the_workers_start():
    """``distributed.nanny.pre-spawn-environ`` sets it before the worker's interpreter starts.

    The nanny sets it in its own process's environment, here this one's: put back after.
    """
    data = pickle.dumps(models.fit())
    config = {"distributed.nanny.pre-spawn-environ.SKORCH_LOADFIX": "1"}
    try:
        with (
            dask.config.set(config),
            LocalCluster(**CLUSTER) as cluster,
            Client(cluster) as client,
        ):
            assert set(client.run(load_here, data).values()) == {("ok", "SKORCH_LOADFIX=1")}
            client.register_plugin(SkorchLoadfix())
            client.unregister_worker_plugin(SkorchLoadfix.name)
            # The plugin's teardown leaves the variable's patch in place.
            assert set(client.run(load_here, data).values()) == {("ok", "SKORCH_LOADFIX=1")}
    finally:
        os.environ.pop("SKORCH_LOADFIX", None)


# Ray

JOB = """
    import ray, models
    from skorch_loadfix.ray import runtime_env

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env())

    @ray.remote
    def predict(net):
        import skorch_loadfix
        return net.predict_proba(models.X).shape, skorch_loadfix.status().activated_by

    try:
        print(ray.get(predict.remote(models.fit())))
    finally:
        ray.shutdown()
"""


def test_ray_init_runtime_env_reaches_the_whole_job():
    """First of the Ray tests: its own Ray, before the module's starts. The control, the
    same task without the runtime env, is test_ray_task_gets_a_net_as_its_argument's."""
    done = run_python(JOB)
    assert done.stdout.splitlines()[-1:] == ["((32, 2), 'SKORCH_LOADFIX=1')"], done.stderr


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray; each case picks its workers' environment per task or actor."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    register_ray()
    yield
    ray.shutdown()


@ray.remote
def predict_remote(net) -> tuple[tuple[int, ...], str | None]:
    return net.predict_proba(models.X).shape, skorch_loadfix.status().activated_by


@ray.remote
def get_remote(refs: list[ray.ObjectRef]) -> tuple[tuple[int, ...], str | None]:
    return ray.get(refs[0]).predict_proba(models.X).shape, skorch_loadfix.status().activated_by


@ray.remote
class Holder:
    def __init__(self, net) -> None:
        self.net = net

    def predict(self) -> tuple[int, ...]:
        return self.net.predict_proba(models.X).shape


SHAPE = (len(models.X), 2)


def test_ray_task_gets_a_net_as_its_argument(ray_session):
    net = models.fit()
    with pytest.raises(Exception, match=UNPATCHED_FAILURE):
        ray.get(predict_remote.remote(net))
    task = predict_remote.options(runtime_env=runtime_env())
    assert ray.get(task.remote(net)) == (SHAPE, "SKORCH_LOADFIX=1")


def test_ray_actor_holds_a_net(ray_session):
    net = models.fit()
    with pytest.raises(Exception, match=UNPATCHED_FAILURE):
        ray.get(Holder.remote(net).predict.remote())
    holder = Holder.options(runtime_env=runtime_env()).remote(net)
    assert ray.get(holder.predict.remote()) == SHAPE


def test_ray_put_then_get(ray_session):
    ref = ray.put(models.fit())
    with pytest.raises(Exception, match=UNPATCHED_FAILURE):
        ray.get(get_remote.remote([ref]))
    task = get_remote.options(runtime_env=runtime_env())
    assert ray.get(task.remote([ref])) == (SHAPE, "SKORCH_LOADFIX=1")
    # ray.get deserialises in the driver too, through the same __setstate__.
    with pytest.raises(Exception, match=UNPATCHED_FAILURE):
        ray.get(ref)
    skorch_loadfix.apply()
    try:
        assert ray.get(ref).predict_proba(models.X).shape == SHAPE
    finally:
        skorch_loadfix.revert()


def test_ray_runtime_env_passes_the_options(ray_session):
    net = models.fit(models.ModelWithFunction)
    with pytest.raises(Exception, match="builtins.len: not allowed"):
        ray.get(predict_remote.options(runtime_env=runtime_env()).remote(net))
    task = predict_remote.options(runtime_env=runtime_env(torch_load_kwargs=TRUSTED))
    assert ray.get(task.remote(net)) == (SHAPE, "SKORCH_LOADFIX=1")


def test_grid_search_on_the_ray_joblib_backend(ray_session):
    with joblib.parallel_backend("ray"), pytest.raises(Exception, match=UNPATCHED_FAILURE):
        search().fit(models.X, models.y)
    with joblib.parallel_backend("ray", ray_remote_args={"runtime_env": runtime_env()}):
        fitted = search().fit(models.X, models.y)
    assert fitted.best_estimator_.predict(models.X).shape == models.y.shape
