"""Datasets: arrays, folders of images and globs in; explanations written as shards, patterns and AOPC
out; all streamed in batches on the local engine, with memory bounded by the batch, and bad data
refused with one line naming the file (or skipped and counted), nothing half-written."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import nnxplain
from nnxplain.data import PRESETS, Preprocess, open_dataset
from nnxplain.errors import NnxplainError
from nnxplain.evaluate import Scorer
from nnxplain.patterns import Patterns

from conftest import relative_error
from image_data import DIGITS, DIGITS_TEST, DIGITS_TRAIN, digits_folder, random_pngs, small_cnn
from test_bad_input import cli


@pytest.fixture(scope="module")
def digits_pngs(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "images")


def test_image_folder_reads_back_the_pixels_and_the_class_labels(digits_pngs):
    folder, pixels, labels = digits_pngs
    dataset = open_dataset(folder, expect=(1, 8, 8))
    batch = dataset.read_all()
    assert dataset.classes == [str(k) for k in range(10)] and len(dataset) == 360
    np.testing.assert_array_equal(batch.x, pixels)  # gray for a 1-channel model, scaled by 1/255
    np.testing.assert_array_equal(batch.labels, labels)
    assert batch.sources[0] == str(sorted((folder / "0").iterdir())[0])
    refs = dataset.batches(100)
    assert [(r.start, r.stop) for r in refs] == [(0, 100), (100, 200), (200, 300), (300, 360)]
    np.testing.assert_array_equal(dataset.read(refs[1]).x, pixels[100:200])


def test_a_glob_and_a_flat_folder_are_unlabelled(digits_pngs):
    folder, pixels, labels = digits_pngs
    dataset = open_dataset(str(folder / "3" / "*.png"), expect=(1, 8, 8))
    batch = dataset.read_all()
    np.testing.assert_array_equal(batch.x, pixels[labels == 3])
    assert (batch.labels == -1).all() and not dataset.has_labels
    flat = open_dataset(folder / "3", expect=(1, 8, 8))
    np.testing.assert_array_equal(flat.read_all().x, batch.x)


def test_preprocessing_against_numpy(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # height 30, width 40
    Image.fromarray(pixels, "RGB").save(tmp_path / "a.png")
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    pre = Preprocess(resize=20, crop=(16, 12), scale=1 / 255, mean=mean, std=std, channels="bgr", layout="nhwc")
    x = open_dataset(tmp_path / "a.png", pre).read_all().x[0]
    # the reference: shorter side (30) to 20 keeps the aspect ratio: 26 x 20 (width x height); Pillow
    # resizes (the interpolation is Pillow's), numpy does the rest
    resized = np.asarray(Image.fromarray(pixels).resize((26, 20), Image.BILINEAR), np.float32)
    top, left = 2, 7  # round((20 - 16) / 2), round((26 - 12) / 2)
    crop = resized[top:top + 16, left:left + 12, ::-1] / 255
    expected = (crop - np.float32(mean)) / np.float32(std)
    assert x.shape == (16, 12, 3)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)


def test_imagenet_preset_is_torchvisions_evaluation_transform(tmp_path):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "a.jpg", quality=95)
    x = open_dataset(tmp_path / "a.jpg", PRESETS["imagenet"], expect=(3, 224, 224)).read_all().x[0]
    decoded = Image.open(tmp_path / "a.jpg").convert("RGB")
    resized = np.asarray(decoded.resize((341, 256), Image.BILINEAR), np.float32)  # int(256 * 400 / 300)
    crop = resized[16:240, 58:282] / 255  # round((256 - 224) / 2), round((341 - 224) / 2)
    expected = ((crop - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------- analyze


def test_analyze_a_folder_into_shards_equals_the_array_run(digits_pngs, tmp_path):
    folder, pixels, labels = digits_pngs
    np.save(tmp_path / "x.npy", pixels)
    whole = cli("analyze", DIGITS, "-m", "smoothgrad", "--input", tmp_path / "x.npy", "--batch-size", "64",
                "-o", tmp_path / "whole.npy")
    shards = cli("analyze", DIGITS, "-m", "smoothgrad", "--input", folder, "--batch-size", "64",
                 "-o", tmp_path / "out", "--pictures")
    assert whole.returncode == 0 and shards.returncode == 0, whole.stderr + shards.stderr
    assert "360 explanations of smoothgrad in 6 parts" in shards.stdout
    out = nnxplain.read_explanations(tmp_path / "out")
    np.testing.assert_array_equal(out.values, np.load(tmp_path / "whole.npy"))  # same batches, same noise
    np.testing.assert_array_equal(out.rows, np.arange(360))
    np.testing.assert_array_equal(out.labels, labels)
    assert out.sources == open_dataset(folder, expect=(1, 8, 8)).files and out.method == "smoothgrad"
    scores = Scorer(DIGITS)(pixels)
    np.testing.assert_array_equal(out.predicted, scores.argmax(1))
    np.testing.assert_allclose(out.scores, scores.max(1), rtol=1e-6)
    assert len(list((tmp_path / "out" / "pictures").glob("*.png"))) == 360
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left

    half = cli("analyze", DIGITS, "-m", "smoothgrad", "--input", folder, "--batch-size", "64", "--float16",
               "-o", tmp_path / "out")  # replaces the explanations folder
    assert half.returncode == 0, half.stderr
    halves = nnxplain.read_explanations(tmp_path / "out")
    assert halves.values.dtype == np.float16 and not (tmp_path / "out" / "pictures").exists()
    np.testing.assert_allclose(halves.values, out.values, rtol=1e-3, atol=1e-3 * np.abs(out.values).max())


def test_batched_analyze_equals_the_analyzer(tmp_path):
    """Batching does not change a deterministic method, nor a sampling method with noise generated in
    the graph (the same noise for every sample of a batch). With noise fed as an input, the first
    batch is the Analyzer's (same seed), and every batch gets other noise."""
    x = np.load(DIGITS_TEST)["x"]
    for method in ("lrp.epsilon", "smoothgrad"):
        result = cli("analyze", DIGITS, "-m", method, "--input", DIGITS_TEST, "--batch-size", "50",
                     "-o", tmp_path / f"{method}.npy")
        assert result.returncode == 0, result.stderr
        batched = np.load(tmp_path / f"{method}.npy")
        assert relative_error(batched, nnxplain.create_analyzer(method, str(DIGITS)).analyze(x)) < 1e-6
    result = cli("analyze", DIGITS, "-m", "smoothgrad", "--param", "noise=input", "--input", DIGITS_TEST,
                 "--batch-size", "50", "-o", tmp_path / "fed.npy")
    assert result.returncode == 0, result.stderr
    batched = np.load(tmp_path / "fed.npy")
    analyzer = nnxplain.create_analyzer("smoothgrad", str(DIGITS), noise="input")
    assert relative_error(batched[:50], analyzer.analyze(x[:50])) < 1e-6
    assert relative_error(batched[50:100], analyzer.analyze(x[50:100], batch_index=1)) < 1e-6
    assert relative_error(batched[50:100], analyzer.analyze(x[50:100])) > 1e-2  # its own noise


def test_labels_of_an_image_folder_select_the_explained_class(digits_pngs, tmp_path):
    folder, pixels, labels = digits_pngs
    result = cli("analyze", DIGITS, "-m", "gradient", "--neuron-selection", "index", "--input", folder,
                 "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    expected = nnxplain.create_analyzer("gradient", str(DIGITS), "index").analyze(pixels, neuron_selection=labels)
    assert relative_error(nnxplain.read_explanations(tmp_path / "out").values, expected) < 1e-6
    unlabelled = cli("analyze", DIGITS, "-m", "gradient", "--neuron-selection", "index", "--input", folder / "3",
                     "-o", tmp_path / "out2")
    assert unlabelled.returncode == 2 and "--neuron N, or data with labels" in unlabelled.stderr


def test_fit_and_evaluate_read_folders(digits_pngs, tmp_path):
    folder, pixels, _ = digits_pngs
    np.save(tmp_path / "x.npy", pixels)
    for data, name in ((folder, "a"), (tmp_path / "x.npy", "b")):
        fitted = cli("fit", DIGITS, "--data", data, "--batch-size", "100", "-o", tmp_path / f"{name}.npz")
        assert fitted.returncode == 0, fitted.stderr
    a, b = Patterns.load(tmp_path / "a.npz"), Patterns.load(tmp_path / "b.npz")
    assert a.samples == 360 and all(np.array_equal(a.rows[k], b.rows[k]) for k in a.rows)
    result = cli("evaluate", DIGITS, "-m", "gradient", "--data", folder, "--batch-size", "100",
                 "-o", tmp_path / "curves")
    assert result.returncode == 0, result.stderr
    assert "360 images, 2x2 regions, 16 steps" in result.stdout and (tmp_path / "curves.csv").exists()


def test_streamed_evaluation_equals_the_one_batch_evaluation_where_the_batch_is_the_data(tmp_path):
    from nnxplain.engine import evaluate as streamed
    from nnxplain.evaluate import evaluate
    x = np.load(DIGITS_TEST)["x"][:120]
    whole = evaluate(DIGITS, ["gradient", "smoothgrad"], x, progress=False, perturbation="gaussian")
    np.save(tmp_path / "x.npy", x)
    result, _ = streamed(DIGITS, ["gradient", "smoothgrad"], open_dataset(tmp_path / "x.npy"), batch_size=120,
                         perturbation="gaussian")
    for name in whole["aopc"]:
        assert abs(result["aopc"][name] - whole["aopc"][name]) <= 1e-9 * abs(whole["aopc"][name])


# ------------------------------------------------------------------------------------- bad data


def _folder_with(tmp_path, bad: dict) -> tuple:
    folder = random_pngs(tmp_path / "images", 20, side=8, mode="L")
    for name, content in bad.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            Image.fromarray(np.zeros(content, np.uint8), "L").save(path)
    return folder


@pytest.mark.parametrize("bad, message", [
    ({"00007.png": b"\x89PNG\r\n\x1a\n not really"}, "00007.png: not a readable image"),
    ({"00007.png": (9, 8)}, "00007.png: preprocessed to shape [1, 9, 8], but the model takes [1, 8, 8]; give "
                            "--preprocess imagenet, or --resize and --crop"),
    ({"notes.txt": b"hello"}, "notes.txt: not an image file"),
])
def test_a_bad_file_is_named_and_nothing_is_written(tmp_path, bad, message):
    folder = _folder_with(tmp_path, bad)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.json").write_text("{}")  # an earlier run's folder: left as it was
    for command in (["analyze", DIGITS, "-m", "gradient", "--input", folder, "--batch-size", "4",
                     "-o", tmp_path / "out"],
                    ["fit", DIGITS, "--data", folder, "-o", tmp_path / "p.npz"],
                    ["evaluate", DIGITS, "-m", "gradient", "--data", folder, "-o", tmp_path / "curves"]):
        result = cli(*command)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # no patterns, curves or temporaries
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["index.json"]

    skipping = cli("analyze", DIGITS, "-m", "gradient", "--input", folder, "--batch-size", "4", "--skip-bad",
                   "-o", tmp_path / "out")
    assert skipping.returncode == 0, skipping.stderr
    assert "skipped 1 bad file (listed in index.json)" in skipping.stdout
    out = nnxplain.read_explanations(tmp_path / "out")
    assert len(out) == 20 - (".png" in message) and len(out.meta["skipped"]) == 1
    fitted = cli("fit", DIGITS, "--data", folder, "--skip-bad", "-o", tmp_path / "p.npz")
    assert fitted.returncode == 0 and "skipped 1 bad file" in fitted.stdout


def test_empty_and_missing_data(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("analyze", DIGITS, "-m", "gradient", "--input", tmp_path / "empty", "-o", tmp_path / "out")
    assert result.returncode == 2 and "empty: the folder holds no images" in result.stderr
    result = cli("fit", DIGITS, "--data", tmp_path / "nothing", "-o", tmp_path / "p.npz")
    assert result.returncode == 2 and "nothing: no such file or folder" in result.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    result = cli("analyze", DIGITS, "-m", "gradient", "--input", DIGITS_TEST, "-o", tmp_path / "other")
    assert result.returncode == 2 and "the folder holds other files" in result.stderr
    assert not (tmp_path / "out").exists() and (tmp_path / "other" / "keep.txt").read_text() == "mine"
    with pytest.raises(NnxplainError, match="not an explanations folder"):
        nnxplain.read_explanations(tmp_path / "other")


# ------------------------------------------------------------------------------------- memory

# 2,000 random 64x64 RGB images and a small CNN (two strided convs, 8 and 16 channels): smoothgrad
# with 4 samples in batches of 16 peaks at about 120 MB of RSS (the interpreter, ONNX Runtime and one
# batch); the same run with all 2,000 images in one batch peaks near 1.9 GB (the noise alone is
# 4 x 2,000 x 48 KB, the activations of 8,000 copies more). 2,000 is enough to set the two apart by
# an order of magnitude while the test runs in under 15 s on 2 cores; fit (same images, batches of
# 16) stays near 100 MB.
IMAGES = 2000
BOUND_MB = 300


def _peak_rss_mb(tmp_path, *args) -> float:
    """The command's peak resident memory, in a fresh process: VmHWM, the high-water mark of its own
    memory (ru_maxrss would not do: a forked child starts from its parent's, this test process's)."""
    code = ("import re, sys; from nnxplain.cli import main; rc = main(sys.argv[1:]); "
            "print('peak', re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1]); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split("peak")[-1]) / 1024  # kB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_is_bounded_by_the_batch(tmp_path):
    folder = random_pngs(tmp_path / "images", IMAGES)
    model = small_cnn(tmp_path / "small.onnx")
    analyze = _peak_rss_mb(tmp_path, "analyze", model, "-m", "smoothgrad", "-p", "augment_by_n=4",
                           "--input", folder, "--batch-size", "16", "-o", tmp_path / "out")
    assert analyze < BOUND_MB, f"analyze peaked at {analyze:.0f} MB"
    assert len(nnxplain.read_explanations(tmp_path / "out", mmap=True).rows) == IMAGES
    fit = _peak_rss_mb(tmp_path, "fit", model, "--data", folder, "--batch-size", "16", "-o", tmp_path / "p.npz")
    assert fit < BOUND_MB, f"fit peaked at {fit:.0f} MB"
