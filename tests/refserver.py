"""A real HTTP image server on 127.0.0.1 for reference-image tests, and image builders.

Importable helper (not a conftest): ``from refserver import ImageServer, encode, data_uri``.
The server runs in a thread and counts every accepted connection, so a test can prove that a
refused URL made no connection at all. Routes:

``/img/<name>``                 a stored body (``server.files[name] = (bytes, content_type)``)
``/slow/<ms>/<name>``           the same after a delay (tracks concurrent requests in ``peak``)
``/redirect/<n>/<name>``        ``n`` 302 hops, the last to ``/img/<name>``
``/goto?to=<location>``         one 302 to any Location
``/big?n=<bytes>&cl=<mode>``    ``n`` random bytes after a PNG signature; ``cl`` = honest|none|<number>
``/endless``                    a body that never ends (until the client hangs up)
``/trickle``                    one byte every 0.1 s under a large Content-Length
``/stall``                      headers, then silence for 3 s
anything else                   404

With ``tls=`` (see :func:`tls_contexts`) it speaks HTTPS and records the SNI names it was sent.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode ``image`` with Pillow (``fmt`` in lowercase: jpeg, png, webp, bmp, tiff, gif)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **params)
    return buffer.getvalue()


def solid(size: tuple[int, int], color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


def data_uri(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_of_size(width: int, height: int, *, full: bool = True) -> bytes:
    """A 1-bit grayscale PNG of any size, built without allocating its pixels.

    With ``full`` the IDAT holds every (zero) row, compressed by streaming ``zlib`` row by row, so a
    50,000 x 50,000 image is a few hundred KB; without it the IDAT is a stub (header-only tests).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    parts: list[bytes] = []
    if full:
        row = bytes(1 + (width + 7) // 8)
        block = row * max(1, (1 << 20) // len(row))
        rows_per_block = len(block) // len(row)
        left = height
        while left > 0:
            n = min(left, rows_per_block)
            parts.append(compressor.compress(block[: n * len(row)]))
            left -= n
    else:
        parts.append(compressor.compress(bytes(1 + (width + 7) // 8)))
    parts.append(compressor.flush())
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def tls_contexts(hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a certificate for ``hostname`` only: (server context, client context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "refserver test CA")])
    ca_cert = build("refserver test CA", ca_key, ca_name, ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = build(hostname, leaf_key, ca_name, ca_key, False)

    pem = serialization.Encoding.PEM
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as fh:
            fh.write(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
        with open(key_path, "wb") as fh:
            fh.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=ca_cert.public_bytes(pem).decode("ascii"))
    return server, client


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # the default backlog of 5 would delay concurrent connects by a SYN retry

    def __init__(self, owner: ImageServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        if self.owner.tls is None:
            return sock, address
        return self.owner.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def verify_request(self, request: object, client_address: object) -> bool:
        with self.owner.lock:
            self.owner.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # close-delimited bodies: no Content-Length needed

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(5)
            self.request.do_handshake()  # in this connection's thread, not the accept loop
        super().setup()

    def _send(self, status: int, body: bytes, content_type: str, length: str | None = "honest") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length == "honest":
            self.send_header("Content-Length", str(len(body)))
        elif length is not None and length != "none":
            self.send_header("Content-Length", length)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may hang up early (byte cap)
            self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve_file(self, name: str) -> None:
        if name not in self.server.owner.files:
            self._send(404, b"not found", "text/plain")
            return
        body, content_type = self.server.owner.files[name]
        self._send(200, body, content_type)

    def _stream_forever(self, chunk: bytes, pause: float) -> None:
        stop = self.server.owner.stopping
        try:
            while not stop.is_set():
                self.wfile.write(chunk)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except OSError:
            pass

    def do_GET(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        with owner.lock:
            owner.hosts.append(self.headers.get("Host", ""))
            owner.paths.append(self.path)
        if parts[0] == "img" and len(parts) == 2:
            self._serve_file(parts[1])
        elif parts[0] == "slow" and len(parts) == 3:
            with owner.lock:
                owner.in_flight += 1
                owner.peak = max(owner.peak, owner.in_flight)
            try:
                owner.stopping.wait(int(parts[1]) / 1000)
                self._serve_file(parts[2])
            finally:
                with owner.lock:
                    owner.in_flight -= 1
        elif parts[0] == "redirect" and len(parts) == 3:
            hops = int(parts[1])
            self._redirect(f"/redirect/{hops - 1}/{parts[2]}" if hops > 1 else f"/img/{parts[2]}")
        elif parts[0] == "goto":
            self._redirect(query["to"])
        elif parts[0] == "big":
            body = PNG_SIGNATURE + os.urandom(int(query.get("n", "200000")))
            self._send(200, body, "image/png", query.get("cl", "honest"))
        elif parts[0] == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(PNG_SIGNATURE)
            self._stream_forever(bytes(64 * 1024), 0)
        elif parts[0] == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self._stream_forever(b"\x00", 0.1)
        elif parts[0] == "stall":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.flush()
            owner.stopping.wait(3)
        else:
            self._send(404, b"not found", "text/plain")


class ImageServer:
    """Threaded HTTP server on 127.0.0.1 (a free port); use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.sni: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections = 0
        self.in_flight = 0
        self.peak = 0
        self.hosts: list[str] = []
        self.paths: list[str] = []
        self._server = _Server(self, (host, 0))
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="refserver", daemon=True)

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def reset_counters(self) -> None:
        with self.lock:
            self.connections = 0
            self.peak = 0
            self.hosts.clear()
            self.paths.clear()

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
