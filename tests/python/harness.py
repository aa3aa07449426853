"""Start the real `bingsan` binary and talk to it.

Everything here is loopback only (127.0.0.1) and bounded in time: every
socket has a timeout, every wait has a deadline, and a started server dies
with the test process (PR_SET_PDEATHSIG) even if pytest itself is killed.

The pieces:
- `BingsanServer`: one server process on free ports with its own data dir,
  warehouse and log file; start, wait for readiness, SIGTERM, kill -9,
  restart on the same directories and ports.
- `RawConn`: a raw HTTP/1.1 client over one socket, for what `requests`
  cannot express (pipelining, chunked bodies, 100-continue, broken input);
  over TLS when given an `ssl.SSLContext`.
- HTTPS: a server given `tls_cert`/`tls_key` is started with
  `--tls-cert/--tls-key`; its URLs are https and its raw connections (the
  readiness probe included) speak TLS, trusting that certificate.
- Prometheus helpers: scrape and sum samples by name and labels.
- `LazyMount`: a `lazyfs.py` FUSE daemon (a disk with a volatile write
  cache and switchable faults) for the power-cut and disk-fault tests.
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

#: How long a server gets to answer /health/ready with 200.
READY_TIMEOUT = 20.0
#: How long a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Default timeout of every HTTP call made by the tests.
HTTP_TIMEOUT = 10.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: The FUSE filesystem of `LazyMount`, and how long it gets to mount.
LAZYFS = Path(__file__).with_name("lazyfs.py")
MOUNT_TIMEOUT = 10.0

#: Lines tests report without asserting; printed after the run.
MEASUREMENTS: list[str] = []

#: The store servers use unless told: "sled" (default) or "postgres"
#: ($BINGSAN_TEST_STORE); scripts/test-all runs the suite once with each.
TEST_STORE = os.environ.get("BINGSAN_TEST_STORE", "sled")
#: The PostgreSQL database of the tests; each server gets a schema of its own.
PG_URL = os.environ.get("BINGSAN_TEST_PG", "postgres://root@127.0.0.1:5432/test")
#: Every schema this run creates starts with this (dropped at the end).
PG_RUN = f"bt_{os.getpid()}_{uuid.uuid4().hex[:6]}"
_pg_schemas = 0


def pg_store(label: str = "s") -> str:
    """A `--store` URL on a schema no other server of any run uses."""
    global _pg_schemas
    _pg_schemas += 1
    return f"{PG_URL}?schema={PG_RUN}_{label}{_pg_schemas}"


def psql(sql: str, timeout: float = 30) -> str:
    """Runs SQL on the test database (psql); returns its unaligned output."""
    out = subprocess.run(["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"psql failed: {out.stderr.strip()}")
    return out.stdout


def drop_pg_schemas() -> None:
    """Drops every schema this run created."""
    if _pg_schemas == 0:
        return
    psql(f"""DO $$ DECLARE s text; BEGIN
        FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE '{PG_RUN}%' LOOP
            EXECUTE format('DROP SCHEMA %I CASCADE', s);
        END LOOP; END $$""")


def bingsan_bin() -> Path:
    """The server binary: $BINGSAN_BIN, else <repo>/target/debug/bingsan."""
    return Path(os.environ.get("BINGSAN_BIN") or REPO / "target" / "debug" / "bingsan")


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_EPHEMERAL = _ephemeral_ports()
_handed_out: set[int] = set()
#: Where this run's search for ports starts: a random place per run, so
#: runs side by side on one machine (CI jobs, engineers) do not hand out the
#: same ports in the same order, each checking a port free just before the
#: other's server binds it.
_PORTS = [p for p in range(10000, 65536) if p not in _EPHEMERAL]
_first = random.SystemRandom().randrange(len(_PORTS)) if _PORTS else 0  # unaffected by seeding
_PORTS = _PORTS[_first:] + _PORTS[:_first]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, outside the
    kernel's ephemeral range and never handed out before in this run: a
    port picked before its server starts must not be taken meanwhile by an
    outgoing connection (the nodes' own PostgreSQL connections, say), which
    draws its local port from the ephemeral range."""
    for port in _PORTS:
        if port in _handed_out:
            continue
        _handed_out.add(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no port outside the range
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str = "ns") -> str:
    """A name no other test uses, so tests can share a server."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGKILL it when the test
    # process dies, so no server outlives an interrupted run.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class ServerError(AssertionError):
    """The server did not start, stop or behave as a process should."""


class BingsanServer:
    """One `bingsan serve` process on 127.0.0.1.

    `workdir` holds `data/`, `warehouse/` and one log file per start. The
    listen and metrics ports are picked once and kept across restarts, so a
    restart looks to clients like the same server coming back.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        prefix: str | None = None,
        separator: str | None = None,
        shards: int = 2,
        extra_args: Iterable[str] = (),
        binary: Path | None = None,
        name: str = "bingsan",
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        rlimit_nofile: int | None = None,
        affinity: set[int] | None = None,
        cgroup_procs: Path | None = None,
        wrapper: Iterable[str] = (),
        preexec: Callable[[], None] | None = None,
        store: str | None = None,
        warehouse: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        #: Nodes of one catalog share theirs (`warehouse`).
        self.warehouse = Path(warehouse) if warehouse else self.workdir / "warehouse"
        self.warehouse.mkdir(exist_ok=True)
        self.prefix = prefix or ""
        self.separator = separator or ""
        self.shards = shards
        self.extra_args = list(extra_args)
        self.binary = Path(binary) if binary else bingsan_bin()
        self.name = name
        #: Serve HTTPS with this PEM certificate and key (see `tls_client_context`).
        self.tls_cert = Path(tls_cert) if tls_cert else None
        self.tls_key = Path(tls_key) if tls_key else None
        #: Start the server under this RLIMIT_NOFILE (soft and hard).
        self.rlimit_nofile = rlimit_nofile
        #: Start the server with this CPU affinity mask (as `taskset` would).
        self.affinity = affinity
        #: Start the server inside the cgroup of this `cgroup.procs` file.
        self.cgroup_procs = cgroup_procs
        #: A command the server runs under (e.g. strace and its flags).
        self.wrapper = list(wrapper)
        #: Run in the child just before exec (e.g. to load a seccomp filter).
        self.preexec = preexec
        #: `--store`: empty for sled in `data_dir`; by default a schema of
        #: its own when the run is on PostgreSQL (kept across restarts).
        self.store = store if store is not None else (pg_store() if TEST_STORE == "postgres" else "")
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path = self.workdir / "server-0.log"
        self._log_file = None

    # ----------------------------------------------------------- addresses
    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """/metrics on --metrics-listen, served by the metrics thread."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def url(self, path: str) -> str:
        """An absolute URL for a path such as `/v1/config`."""
        return self.base_url + path

    def api(self, path: str, prefixed: bool = True) -> str:
        """URL of a catalog path given without `/v1`, e.g. `namespaces/a`;
        with the `{prefix}` segment when the server has a prefix."""
        path = path.lstrip("/")
        if prefixed and self.prefix:
            return f"{self.base_url}/v1/{self.prefix}/{path}"
        return f"{self.base_url}/v1/{path}"

    def api_path(self, path: str, prefixed: bool = True) -> str:
        """Like `api` but only the path, for raw sockets."""
        return self.api(path, prefixed)[len(self.base_url):]

    # ----------------------------------------------------------- lifecycle
    def command(self) -> list[str]:
        cmd = [
            *self.wrapper,
            str(self.binary),
            "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--data-dir", str(self.data_dir),
            "--warehouse", str(self.warehouse),
            "--shards", str(self.shards),
        ]
        if self.store:
            cmd += ["--store", self.store]
        if self.prefix:
            cmd += ["--prefix", self.prefix]
        if self.separator:
            cmd += ["--namespace-separator", self.separator]
        if self.tls_cert or self.tls_key:
            cmd += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        return cmd + self.extra_args

    def start(self, ready_timeout: float = READY_TIMEOUT) -> "BingsanServer":
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError(f"{self.name} is already running (pid {self.proc.pid})")
        if not self.binary.is_file():
            raise ServerError(
                f"server binary {self.binary} not found: run `cargo build` or set BINGSAN_BIN"
            )
        self.log_path = self.workdir / f"server-{self.starts}.log"
        self.starts += 1
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("BINGSAN_LOG", "info")
        env["NO_COLOR"] = "1"
        # Flags below win over any BINGSAN_* the caller's environment has.
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=self._preexec,
        )
        self.wait_ready(ready_timeout)
        return self

    def _preexec(self) -> None:
        _die_with_parent()
        if self.rlimit_nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (self.rlimit_nofile, self.rlimit_nofile))
        if self.affinity is not None:
            os.sched_setaffinity(0, self.affinity)
        if self.cgroup_procs is not None:
            self.cgroup_procs.write_text(str(os.getpid()))
        if self.preexec is not None:
            self.preexec()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Polls GET /health/ready until 200; fails with the log otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"{self.name} exited with {code} during start-up\n{self.log_tail()}")
            # A raw socket closed at once: a probe must not linger as an
            # open connection that later tests would count.
            try:
                with self.raw(timeout=1.0) as c:
                    r = c.request("GET", "/health/ready", headers={"Connection": "close"})
                if r.status == 200:
                    return
                last = f"{r.status} {r.body[:200]!r}"
            except (OSError, ConnectionError) as e:
                last = repr(e)
            time.sleep(0.05)
        raise ServerError(
            f"{self.name} not ready within {timeout:.0f}s (last: {last})\n{self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code
        (negative for a signal, as `subprocess` reports it)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_log()
        return self.proc.returncode

    def kill9(self) -> None:
        """kill -9: no drain, no final flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self._close_log()

    def restart(self, *, graceful: bool = True, ready_timeout: float = READY_TIMEOUT) -> int | None:
        """Stops (SIGTERM, or kill -9 when not graceful) and starts again on
        the same ports and directories; returns the old exit code."""
        if graceful:
            code = self.stop()
        else:
            self.kill9()
            code = self.proc.returncode if self.proc else None
        self.start(ready_timeout)
        return code

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return _ANSI.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"--- last {len(text)} lines of {self.log_path} ---\n" + "\n".join(text)

    # ----------------------------------------------------------- clients
    def catalog(self, name: str = "test", **props: str):
        """A PyIceberg RestCatalog for this server."""
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(name, uri=self.base_url, warehouse=str(self.warehouse), **props)

    def raw(self, timeout: float = HTTP_TIMEOUT) -> "RawConn":
        """A raw connection; over TLS (trusting `tls_cert`) on an HTTPS server."""
        tls = tls_client_context(self.tls_cert) if self.tls_cert else None
        return RawConn(self.port, timeout=timeout, tls=tls)

    def metrics(self, via_metrics_listen: bool = True) -> "Metrics":
        """Scrapes /metrics (from --metrics-listen by default: that thread is
        no shard, so the scrape itself does not touch shard counters)."""
        url = self.metrics_url if via_metrics_listen else self.url("/metrics")
        r = requests.get(url, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, f"GET {url}: {r.status_code} {r.text[:300]}"
        return Metrics(r.text)

    def __repr__(self) -> str:
        return f"<BingsanServer {self.name} {self.base_url} prefix={self.prefix!r} shards={self.shards}>"


# --------------------------------------------------------------- metrics
class Metrics:
    """A parsed Prometheus text exposition."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples = [s for f in self.families for s in f.samples]

    @classmethod
    def of_all(cls, parts: list["Metrics"]) -> "Metrics":
        """The scrapes of several processes as one: sums run over all."""
        m = cls("")
        m.text = "".join(p.text for p in parts)
        m.families = [f for p in parts for f in p.families]
        m.samples = [s for p in parts for s in p.samples]
        return m

    def names(self) -> set[str]:
        """Family names and sample names (counters' samples end in _total,
        histograms' in _bucket/_sum/_count)."""
        return {f.name for f in self.families} | {s.name for s in self.samples}

    def family(self, name: str):
        for f in self.families:
            if f.name == name:
                return f
        return None

    def sum(self, sample: str, **labels: str) -> float:
        """Sum of every sample named `sample` whose labels include `labels`."""
        return sum(
            s.value
            for s in self.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def by_label(self, sample: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples:
            if s.name == sample and label in s.labels:
                out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out


# --------------------------------------------------------------- raw HTTP
@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        import json

        return json.loads(self.body)


class RawConn:
    """One TCP connection speaking HTTP/1.1 by hand.

    `read_response` frames responses the way the server sends them:
    Content-Length, or no body for 1xx/204/304 and HEAD.
    """

    def __init__(self, port: int, timeout: float = HTTP_TIMEOUT, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            # The handshake runs here, bounded by the socket's timeout.
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
            except BaseException:
                self.sock.close()
                raise
        self.buf = b""

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def build(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
              version: str = "HTTP/1.1") -> bytes:
        lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
        hdrs = dict(headers or {})
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
            hdrs["Content-Length"] = str(len(body))
        if body is not None and not any(k.lower() == "content-type" for k in hdrs):
            hdrs["Content-Type"] = "application/json"
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> RawResponse:
        self.send(self.build(method, path, body, headers))
        return self.read_response(head=method == "HEAD")

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_response(self, head: bool = False) -> RawResponse:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"connection closed before a response head; got {self.buf[:200]!r}")
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1."), f"bad status line {lines[0]!r}"
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        resp = RawResponse(status, reason, headers)
        if head or status < 200 or status in (204, 304):
            return resp
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill():
                    raise ConnectionError("connection closed inside a response body")
            resp.body, self.buf = self.buf[:n], self.buf[n:]
            return resp
        # No framing: the body runs to the end of the connection.
        while self._fill():
            pass
        resp.body, self.buf = self.buf, b""
        return resp

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes (or resets) the connection within
        `timeout` with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLEOFError):
            return True
        except socket.timeout:
            return False


def assert_error(resp, status: int, type_name: str | None = None) -> dict:
    """Asserts an Iceberg ErrorModel body: {"error":{"message","type","code"}}.

    Works for `requests.Response` and `RawResponse`."""
    code = getattr(resp, "status_code", None) or resp.status
    text = resp.text if hasattr(resp, "text") else resp.body.decode("utf-8", "replace")
    assert code == status, f"expected {status}, got {code}: {text[:500]}"
    ctype = resp.headers.get("content-type") or resp.headers.get("Content-Type") or ""
    assert ctype.startswith("application/json"), f"error content-type {ctype!r}"
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["code"] == status, err
    if type_name is not None:
        assert err["type"] == type_name, f"expected {type_name}, got {err['type']}: {err['message']}"
    return err


# --------------------------------------------------------------- tables
# Shared by test_tables*.py, test_commit_oracle.py and the transaction
# tests: table URLs, a raw create, and the check that a metadata file on
# disk is what the server answered with.

#: A small schema in REST JSON form, ids deliberately not 1..n.
SIMPLE_SCHEMA_JSON = {
    "type": "struct",
    "schema-id": 7,
    "fields": [
        {"id": 11, "name": "id", "type": "long", "required": True},
        {"id": 12, "name": "name", "type": "string", "required": False},
        {"id": 13, "name": "ts", "type": "timestamp", "required": False},
    ],
}


def encode_namespace(namespace) -> str:
    """A namespace (str or tuple of parts) as one path segment (parts
    joined by %1F, each percent-encoded)."""
    from urllib.parse import quote

    parts = (namespace,) if isinstance(namespace, str) else tuple(namespace)
    return "%1F".join(quote(p, safe="") for p in parts)


def table_url(server: "BingsanServer", namespace, name: str | None = None) -> str:
    """URL of `.../namespaces/{ns}/tables` or `.../tables/{name}`."""
    from urllib.parse import quote

    path = f"namespaces/{encode_namespace(namespace)}/tables"
    if name is not None:
        path += "/" + quote(name, safe="")
    return server.api(path)


def create_table_raw(session, server: "BingsanServer", namespace, name: str, schema: dict | None = None,
                     **fields) -> dict:
    """POST a CreateTableRequest; asserts 200 and returns the LoadTableResult.
    Extra keyword arguments become request fields (`partition_spec=` ->
    "partition-spec")."""
    body = {"name": name, "schema": schema or SIMPLE_SCHEMA_JSON}
    body.update({k.replace("_", "-"): v for k, v in fields.items()})
    r = session.post(table_url(server, namespace), json=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"create {name}: {r.status_code} {r.text[:500]}"
    return r.json()


def local_path(location: str) -> Path:
    """The local path of a `file://` location (every location the server answers has its scheme)."""
    assert location.startswith("file:///"), f"not a file:// URI: {location}"
    return Path(location[len("file://"):])


def assert_metadata_file_matches(location: str, metadata) -> None:
    """The file at `location` exists, PyIceberg parses it, and it holds the
    same table as `metadata` (a PyIceberg TableMetadata or its JSON dict):
    uuid, current snapshot, schemas, specs, sort orders, snapshots, refs,
    properties."""
    from pyiceberg.table import StaticTable
    from pyiceberg.table.metadata import TableMetadataUtil

    assert local_path(location).is_file(), f"metadata file {location} does not exist"
    if isinstance(metadata, dict):
        import json

        metadata = TableMetadataUtil.parse_raw(json.dumps(metadata))
    on_disk = StaticTable.from_metadata(location).metadata
    assert str(on_disk.table_uuid) == str(metadata.table_uuid)
    assert on_disk.current_snapshot_id == metadata.current_snapshot_id
    assert on_disk.schemas == metadata.schemas
    assert [s.schema_id for s in on_disk.schemas] == [s.schema_id for s in metadata.schemas]
    assert on_disk.current_schema_id == metadata.current_schema_id
    assert on_disk.partition_specs == metadata.partition_specs
    assert on_disk.sort_orders == metadata.sort_orders
    assert [s.snapshot_id for s in on_disk.snapshots] == [s.snapshot_id for s in metadata.snapshots]
    assert on_disk.refs == metadata.refs
    assert on_disk.properties == metadata.properties
    assert on_disk.format_version == metadata.format_version


# --------------------------------------------------------------- views and idempotency keys
# Shared by test_views.py, test_transactions.py and test_idempotency.py: view
# URLs and UUIDv7 idempotency keys.


def view_url(server: "BingsanServer", namespace, name: str | None = None) -> str:
    """URL of `.../namespaces/{ns}/views` or `.../views/{name}`."""
    from urllib.parse import quote

    path = f"namespaces/{encode_namespace(namespace)}/views"
    if name is not None:
        path += "/" + quote(name, safe="")
    return server.api(path)


def uuid7() -> str:
    """A fresh UUIDv7 (RFC 9562) in its 36-character text form: the format
    the spec asks of an `Idempotency-Key` (Python 3.11 has no uuid.uuid7)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76                                   # version 7
    value |= ((rand >> 62) & 0xFFF) << 64                # rand_a, 12 bits
    value |= 0b10 << 62                                  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)                      # rand_b, 62 bits
    return str(uuid.UUID(int=value))


# --------------------------------------------------------------- TLS and liveness
# Shared by test_tls.py, test_hardening.py and any test that starts an
# HTTPS server (BingsanServer(tls_cert=..., tls_key=...)).


def assert_serving(server: "BingsanServer") -> None:
    """The server process is still running and answers GET /health/live
    with 200 on a new connection (over TLS on an HTTPS server)."""
    assert server.running, f"{server.name} died (exit {server.proc.returncode})\n{server.log_tail()}"
    with server.raw(timeout=5) as c:
        r = c.request("GET", "/health/live")
    assert r.status == 200, f"/health/live: {r.status} {r.body[:200]!r}"


def tls_client_context(ca: Path | str, *, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context trusting only `ca` (the server's self-signed
    certificate), checking the host name; `version` pins both the minimum
    and maximum protocol version."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


# ---------------------------------------------------------------- shared test loops
def collect_pages(fetch, key: str, page_size: int, max_pages: int) -> tuple[list, int]:
    """Follows a paged listing from an empty `pageToken`: `fetch(token)`
    returns one page's JSON body. Checks every page's size and token and that
    paging ends; returns the items of every page and the number of pages."""
    seen, token, pages = [], "", 0
    while True:
        body = fetch(token)
        pages += 1
        assert len(body[key]) <= page_size
        seen += body[key]
        assert "next-page-token" in body, body
        token = body["next-page-token"]
        if token is None:
            return seen, pages
        assert isinstance(token, str) and token
        assert pages <= max_pages, "paging does not end"


def run_threads(target, count: int, timeout: float = 60) -> None:
    """Runs `target(i)` for i in range(count) on daemon threads and waits."""
    import threading

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "writers hung"


class LazyMount:
    """One `lazyfs.py` daemon serving `backing` at `mountpoint`."""

    def __init__(self, backing: Path, mountpoint: Path, logs: Path) -> None:
        self.backing, self.mountpoint, self.logs = backing, mountpoint, logs
        self.proc: subprocess.Popen | None = None
        self.mounts = 0

    def fault(self, marker: str, value: str | None = "") -> None:
        """Switches a `lazyfs.py` fault marker on (with `value`) or off (None)."""
        path = self.backing / marker
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(value)

    def mount(self) -> None:
        log = open(self.logs / f"lazyfs-{self.mounts}.log", "wb")
        self.mounts += 1
        self.proc = subprocess.Popen(
            [sys.executable, str(LAZYFS), str(self.backing), str(self.mountpoint)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                lines = (self.logs / f"lazyfs-{self.mounts - 1}.log").read_text(errors="replace").split("\n")
                said = " / ".join(dict.fromkeys(l.strip() for l in (lines[0], lines[-1]) if l.strip()))
                raise OSError(f"lazyfs did not mount: {said or 'no output'}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the dirty pages die with the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        # A dead daemon's mount answers ENOTCONN (so it is not `ismount`):
        # detach unconditionally.
        cmd = ["fusermount3", "-u", "-z"] if shutil.which("fusermount3") else ["umount", "-l"]
        subprocess.run([*cmd, str(self.mountpoint)], check=False, timeout=10, capture_output=True)
