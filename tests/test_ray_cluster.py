"""The Ray engine on a cluster of two nodes (Ray's own `ray.cluster_utils.Cluster`, both on this
machine, one CPU each): two actors, one per node, give the local engine's explanations, patterns
and AOPC on an ImageFolder of PNGs."""
import numpy as np
import pytest

ray = pytest.importorskip("ray")

import nnxplain  # noqa: E402
from nnxplain import engine as E  # noqa: E402
from nnxplain.data import open_dataset  # noqa: E402

from conftest import relative_error  # noqa: E402
from image_data import DIGITS, digits_folder  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, logging_level="ERROR", log_to_driver=False)
    try:
        nodes.wait_for_nodes()
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def test_two_nodes_give_the_local_numbers(cluster, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    engine = E.engine("ray")  # one CPU per node, one CPU per actor: one actor on each node
    assert engine.workers == 2
    folder, _, _ = digits_folder(tmp_path / "images", count=240)
    dataset = open_dataset(folder, expect=(1, 8, 8))

    E.analyze(DIGITS, "smoothgrad", dataset, tmp_path / "local", batch_size=30, params={"augment_by_n": 8})
    E.analyze(DIGITS, "smoothgrad", dataset, tmp_path / "ray", batch_size=30, params={"augment_by_n": 8},
              engine=engine)
    a, b = nnxplain.read_explanations(tmp_path / "local"), nnxplain.read_explanations(tmp_path / "ray")
    assert len(a) == 240 and relative_error(b.values, a.values) < 1e-6 and a.sources == b.sources

    local, _ = E.fit(DIGITS, dataset, "relu", batch_size=30)
    remote, _ = E.fit(DIGITS, dataset, "relu", batch_size=30, engine=engine)
    for key in local.rows:
        assert relative_error(remote.rows[key], local.rows[key]) < 1e-9, key

    local, _ = E.evaluate(DIGITS, ["gradient"], dataset, batch_size=30)
    remote, _ = E.evaluate(DIGITS, ["gradient"], dataset, batch_size=30, engine=engine)
    for name, value in local["aopc"].items():
        assert abs(remote["aopc"][name] - value) <= 1e-6 * abs(value), name
    assert np.isfinite(list(remote["aopc"].values())).all()
