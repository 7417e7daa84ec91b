"""The Ray engine gives the local engine's numbers: explanations (1e-6 relative; the batches are the
same, so in fact equal), patterns (1e-9 relative, float64) and AOPC (1e-6), on the digits arrays and
on the digits as an ImageFolder of PNGs. One local Ray instance (2 CPUs) serves the whole module."""
import numpy as np
import pytest

ray = pytest.importorskip("ray")

import nnxplain  # noqa: E402
from nnxplain import engine as E  # noqa: E402
from nnxplain.data import open_dataset  # noqa: E402

from conftest import relative_error  # noqa: E402
from image_data import DIGITS, DIGITS_TEST, DIGITS_TRAIN, digits_folder  # noqa: E402
from test_bad_input import cli  # noqa: E402


@pytest.fixture(scope="module")
def ray_engine():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield E.engine("ray", workers=2)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder, _, _ = digits_folder(tmp_path_factory.mktemp("digits") / "images")
    return folder


def datasets(pngs):
    return {"array": open_dataset(DIGITS_TEST), "images": open_dataset(pngs, expect=(1, 8, 8))}


def same_patterns(a, b):
    assert a.samples == b.samples and a.rows.keys() == b.rows.keys()
    for key in a.rows:
        assert relative_error(a.rows[key], b.rows[key]) < 1e-9, key
        np.testing.assert_array_equal(a.counts[key], b.counts[key])


def test_analyze(ray_engine, pngs, tmp_path):
    for (name, dataset), method in zip(datasets(pngs).items(), ("smoothgrad", "lrp.epsilon")):
        kwargs = dict(batch_size=50, params={"augment_by_n": 8} if method == "smoothgrad" else None)
        local = E.analyze(DIGITS, method, dataset, tmp_path / "local", **kwargs)
        remote = E.analyze(DIGITS, method, dataset, tmp_path / "ray", engine=ray_engine, **kwargs)
        assert local["engine"] == "local" and remote["engine"] == "ray" and len(remote["parts"]) == 8
        a, b = nnxplain.read_explanations(tmp_path / "local"), nnxplain.read_explanations(tmp_path / "ray")
        assert relative_error(b.values, a.values) < 1e-6, (name, method)
        assert a.sources == b.sources and (a.predicted == b.predicted).all() and (a.labels == b.labels).all()


def test_fit(ray_engine, pngs):
    train = open_dataset(DIGITS_TRAIN)
    for dataset, pattern_type in ((train, "relu"), (datasets(pngs)["images"], "linear")):
        local, _ = E.fit(DIGITS, dataset, pattern_type, batch_size=64)
        remote, _ = E.fit(DIGITS, dataset, pattern_type, batch_size=64, engine=ray_engine)
        same_patterns(remote, local)
    whole = nnxplain.patterns.fit(DIGITS, str(DIGITS_TRAIN), "relu", batch_size=64, progress=False)
    same_patterns(E.fit(DIGITS, train, "relu", batch_size=64, engine=ray_engine)[0], whole)


def test_evaluate(ray_engine, pngs):
    for dataset, perturbation in zip(datasets(pngs).values(), ("gaussian", "zeros")):
        options = dict(batch_size=64, perturbation=perturbation, params={"augment_by_n": 8})
        local, _ = E.evaluate(DIGITS, ["gradient", "smoothgrad"], dataset, **options)
        remote, _ = E.evaluate(DIGITS, ["gradient", "smoothgrad"], dataset, engine=ray_engine, **options)
        assert remote["images"] == local["images"] == 360
        for name, value in local["aopc"].items():
            assert abs(remote["aopc"][name] - value) <= 1e-6 * abs(value), (name, perturbation)
        assert remote["aopc"]["smoothgrad"] != remote["aopc"]["random"]


def test_the_command_line_on_ray(ray_engine, pngs, tmp_path):
    """--engine ray --ray-address: the CLI joins the running cluster; its numbers are the local run's,
    and a bad file inside the actors still ends in one line naming it, with nothing written."""
    address = ray.get_runtime_context().gcs_address
    local = cli("analyze", DIGITS, "-m", "lrp.epsilon", "--input", pngs, "--batch-size", "64", "-o", tmp_path / "a")
    remote = cli("analyze", DIGITS, "-m", "lrp.epsilon", "--input", pngs, "--batch-size", "64", "-o", tmp_path / "b",
                 "--engine", "ray", "--ray-address", address)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert "engine ray" in remote.stdout
    a, b = nnxplain.read_explanations(tmp_path / "a"), nnxplain.read_explanations(tmp_path / "b")
    assert relative_error(b.values, a.values) < 1e-6

    (pngs / "7" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    try:
        bad = cli("fit", DIGITS, "--data", pngs, "-o", tmp_path / "p.npz", "--engine", "ray", "--ray-address", address)
    finally:
        (pngs / "7" / "zz_broken.png").unlink()
    assert bad.returncode == 2 and "zz_broken.png: not a readable image" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.npz").exists()
