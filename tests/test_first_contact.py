"""What a new user meets first: the command list, --version, aligned tables, names of missing files and
misspelled methods, output names that say what a file is, evaluate's region, ONNX Runtime's logging
(per session, never the process-wide default; nothing on the user's screen while nnxplain compiles and
runs), bench from any folder and the reason Captum is not timed."""
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnxplain
from nnxplain import runtime
from nnxplain.cli import main

from conftest import ZOO_DIR

DIGITS = ZOO_DIR / "digits_cnn.onnx"
TEST = ZOO_DIR / "digits_test.npz"


def nnx(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nnxplain", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


# ------------------------------------------------------------------ the command line itself

def test_bare_nnxplain_lists_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("compile", "analyze", "fit", "evaluate", "bench", "prototype", "methods", "support"):
        assert f"    {command}" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"nnxplain {_installed_version()}"


def _installed_version():
    from importlib.metadata import version
    return version("nnxplain")


def test_methods_are_aligned_whatever_the_name_length(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in lines}
    assert len(starts) == 1  # every description starts in the same column
    names = [line.split()[0] for line in lines]
    assert "deep_taylor.bounded.conservative" in names and {"occlusion", "lime"} <= set(names)


def test_support_is_narrow_and_its_columns_align(capsys):
    assert main(["support", str(DIGITS)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.split("methods:")[0].splitlines()) < 120
    assert main(["support", str(ZOO_DIR / "resnet.onnx"), "-m", "deep_taylor", "-m", "lrp.epsilon"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:3] == ["node", "op", "adapter"])
    table = lines[head:lines.index("methods:")]
    for column in ("op", "adapter", "deep_taylor", "lrp.epsilon"):
        start = table[0].index(f" {column}") + 1
        assert all(row[start - 1] == " " and row[start] != " " for row in table[1:]), column
    verdicts = lines[lines.index("methods:") + 1:]
    assert len({line.index("applicable") for line in verdicts}) == 1


def test_a_pipe_that_closes_early_is_no_error():
    done = subprocess.run(f"{sys.executable} -m nnxplain methods | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith("attn_lrp")


# ------------------------------------------------------------------ names: methods, files, parameters

def test_a_missing_rules_file_is_named_as_such(tmp_path, capsys):
    assert main(["compile", str(DIGITS), "--rules", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"--rules {tmp_path / 'nope.toml'}: no such file" in err and "unknown method" not in err
    with pytest.raises(nnxplain.NnxplainError, match="method file 'nope.toml' does not exist"):
        nnxplain.compile(DIGITS, ["nope.toml"])


def test_a_misspelled_method_gets_the_closest_name_and_the_list_has_occlusion_and_lime(tmp_path, capsys):
    assert main(["analyze", str(DIGITS), "-m", "lrp.epsilno", "-i", str(TEST), "-o", str(tmp_path / "r.npy")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'lrp.epsilno'; did you mean 'lrp.epsilon'?" in err
    assert "with analyze and evaluate also lime, occlusion" in err
    assert main(["compile", str(DIGITS), "-m", "occlusion", "-o", str(tmp_path / "e.onnx")]) == 2
    assert "method 'occlusion' runs the model on perturbed copies and has no compiled graph: use it with " \
           "`nnxplain analyze` or `nnxplain evaluate`" in capsys.readouterr().err


def test_an_unknown_parameter_lists_the_valid_ones(tmp_path, capsys):
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-m", "occlusion", "-p", "epsilon=0.1", "-i", str(TEST),
                 "--select", "0-1", "--grid", str(tmp_path / "g.png")]) == 2
    assert "parameter 'epsilon' belongs to none of the methods (gradient: postprocess; occlusion: fill, patch, " \
           "stride)" in capsys.readouterr().err


@pytest.mark.parametrize("command, out, message", [
    (["compile", str(DIGITS), "-m", "gradient"], "c.npy", "the explainer (an ONNX model) is written as .onnx"),
    (["fit", str(DIGITS), "--data", str(ZOO_DIR / "digits_train.npz")], "f.txt",
     "the patterns file (an npz archive) is written as .npz"),
])
def test_outputs_must_be_named_as_what_they_are(tmp_path, capsys, command, out, message):
    assert main(command + ["-o", str(tmp_path / out)]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / out).exists()


def test_an_explainer_given_as_patterns_is_named_without_numpy_pickle_talk(tmp_path, capsys):
    explainer = tmp_path / "explainer.onnx"
    onnx.save(nnxplain.compile(DIGITS, ["gradient"]), explainer)
    assert main(["analyze", str(DIGITS), "-m", "pattern.net", "--patterns", str(explainer), "-i", str(TEST),
                 "-o", str(tmp_path / "r.npy")]) == 2
    err = capsys.readouterr().err
    assert "not a patterns file written by `nnxplain fit` (neither .npy nor .npz)" in err and "pickle" not in err


@pytest.mark.parametrize("region, message", [
    ("100", r"region 100 splits 8x8 images into 1 region\(s\); .* needs at least 4 \(region at most 7 pixels here\)"),
    ("0", "region must be at least 1 pixel, got 0"),
])
def test_evaluate_refuses_a_region_that_makes_aopc_meaningless(tmp_path, capsys, region, message):
    import re
    assert main(["evaluate", str(DIGITS), "-m", "gradient", "--data", str(TEST), "--region", region,
                 "-o", str(tmp_path / "p")]) == 2
    assert re.search(message, capsys.readouterr().err)


# ------------------------------------------------------------------ bench

def test_bench_finds_the_zoo_twin_from_any_folder_and_says_why_captum_is_not_timed(tmp_path):
    done = nnx("bench", ZOO_DIR / "digits_cnn.onnx", "-m", "gradient", "-m", "lrp.epsilon", "-m", "lrp.w_square",
               "--repeats", "1", "--no-memory", "--torch", "models.zoo:twin_of", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "captum ms" in done.stdout  # the twin was found from tmp_path, and Captum timed the gradient
    note = done.stdout.strip().splitlines()[-1]
    assert note.startswith("Captum not timed (-): ") and "lrp.w_square: no Captum counterpart" in note
    assert "lrp.epsilon: Captum failed: " in note  # Captum's LRP has no rule for the twin's Flatten


# ------------------------------------------------------------------ ONNX Runtime's log

def model_with_unused_initializer():
    """ONNX Runtime warns when it loads this model (an initializer no node uses) through the logger
    of a session created without options, whose severity is the process-wide default's."""
    unused = numpy_helper.from_array(np.ones(2, np.float32), "unused")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [unused])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_the_users_own_sessions_still_log_after_nnxplain_ran(tmp_path):
    onnx.save(model_with_unused_initializer(), tmp_path / "m.onnx")
    script = (f"import numpy as np, nnxplain, onnxruntime as ort\n"
              f"nnxplain.create_analyzer('gradient', {str(DIGITS)!r}).analyze(np.zeros((1, 1, 8, 8), np.float32))\n"
              f"ort.InferenceSession({str(tmp_path / 'm.onnx')!r}, providers=['CPUExecutionProvider'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Removing initializer 'unused'" in done.stderr  # nnxplain did not silence the process


def unsqueeze_model():
    """A constant Unsqueeze that ONNX Runtime's optimizer cannot remove (its input has two users): it
    logs a warning when onnx-graphsurgeon folds the constants with a session of its own."""
    c = numpy_helper.from_array(np.ones(4, np.float32), "C")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("Unsqueeze", ["C", "axes"], ["c0"], name="u0"),
             helper.make_node("Unsqueeze", ["C", "axes"], ["c1"], name="u1"),
             helper.make_node("Add", ["c0", "c1"], ["c2"], name="a0"),
             helper.make_node("Add", ["input", "c2"], ["h"], name="add"),
             helper.make_node("Relu", ["h"], ["out"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])], [c, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_compile_and_analyze_print_nothing_from_onnx_runtime(tmp_path):
    onnx.save(unsqueeze_model(), tmp_path / "u.onnx")
    done = nnx("compile", tmp_path / "u.onnx", "-m", "gradient", "-o", tmp_path / "e.onnx")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    done = nnx("analyze", tmp_path / "u.onnx", "-m", "gradient", "-i", tmp_path / "x.npy", "-o", tmp_path / "r.npy")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_cuda_that_does_not_load_on_a_gpu_machine_is_one_warning(monkeypatch, capfd):
    """Where a GPU is visible, whether CUDA loads is found out once with a small session whose log is
    caught: CUDA in use, or else one warning naming what is missing and nothing from ONNX Runtime."""
    monkeypatch.setattr(runtime, "gpu_present", lambda: True)
    monkeypatch.setattr(runtime, "_cuda_works", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = runtime.session(str(DIGITS))
        runtime.session(str(DIGITS))
    err = capfd.readouterr().err
    assert "onnxruntime" not in err, err
    if "CUDAExecutionProvider" in sess.get_providers():  # a machine where CUDA works
        assert not caught
    else:
        assert len(caught) == 1 and "CUDA provider did not load" in str(caught[0].message)
        assert "onnxruntime-gpu[cuda,cudnn]" in str(caught[0].message)


def test_no_cuda_is_asked_for_without_a_gpu(monkeypatch, capfd):
    monkeypatch.setattr(runtime, "gpu_present", lambda: False)
    monkeypatch.setattr(runtime, "_cuda_works", None)
    assert runtime.session(str(DIGITS)).get_providers() == ["CPUExecutionProvider"]
    assert capfd.readouterr().err == ""
