"""The ONNX file of an export: tf2onnx conversion, its memory workaround, and the parity check.

``model.onnx`` is converted by tf2onnx (opset 17, dynamic batch, the same uint8 input), checked
with ``onnx.checker`` and run in onnxruntime: the export fails unless onnxruntime and Keras agree
to within 1e-4 on real images (serving-protocol.md §5: a graph can "convert" and still not load).
"""

from __future__ import annotations

import numpy as np

from ..errors import ExportError
from . import savedmodel
from .savedmodel import trace

__all__ = ["convert_to_onnx", "onnx_parity", "ONNX_OPSET", "ONNX_FILE"]

ONNX_OPSET = 17             # tf2onnx 1.17 supports up to 18; 17 is the project's pin (§5)
ONNX_FILE = "model.onnx"


def convert_to_onnx(model, opset: int = ONNX_OPSET):
    """The uint8 ``image`` -> ``probabilities`` graph as a checked ONNX ModelProto (batch ``N``).

    Only the tensor path: the string decoder has no ONNX equivalent (§5). ``from_keras`` breaks on
    Keras 3 and ``from_function`` turns captured constants (the mean and variance of
    ``preprocess_normalize``) into extra graph inputs, so the function is frozen here and handed
    to ``from_graph_def``.

    tf2onnx needs some 40 bytes of memory per byte of constants it converts (it copies the graph
    around each of its optimizers): ~23 GB for VGG-16. So the convolution and dense kernels are
    traced as graph inputs instead (``keras.StatelessScope``) and put in as initializers after the
    conversion (:func:`_weights_as_initializers`): ResNet-50 converts in 1 GB and seconds.
    """
    import logging

    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    tf2onnx.logging.set_level(logging.ERROR)
    height, width, channels = (int(d) for d in model.input.shape[1:])
    kernels = [w for w in model.weights if len(w.shape) >= 2]
    specs = [tf.TensorSpec([None, height, width, channels], tf.uint8, name="image"),
             *(tf.TensorSpec(w.shape, w.dtype, name=f"kernel_{i}") for i, w in enumerate(kernels))]

    @tf.function(input_signature=specs)
    def probabilities(image, *values):
        with keras.StatelessScope(state_mapping=list(zip(kernels, values))):
            return model(image, training=False)

    concrete = trace(probabilities, model)
    names = ["image"]
    for w in kernels:  # the Keras weight paths, made unique (nested models may repeat them)
        names.append(w.path if w.path not in names else f"{w.path}_{len(names)}")
    try:
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False,
                                                   aggressive_inlining=True)
        inputs, (out,) = [t.name for t in frozen.inputs], frozen.outputs
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(add_shapes=True), name=model.name, input_names=inputs,
            output_names=[out.name], opset=opset,
            tensors_to_rename={**dict(zip(inputs, names)), out.name: "probabilities"})
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert the model to ONNX (opset {opset}): "
                          f"{type(exc).__name__}: {exc}; export with --formats savedmodel"
                          ) from None
    _weights_as_initializers(proto, {name: np.asarray(w.numpy())
                                     for name, w in zip(names[1:], kernels)})
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX model is invalid: {exc}") from None
    return proto


def _weights_as_initializers(proto, weights: dict) -> None:
    """Turn the graph inputs named in ``weights`` into initializers holding their values.

    tf2onnx transposes each convolution kernel (HWIO -> OIHW) with a Transpose node on the input;
    those are applied here, so the file holds ready kernels as a normal conversion would.
    """
    from onnx import helper, numpy_helper

    uses = {}
    for node in proto.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    folded, renamed, kept = {}, {}, []
    for node in proto.graph.node:
        source = node.input[0] if node.input else None
        if node.op_type == "Transpose" and source in weights and uses[source] == 1:
            perm = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "perm")
            folded[source] = np.ascontiguousarray(np.transpose(weights[source], perm))
            renamed[node.output[0]] = source  # the kernel keeps its Keras name, now in OIHW
        else:
            kept.append(node)
    for node in kept:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    used = {name for node in kept for name in node.input}
    values = {name: folded.get(name, value) for name, value in weights.items() if name in used}
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    image = [value for value in proto.graph.input if value.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(image)
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())


def onnx_parity(proto, model, images: np.ndarray) -> float:
    """Run the ONNX model in onnxruntime on ``images``: max |p_onnx - p_keras|.

    The whole batch goes through at once, which also proves the batch dimension is dynamic.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        (got,) = session.run(["probabilities"], {"image": images})
    except Exception as exc:  # ORT refuses graphs that tf2onnx "converted" (§5)
        raise ExportError(f"onnxruntime cannot run the converted model: {type(exc).__name__}: "
                          f"{exc}; export with --formats savedmodel") from None
    return float(np.max(np.abs(got - savedmodel.keras_probabilities(model, images))))
