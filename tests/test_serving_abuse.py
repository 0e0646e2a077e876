"""Hostile requests against the TF Serving-compatible server, REST and gRPC, on loopback.

A LeNet-5 export (uint8 ``image`` [-1, 32, 32, 1] and encoded ``image_bytes``) is served with small
limits (:class:`~kerascnn.serving.limits.ServingLimits`): 8 images per request, 64x64 pixels per
image, JSON 32 levels deep, 1 MiB bodies. First the defects of issue 12 one by one (a shape without
content, a batch over the limit, a JSON document 100,000 levels deep, images that decode to too
many pixels), then property-based abuse (``hypothesis``): malformed JSON, tensors, shapes, dtypes,
base64 and image headers, each answered with a 4xx and ``{"error": ...}`` (REST) or an
INVALID_ARGUMENT-class status (gRPC) within a time bound, the server still healthy afterwards.
Bounded: a few dozen examples per property, derandomized, no example database.
"""

import argparse
import base64
import io
import json
import shutil
import struct
import time
import zlib
from datetime import timedelta

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from test_serving import _export

SHAPE = (32, 32, 1)
LIMITS = dict(max_request_bytes=1 << 20, max_request_batch=8, max_image_pixels=64 * 64,
              max_json_depth=32)
#: every answer must come within this many seconds (a loaded 2-core machine included)
TIME_BOUND = 10.0
#: gRPC codes TF Serving maps to HTTP 400: what a bad request may get
BAD_REQUEST = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
               grpc.StatusCode.OUT_OF_RANGE}
ABUSE = settings(max_examples=40, deadline=timedelta(seconds=30), derandomize=True,
                 database=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large,
                                                       HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    import keras

    import kerascnn
    from kerascnn.serving.config import upsert_model_config
    root = tmp_path_factory.mktemp("abuse")
    keras.utils.set_random_seed(3)
    model = kerascnn.get_model("lenet5", num_classes=10, preprocessing="unit")
    _export(model, "lenet", root / "export", 1)
    config = root / "serving" / "models.config"
    shutil.copytree(ROOT / "serving", config.parent, ignore=shutil.ignore_patterns("*.py"))
    upsert_model_config(config, "lenet")
    return {"export_dir": root / "export", "config": config}


@pytest.fixture(scope="module")
def server(deployment):
    from kerascnn.serving.config import BatchingOptions
    from kerascnn.serving.limits import ServingLimits
    from kerascnn.serving.server import ModelServer
    batching = BatchingOptions(max_batch_size=4, batch_timeout_micros=1000, num_batch_threads=1,
                               enable_large_batch_splitting=True,
                               max_enqueued_batches=100)
    srv = ModelServer(deployment["config"], model_base_dir=deployment["export_dir"],
                      host="127.0.0.1", rest_port=None, grpc_port=None, batching=batching,
                      file_system_poll_seconds=5.0, limits=ServingLimits(**LIMITS))
    with srv:
        yield srv


@pytest.fixture(scope="module")
def rest(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=TIME_BOUND) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from kerascnn.serving.grpc_service import channel_options
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                               options=channel_options(8 << 20)) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


# --- helpers --------------------------------------------------------------------------------------

PREDICT = "/v1/models/lenet:predict"


def _post(rest, body: bytes):
    started = time.monotonic()
    response = rest.post(PREDICT, content=body)
    return response, time.monotonic() - started


def _assert_rest_refused(response, elapsed, status=None, needle=None):
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json", response.text[:300]
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    if needle is not None:
        assert needle in body["error"], body["error"]
    assert elapsed < TIME_BOUND


def _request(inputs: dict, signature=""):
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet"
    request.model_spec.signature_name = signature
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    return request


def _grpc_refused(stub, request, needle=None):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=TIME_BOUND)
    elapsed = time.monotonic() - started
    assert info.value.code() in BAD_REQUEST, (info.value.code(), info.value.details())
    assert info.value.details()
    if needle is not None:
        assert needle in info.value.details(), info.value.details()
    assert elapsed < TIME_BOUND
    return info.value.details()


def _proto(dtype="DT_UINT8", shape=(), content=None, **values):
    from tensorflow.core.framework import tensor_pb2, types_pb2
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype)
                                   if isinstance(dtype, str) else dtype)
    proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=d) for d in shape)
    if content is not None:
        proto.tensor_content = content
    for field, items in values.items():
        getattr(proto, field).extend(items)
    return proto


def _images(n=1):
    return np.random.default_rng(n).integers(0, 256, (n,) + SHAPE, dtype=np.uint8)


def _png(width, height, frames=1, fmt="PNG"):
    from PIL import Image
    images = [Image.new("L", (width, height), 40 * i) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, fmt, save_all=frames > 1, append_images=images[1:])
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_header(fmt: str, width: int, height: int, tail: bytes = b"") -> bytes:
    """A few bytes whose header declares a ``width`` x ``height`` image, with no pixel data."""
    if fmt == "PNG":
        return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                   0, 0, 0))
                + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + tail + _chunk(b"IEND", b""))
    if fmt == "JPEG":
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
        return b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9 + sof + tail
    if fmt == "GIF":
        return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
                + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
                + tail + b"\x3b")
    if fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
        return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info + tail
    if fmt == "WebP":
        vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + \
            (height - 1).to_bytes(3, "little")
        body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + vp8x + tail
        return b"RIFF" + struct.pack("<I", len(body)) + body
    raise ValueError(fmt)


def _healthy(rest, stub):
    """Status AVAILABLE, and a good request still answered over both APIs."""
    from kerascnn.serving.grpc_service import to_tensor_proto
    status = rest.get("/v1/models/lenet").json()["model_version_status"]
    assert [v["state"] for v in status] == ["AVAILABLE"]
    ok = rest.post(PREDICT, json={"instances": _images(2).tolist()})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
    png = base64.b64encode(_png(40, 24)).decode()
    ok = rest.post(PREDICT, json={"signature_name": "serving_bytes", "instances": [{"b64": png}]})
    assert ok.status_code == 200, ok.text
    reply = stub.Predict(_request({"image": to_tensor_proto(_images(3))}), timeout=TIME_BOUND)
    assert list(reply.outputs["probabilities"].tensor_shape.dim)[0].size == 3


# --- limits: defaults, flags, checks without a server ---------------------------------------------

def test_limits_have_defaults_for_224px_models_and_one_flag_each():
    from kerascnn.serving.limits import ServingLimits
    from kerascnn.serving.server import add_arguments
    limits = ServingLimits()
    assert (limits.max_request_bytes, limits.max_request_batch, limits.max_image_pixels,
            limits.max_json_depth) == (64 << 20, 256, 4096 * 4096, 100)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model-config", "m", "--max-request-batch", "9",
                              "--max-image-pixels", "1000", "--max-json-depth", "12",
                              "--max-request-bytes", "4096"])
    assert ServingLimits.from_args(args) == ServingLimits(4096, 9, 1000, 12)
    assert ServingLimits.from_args(parser.parse_args(["--model-config", "m"])) == limits
    for flag, value in (("max_request_batch", 0), ("max_image_pixels", -1),
                        ("max_json_depth", 1.5), ("max_request_bytes", True)):
        with pytest.raises(ValueError, match="--" + flag.replace("_", "-")):
            ServingLimits(**{flag: value})


def test_a_shape_needs_exactly_its_content():
    from kerascnn.serving.errors import ServingError
    from kerascnn.serving.grpc_service import check_tensor_proto, from_tensor_proto
    image = bytes(1024)
    assert check_tensor_proto(_proto(shape=(1, 32, 32, 1), content=image)) == (1, 32, 32, 1)
    assert from_tensor_proto(_proto(shape=(2, 2), int_val=[1, 2, 3, 4])).tolist() == [[1, 2],
                                                                                       [3, 4]]
    assert from_tensor_proto(_proto("DT_STRING", (0,))).shape == (0,)
    for proto, needle in [
        (_proto(shape=(50_000, 32, 32, 1)), "needs 51200000 values but int_val holds 0"),
        (_proto(shape=(10 ** 12,)), "needs 1000000000000 values"),
        (_proto(shape=(2, 32, 32, 1), content=image), "needs 2048 values but tensor_content"),
        (_proto(shape=(1, 32, 32, 1), content=image * 2), "holds 2048"),
        (_proto(shape=(3,), int_val=[7]), "needs 3 values but int_val holds 1"),
        (_proto("DT_FLOAT", (2,), float_val=[1, 2, 3]), "float_val holds 3"),
        (_proto("DT_FLOAT", (1,), content=b"\x00" * 6), "not a whole number"),
        (_proto("DT_STRING", (4,), string_val=[b"a"]), "string_val holds 1"),
        (_proto("DT_STRING", (1,), content=b"a"), "string_val, not tensor_content"),
        (_proto(shape=(-1, 32, 32, 1)), "negative dimension"),
        (_proto("DT_RESOURCE", (1,)), "cannot be sent"),
        (_proto(777, (1,)), "cannot be sent"),
    ]:
        with pytest.raises(ServingError) as info:
            from_tensor_proto(proto, "image")
        assert needle in info.value.message and info.value.code == grpc.StatusCode.INVALID_ARGUMENT


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
    st.text(alphabet="[]{}\"\\ab,:", max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(alphabet="[]{}\"\\ab", max_size=4), children, max_size=3),
    max_leaves=40)


def _depth(value):
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=60, deadline=timedelta(seconds=5), derandomize=True, database=None)
@given(value=json_values, indent=st.sampled_from([None, 1]))
def test_json_depth_counts_nesting_outside_strings(value, indent):
    from kerascnn.serving.limits import json_depth
    assert json_depth(json.dumps(value, indent=indent).encode()) == _depth(value)


@settings(max_examples=30, deadline=timedelta(seconds=5), derandomize=True, database=None)
@given(fmt=st.sampled_from(["JPEG", "PNG", "GIF", "BMP", "WEBP"]),
       width=st.integers(1, 300), height=st.integers(1, 300), frames=st.integers(1, 3))
def test_image_headers_agree_with_pillow(fmt, width, height, frames):
    from PIL import Image

    from kerascnn.serving.limits import image_header
    frames = frames if fmt in ("GIF", "WEBP") else 1
    data = _png(width, height, frames, fmt)
    kind, w, h, n = image_header(data)
    with Image.open(io.BytesIO(data)) as im:
        assert (kind.upper(), w, h, n) == (im.format, *im.size, getattr(im, "n_frames", 1))


# --- issue 12, items 5 to 7, over the wire --------------------------------------------------------

def test_grpc_shape_without_content_is_refused_before_any_work(stub, rest):
    from tensorflow.core.framework import types_pb2
    started = time.monotonic()
    for dims in ((50_000, 32, 32, 1), (2, 32, 32, 1), (10 ** 12, 32, 32, 1)):
        request = _request({"image": _proto(shape=dims)})
        assert request.ByteSize() < 64  # the 43-byte request of issue 12
        _grpc_refused(stub, request, "the content must match the shape")
    # too little and too much content, and a bytes batch with fewer strings than its shape
    _grpc_refused(stub, _request({"image": _proto(shape=(2, 32, 32, 1), content=bytes(1024))}),
                  "needs 2048 values")
    _grpc_refused(stub, _request({"image": _proto(shape=(1, 32, 32, 1), int_val=[0] * 1025)}),
                  "int_val holds 1025")
    _grpc_refused(stub, _request({"image_bytes": _proto(types_pb2.DT_STRING, (5,),
                                                        string_val=[_png(8, 8)])},
                                 "serving_bytes"), "needs 5 values but string_val holds 1")
    assert time.monotonic() - started < TIME_BOUND
    _healthy(rest, stub)


def test_batch_limit_applies_to_rest_and_grpc(rest, stub):
    from kerascnn.serving.grpc_service import to_tensor_proto
    needle = "at most 8 per request (--max-request-batch)"
    ok = rest.post(PREDICT, json={"instances": _images(8).tolist()})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 8
    _assert_rest_refused(*_post(rest, json.dumps({"instances": _images(9).tolist()}).encode()),
                         400, needle)
    _assert_rest_refused(*_post(rest, json.dumps({"inputs": {"image": _images(9).tolist()}})
                                .encode()), 400, "a batch of 9")
    png = {"b64": base64.b64encode(_png(8, 8)).decode()}
    _assert_rest_refused(*_post(rest, json.dumps({"signature_name": "serving_bytes",
                                                  "instances": [png] * 9}).encode()), 400, needle)
    assert len(stub.Predict(_request({"image": to_tensor_proto(_images(8))}),
                            timeout=TIME_BOUND).outputs["top_k_classes"].string_val) == 8 * 5
    _grpc_refused(stub, _request({"image": to_tensor_proto(_images(9))}), needle)
    _grpc_refused(stub, _request({"image_bytes": to_tensor_proto(np.array([_png(8, 8)] * 9,
                                                                          object))},
                                 "serving_bytes"), needle)


@pytest.mark.parametrize("opening, closing", [(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")])
def test_json_nested_100000_levels_is_a_400_in_tf_serving_format(rest, stub, opening, closing):
    body = b'{"instances": ' + opening * 100_000 + b"0" + closing * 100_000 + b"}"
    _assert_rest_refused(*_post(rest, body), 400, "32 levels deep, the server's limit "
                                                  "(--max-json-depth)")
    unclosed = b'{"instances": ' + opening * 100_000
    _assert_rest_refused(*_post(rest, unclosed), 400, "--max-json-depth")
    just_over = {"instances": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    _assert_rest_refused(*_post(rest, json.dumps(just_over).encode()), 400, "--max-json-depth")
    _healthy(rest, stub)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WebP"])
def test_a_header_declaring_20000x20000_is_refused_before_decoding(rest, stub, fmt):
    from kerascnn.serving.grpc_service import to_tensor_proto
    bomb = _huge_header(fmt, 20_000, 20_000)
    needle = ("20000x20000 " + fmt + " image, which decodes to 400000000 pixels: more than the "
              "server's limit of 4096 pixels per image (--max-image-pixels)")
    body = {"signature_name": "serving_bytes",
            "instances": [{"b64": base64.b64encode(_png(8, 8)).decode()},
                          {"b64": base64.b64encode(bomb).decode()}]}
    _assert_rest_refused(*_post(rest, json.dumps(body).encode()), 400,
                         "element 1 of input 'image_bytes' is a " + needle)
    _grpc_refused(stub, _request({"image_bytes": to_tensor_proto(np.array([bomb], object))},
                                 "serving_bytes"), needle)


def test_images_are_refused_above_the_pixel_limit_and_served_up_to_it(rest, stub):
    def post(data):
        return _post(rest, json.dumps({"signature_name": "serving_bytes", "instances": [
            {"b64": base64.b64encode(data).decode()}]}).encode())

    response, _ = post(_png(64, 64))
    assert response.status_code == 200, response.text
    _assert_rest_refused(*post(_png(65, 64)), 400, "65x64 PNG image, which decodes to 4160 pixels")
    _assert_rest_refused(*post(_png(30, 30, frames=5, fmt="GIF")), 400,
                         "30x30x5 frames GIF image, which decodes to at least 4500 pixels")
    _assert_rest_refused(*post(_png(65, 64, fmt="JPEG")), 400, "--max-image-pixels")
    _assert_rest_refused(*post(b"\x89PNG\r\n\x1a\n\x00"), 400, "cannot be read from its header")
    _healthy(rest, stub)


def test_oversized_bodies_and_odd_paths_keep_the_error_format(rest):
    _assert_rest_refused(*_post(rest, b" " * ((1 << 20) + 1)), 413, "--max-request-bytes")
    digits = b'{"instances": [[[[' + b"9" * 5000 + b"]]]]}"
    _assert_rest_refused(*_post(rest, digits), 400, "JSON Parse error")


# --- property-based abuse -------------------------------------------------------------------------

leaves = (st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.booleans() | st.none() |
          st.text(max_size=6) | st.fixed_dictionaries({"b64": st.text(max_size=8)}))
#: nested lists of small dimensions: never the [n, 32, 32, 1] a good request needs
tensors = st.recursive(leaves, lambda children: st.lists(children, max_size=4), max_leaves=24)
_MAGIC = (b"\xff\xd8", b"\x89P", b"GI", b"BM", b"RI")
#: encoded "images" that must all be refused: no image at all, or headers declaring too many pixels
garbage_images = st.one_of(
    st.binary(max_size=48).filter(lambda b: not b.startswith(_MAGIC)),
    st.tuples(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WebP"]), st.integers(65, 65_535),
              st.integers(65, 65_535), st.binary(max_size=16)).map(lambda t: _huge_header(*t)))
b64_garbage = (st.text(alphabet="ABCabc012+/-_=!. ", max_size=12)             # often not base64
               | garbage_images.map(lambda b: base64.b64encode(b).decode()))


def _doc(draw):
    kind = draw(st.sampled_from(["instances", "inputs", "both", "neither", "bytes", "json"]))
    if kind == "json":
        return draw(json_values)
    doc = {}
    if draw(st.booleans()):
        doc["signature_name"] = draw(st.sampled_from(["", "serving_default", "serving_bytes",
                                                      "nope", 7, None, ["x"]]))
    if kind == "bytes":
        doc["signature_name"] = "serving_bytes"
        items = draw(st.lists(b64_garbage, min_size=1, max_size=10))
        named = draw(st.booleans())
        doc["instances"] = [{"image_bytes": {"b64": s}} if named else {"b64": s} for s in items]
        return doc
    if kind in ("instances", "both"):
        doc["instances"] = draw(tensors | st.lists(st.dictionaries(
            st.sampled_from(["image", "image_bytes", "x"]), tensors, max_size=2), max_size=3))
    if kind in ("inputs", "both"):
        doc["inputs"] = draw(tensors | st.dictionaries(st.sampled_from(["image", "y"]), tensors,
                                                       max_size=2))
    return doc


@st.composite
def bodies(draw):
    way = draw(st.sampled_from(["doc", "doc", "doc", "truncated", "bytes", "deep"]))
    if way == "bytes":
        return draw(st.binary(max_size=64))
    if way == "deep":
        depth = draw(st.integers(33, 5000))
        open_, close = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ("[[", "]]")]))
        return ('{"instances": ' + open_ * depth + "1" + close * depth * draw(
            st.sampled_from([0, 1])) + "}").encode()
    body = json.dumps(_doc(draw)).encode()
    if way == "truncated" and len(body) > 1:
        body = body[:draw(st.integers(0, len(body) - 1))]
    return body


@ABUSE
@given(body=bodies())
def test_rest_abuse_gets_4xx_in_tf_serving_error_format(rest, body):
    _assert_rest_refused(*_post(rest, body))


DTYPES = ["DT_UINT8", "DT_FLOAT", "DT_STRING", "DT_INT64", "DT_BOOL", "DT_HALF", "DT_COMPLEX64",
          "DT_INVALID", "DT_RESOURCE", "DT_VARIANT", "DT_BFLOAT16", 1234]
dims = st.lists(st.integers(0, 4) | st.sampled_from([32, 1, -1, 50_000, 10 ** 12, 2 ** 62]),
                max_size=5)
_ONE = {"float_val": 1.0, "int_val": 1, "int64_val": 1, "bool_val": True, "half_val": 1,
        "scomplex_val": 1.0}
contents = st.one_of(
    st.just({}), st.binary(max_size=64).map(lambda b: {"content": b}),
    st.tuples(st.sampled_from(sorted(_ONE)), st.integers(0, 40))
      .map(lambda t: {t[0]: [_ONE[t[0]]] * t[1]}),
    st.lists(st.binary(max_size=24).map(lambda b: b"\x00" + b), max_size=10)
      .map(lambda v: {"string_val": v}))


@st.composite
def predict_requests(draw):
    signature = draw(st.sampled_from(["", "serving_default", "serving_bytes", "nope"]))
    keys = draw(st.lists(st.sampled_from(["image", "image_bytes", "x"]), max_size=2, unique=True))
    inputs = {}
    for key in keys:
        shape = draw(dims | st.integers(0, 3).map(lambda n: [n, 32, 32, 1]))
        inputs[key] = _proto(draw(st.sampled_from(DTYPES)), shape, **draw(contents))
    return _request(inputs, signature)


def _plausible(request) -> bool:
    """The right signature, input name and dtype: the rest may happen to be right too."""
    from tensorflow.core.framework import types_pb2
    want = {"": ("image", types_pb2.DT_UINT8), "serving_default": ("image", types_pb2.DT_UINT8),
            "serving_bytes": ("image_bytes", types_pb2.DT_STRING)}.get(
                request.model_spec.signature_name)
    return want is not None and list(request.inputs) == [want[0]] and \
        request.inputs[want[0]].dtype == want[1]


@ABUSE
@given(request=predict_requests())
def test_grpc_abuse_gets_invalid_argument_class_statuses(stub, request):
    if not _plausible(request):
        _grpc_refused(stub, request)
        return
    started = time.monotonic()
    try:  # a zero-size batch of the right shape is a valid request
        stub.Predict(request, timeout=TIME_BOUND)
    except grpc.RpcError as exc:
        assert exc.code() in BAD_REQUEST and exc.details(), (exc.code(), exc.details())
    assert time.monotonic() - started < TIME_BOUND


@ABUSE
@given(items=st.lists(garbage_images, min_size=1, max_size=9))
def test_grpc_bytes_abuse_is_refused(stub, items):
    from kerascnn.serving.grpc_service import to_tensor_proto
    _grpc_refused(stub, _request({"image_bytes": to_tensor_proto(np.array(items, object))},
                                 "serving_bytes"))


def test_the_server_is_healthy_after_the_abuse(rest, stub):
    _healthy(rest, stub)
    errors = [line for line in rest.get("/monitoring/prometheus/metrics").text.splitlines()
              if line.startswith(":tensorflow:serving:request_count_total") and
              ('status="INTERNAL"' in line or 'status="UNKNOWN"' in line)]
    assert errors == []
