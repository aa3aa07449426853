"""S3 for the tests: a moto server on loopback, buckets made with boto3,
and a TCP proxy that can stop or slow S3 for the server under test.

moto keeps objects in memory, so "S3 is down" is the proxy refusing and
cutting connections while moto keeps its state; the test client can go to
moto directly and see what the catalog really stored.
"""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import requests

from harness import _die_with_parent, free_port

#: moto accepts any keys; these are the static client credentials.
KEY, SECRET, REGION = "testing", "testing", "us-east-1"
START_TIMEOUT = 30.0


class MotoServer:
    """`moto_server` (moto[server]) on 127.0.0.1, its log in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(workdir) / "moto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MotoServer":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                requests.get(self.endpoint + "/moto-api/", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"moto did not answer within {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self, endpoint: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
            aws_access_key_id=KEY, aws_secret_access_key=SECRET,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        """Every object key under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}


class FaultProxy:
    """A TCP proxy to `target_port` on loopback: `up`, `down` (new
    connections are cut at once, open ones are cut), or `slow` (each
    chunk from S3 waits `delay` seconds). `on_request`, when set, sees each
    chunk the server sends before it is forwarded."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.mode = "up"
        self.delay = 0.0
        self.on_request: Callable[[bytes], None] | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        if mode == "down":
            with self._lock:
                for s in list(self._open):
                    _close(s)
                self._open.clear()

    def close(self) -> None:
        self._closed = True
        self.set("down")
        _close(self.listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "down":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_s3: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self.mode == "down":
                    break
                if from_s3 and self.mode == "slow":
                    time.sleep(self.delay)
                if not from_s3 and self.on_request:
                    self.on_request(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
                with self._lock:
                    self._open.discard(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


#: Server keys from the variables of `server_env()`.
ENV_CREDENTIALS = ('{ source = "env", access-key-id-var = "BINGSAN_TEST_S3_KEY", '
                   'secret-access-key-var = "BINGSAN_TEST_S3_SECRET" }')


def warehouses_file(path: Path, name: str, root: str, endpoint: str, timeout_ms: int | None = 1000, *,
                    credentials: str = ENV_CREDENTIALS, delegation: str | None = None,
                    sts_role: str | None = None, sts_endpoint: str | None = None) -> Path:
    """A warehouses file for one S3 warehouse on `endpoint` (path style,
    server keys by default from the environment; `timeout_ms` None: the
    server's default), delegating to clients when `delegation` is given."""
    lines = [f'[[warehouse]]\nname = "{name}"\nroot = "{root}"\n[warehouse.s3]\n'
             f'endpoint = "{endpoint}"\nregion = "{REGION}"\npath-style = true\n'
             f"credentials = {credentials}\n"]
    for key, value in (("delegation", delegation), ("sts-role-arn", sts_role), ("sts-endpoint", sts_endpoint)):
        if value is not None:
            lines.append(f'{key} = "{value}"\n')
    if timeout_ms is not None:
        lines.append(f"request-timeout-ms = {timeout_ms}\n")
    path.write_text("".join(lines))
    return path


def hide_client_credentials(monkeypatch, tmp_path: Path) -> None:
    """The test's S3 clients get no credentials of their own: no AWS
    variables, no ~/.aws files, no instance metadata to fall back on."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def s3_client_per_file_io(monkeypatch) -> None:
    """Each PyIceberg FileIO gets an S3 client of its own, made once for all
    its threads.

    PyIceberg's remote signing (0.12) installs its signer by unregistering
    and registering it again on fsspec's cached S3FileSystem, which every
    FileIO with the same S3 settings shares, once per FileIO per thread: a
    request another thread sends in between goes out unsigned and S3
    answers 403 (apache/iceberg-python#3896; moto's 403 surfaced as
    `PermissionError: Forbidden` from a scan's worker threads). With no
    client shared, the signer is in place before any request can use it."""
    from pyiceberg.io.fsspec import FsspecFileIO
    from s3fs import S3FileSystem

    made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def get_fs(io, scheme: str, hostname: str | None = None):
        with lock:
            per_io = made.setdefault(io, {})
            if (scheme, hostname) not in per_io:
                per_io[(scheme, hostname)] = io._get_fs(scheme, hostname)  # noqa: SLF001 (PyIceberg's factory)
            return per_io[(scheme, hostname)]

    monkeypatch.setattr(S3FileSystem, "cachable", False)
    monkeypatch.setattr(FsspecFileIO, "get_fs", get_fs)


def server_env() -> dict[str, str]:
    """The variables `warehouses_file` points the server's keys at."""
    return {"BINGSAN_TEST_S3_KEY": KEY, "BINGSAN_TEST_S3_SECRET": SECRET}


class StsGate:
    """STS on loopback in front of moto's (HTTP, or HTTPS with `tls` =
    (cert, key) files). Records each call (`calls`: its form, its
    `Authorization` header, the answer) and, by `mode`, forwards it (`up`),
    drops the connection unanswered (`down`), answers after `slow_secs`
    (`slow`), or refuses it with AccessDenied (`deny`)."""

    #: Words of the refusal's message: none may reach a catalog client.
    DENIAL_WORDS = ("AccessDenied", "bingsan-server", "internal-sts-note-7731")
    DENIAL = ("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User "
              "arn:aws:iam::123456789012:user/bingsan-server is not authorized to perform sts:AssumeRole "
              "(internal-sts-note-7731)</Message></Error><RequestId>r-1</RequestId></ErrorResponse>")

    def __init__(self, upstream: str, slow_secs: float = 0.0, tls: tuple[Path, Path] | None = None) -> None:
        gate = self
        self.mode = "up"
        self.calls: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = gate.mode
                if mode == "down":
                    self.close_connection = True
                    return
                if mode == "deny":
                    return self._answer(403, gate.DENIAL.encode())
                if mode == "slow":
                    time.sleep(slow_secs)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                # moto tells services apart by the signature's scope;
                # AssumeRoleWithWebIdentity is unsigned: give it one naming STS.
                headers.setdefault("Authorization", "AWS4-HMAC-SHA256 Credential=unsigned/20260101/us-east-1/sts/"
                                   "aws4_request, SignedHeaders=host, Signature=00")
                r = requests.post(upstream + self.path, data=body, headers=headers, timeout=30)
                # The Query API's parameters: in the form body, or the URL (web identity).
                query = urlsplit(self.path).query
                gate.calls.append({
                    "form": {k: v[0] for k, v in parse_qs(f"{query}&{body.decode()}").items()},
                    "authorization": self.headers.get("Authorization"),
                    "answer": r.text,
                })
                self._answer(r.status_code, r.content)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A slow call answered after the catalog hung up is no test failure.
        self.server.handle_error = lambda *args: None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
