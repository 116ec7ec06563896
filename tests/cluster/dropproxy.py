"""A TLS proxy on loopback in front of the API server that loses one answer.

It terminates TLS with the API server's own certificate (signed by the cluster CA,
valid for 127.0.0.1), forwards each request to the API server on a connection of its
own (as the admin: the kubeconfig's user), and pipes the answer back, streamed, so
watches and logs work through it. The first request that ``drop`` selects (say, the
first real create of a Job) is forwarded, its answer is read in full, and the client's
connection is then closed without a byte of it: the API server did the work, the
client never heard. That is a lost response, as a dropped connection or a timed-out
load balancer gives.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

Select = Callable[[str, str], bool]  # (method, path) -> drop this one's answer


class DropProxy:
    """Forward to ``upstream`` (``127.0.0.1:PORT``); lose the answer of the first
    request ``drop`` selects."""

    def __init__(self, upstream_port: int, pki: Path, drop: Select) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.dropped: list[str] = []
        self.lock = threading.Lock()
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_ctx.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self.client_ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.client_ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DropProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self.server_ctx.wrap_socket(raw, server_side=True) as client:
                while self._one(client):
                    pass
        except (OSError, ssl.SSLError, ValueError):
            pass

    def _one(self, client: ssl.SSLSocket) -> bool:
        """Forward one request; False when the client's connection is done."""
        head, body = _read_request(client)
        if head is None:
            return False
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].decode().split(" ", 2)
        headers = [
            line
            for line in lines[1:]
            if line and not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        request = b"\r\n".join([lines[0], *headers, b"Connection: close", b"", b""]) + body
        with self.lock:
            losing = not self.dropped and self.drop(method, path)
            if losing:
                self.dropped.append(f"{method} {path}")
        upstream = self.client_ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", self.upstream_port)),
            server_hostname="127.0.0.1",
        )
        with upstream:
            upstream.sendall(request)
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                if not losing:
                    client.sendall(chunk)
        return False  # one request per client connection (we said Connection: close)


def _read_request(sock: ssl.SSLSocket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head, rest
