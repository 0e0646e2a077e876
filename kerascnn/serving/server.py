"""``python -m kerascnn serve``: a TF Serving-compatible model server for exported models.

REST (FastAPI on uvicorn) and gRPC (grpcio ``aio``) share one event loop and one
:class:`~.core.ServingCore`: the models of ``--model-config`` (TF Serving's ``models.config``),
new versions picked up every ``--file-system-poll-seconds``, optional dynamic batching from
``--batching-parameters``, Prometheus metrics at the monitoring config's path. It binds 127.0.0.1
unless ``--host`` says otherwise, and SIGTERM or Ctrl-C stop it gracefully: no new connections,
requests in flight (and queued batches) finish, then it exits with 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import threading
from pathlib import Path

from . import config as cfg
from .limits import ServingLimits

__all__ = ["ModelServer", "ServingLimits", "add_arguments", "run"]

log = logging.getLogger("kerascnn.serving")

DEFAULT_MAX_REQUEST_BYTES = ServingLimits.max_request_bytes


class ModelServer:
    """The REST + gRPC server. Use :meth:`serve` (blocking, handles signals) or :meth:`start`."""

    def __init__(self, model_config, *, model_base_dir="export", host: str = "127.0.0.1",
                 rest_port: int = 8501, grpc_port: int = 8500, batching=None,
                 metrics_path: str | None = cfg.DEFAULT_METRICS_PATH,
                 file_system_poll_seconds: float = 1.0, config_poll_seconds: float = 0.0,
                 max_request_bytes: int | None = None, rest_timeout_ms: int = 30_000,
                 grace_seconds: float = 30.0, warmup: bool = True,
                 limits: ServingLimits | None = None):
        """``model_config``: path of a models.config; ``batching``: a BatchingOptions to enable
        batching; ``rest_port``/``grpc_port`` 0 turn that API off (``None`` picks a free port);
        ``limits``: what one request may ask (:class:`~.limits.ServingLimits`, defaults
        otherwise); ``max_request_bytes``, when given, replaces ``limits.max_request_bytes``."""
        limits = limits if limits is not None else ServingLimits()
        if max_request_bytes is not None:
            limits = dataclasses.replace(limits, max_request_bytes=max_request_bytes)
        self.limits = limits
        self.config_path = Path(model_config)
        self.model_base_dir = model_base_dir
        self.host = host
        self.batching = batching
        self.metrics_path = metrics_path
        self.poll = (file_system_poll_seconds, config_poll_seconds)
        self.max_request_bytes = limits.max_request_bytes
        self.rest_timeout_ms = rest_timeout_ms
        self.grace_seconds = grace_seconds
        self.warmup = warmup
        self._rest_socket = self._bind_rest(rest_port) if rest_port != 0 else None
        self.rest_port = self._rest_socket.getsockname()[1] if self._rest_socket else 0
        self._grpc_port_wanted = grpc_port
        self.grpc_port = 0
        self.core = None
        self._loop = None
        self._stopping = None
        self._ready = threading.Event()
        self._thread = None
        self._error = None

    def _bind_rest(self, port):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port or 0))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen for REST on {self.host}:{port}: {exc.strerror}; pass "
                          "another --rest-port (0 turns REST off)") from None
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock

    # --- lifecycle ---------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT (main thread) or :meth:`stop`; return after a clean shutdown."""
        main_thread = threading.current_thread() is threading.main_thread()
        asyncio.run(self._main(install_signals=main_thread))
        if self._error is not None:
            raise self._error

    def start(self, timeout: float = 300.0) -> "ModelServer":
        """Serve from a background thread; return once both APIs answer (tests, notebooks)."""
        def target():
            try:
                asyncio.run(self._main(install_signals=False))
            except BaseException as exc:  # noqa: BLE001 (reported to the caller of start)
                self._error = exc
            finally:
                self._ready.set()  # also when it stopped before it was ready

        self._thread = threading.Thread(target=target, name="model-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down gracefully (thread-safe); waits for a server started with :meth:`start`."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _main(self, install_signals: bool) -> None:
        import grpc
        import uvicorn

        from .core import ServingCore
        from .grpc_service import add_servicers, channel_options
        from .manager import ModelManager
        from .metrics import ServingMetrics
        from .rest import create_app

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                # uvicorn swaps in its own handler while it runs and calls this one again after.
                signal.signal(sig, lambda *_: self._loop.call_soon_threadsafe(self._stopping.set))

        config = cfg.load_model_server_config(self.config_path)
        metrics = ServingMetrics() if self.metrics_path else None
        manager = ModelManager(config, self.config_path, model_base_dir=self.model_base_dir,
                               warmup=self.warmup)
        self.core = core = ServingCore(manager, batching=self.batching, metrics=metrics,
                                       limits=self.limits)
        grpc_server = uv_server = uv_task = None
        try:
            await core.in_thread(manager.poll)  # serve nothing until the first scan has loaded
            manager.start(*self.poll)
            if self._grpc_port_wanted != 0:
                grpc_server = grpc.aio.server(options=channel_options(self.max_request_bytes))
                add_servicers(grpc_server, core)
                address = f"{self.host}:{self._grpc_port_wanted or 0}"
                try:
                    self.grpc_port = grpc_server.add_insecure_port(address)
                except RuntimeError:
                    self.grpc_port = 0
                if not self.grpc_port:
                    raise OSError(f"cannot listen for gRPC on {address}; pass another --grpc-port "
                                  "(0 turns gRPC off)")
                await grpc_server.start()
            if self._rest_socket is not None:
                app = create_app(core, metrics_path=self.metrics_path,
                                 timeout_ms=self.rest_timeout_ms)
                uv_config = uvicorn.Config(app, log_config=None, log_level="warning",
                                           access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=self.grace_seconds)
                uv_server = uvicorn.Server(uv_config)
                uv_task = asyncio.create_task(uv_server.serve(sockets=[self._rest_socket]))
                while not uv_server.started and not uv_task.done():
                    await asyncio.sleep(0.01)
                if uv_task.done():
                    uv_task.result()
                    raise OSError("the REST server stopped while starting")
            self._ready.set()
            log.info("serving %s: REST %s, gRPC %s",
                     ", ".join(manager.model_names()) or "no models",
                     f"http://{self.host}:{self.rest_port}" if uv_server else "off",
                     f"{self.host}:{self.grpc_port}" if grpc_server else "off")
            waiters = [asyncio.ensure_future(self._stopping.wait())]
            if uv_task is not None:
                waiters.append(uv_task)  # uvicorn ends on its own after SIGTERM/SIGINT
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
        finally:
            log.info("shutting down: finishing requests in flight")
            if uv_server is not None:
                uv_server.should_exit = True
            closing = []
            if grpc_server is not None:
                closing.append(grpc_server.stop(self.grace_seconds))
            if uv_task is not None:
                closing.append(uv_task)
            await asyncio.gather(*closing, return_exceptions=True)
            manager.stop()
            await asyncio.get_running_loop().run_in_executor(None, core.close)
            if self._rest_socket is not None:
                self._rest_socket.close()


# --- command line ----------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--model-config", default="export/models.config", metavar="FILE",
                        help="TF Serving ModelServerConfig text file (default: "
                             "export/models.config, which `kerascnn export` writes)")
    parser.add_argument("--model-base-dir", default="export", metavar="DIR",
                        help="local folder for base paths under /models, the docker-compose mount "
                             "(default: export); relative base paths resolve against the config "
                             "file's folder")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the server)")
    parser.add_argument("--rest-port", type=int, default=8501, metavar="PORT",
                        help="REST port, 0 = off (8501)")
    parser.add_argument("--grpc-port", type=int, default=8500, metavar="PORT",
                        help="gRPC port, 0 = off (8500)")
    parser.add_argument("--batching-parameters", metavar="FILE",
                        help="BatchingParameters text file; enables server-side batching")
    parser.add_argument("--enable-batching", action="store_true",
                        help="batch with TF Serving's default parameters (or the file's)")
    parser.add_argument("--monitoring-config", metavar="FILE",
                        help="MonitoringConfig text file; default: Prometheus on at "
                             f"{cfg.DEFAULT_METRICS_PATH}")
    parser.add_argument("--file-system-poll-seconds", type=float, default=1.0, metavar="S",
                        help="how often to look for new version folders (1)")
    parser.add_argument("--model-config-poll-seconds", type=float, default=0.0, metavar="S",
                        help="re-read --model-config this often; 0 = read once (0)")
    defaults = ServingLimits()
    parser.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes,
                        metavar="BYTES",
                        help=f"largest request body / gRPC message ({defaults.max_request_bytes})")
    parser.add_argument("--max-request-batch", type=int, default=defaults.max_request_batch,
                        metavar="N",
                        help="most examples (images) in one predict request, REST and gRPC "
                             f"({defaults.max_request_batch})")
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels,
                        metavar="PIXELS",
                        help="most decoded pixels (width x height x frames) per encoded image, "
                             f"read from its header before decoding ({defaults.max_image_pixels} "
                             "= 4096x4096)")
    parser.add_argument("--max-json-depth", type=int, default=defaults.max_json_depth,
                        metavar="N",
                        help=f"deepest nesting of a REST JSON body ({defaults.max_json_depth})")
    parser.add_argument("--rest-timeout-ms", type=int, default=30_000, metavar="MS",
                        help="REST predict deadline in ms, 0 = none (30000)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


def run(args) -> int:
    from ..errors import UserError
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for flag in ("rest_port", "grpc_port"):
        if not 0 <= getattr(args, flag) <= 65535:
            raise UserError(f"--{flag.replace('_', '-')} must be a port number 0..65535")
    if args.rest_port and args.rest_port == args.grpc_port:
        raise UserError("--rest-port and --grpc-port must differ")
    try:
        limits = ServingLimits.from_args(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        cfg.load_model_server_config(args.model_config)  # fail fast with the file's own error
        batching = None
        if args.batching_parameters:
            batching = cfg.batching_options(cfg.load_batching_parameters(args.batching_parameters),
                                            args.batching_parameters)
        elif args.enable_batching:
            batching = cfg.batching_options()
        metrics_path = cfg.DEFAULT_METRICS_PATH
        if args.monitoring_config:
            metrics_path = cfg.metrics_path(cfg.load_monitoring_config(args.monitoring_config))
        server = ModelServer(args.model_config, model_base_dir=args.model_base_dir,
                             host=args.host, rest_port=args.rest_port, grpc_port=args.grpc_port,
                             batching=batching, metrics_path=metrics_path,
                             file_system_poll_seconds=args.file_system_poll_seconds,
                             config_poll_seconds=args.model_config_poll_seconds,
                             rest_timeout_ms=args.rest_timeout_ms, limits=limits)
    except (cfg.ConfigError, OSError) as exc:
        raise UserError(str(exc)) from None
    rest = f"http://{args.host}:{server.rest_port}" if server.rest_port else "off"
    grpc_at = f"{args.host}:{args.grpc_port}" if args.grpc_port else "off"
    print(f"kerascnn serve: REST {rest}, gRPC {grpc_at}, batching {'on' if batching else 'off'}, "
          f"metrics {metrics_path if metrics_path and server.rest_port else 'off'}", flush=True)
    try:
        server.serve()
    except OSError as exc:
        raise UserError(str(exc)) from None
    print("kerascnn serve: stopped", flush=True)
    return 0
