"""`nnxplain bench`: a row per method with compile time, explainer / forward, peak memory and, with a
torch twin, Captum's time on the same weights."""
from nnxplain.bench import bench, table
from nnxplain.cli import main

from conftest import ZOO_DIR


def test_bench_measures_every_method_and_captum(capsys):
    from models.zoo import twin_of
    path = str(ZOO_DIR / "digits_cnn.onnx")
    result = bench(path, ["gradient", "integrated_gradients"], batch=4, repeats=2, params={"steps": 4},
                   twin=twin_of(path), progress=False)
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"gradient", "integrated_gradients"}
    for row in rows.values():
        assert row["compile_s"] > 0 and row["ms"] > 0 and row["ratio"] > 0 and row["peak_mb"] > 0
        assert row["captum_ms"] > 0 and row["captum_vs_nnxplain"] > 0
    text = table(result)
    assert "integrated_gradients" in text and "captum/nnx" in text


def test_cli_bench_prints_the_table(capsys):
    assert main(["bench", str(ZOO_DIR / "mlp.onnx"), "-m", "gradient", "--repeats", "1", "--no-memory",
                 "--torch", "models.zoo:twin_of"]) == 0
    out = capsys.readouterr().out
    assert "gradient" in out and "x forward" in out
    assert main(["bench", str(ZOO_DIR / "mlp.onnx"), "--torch", "nowhere"]) == 2
    assert "give MODULE:FUNCTION" in capsys.readouterr().err
