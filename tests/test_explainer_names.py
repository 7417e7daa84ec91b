"""A compiled explainer reads in a graph viewer: every node it adds is named
`<method>/<model node>/<rule>/<Op>_<n>` (sampling methods: `<method>/s<block>/<model node>/<rule>/...`),
so Netron shows which method, which model node and which rule each backward node serves."""
import onnx
import onnx_graphsurgeon as gs

import nnxplain
from nnxplain.canonicalize import canonicalize
from nnxplain.compiler import explained_inputs, explained_output
from nnxplain.load import load
from nnxplain.methods import load_method, positions

from conftest import ZOO_DIR

METHODS = ["lrp.epsilon", "lrp.sequential_preset_a", "gradient", "smoothgrad"]


def test_every_backward_node_names_its_method_model_node_and_rule():
    path = ZOO_DIR / "lenet_bn.onnx"
    model = nnxplain.compile(str(path), METHODS, params={"smoothgrad.augment_by_n": 4, "smoothgrad.chunk": 2})
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names) and all(names), "names are unique and none is empty"
    onnx.checker.check_model(model, full_check=True)

    graph = gs.import_onnx(canonicalize(load(path)))
    where = positions(graph, explained_inputs(graph), explained_output(graph, None))
    model_nodes = {n.name.strip("/"): n for n in graph.nodes}
    served = {}  # (method, model node) -> the rules named
    for name in names:
        method = next((m for m in METHODS if name.startswith(m + "/")), None)
        if method is None:
            assert name.strip("/") in model_nodes or name.startswith("nnx/"), \
                f"'{name}': a node of the model, or one shared by all methods (the neuron selection)"
            continue
        rest = name[len(method) + 1:]
        if method == "smoothgrad":
            block, _, rest = rest.partition("/")
            if block == "noise" or not block.startswith("s"):
                continue  # the noise generator, and the sum over the blocks
            if rest.startswith("forward/"):
                assert rest[len("forward/"):] in model_nodes, f"'{name}': a copy of a model node"
                continue
        node = next((n for key, n in model_nodes.items() if rest.startswith(key + "/")), None)
        if node is None:
            continue  # the method's own steps (times the input, the output); named by the method all the same
        rule = rest[len(node.name.strip("/")) + 1:].split("/")[0]
        served.setdefault((method, node.name), set()).add(rule)

    layers = [n for n in graph.nodes if n.op in ("Conv", "Gemm", "MatMul")]
    assert len(layers) >= 3
    for method_name in METHODS:
        method = load_method(method_name)
        base = method.base_method() if method.kind == "sampling" else method
        assert all((method_name, n.name) in served for n in layers), \
            f"{method_name}: each linear layer's backward nodes are named after it"
        for node in graph.nodes:
            if (method_name, node.name) in served:
                assert served[(method_name, node.name)] == {base.rule_for(node, where)[0]}, \
                    f"{method_name}: the nodes serving '{node.name}' name the rule the method applies there"
