#!/usr/bin/env python3
"""Top-5 labels of images from a model served by TF Serving (or ``python -m kerascnn serve``).

    python serving/client.py cat.jpg dog.png --model resnet20
    python serving/client.py cat.jpg --model resnet20 --label stable --grpc localhost:8500
    python serving/client.py cat.jpg --model resnet20 --wait 120   # a server still starting

The encoded files are sent as they are to the ``serving_bytes`` signature, which decodes and resizes
them in the graph: over REST as ``{"instances": [{"b64": ...}]}`` (standard base64), over gRPC as a
string tensor through the official ``PredictionService`` stub. REST needs only the standard
library; gRPC needs ``grpcio``, ``tensorflow-serving-api`` and TensorFlow (for its protos).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SIGNATURE = "serving_bytes"
MAX_MESSAGE_BYTES = 256 << 20


class ClientError(Exception):
    """A problem the user can fix (bad file, unreachable server, server-side error)."""


def predict_rest(url: str, model: str, images: list[bytes], *, version=None, label=None,
                 signature: str = SIGNATURE, timeout: float = 60.0) -> dict:
    """POST the images; return TF Serving's columnar ``outputs`` (name -> list per image)."""
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    elif label is not None:
        path += f"/labels/{label}"
    body = json.dumps({"signature_name": signature,
                       "inputs": [{"b64": base64.b64encode(data).decode("ascii")}
                                  for data in images]}).encode()
    request = urllib.request.Request(url.rstrip("/") + path + ":predict", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["outputs"]
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError):
            message = raw.decode("utf-8", "replace").strip() or exc.reason
        raise ClientError(f"the server answered HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach {url}: {reason}; is the server running (docker compose "
                          f"up, or python -m kerascnn serve)?") from None


def predict_grpc(target: str, model: str, images: list[bytes], *, version=None, label=None,
                 signature: str = SIGNATURE, timeout: float = 60.0) -> dict:
    """Call ``PredictionService/Predict``; returns output name -> NumPy array."""
    try:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as exc:
        raise ClientError(f"gRPC needs grpcio, tensorflow and tensorflow-serving-api ({exc}); or "
                          f"use --rest") from None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    elif label is not None:
        request.model_spec.version_label = label
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise ClientError(f"gRPC {exc.code().name}: {exc.details()}") from None
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def model_available(model: str, *, rest: str | None = None, grpc_target: str | None = None,
                    timeout: float = 5.0) -> bool:
    """Whether the server reports a version of ``model`` AVAILABLE (TF Serving's model status:
    ``GET /v1/models/NAME`` over REST, ``ModelService/GetModelStatus`` over gRPC)."""
    if grpc_target:
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        with grpc.insecure_channel(grpc_target) as channel:
            try:
                response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                    request, timeout=timeout)
            except grpc.RpcError:
                return False
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return any(v.state == available for v in response.model_version_status)
    try:
        with urllib.request.urlopen(f"{rest.rstrip('/')}/v1/models/{model}",
                                    timeout=timeout) as response:
            status = json.loads(response.read()).get("model_version_status", [])
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(v.get("state") == "AVAILABLE" for v in status)


def wait_for_model(model: str, seconds: float, **where) -> None:
    """Poll the model's status until a version is AVAILABLE or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not model_available(model, **where):
        if time.monotonic() >= deadline:
            endpoint = where.get("grpc_target") or where.get("rest")
            raise ClientError(f"{model} was not AVAILABLE at {endpoint} within {seconds:g} s; is "
                              f"the server running (docker compose up, or python -m kerascnn "
                              f"serve) and {model} in its models.config?")
        time.sleep(0.5)


def top5(outputs: dict) -> list[list[tuple[str, float]]]:
    """Per image, (label, score) pairs best first, from the ``top_k_*`` outputs."""
    classes, scores = outputs["top_k_classes"], outputs["top_k_scores"]
    return [[(c.decode() if isinstance(c, bytes) else str(c), float(s)) for c, s in zip(cs, ss)]
            for cs, ss in zip(classes, scores)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument("--model", required=True, help="model name in models.config")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a specific version (default: the latest)")
    which.add_argument("--label", help="a version label from models.config (e.g. stable)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--rest", metavar="URL",
                       help="REST endpoint (default http://localhost:8501)")
    where.add_argument("--grpc", metavar="HOST:PORT", help="gRPC endpoint, e.g. localhost:8500")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the model to be AVAILABLE (a server "
                             "that is still starting); default: ask at once")
    args = parser.parse_args(argv)

    try:
        images = []
        for name in args.images:
            try:
                images.append(Path(name).read_bytes())
            except OSError as exc:
                raise ClientError(f"cannot read {name}: {exc.strerror or exc}") from None
        kwargs = dict(version=args.version, label=args.label, timeout=args.timeout)
        if args.wait > 0:
            wait_for_model(args.model, args.wait, grpc_target=args.grpc,
                           rest=args.rest or "http://localhost:8501")
        if args.grpc:
            outputs = predict_grpc(args.grpc, args.model, images, **kwargs)
        else:
            url = args.rest or "http://localhost:8501"
            outputs = predict_rest(url, args.model, images, **kwargs)
        results = top5(outputs)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"error: the response has no {exc} output; the model must be exported with "
              "`python -m kerascnn export` (signature serving_bytes with top_k_* outputs)",
              file=sys.stderr)
        return 1
    for name, ranked in zip(args.images, results):
        print(name)
        for rank, (label, score) in enumerate(ranked, 1):
            print(f"  {rank}. {label:<24} {score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
