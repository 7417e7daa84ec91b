"""A Keras model converted to ONNX with tf2onnx (NHWC layout: the converter puts a Transpose first).

Needs TensorFlow and tf2onnx, which the test environment does not have; run it in an environment of
its own (tensorflow-cpu 2.21 and tf2onnx 1.17 on Python 3.11 were used):

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf2onnx
    /tmp/tfvenv/bin/python models/keras_convert.py

Writes models/archs/keras_cnn.onnx and models/archs/keras_cnn_ref.npz: a seeded input batch `x` and
the Keras model's logits on it (tests/test_architectures.py checks the conversion with them, without
TensorFlow; the explainer's gradient is checked against float64 finite differences of the converted
graph, as tf.GradientTape returned no gradient at all, even for x * 2, in the TensorFlow 2.21
install used).
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

OUT = Path(__file__).resolve().parent / "archs"
SHAPE = (16, 16, 3)  # NHWC


def build() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input(SHAPE, name="input")
    x = tf.keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.MaxPooling2D(2)(x)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = tf.keras.layers.ReLU(max_value=6.0)(x)
    x = tf.keras.layers.Conv2D(16, 1, strides=2)(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dense(16, activation="tanh")(x)
    out = tf.keras.layers.Dense(5, name="logits")(x)
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-zero biases and BatchNorm statistics, so that they are really tested
        weights = layer.get_weights()
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
        elif len(weights) == 2:
            layer.set_weights([weights[0], rng.uniform(-0.2, 0.2, weights[1].shape)])
    return model


def main():
    model = build()
    spec = (tf.TensorSpec((None, *SHAPE), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    path = OUT / "keras_cnn.onnx"
    onnx.save(proto, str(path))
    x = np.random.default_rng(1).normal(size=(4, *SHAPE)).astype(np.float32)
    logits = model(tf.constant(x), training=False).numpy()
    np.savez(OUT / "keras_cnn_ref.npz", x=x, logits=logits)
    print(f"wrote {path} ({[n.op_type for n in proto.graph.node]}, output {proto.graph.output[0].name}), "
          f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}")


if __name__ == "__main__":
    main()
