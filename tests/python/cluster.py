"""One catalog served by several Bingsan nodes behind nginx, as deployed.

With BINGSAN_TEST_STORE=postgres and BINGSAN_TEST_NODES=3 the fixtures of
conftest.py hand tests a `Cluster` where they would get a `BingsanServer`:
three nodes on one PostgreSQL schema, one warehouse and one token key,
behind an nginx reverse proxy that sends each request to the next node
(round robin, keep-alive to the nodes, no stickiness), so consecutive
requests of one client connection land on different nodes.

A `Cluster` answers the part of `BingsanServer` that is about the catalog
(URLs, clients, raw connections to the front). What is about one process
(its log, metrics, pid, data dir, restarts) it does not have: tests that
need it are marked `single_node` and get one node (see conftest.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness import HTTP_TIMEOUT, READY_TIMEOUT, BingsanServer, Metrics, RawConn, ServerError, _die_with_parent, free_port, pg_store

#: Nodes per catalog: 1 (plain servers) unless $BINGSAN_TEST_NODES says more.
TEST_NODES = int(os.environ.get("BINGSAN_TEST_NODES", "1"))

#: The nginx binary (Debian's `nginx` package; scripts/test-all installs it).
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format node '$request_method $request_uri $status $upstream_addr';
    access_log {prefix}/access.log node;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream bingsan {{
{servers}
        keepalive 64;
        # Below the nodes' idle timeout: nginx never reuses a connection a
        # node is about to close.
        keepalive_timeout 30s;
    }}
    server {{
        listen 127.0.0.1:{port};
        # The nodes enforce their own limits (413, 431): pass everything.
        client_max_body_size 0;
        large_client_header_buffers 8 64k;
        location / {{
            proxy_pass http://bingsan;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_read_timeout 120s;
            # nginx's default: a request that failed on one node is tried
            # once more on the next, never a POST or PATCH (not idempotent).
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }}
    }}
}}
"""


class NginxFront:
    """An unprivileged nginx in its own prefix (config, temp dirs, logs, pid)."""

    def __init__(self, prefix: Path, upstream_ports: list[int]) -> None:
        self.prefix = Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.upstream_ports = upstream_ports
        self.proc: subprocess.Popen | None = None

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def start(self) -> "NginxFront":
        if not Path(NGINX).is_file():
            raise ServerError("nginx not found: apt-get install nginx (scripts/test-all does, as root)")
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in self.upstream_ports)
        conf = self.prefix / "nginx.conf"
        conf.write_text(_CONF.format(prefix=self.prefix, servers=servers, port=self.port))
        log = open(self.prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"nginx exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                with RawConn(self.port, timeout=1.0) as c:
                    if c.request("GET", "/health/ready", headers={"Connection": "close"}).status == 200:
                        return self
            except (OSError, ConnectionError):
                pass
            time.sleep(0.05)
        raise ServerError(f"nginx not ready within {READY_TIMEOUT:.0f}s\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            try:
                out += (self.prefix / name).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "--- nginx ---\n" + "\n".join(out)

    def upstreams(self) -> list[str]:
        """The node (host:port) of each logged request, in order."""
        try:
            return [line.rsplit(" ", 1)[-1] for line in self.access_log.read_text().splitlines()]
        except OSError:
            return []


class Cluster:
    """`nodes` BingsanServers on one store, warehouse and token key, behind
    one `NginxFront`. Takes `BingsanServer`'s keyword arguments, for every node."""

    def __init__(self, workdir: Path, *, nodes: int = 3, name: str = "cluster", **kwargs) -> None:
        if kwargs.get("tls_cert") or kwargs.get("tls_key"):
            raise ServerError("a Cluster serves plain HTTP: TLS tests are single_node")
        self.workdir = Path(workdir)
        self.name = name
        kwargs.setdefault("store", pg_store("cl"))
        kwargs.setdefault("warehouse", self.workdir / "warehouse")
        kwargs["extra_args"] = self._shared_key(list(kwargs.get("extra_args", ())))
        self.nodes = [BingsanServer(self.workdir / f"node{i}", name=f"{name}-node{i}", **kwargs) for i in range(nodes)]
        self.front = NginxFront(self.workdir / "nginx", [n.port for n in self.nodes])
        first = self.nodes[0]
        self.prefix, self.separator, self.shards = first.prefix, first.separator, first.shards
        self.warehouse, self.store, self.binary, self.tls_cert = first.warehouse, first.store, first.binary, None

    def _shared_key(self, args: list[str]) -> list[str]:
        """Nodes minting tokens share a key (docs/postgres.md); a node left
        to make up its own would refuse the tokens of the others."""
        if "--auth-clients-file" in args and "--auth-token-key-file" not in args:
            key = self.workdir / "token.key"
            self.workdir.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(32))
            args += ["--auth-token-key-file", str(key)]
        return args

    # ----------------------------------------------------------- lifecycle
    def start(self) -> "Cluster":
        # The first node migrates the schema; the others find it ready.
        for n in self.nodes:
            n.start()
        self.front.start()
        return self

    @property
    def running(self) -> bool:
        return self.front.running and all(n.running for n in self.nodes)

    @property
    def proc(self):
        """The first process that died, for fixtures reporting a death."""
        return next((p.proc for p in [*self.nodes, self.front] if p.proc and p.proc.poll() is not None), None)

    def stop(self) -> int | None:
        """Stops the front, then each node; the first non-zero exit code, else 0."""
        codes = [self.front.stop()] + [n.stop() for n in self.nodes]
        return next((c for c in codes if c not in (0, None)), 0)

    def log_text(self) -> str:
        """Every node's log, as an operator collects them."""
        return "\n".join(n.log_text() for n in self.nodes)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join([self.front.log_tail()] + [n.log_tail(lines) for n in self.nodes])

    # ----------------------------------------------------------- addresses and clients
    @property
    def port(self) -> int:
        return self.front.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.front.port}"

    url = BingsanServer.url
    api = BingsanServer.api
    api_path = BingsanServer.api_path
    catalog = BingsanServer.catalog

    def raw(self, timeout: float = HTTP_TIMEOUT) -> RawConn:
        return RawConn(self.front.port, timeout=timeout)

    @property
    def data_dir(self) -> Path:
        """The first node's: `bingsan check` and `store copy` want one; on
        PostgreSQL the catalog is not in it."""
        return self.nodes[0].data_dir

    def metrics(self) -> Metrics:
        """Every node's /metrics (from --metrics-listen) as one: counters sum
        over the catalog, whichever node served what."""
        return Metrics.of_all([n.metrics() for n in self.nodes])

    def __repr__(self) -> str:
        return f"<Cluster {self.name} {self.base_url} nodes={len(self.nodes)} prefix={self.prefix!r}>"


def catalog_server(workdir: Path, *, single_node: bool = False, **kwargs) -> "Cluster | BingsanServer":
    """What a test's catalog runs on, not yet started: a `Cluster` in the
    multi-node pass, else (and for `single_node` tests) one `BingsanServer`."""
    if TEST_NODES > 1 and not single_node:
        return Cluster(workdir, nodes=TEST_NODES, **kwargs)
    return BingsanServer(workdir, **kwargs)
