"""TF Serving's REST API (serving-protocol.md §1) as a FastAPI application.

Only paths matching ``(?i)/v1/.*`` reach the API handler, which dispatches with TF Serving's own
regular expressions (``http_rest_api_handler.cc``); anything else gets a plain 404 page, as from
TF Serving's HTTP server. Every API failure is ``{"error": message}`` with TF Serving's HTTP code.
The Prometheus page lives on the same port, at the monitoring config's path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from urllib.parse import unquote

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from google.protobuf import json_format

from .core import ServingCore, model_status_response
from .errors import ServingError, failed_precondition, invalid
from .tensors import format_response, parse_json, request_inputs, signature_name_of

__all__ = ["create_app", "PREDICT_PATH", "GET_PATH"]

log = logging.getLogger("kerascnn.serving")

#: ``http_rest_api_handler.cc``: the regexes must match the whole path, case-insensitively.
PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                          r":(classify|regress|predict)")
GET_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                      r"(?:\/(metadata))?")
_API_PATH = re.compile(r"(?i)/v1/.*")
_VERB_SIGNATURE = {"classify": "classification", "regress": "regression"}


def _json(payload, status: int = 200) -> Response:
    return Response(payload if isinstance(payload, bytes) else json.dumps(payload, indent=4),
                    status_code=status, media_type="application/json")


def _error(exc: ServingError) -> Response:
    return _json({"error": exc.message}, exc.http_status)


def create_app(core: ServingCore, *, metrics_path: str | None = None,
               max_request_bytes: int | None = None, timeout_ms: int = 30_000) -> FastAPI:
    """The ASGI app: TF Serving's REST API over ``core``, metrics at ``metrics_path``.

    The body limit is ``core.limits.max_request_bytes`` unless ``max_request_bytes`` is given.
    """
    app = FastAPI(title="kerascnn TF Serving-compatible REST API", docs_url=None, redoc_url=None,
                  openapi_url=None)
    if max_request_bytes is None:
        max_request_bytes = core.limits.max_request_bytes
    app.add_middleware(RequestSizeLimit, max_bytes=max_request_bytes)
    timeout = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD",
                                            "OPTIONS"], include_in_schema=False)
    async def dispatch(request: Request):
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1")
        method = request.method
        if metrics_path and path == metrics_path and core.metrics is not None and method == "GET":
            return Response(core.metrics.exposition(), media_type=core.metrics.content_type)
        if not _API_PATH.fullmatch(path):
            return PlainTextResponse("Not Found", status_code=404)
        try:
            if method == "POST" and (m := PREDICT_PATH.fullmatch(path)):
                return await _predict(request, m)
            if method == "GET" and (m := GET_PATH.fullmatch(path)):
                return _get(m)
            raise invalid(f"Malformed request: {method} {path}")
        except ServingError as exc:
            return _error(exc)
        except _TooLarge:
            raise  # RequestSizeLimit answers 413
        except Exception as exc:  # noqa: BLE001 (a bug: still TF Serving's error body, not text)
            log.exception("%s %s failed", method, path)
            return _error(ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    async def _predict(request: Request, m) -> Response:
        model, version, label, verb = (unquote(m[1]), m[2], m[3] and unquote(m[3]),
                                       m[4].lower())
        started, status = time.perf_counter(), "OK"
        try:
            servable = core.resolve(model, _version(version), label)
            body = await request.body()
            sig, inputs, rows = await core.in_thread(_parse_predict, body, servable, verb)
            try:
                outputs = await asyncio.wait_for(core.predict(servable, sig, inputs), timeout)
            except asyncio.TimeoutError:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"Request timed out after {timeout_ms} ms (--rest-timeout-ms)"
                                   ) from None
            return _json(await core.in_thread(format_response, outputs, rows))
        except ServingError as exc:
            status = exc.code_name
            return _error(exc)
        except Exception as exc:  # a body over the limit (answered 413 above us), or a bug
            status = "RESOURCE_EXHAUSTED" if isinstance(exc, _TooLarge) else "INTERNAL"
            raise
        finally:
            core.observe(model, verb, "REST", status, started)

    def _parse_predict(body: bytes, servable, verb: str):
        doc = parse_json(body, core.limits)
        sig = core.signature(servable, signature_name_of(doc))
        if verb != "predict":
            raise failed_precondition(
                f"Expected {_VERB_SIGNATURE[verb]} signature method_name to be "
                f"tensorflow/serving/{verb}. Was: {sig.method_name}")
        inputs, rows = request_inputs(doc, sig.inputs)
        return sig, inputs, rows

    def _get(m) -> Response:
        model, version, label, metadata = m[1] and unquote(m[1]), m[2], m[3] and unquote(m[3]), m[4]
        if not model:
            raise invalid("Missing model name in request.")
        if metadata:
            servable = core.resolve(model, _version(version), label)
            sigs = json_format.MessageToDict(servable.signature_def_map,
                                             preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
            for sig in sigs.get("signature_def", {}).values():
                sig.pop("defaults", None)  # TF Serving 2.20 stopped returning SignatureDef.defaults
            return _json({"model_spec": {"name": model, "signature_name": "",
                                         "version": str(servable.version)},
                          "metadata": {"signature_def": sigs}})
        # A label is accepted but ignored by status, which lists every version (§1.1).
        statuses = core.manager.status(model, _version(version))
        return _json(json_format.MessageToDict(model_status_response(statuses),
                                               preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True))

    return app


def _version(text):
    return None if text is None else int(text)


class RequestSizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, never buffering them.

    The rest of an oversized body is read and dropped (up to a bound) before the answer, so the
    client sees the 413 instead of a connection reset.
    """

    DRAIN_BYTES = 64 << 20

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.max_bytes:
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive, 0)
            return await self._reject(send, int(length))
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(seen, message.get("more_body", False))
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge as exc:
            if not started:
                size = exc.size + (await self._drain(receive, exc.size) if exc.more else 0)
                await self._reject(send, size)

    async def _drain(self, receive, seen: int) -> int:
        drained = 0
        while seen + drained <= self.max_bytes + self.DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return drained

    async def _reject(self, send, size):
        body = json.dumps({"error": f"Request body of {size} bytes exceeds the server's limit of "
                                    f"{self.max_bytes} bytes (--max-request-bytes)"},
                          indent=4).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    def __init__(self, size, more):
        self.size, self.more = size, more
