"""TF Serving's gRPC API (serving-protocol.md §2) on the servicers of ``tensorflow-serving-api``.

``PredictionService`` (Predict, GetModelMetadata; Classify and Regress answer as TF Serving does
for the predict-only signatures Keras exports) and ``ModelService`` (GetModelStatus,
HandleReloadConfigRequest), as ``grpc.aio`` coroutines on the server's event loop.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from .core import ServingCore, model_metadata_response, model_status_response
from .errors import ServingError, failed_precondition, invalid

__all__ = ["PredictionServicer", "ModelServicer", "add_servicers", "channel_options",
           "to_tensor_proto", "from_tensor_proto"]

_NUMERIC = {np.dtype(k): types_pb2.DataType.Value(v) for k, v in {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF", "int8": "DT_INT8",
    "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64", "uint8": "DT_UINT8",
    "uint16": "DT_UINT16", "uint32": "DT_UINT32", "uint64": "DT_UINT64", "bool": "DT_BOOL"}.items()}
_BY_ENUM = {v: k for k, v in _NUMERIC.items()}


def to_tensor_proto(array):
    """ndarray -> TensorProto: raw ``tensor_content`` for numbers, ``string_val`` for bytes.

    The same encoding ``tf.make_tensor_proto`` produces, without its per-call checks, which cost
    more than the rest of a small model's request.
    """
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto()
    proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=d) for d in array.shape)
    if array.dtype == object or array.dtype.kind in "SU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode()
                                for v in array.ravel().tolist())
    else:
        dtype = _NUMERIC.get(array.dtype.newbyteorder("="))
        if dtype is None:
            import tensorflow as tf
            return tf.make_tensor_proto(array)
        proto.dtype = dtype
        proto.tensor_content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"),
                                                                  copy=False).tobytes()
    return proto


def from_tensor_proto(proto):
    """TensorProto -> ndarray, reading ``tensor_content`` without a copy when it is set."""
    if proto.tensor_content:
        dtype = _BY_ENUM.get(proto.dtype)
        if dtype is not None:
            shape = [d.size for d in proto.tensor_shape.dim]
            array = np.frombuffer(proto.tensor_content, dtype.newbyteorder("<"))
            if array.size != int(np.prod(shape)):
                raise invalid(f"tensor_content holds {array.size} values but tensor_shape "
                              f"{shape} needs {int(np.prod(shape))}")
            return array.reshape(shape)
    import tensorflow as tf
    return tf.make_ndarray(proto)


def channel_options(max_bytes: int) -> list[tuple[str, int]]:
    """Message size options for large image batches (the Python default receive limit is 4 MB)."""
    return [("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes)]


def _version_of(spec):
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    async def Predict(self, request, context):
        spec, started, status = request.model_spec, time.perf_counter(), "OK"
        try:
            servable = self.core.resolve(spec.name, *_version_of(spec))
            sig = self.core.signature(servable, spec.signature_name, api="grpc")
            try:
                inputs = {name: from_tensor_proto(proto) for name, proto in request.inputs.items()}
            except (TypeError, ValueError) as exc:
                raise invalid(f"Could not read the input tensors: {exc}") from None
            unknown = [o for o in request.output_filter if o not in sig.outputs]
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {unknown[0]} Outputs "
                              f"expected to be in the set {{{','.join(sorted(sig.outputs))}}}.")
            outputs = await self.core.predict(servable, sig, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.key
            for name, value in outputs.items():
                if not request.output_filter or name in request.output_filter:
                    response.outputs[name].CopyFrom(to_tensor_proto(value))
            return response
        except ServingError as exc:
            status = exc.code_name
            await context.abort(exc.code, exc.message)
        finally:
            self.core.observe(spec.name, "predict", "GRPC", status, started)

    async def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for field in fields:
                if field != "signature_def":
                    raise invalid(f"Metadata field {field} is not supported")
            spec = request.model_spec
            return model_metadata_response(self.core.resolve(spec.name, *_version_of(spec)))
        except ServingError as exc:
            await context.abort(exc.code, exc.message)

    async def _unsupported(self, request, context, kind: str, verb: str):
        try:
            spec = request.model_spec
            servable = self.core.resolve(spec.name, *_version_of(spec))
            sig = self.core.signature(servable, spec.signature_name, api="grpc")
            raise failed_precondition(f"Expected {kind} signature method_name to be "
                                      f"tensorflow/serving/{verb}. Was: {sig.method_name}")
        except ServingError as exc:
            await context.abort(exc.code, exc.message)

    async def Classify(self, request, context):
        return await self._unsupported(request, context, "classification", "classify")

    async def Regress(self, request, context):
        return await self._unsupported(request, context, "regression", "regress")

    async def MultiInference(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "MultiInference needs classify/regress signatures, which Keras exports "
                            "do not have; use Predict")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    async def GetModelStatus(self, request, context):
        try:
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            return model_status_response(self.core.manager.status(spec.name, version))
        except ServingError as exc:
            await context.abort(exc.code, exc.message)

    async def HandleReloadConfigRequest(self, request, context):
        """Serve exactly ``request.config`` (models not in it are unloaded), then reply."""
        from .config import ConfigError, parse_model_server_config
        from google.protobuf import text_format
        response = model_management_pb2.ReloadConfigResponse()
        try:
            config = parse_model_server_config(text_format.MessageToString(request.config),
                                               "ReloadConfigRequest.config")
        except ConfigError as exc:
            response.status.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            response.status.error_message = str(exc)
            return response
        manager = self.core.manager
        await self.core.in_thread(lambda: (manager.set_config(config), manager.poll()))
        response.status.error_code = 0
        return response


def add_servicers(server, core: ServingCore) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core),
                                                                        server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
