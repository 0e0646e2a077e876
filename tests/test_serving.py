"""The TF Serving-compatible server end to end, on loopback, against real exports.

A ResNet-20 (CIFAR-10 classes, uint8 input) goes through the project's own export
(``kerascnn.export.export_model``) and registration (``upsert_model_config``); the server runs
in-process with batching on; requests carry real CIFAR-10 JPEGs. Predictions must equal the Keras
model's, every error of serving-protocol.md §1.5 must come back as TF Serving gives it, a version
dropped in under load must cost zero requests, and SIGTERM must let a request in flight finish.
"""

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout

import grpc
import httpx
import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
SHAPE = (32, 32, 3)
MAX_REQUEST_BYTES = 1 << 20


def _model(seed):
    import keras

    import kerascnn
    keras.utils.set_random_seed(seed)
    return kerascnn.get_model("resnet20", num_classes=10, preprocessing="unit")


def _export(model, name, export_dir, version):
    from kerascnn.export import ExportSource, export_model
    return export_model(ExportSource(name, model, CIFAR10), name, export_dir, version,
                        formats=("savedmodel",))


@pytest.fixture(scope="module")
def jpegs():
    folder = SHARED_DATA / "cifar10" / "train"
    if not folder.is_dir():
        pytest.skip(f"real images not found at {folder} (set KERASCNN_SHARED_DATA)")
    return [sorted((folder / c).glob("*.jpg"))[i] for i, c in enumerate(CIFAR10[:6])]


@pytest.fixture(scope="module")
def pixels(jpegs):
    from kerascnn.transforms import EvalTransform, load_images
    # the same decode the serving_bytes signature runs
    return load_images(jpegs, EvalTransform.default(SHAPE))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """export/resnet20/1 and export/swap/1, registered in a models.config as the export step does."""
    from kerascnn.serving.config import upsert_model_config
    root = tmp_path_factory.mktemp("deploy")
    export_dir = root / "export"
    model = _model(1)
    _export(model, "resnet20", export_dir, 1)
    shutil.copytree(export_dir / "resnet20" / "1", export_dir / "swap" / "1")
    config = root / "serving" / "models.config"
    shutil.copytree(ROOT / "serving", config.parent, ignore=shutil.ignore_patterns("*.py"))
    upsert_model_config(config, "resnet20", version_labels={"stable": 1})
    upsert_model_config(config, "swap")
    return {"model": model, "export_dir": export_dir, "config": config}


@pytest.fixture(scope="module")
def server(deployment):
    from kerascnn.serving.config import BatchingOptions
    from kerascnn.serving.server import ModelServer
    batching = BatchingOptions(max_batch_size=16, batch_timeout_micros=1000, num_batch_threads=2,
                               max_enqueued_batches=100)
    srv = ModelServer(deployment["config"], model_base_dir=deployment["export_dir"],
                      rest_port=None, grpc_port=None, batching=batching,
                      file_system_poll_seconds=0.2, max_request_bytes=MAX_REQUEST_BYTES)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def rest(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server):
    from kerascnn.serving.grpc_service import channel_options
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                               options=channel_options(64 << 20)) as ch:
        yield ch


def _b64(path):
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _grpc_predict(channel, name, inputs, *, version=None, label=None, signature=""):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=60)
    return response, {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


# --- round trips ---------------------------------------------------------------------------------

def test_rest_predictions_equal_the_keras_model(rest, deployment, pixels, jpegs):
    expected = deployment["model"].predict(pixels, verbose=0)
    rows = rest.post("/v1/models/resnet20:predict", json={"instances": pixels.tolist()})
    assert rows.status_code == 200 and rows.headers["content-type"] == "application/json"
    predictions = rows.json()["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=1e-6)
    assert [p["top_k_classes"][0] for p in predictions] == \
        [CIFAR10[i] for i in expected.argmax(1)]
    columns = rest.post("/v1/models/resnet20/labels/stable:predict",
                        json={"inputs": {"image": pixels.tolist()}}).json()["outputs"]
    np.testing.assert_allclose(columns["probabilities"], expected, atol=1e-6)
    assert np.asarray(columns["top_k_indices"]).shape == (len(pixels), 5)
    jpeg = rest.post("/v1/models/resnet20/versions/1:predict",
                     json={"signature_name": "serving_bytes",
                           "instances": [{"b64": _b64(p)} for p in jpegs]}).json()["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in jpeg], expected, atol=1e-5)


def test_grpc_predictions_equal_the_keras_model(channel, deployment, pixels, jpegs):
    expected = deployment["model"].predict(pixels, verbose=0)
    response, out = _grpc_predict(channel, "resnet20", {"image": pixels})
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("resnet20", 1, "serving_default")
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)
    assert out["top_k_indices"].dtype == np.int32 and out["top_k_scores"].shape == (len(pixels), 5)
    _, out = _grpc_predict(channel, "resnet20", {"image_bytes": [p.read_bytes() for p in jpegs]},
                           label="stable", signature="serving_bytes")
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert [c.decode() for c in out["top_k_classes"][:, 0]] == \
        [CIFAR10[i] for i in expected.argmax(1)]


def test_client_prints_top5_over_rest_and_grpc(server, deployment, pixels, jpegs):
    import importlib.util
    spec = importlib.util.spec_from_file_location("serving_client", ROOT / "serving" / "client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    expected = deployment["model"].predict(pixels[:2], verbose=0)
    for transport in (["--rest", f"http://127.0.0.1:{server.rest_port}"],
                      ["--grpc", f"127.0.0.1:{server.grpc_port}"]):
        out = io.StringIO()
        with redirect_stdout(out):
            assert client.main([str(p) for p in jpegs[:2]] + ["--model", "resnet20"] + transport) == 0
        lines = out.getvalue().splitlines()
        assert len(lines) == 2 * 6 and lines[0] == str(jpegs[0])
        assert lines[1].split()[:2] == ["1.", CIFAR10[expected[0].argmax()]]
        assert abs(float(lines[1].split()[2]) - expected[0].max()) < 1e-4
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stderr", err)
        assert client.main([str(jpegs[0]), "--model", "nope", "--rest",
                            f"http://127.0.0.1:{server.rest_port}"]) == 1
    assert "HTTP 404: Servable not found for request: Latest(nope)" in err.getvalue()
    # --wait: a served model answers at once over both transports; an unknown one times out
    assert client.model_available("resnet20", rest=f"http://127.0.0.1:{server.rest_port}")
    assert client.model_available("resnet20", grpc_target=f"127.0.0.1:{server.grpc_port}")
    assert not client.model_available("nope", grpc_target=f"127.0.0.1:{server.grpc_port}")
    with redirect_stdout(io.StringIO()):
        assert client.main([str(jpegs[0]), "--model", "resnet20", "--wait", "5", "--grpc",
                            f"127.0.0.1:{server.grpc_port}"]) == 0
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stderr", err)
        assert client.main([str(jpegs[0]), "--model", "nope", "--wait", "1", "--rest",
                            f"http://127.0.0.1:{server.rest_port}"]) == 1
    assert "nope was not AVAILABLE at http://127.0.0.1:" in err.getvalue()


def test_status_and_metadata_over_rest_and_grpc(rest, channel):
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                         model_service_pb2_grpc, prediction_service_pb2_grpc)
    status = rest.get("/v1/models/resnet20").json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    assert rest.get("/v1/models/resnet20/labels/stable").json() == status
    meta = rest.get("/v1/models/resnet20/versions/1/metadata").json()
    assert meta["model_spec"] == {"name": "resnet20", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serving_bytes"} <= set(sigs)
    image = sigs["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "DT_UINT8"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]
    assert sigs["serving_bytes"]["outputs"]["top_k_classes"]["dtype"] == "DT_STRING"

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "resnet20"
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    assert [(v.version, v.state) for v in reply.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "resnet20"
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(sig_map)
    assert sig_map.signature_def["serving_default"].method_name == "tensorflow/serving/predict"


# --- errors (serving-protocol.md §1.5) -------------------------------------------------------------

GOOD = {"instances": np.zeros((1,) + SHAPE, np.uint8).tolist()}


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/v1/models/nope:predict", GOOD, 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("POST", "/v1/models/resnet20/versions/3:predict", GOOD, 404,
     "Servable not found for request: Specific(resnet20, 3)"),
    ("GET", "/v1/models/resnet20/versions/3", None, 404, "Could not find version 3 of model resnet20"),
    ("POST", "/v1/models/resnet20/labels/canary:predict", GOOD, 400,
     "Unrecognized servable version label: canary"),
    ("POST", "/v1/models/resnet20:predict", {**GOOD, "signature_name": "x"}, 400,
     'Serving signature name: "x" not found in signature def'),
    ("POST", "/v1/models/resnet20:predict", b"{oops", 400, "JSON Parse error"),
    ("POST", "/v1/models/resnet20:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/resnet20:predict", b"[]", 400, "Is not object"),
    ("POST", "/v1/models/resnet20:predict", {"instances": [[["x"]]]}, 400,
     "Type: String is not of expected type: uint8"),
    ("POST", "/v1/models/resnet20:predict", {"instances": [{"b64": "AAAA"}]}, 400,
     "Type: Object is not of expected type: uint8"),
    ("POST", "/v1/models/resnet20:predict", {"instances": [[[[1, 2, 3]]], [[[1, 2]]]]}, 400,
     "Expecting shape"),
    ("POST", "/v1/models/resnet20:predict", {"instances": np.zeros((1, 28, 28, 1), int).tolist()},
     400, "shape [1,28,28,1]"),
    ("POST", "/v1/models/resnet20:predict", {"signature_name": "serving_bytes",
                                             "instances": [{"b64": "bm90IGFuIGltYWdl"}]},
     400, "image"),
    ("POST", "/v1/models/resnet20:classify", GOOD, 400, "method_name to be tensorflow/serving/classify"),
    ("GET", "/v1/models/resnet20:predict", None, 400, "Malformed request: GET /v1/models/resnet20:predict"),
    ("POST", "/v1/models/resnet20/metadata", GOOD, 400, "Malformed request: POST"),
    ("GET", "/v1/models/resnet20/version/1", None, 400, "Malformed request"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
])
def test_rest_errors_match_tf_serving(rest, method, path, body, status, message):
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    response = rest.request(method, path, content=content)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"] and message in response.json()["error"]


def test_outside_v1_is_a_plain_404_and_bodies_over_the_limit_are_refused(rest):
    page = rest.get("/v2/models/resnet20")
    assert page.status_code == 404 and not page.headers["content-type"].startswith("application/json")
    big = rest.post("/v1/models/resnet20:predict", content=b" " * (MAX_REQUEST_BYTES + 1))
    assert big.status_code == 413 and "--max-request-bytes" in big.json()["error"]


@pytest.mark.parametrize("kwargs, code, message", [
    ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ({"name": "resnet20", "version": 7}, grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(resnet20, 7)"),
    ({"name": "resnet20", "label": "canary"}, grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: canary"),
    ({"name": "resnet20", "signature": "x"}, grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "x" not found.'),
    ({"name": "resnet20", "inputs": {"image": np.zeros((1,) + SHAPE, np.float32)}},
     grpc.StatusCode.INVALID_ARGUMENT, "to be uint8 but float is provided"),
    ({"name": "resnet20", "inputs": {"pixels": np.zeros((1,) + SHAPE, np.uint8)}},
     grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature"),
])
def test_grpc_errors_match_tf_serving(channel, kwargs, code, message):
    kwargs = dict(kwargs)
    inputs = kwargs.pop("inputs", {"image": np.zeros((1,) + SHAPE, np.uint8)})
    with pytest.raises(grpc.RpcError) as info:
        _grpc_predict(channel, kwargs.pop("name"), inputs, **kwargs)
    assert info.value.code() == code and message in info.value.details()


# --- load, batching, hot swap ----------------------------------------------------------------------

def _load(rest_port, grpc_port, pixels, stop, deadline, name="resnet20"):
    """One client thread alternating REST and gRPC; returns (ok, failures, versions seen)."""
    from kerascnn.serving.grpc_service import channel_options
    ok, failures, versions = 0, [], set()
    body = {"instances": pixels[:1].tolist()}
    with httpx.Client(base_url=f"http://127.0.0.1:{rest_port}", timeout=60) as client, \
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=channel_options(8 << 20)) as ch:
        i = 0
        while not stop() and time.monotonic() < deadline:
            try:
                if i % 2:
                    r = client.post(f"/v1/models/{name}:predict", json=body)
                    if r.status_code != 200:
                        raise RuntimeError(r.text)
                else:
                    response, _ = _grpc_predict(ch, name, {"image": pixels[:1]})
                    versions.add(response.model_spec.version.value)
                ok += 1
            except Exception as exc:  # noqa: BLE001 (every failure is counted and reported)
                failures.append(repr(exc))
            i += 1
    return ok, failures, versions


def test_bounded_load_on_loopback_has_zero_errors_and_forms_batches(server, rest, pixels):
    before = _batch_stats(rest)
    requests = {"n": 0}
    lock = threading.Lock()

    def enough():
        with lock:
            requests["n"] += 1
            return requests["n"] > 240

    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: _load(server.rest_port, server.grpc_port, pixels,
                                                enough, deadline), range(16)))
    failures = [f for _, fs, _ in results for f in fs]
    assert failures == [] and sum(ok for ok, _, _ in results) >= 200
    batches, examples = (a - b for a, b in zip(_batch_stats(rest), before))
    assert examples >= 200 and batches < examples  # concurrent requests shared batches


def _batch_stats(rest):
    """(batches, examples) from the Prometheus page: processed_batch_size count and sum."""
    text = rest.get("/monitoring/prometheus/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_"):
            key, value = line.rsplit(" ", 1)
            values[key.split("{")[0].rsplit("_", 1)[1]] = float(value)
    return values.get("count", 0.0), values.get("sum", 0.0)


def test_metrics_use_tf_serving_names(rest):
    text = rest.get("/monitoring/prometheus/metrics").text
    assert ':tensorflow:serving:request_count_total{model_name="resnet20",status="OK"}' in text
    assert ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST"' in text
    assert ":tensorflow:serving:batching_session:queuing_latency_count" in text


def test_new_version_under_load_swaps_with_zero_failed_requests(server, rest, deployment, pixels):
    new_model = _model(2)
    expected = new_model.predict(pixels[:1], verbose=0)
    stop = threading.Event()
    deadline = time.monotonic() + 90
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(_load, server.rest_port, server.grpc_port, pixels, stop.is_set,
                               deadline, "swap") for _ in range(6)]
        time.sleep(1.0)
        _export(new_model, "swap", deployment["export_dir"], 2)  # written aside, renamed in
        states = None
        while time.monotonic() < deadline:
            states = {v["version"]: v["state"]
                      for v in rest.get("/v1/models/swap").json()["model_version_status"]}
            if states == {"2": "AVAILABLE", "1": "END"}:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # keep the load on the new version for a while
        stop.set()
        results = [f.result() for f in futures]
    assert states == {"2": "AVAILABLE", "1": "END"}
    failures = [f for _, fs, _ in results for f in fs]
    assert failures == [], failures[:3]
    assert set().union(*(v for _, _, v in results)) == {1, 2}
    now = rest.post("/v1/models/swap:predict", json={"instances": pixels[:1].tolist()}).json()
    np.testing.assert_allclose(now["predictions"][0]["probabilities"], expected[0], atol=1e-6)


def test_reload_config_over_grpc_adds_and_removes_models(server, channel, deployment):
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
    from tensorflow_serving.config import model_server_config_pb2
    config_text = deployment["config"].read_text()
    config = text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig())
    config.model_config_list.config.add(name="late", base_path="/models/resnet20",
                                        model_platform="tensorflow")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    try:
        reply = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=120)
        assert reply.status.error_code == 0
        response, _ = _grpc_predict(channel, "late", {"image": np.zeros((1,) + SHAPE, np.uint8)})
        assert response.model_spec.version.value == 1
    finally:
        stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(
            config=text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig())),
            timeout=120)
    with pytest.raises(grpc.RpcError) as info:
        _grpc_predict(channel, "late", {"image": np.zeros((1,) + SHAPE, np.uint8)})
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_broken_version_is_reported_and_the_previous_one_keeps_serving(deployment, tmp_path):
    from kerascnn.serving.config import parse_model_server_config
    from kerascnn.serving.manager import ModelManager
    good = deployment["export_dir"] / "resnet20" / "1"
    shutil.copytree(good, tmp_path / "m" / "1")
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    (tmp_path / "m" / "v3").mkdir()  # not an integer: ignored, as TF Serving does
    config = parse_model_server_config('model_config_list { config { name: "m" base_path: "m" } }')
    manager = ModelManager(config, tmp_path / "models.config", warmup=False)
    manager.poll()
    states = {s.version: (s.state, s.error_message) for s in manager.status("m")}
    assert states[1] == ("AVAILABLE", "")
    assert states[2][0] == "END" and "Failed to load" in states[2][1]
    assert manager.resolve("m").version == 1
    shutil.rmtree(tmp_path / "m" / "2")
    shutil.copytree(good, tmp_path / "m" / "2")  # fixed: new files, so it is retried
    manager.poll()
    assert [(s.version, s.state) for s in manager.status("m")] == [(2, "AVAILABLE"), (1, "END")]
    assert manager.resolve("m").version == 2


def test_export_cli_registers_the_model_in_models_config(deployment, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from kerascnn.cli import main as cli_main
    deployment["model"].save(tmp_path / "resnet20.keras")
    config = tmp_path / "models.config"
    shutil.copy(ROOT / "serving" / "models.config.template", config)
    assert cli_main(["export", str(tmp_path / "resnet20.keras"), "--name", "cifar",
                     "--export-dir", str(tmp_path / "export"), "--formats", "savedmodel",
                     "--model-config", str(config)]) == 0
    parsed = text_format.Parse(config.read_text(), model_server_config_pb2.ModelServerConfig())
    assert [(m.name, m.base_path) for m in parsed.model_config_list.config] == \
        [("cifar", "/models/cifar")]
    assert (tmp_path / "export" / "cifar" / "1" / "saved_model.pb").is_file()


def test_a_port_in_use_is_a_clear_error(deployment):
    from kerascnn.serving.server import ModelServer
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError, match="pass another --rest-port"):
            ModelServer(deployment["config"], rest_port=taken.getsockname()[1])


# --- the command line: SIGTERM lets requests in flight finish ---------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_and_shuts_down_gracefully_on_sigterm(deployment, pixels):
    rest_port, grpc_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerascnn", "serve", "--model-config", str(deployment["config"]),
         "--model-base-dir", str(deployment["export_dir"]), "--rest-port", str(rest_port),
         "--grpc-port", str(grpc_port), "--batching-parameters",
         str(ROOT / "serving" / "batching_parameters.txt"), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{rest_port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/v1/models/resnet20", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        # A request in flight when SIGTERM arrives: its headers and half its body are sent, the
        # rest follows after the signal. Graceful shutdown must still answer it.
        body = json.dumps({"instances": pixels[:4].tolist()}).encode()
        half_sent = threading.Event()

        def slow_body():
            yield body[:len(body) // 2]
            half_sent.set()
            time.sleep(1.5)
            yield body[len(body) // 2:]

        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, f"{url}/v1/models/resnet20:predict",
                                    content=slow_body(), timeout=60)
            assert half_sent.wait(30)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            response = in_flight.result()
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 4
        with pytest.raises(httpx.TransportError):  # no new connections once shutting down
            httpx.get(f"{url}/v1/models/resnet20", timeout=5)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
        assert "kerascnn serve: stopped" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
