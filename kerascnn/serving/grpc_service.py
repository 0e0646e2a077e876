"""TF Serving's gRPC API (serving-protocol.md §2) on the servicers of ``tensorflow-serving-api``.

``PredictionService`` (Predict, GetModelMetadata; Classify and Regress answer as TF Serving does
for the predict-only signatures Keras exports) and ``ModelService`` (GetModelStatus,
HandleReloadConfigRequest), as ``grpc.aio`` coroutines on the server's event loop.
"""

from __future__ import annotations

import logging
import math
import time

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from .core import ServingCore, model_metadata_response, model_status_response
from .errors import ServingError, failed_precondition, invalid

__all__ = ["PredictionServicer", "ModelServicer", "add_servicers", "channel_options",
           "to_tensor_proto", "from_tensor_proto", "check_tensor_proto"]

log = logging.getLogger("kerascnn.serving")

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


#: Where a TensorProto without ``tensor_content`` keeps its values, and how many per element.
_VALUE_FIELDS = {types_pb2.DataType.Value(k): v for k, v in {
    "DT_FLOAT": ("float_val", 1), "DT_DOUBLE": ("double_val", 1), "DT_INT32": ("int_val", 1),
    "DT_INT16": ("int_val", 1), "DT_INT8": ("int_val", 1), "DT_UINT8": ("int_val", 1),
    "DT_UINT16": ("int_val", 1), "DT_INT64": ("int64_val", 1), "DT_UINT32": ("uint32_val", 1),
    "DT_UINT64": ("uint64_val", 1), "DT_BOOL": ("bool_val", 1), "DT_HALF": ("half_val", 1),
    "DT_BFLOAT16": ("half_val", 1), "DT_STRING": ("string_val", 1),
    "DT_COMPLEX64": ("scomplex_val", 2), "DT_COMPLEX128": ("dcomplex_val", 2)}.items()}
_ITEMSIZE = {types_pb2.DT_HALF: 2, types_pb2.DT_BFLOAT16: 2, types_pb2.DT_COMPLEX64: 8,
             types_pb2.DT_COMPLEX128: 16, **{v: k.itemsize for k, v in _NUMERIC.items()}}
_MAX_RANK = 64  # NumPy's; TensorFlow allows 254, no signature here needs more than 4


def _dtype_text(dtype: int) -> str:
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def check_tensor_proto(proto, name: str = "") -> tuple[int, ...]:
    """The shape of ``proto`` once its content is known to hold exactly that many values.

    TensorFlow would fill a TensorProto whose content is short (or empty) by repeating its last
    value (or zeros), so a few bytes could ask for any number of images; here the content must
    match the shape, which bounds every allocation by the message size. Raises INVALID_ARGUMENT.
    """
    what = f"input '{name}'" if name else "the tensor"
    dims = proto.tensor_shape.dim
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"{what}: tensor_shape has unknown_rank set; a request tensor needs its "
                      "full shape")
    if len(dims) > _MAX_RANK:
        raise invalid(f"{what}: tensor_shape has {len(dims)} dimensions, more than {_MAX_RANK}")
    shape = tuple(d.size for d in dims)
    if any(d < 0 for d in shape):
        raise invalid(f"{what}: tensor_shape [{','.join(map(str, shape))}] has a negative "
                      "dimension; every dimension of a request tensor must be known")
    needed = math.prod(shape)
    if proto.dtype not in _VALUE_FIELDS:
        raise invalid(f"{what}: dtype {_dtype_text(proto.dtype)} cannot be sent in a request")
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise invalid(f"{what}: a DT_STRING tensor keeps its values in string_val, not "
                          "tensor_content")
        size = _ITEMSIZE[proto.dtype]
        if len(proto.tensor_content) % size:
            raise invalid(f"{what}: tensor_content has {len(proto.tensor_content)} bytes, not a "
                          f"whole number of {_dtype_text(proto.dtype)} values ({size} bytes)")
        held, where = len(proto.tensor_content) // size, "tensor_content"
    else:
        where, per = _VALUE_FIELDS[proto.dtype]
        held = len(getattr(proto, where)) // per
        if len(getattr(proto, where)) % per:
            raise invalid(f"{what}: {where} holds {len(getattr(proto, where))} numbers, not a "
                          f"whole number of complex values")
    if held != needed:
        raise invalid(f"{what}: tensor_shape [{','.join(map(str, shape))}] needs {needed} values "
                      f"but {where} holds {held}; the content must match the shape")
    return shape


def from_tensor_proto(proto, name: str = ""):
    """TensorProto -> ndarray after :func:`check_tensor_proto`; ``tensor_content`` is not copied."""
    shape = check_tensor_proto(proto, name)
    if proto.tensor_content:
        dtype = _BY_ENUM.get(proto.dtype)
        if dtype is not None:
            return np.frombuffer(proto.tensor_content, dtype.newbyteorder("<")).reshape(shape)
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
                inputs = {name: from_tensor_proto(proto, name)
                          for name, proto in request.inputs.items()}
            except (TypeError, ValueError, OverflowError) as exc:
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
        except Exception as exc:  # noqa: BLE001 (a bug: answer INTERNAL, as TF Serving would)
            status = "INTERNAL"
            log.exception("Predict failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
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
