"""The remote codec server of :mod:`sternway.codec`: ``POST /encode`` and ``POST /decode`` in
Temporal's remote codec JSON format, for the Web UI and ``temporal --codec-endpoint``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from sternway.codec import MAX_REQUEST_BYTES, AesGcmCodec, CodecError

__all__ = ["make_codec_server", "serve_in_thread"]


class _CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], codec: AesGcmCodec, cors_origins: Iterable[str]
    ) -> None:
        super().__init__(address, _CodecHandler)
        self.codec = codec
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)


class _CodecHandler(BaseHTTPRequestHandler):
    server: _CodecServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines would say nothing useful, and payloads are never logged."""

    def _cors(self) -> None:
        origin = (self.headers.get("Origin") or "").rstrip("/")
        allowed = self.server.cors_origins
        if origin and (origin in allowed or "*" in allowed):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header(
                "Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization"
            )
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Vary", "Origin")

    def _answer(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._answer(status, json.dumps({"error": message}).encode(), "application/json")

    def do_OPTIONS(self) -> None:
        """CORS preflight of the Web UI."""
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """``/health``: whether the server runs, and which keys it has (ids only)."""
        if self.path.split("?", 1)[0].rstrip("/") != "/health":
            self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode; GET /health")
            return
        body = {"ok": True, "keys": self.server.codec.key_ids, "current": self.server.codec.current}
        self._answer(HTTPStatus.OK, json.dumps(body).encode(), "application/json")

    def do_POST(self) -> None:
        """``/encode`` and ``/decode`` (also under a prefix, e.g. ``/<namespace>/decode``)."""
        path = self.path.split("?", 1)[0].rstrip("/")
        operation = path.rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode")
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is too large or unsized")
            return
        body = self.rfile.read(length)
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as err:
            self._error(HTTPStatus.BAD_REQUEST, f"not a JSON object of payloads: {err}")
            return
        codec = self.server.codec
        try:
            if operation == "encode":
                done = [codec.encode_payload(p) for p in payloads.payloads]
            else:
                done = [codec.decode_payload(p) for p in payloads.payloads]
        except CodecError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        answer = json_format.MessageToJson(Payloads(payloads=done), indent=None)
        self._answer(HTTPStatus.OK, answer.encode(), "application/json")


def make_codec_server(
    codec: AesGcmCodec, *, host: str = "127.0.0.1", port: int = 0, cors_origins: Iterable[str] = ()
) -> ThreadingHTTPServer:
    """A threaded HTTP server of ``POST /encode`` and ``POST /decode`` (not started yet).

    Call ``serve_forever()`` (e.g. in a thread, see :func:`serve_in_thread`) and ``shutdown()``.
    ``cors_origins`` lists the Web UI origins allowed to call it from a browser (``*``: any).
    Whoever reaches it can decrypt payloads: bind it to loopback, or put it behind your proxy's
    authentication.
    """
    return _CodecServer((host, port), codec, cors_origins)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever()`` in a daemon thread and return the thread."""
    thread = threading.Thread(target=server.serve_forever, name="codec-server", daemon=True)
    thread.start()
    return thread
