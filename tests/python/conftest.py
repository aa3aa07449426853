"""Fixtures that run the real `bingsan` binary.

Session-scoped servers are shared by every test that only adds uniquely
named namespaces (see `harness.unique`); a test that needs a clean store,
special flags, or kills its server uses `fresh_server` or `server_factory`.

Adding table tests later: use the same `catalog` fixture (it is
parametrized over plain / prefixed / custom-separator servers) and create a
`harness.unique()` namespace per test.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import requests

from cluster import TEST_NODES, catalog_server
from harness import MEASUREMENTS, TEST_STORE, BingsanServer, LazyMount, bingsan_bin, drop_pg_schemas

#: Catalog variants every PyIceberg test runs against.
CATALOG_VARIANTS = ["plain", "prefixed", "dotsep"]


def pytest_report_header(config):
    return f"bingsan binary: {bingsan_bin()}; store: {TEST_STORE}; nodes per catalog: {TEST_NODES}"


def pytest_configure(config):
    if TEST_NODES > 1 and TEST_STORE != "postgres":
        raise pytest.UsageError("BINGSAN_TEST_NODES > 1 needs BINGSAN_TEST_STORE=postgres (nodes share the database)")


def single_node(request) -> bool:
    """The test is about one process (marked `single_node`): in the
    multi-node pass it gets one node, not the cluster."""
    return request.node.get_closest_marker("single_node") is not None


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL, tests of the embedded store's own files are skipped,
    each with its reason."""
    if TEST_STORE != "postgres":
        return
    for item in items:
        mark = item.get_closest_marker("sled_only")
        if mark is not None:
            item.add_marker(pytest.mark.skip(reason="sled only: " + mark.kwargs.get("reason", mark.args[0] if mark.args else "")))


@pytest.fixture(scope="session", autouse=True)
def pg_schemas():
    """Drops the PostgreSQL schemas of this run's servers at the end."""
    yield
    drop_pg_schemas()


def pytest_terminal_summary(terminalreporter):
    """Numbers tests report without asserting (see harness.MEASUREMENTS)."""
    if MEASUREMENTS:
        terminalreporter.section("bingsan measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


def _stop_cleanly(servers) -> list[str]:
    """Stops each server with SIGTERM; describes those that did not exit 0."""
    problems = []
    for s in servers:
        was_running = s.running
        code = s.stop()
        if was_running and code != 0:
            problems.append(f"{s.name}: SIGTERM exit code {code}\n{s.log_tail()}")
        elif not was_running and s.proc is not None and code not in (0, -9):
            problems.append(f"{s.name}: had died with exit code {code}\n{s.log_tail()}")
    return problems


@pytest.fixture(scope="session")
def binary() -> Path:
    path = bingsan_bin()
    if not path.is_file():
        pytest.exit(f"server binary {path} not found: run `cargo build` or set BINGSAN_BIN", returncode=3)
    return path


@pytest.fixture(scope="session")
def session_servers(tmp_path_factory, binary):
    """Lazily started session servers by variant (and, in the multi-node
    pass, one node of each for `single_node` tests); all stopped at the end."""
    servers: dict[tuple[str, bool], BingsanServer] = {}

    def get(variant: str, single: bool = False) -> BingsanServer:
        key = (variant, single and TEST_NODES > 1)
        if key not in servers:
            opts = {
                "plain": {},
                "prefixed": {"prefix": "cat"},
                # A prefix plus an extra separator: clients (PyIceberg) use the
                # advertised separator ("%2E") to join namespace parts.
                "dotsep": {"prefix": "dots", "separator": "."},
            }[variant]
            s = catalog_server(tmp_path_factory.mktemp(f"srv-{variant}"), single_node=key[1], name=variant,
                               binary=binary, **opts)
            servers[key] = s.start()
        s = servers[key]
        if not s.running:
            pytest.fail(f"session server {variant} died (exit {s.proc.returncode})\n{s.log_tail()}")
        return s

    yield get
    problems = _stop_cleanly(servers.values())
    assert not problems, "session servers did not stop cleanly:\n" + "\n".join(problems)


@pytest.fixture
def server(request, session_servers) -> BingsanServer:
    """Shared server: no prefix, 2 shards."""
    return session_servers("plain", single_node(request))


@pytest.fixture
def prefixed_server(request, session_servers) -> BingsanServer:
    """Shared server with --prefix cat."""
    return session_servers("prefixed", single_node(request))


@pytest.fixture
def dotsep_server(request, session_servers) -> BingsanServer:
    """Shared server with --prefix dots --namespace-separator ."""
    return session_servers("dotsep", single_node(request))


@pytest.fixture(params=CATALOG_VARIANTS)
def any_server(request, session_servers) -> BingsanServer:
    """Each shared server in turn."""
    return session_servers(request.param, single_node(request))


@pytest.fixture
def catalog(any_server):
    """A PyIceberg RestCatalog on each shared server in turn."""
    return any_server.catalog()


@pytest.fixture
def plain_catalog(server):
    """A PyIceberg RestCatalog on the shared server without prefix."""
    return server.catalog()


@pytest.fixture
def prefixed_catalog(prefixed_server):
    """A PyIceberg RestCatalog on the shared server with --prefix cat."""
    return prefixed_server.catalog()


@pytest.fixture
def server_factory(request, tmp_path, binary):
    """Starts servers with custom flags for one test; stops them after it.
    In the multi-node pass each is a `Cluster` unless the test is `single_node`."""
    started: list[BingsanServer] = []

    def make(**kwargs) -> BingsanServer:
        kwargs.setdefault("binary", binary)
        s = catalog_server(tmp_path / f"srv{len(started)}", single_node=single_node(request), **kwargs)
        started.append(s)
        return s.start()

    yield make
    problems = _stop_cleanly(started)
    assert not problems, "servers did not stop cleanly:\n" + "\n".join(problems)


@pytest.fixture
def fresh_server(server_factory) -> BingsanServer:
    """A new server with an empty store, only for this test."""
    return server_factory(name="fresh")


@pytest.fixture
def http():
    """A requests session with a bounded default timeout."""

    class TimeoutSession(requests.Session):
        def request(self, *args, **kwargs):
            kwargs.setdefault("timeout", 10)
            return super().request(*args, **kwargs)

    with TimeoutSession() as s:
        yield s


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """A moto S3 server on loopback for the whole session (see s3.py);
    the servers under test find their S3 keys in the environment."""
    from s3 import MotoServer, server_env

    os.environ.update(server_env())
    m = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield m
    m.stop()


@pytest.fixture
def lazy_mount(tmp_path):
    """A mounted lazyfs, or a loud skip where FUSE cannot be mounted."""
    why = None
    if not os.path.exists("/dev/fuse"):
        why = "/dev/fuse does not exist"
    elif not (shutil.which("fusermount3") or os.geteuid() == 0):
        why = "fusermount3 is missing (Debian: apt-get install fuse3)"
    else:
        try:
            import mfusepy  # noqa: F401 (loads libfuse3)
        except (ImportError, OSError) as e:
            why = f"mfusepy or libfuse3 unavailable: {e}"
    backing, mnt, logs = tmp_path / "disk", tmp_path / "mnt", tmp_path / "logs"
    for d in (backing, mnt, logs):
        d.mkdir()
    m = LazyMount(backing, mnt, logs)
    if why is None:
        try:
            m.mount()
        except OSError as e:
            why = f"cannot mount FUSE here: {e}"
    if why is not None:
        print(f"\n!!! FUSE TEST SKIPPED: {why} !!!\n", file=sys.stderr)
        pytest.skip(f"FUSE TEST NOT RUN: {why}")
    yield m
    m.kill()
