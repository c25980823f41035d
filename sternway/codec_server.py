"""The remote codec server for :mod:`sternway.codec`: ``POST /encode`` and ``POST /decode`` in
Temporal's remote codec JSON format, for the Web UI and ``temporal --codec-endpoint``.

Only ``sternway codec-server`` loads it (and ``http.server`` with it)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from sternway.codec import MAX_REQUEST_BYTES, AesGcmCodec, CodecError

__all__ = ["TOKEN_ENV", "make_codec_server", "new_token", "serve_in_thread"]

TOKEN_ENV = "STERNWAY_CODEC_TOKEN"
"""The codec server's bearer token; without it, ``sternway codec-server`` makes one up."""
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def new_token() -> str:
    """A random bearer token for the codec server (URL-safe, so it may sit in a path)."""
    return secrets.token_urlsafe(24)


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` of a Host header (``[v6]:port`` too); None when it is not one."""
    host, port = value.strip().lower(), None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        host, rest = host[1:end], host[end + 1 :]
    elif host.count(":") == 1:
        host, rest = host.split(":")[0], ":" + host.split(":")[1]
    else:
        rest = ""
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit():
            return None
        port = int(rest[1:])
    return host, port


class _CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        codec: AesGcmCodec,
        cors_origins: Iterable[str],
        token: str | None,
    ) -> None:
        super().__init__(address, _CodecHandler)
        self.codec = codec
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.token = token

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host names this server: its bind address (loopback by any of its
        names), or any IP literal when bound to all interfaces. A DNS name other than localhost
        is refused, which is what stops a DNS-rebinding page from reaching the keys."""
        parsed = _split_host(header or "")
        if parsed is None:
            return False
        host, port = parsed
        bound_host, bound_port = str(self.server_address[0]).lower(), self.server_address[1]
        if port is not None and port != bound_port:
            return False
        if host == bound_host or (host in _LOOPBACK_NAMES and bound_host in _LOOPBACK_NAMES):
            return True
        if bound_host in ("0.0.0.0", "::"):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return host == "localhost"
            return True
        return False


class _CodecHandler(BaseHTTPRequestHandler):
    server: _CodecServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines would say nothing useful, and payloads are never logged."""

    def _cors(self) -> None:
        origin = (self.headers.get("Origin") or "").rstrip("/")
        allowed = self.server.cors_origins
        if origin and origin in allowed:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
        elif origin and "*" in allowed:  # any page may call, so never with the browser's cookies
            self.send_header("Access-Control-Allow-Origin", "*")
        else:
            return
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization")
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

    def _authorised(self, path: str) -> bool:
        """Host check, then the token: ``Authorization: Bearer <token>``, or the token as the
        first part of the path (``/<token>/decode``: the Web UI's codec endpoint can carry it)."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self.close_connection = True
            self._error(HTTPStatus.FORBIDDEN, "this Host is not the codec server's address")
            return False
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization") or ""
        bearer = given[7:].strip() if given[:7].lower() == "bearer " else ""
        first = path.lstrip("/").split("/", 1)[0]
        if hmac.compare_digest(bearer.encode(), token.encode()) or hmac.compare_digest(
            first.encode(), token.encode()
        ):
            return True
        self._error(
            HTTPStatus.UNAUTHORIZED, "a bearer token is required (see `sternway codec-server`)"
        )
        return False

    def do_OPTIONS(self) -> None:
        """CORS preflight of the Web UI (browsers send no credentials here: Host check only)."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self.close_connection = True
            self._error(HTTPStatus.FORBIDDEN, "this Host is not the codec server's address")
            return
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """``/health``: whether the server runs, and which keys it has (ids only)."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self.close_connection = True
            self._error(HTTPStatus.FORBIDDEN, "this Host is not the codec server's address")
            return
        if self.path.split("?", 1)[0].rstrip("/") != "/health":
            self._error(HTTPStatus.NOT_FOUND, "POST /encode or /decode; GET /health")
            return
        body = {"ok": True, "keys": self.server.codec.key_ids, "current": self.server.codec.current}
        self._answer(HTTPStatus.OK, json.dumps(body).encode(), "application/json")

    def do_POST(self) -> None:
        """``/encode`` and ``/decode`` (also under a prefix, e.g. ``/<namespace>/decode``)."""
        path = self.path.split("?", 1)[0].rstrip("/")
        operation = path.rsplit("/", 1)[-1]
        if not self._authorised(path):
            return
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
    codec: AesGcmCodec,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    cors_origins: Iterable[str] = (),
    token: str | None = None,
) -> ThreadingHTTPServer:
    """A threaded HTTP server of ``POST /encode`` and ``POST /decode`` (not started yet).

    Call ``serve_forever()`` (e.g. in a thread, see :func:`serve_in_thread`) and ``shutdown()``.
    ``cors_origins`` lists the Web UI origins allowed to call it from a browser (``*``: any page,
    never with credentials). Requests must name the bind address as Host, and with a ``token``
    carry it (``Authorization: Bearer``, or as the path's first part); whoever has it can decrypt
    payloads.
    """
    return _CodecServer((host, port), codec, cors_origins, token)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever()`` in a daemon thread and return the thread."""
    thread = threading.Thread(target=server.serve_forever, name="codec-server", daemon=True)
    thread.start()
    return thread
