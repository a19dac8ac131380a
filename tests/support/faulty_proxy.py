"""A fault-injecting HTTP proxy for S3 tests: sits on loopback in front of an S3 server and, on a configurable
fraction of requests, answers 500 InternalError or 503 SlowDown, resets the connection, or delays the response.

Requests are forwarded with their original headers (the Host header included, so SigV4 signatures stay valid).
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTS = ("500", "503", "reset", "delay")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def _s3_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault-proxy</RequestId></Error>").encode()


class FaultyProxy:
    def __init__(self, upstream: str, fraction: float = 0.0, faults: tuple[str, ...] = FAULTS,
                 delay: float = 1.5, seed: int = 0) -> None:
        self.upstream = urlparse(upstream)
        self.fraction = fraction
        self.faults = faults
        self.delay = delay
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                try:
                    self._serve()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (e.g. its read timeout fired during an injected delay)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._pick()
                if fault == "reset":
                    # RST instead of FIN: the client sees "connection reset by peer" mid-exchange.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault in ("500", "503"):
                    code, text = ("InternalError", "injected") if fault == "500" else ("SlowDown", "Reduce your rate")
                    payload = _s3_error(code, text)
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "delay":
                    time.sleep(proxy.delay)
                proxy._forward(self, body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FaultyProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _pick(self) -> str | None:
        with self.lock:
            fault = self.rng.choice(self.faults) if self.rng.random() < self.fraction else None
            self.counts[fault or "ok"] += 1
            return fault

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        handler.send_response(response.status, response.reason)
        head = handler.command == "HEAD"  # a HEAD answer's Content-Length is the object's, not this body's
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and (head or key.lower() != "content-length"):
                handler.send_header(key, value)
        if not head:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
