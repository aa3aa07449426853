"""Two shards: connections spread by SO_REUSEPORT must see one catalog,
with every read seeing every write acknowledged before it."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from harness import RawConn

CONNECTIONS = 20


@pytest.fixture
def two_shards(server_factory):
    s = server_factory(name="two-shards", shards=2)
    conns = [s.raw() for _ in range(CONNECTIONS)]
    # Each connection does one request so it is accepted before we count.
    for c in conns:
        assert c.request("GET", "/health/live").status == 200
    yield s, conns
    for c in conns:
        c.close()


def per_shard_connections(server) -> dict[str, float]:
    return server.metrics().by_label("bingsan_http_connections", "shard")


@pytest.mark.single_node(reason="one process's shards")
def test_connections_spread_over_both_shards(two_shards):
    s, conns = two_shards
    by_shard = per_shard_connections(s)
    assert sum(by_shard.values()) == CONNECTIONS, by_shard
    # With 20 connections, all landing on one shard has probability 2^-19.
    assert len(by_shard) == 2 and all(v > 0 for v in by_shard.values()), by_shard


def test_read_your_writes_across_shards(two_shards):
    s, conns = two_shards
    created: list[str] = []
    for i, writer in enumerate(conns):
        name = f"x{i:02d}"
        r = writer.request("POST", "/v1/namespaces", json.dumps({"namespace": [name], "properties": {"v": "0"}}).encode())
        assert r.status == 200, r.body
        created.append(name)
        # Immediately, on every other connection (so on both shards).
        for j, reader in enumerate(conns):
            r = reader.request("GET", f"/v1/namespaces/{name}")
            assert r.status == 200, f"conn {j} does not see {name} created on conn {i}: {r.body!r}"
            assert reader.request("HEAD", f"/v1/namespaces/{name}").status == 204
        listed = conns[(i + 7) % CONNECTIONS].request("GET", "/v1/namespaces").json()["namespaces"]
        assert listed == [[n] for n in created]


def test_updates_and_drops_visible_across_shards(two_shards):
    s, conns = two_shards
    assert conns[0].request("POST", "/v1/namespaces", b'{"namespace":["u"],"properties":{"v":"0"}}').status == 200
    # Warm every shard's read cache with the old value first.
    for c in conns:
        assert c.request("GET", "/v1/namespaces/u").json()["properties"] == {"v": "0"}
    for version in range(1, 6):
        writer = conns[version % CONNECTIONS]
        body = json.dumps({"updates": {"v": str(version)}}).encode()
        assert writer.request("POST", "/v1/namespaces/u/properties", body).status == 200
        for j, reader in enumerate(conns):
            got = reader.request("GET", "/v1/namespaces/u").json()["properties"]
            assert got == {"v": str(version)}, f"conn {j} reads stale properties {got} after update {version}"
    assert conns[3].request("DELETE", "/v1/namespaces/u").status == 204
    for j, reader in enumerate(conns):
        assert reader.request("GET", "/v1/namespaces/u").status == 404, f"conn {j} still sees a dropped namespace"
        assert reader.request("HEAD", "/v1/namespaces/u").status == 404
    # Re-created with other properties: no shard serves the old ones.
    assert conns[11].request("POST", "/v1/namespaces", b'{"namespace":["u"],"properties":{"new":"1"}}').status == 200
    for reader in conns:
        assert reader.request("GET", "/v1/namespaces/u").json()["properties"] == {"new": "1"}


def test_concurrent_creates_of_one_name_one_wins(two_shards):
    """The same create pipelined on all 20 connections at once: exactly one
    200, the rest 409."""
    s, conns = two_shards
    req = RawConn.build("POST", "/v1/namespaces", b'{"namespace":["race"]}')
    for c in conns:
        c.send(req)
    statuses = sorted(c.read_response().status for c in conns)
    assert statuses == [200] + [409] * (CONNECTIONS - 1), statuses


def test_child_create_races_parent_drop(two_shards):
    """Parent drop and child create race on different connections: either
    the drop wins (child 400: createNamespace answers a missing parent so)
    or the child wins (drop 409), never both."""
    s, conns = two_shards
    for round_ in range(10):
        parent = f"p{round_}"
        assert conns[0].request("POST", "/v1/namespaces", json.dumps({"namespace": [parent]}).encode()).status == 200
        a, b = conns[(2 * round_ + 1) % CONNECTIONS], conns[(2 * round_ + 2) % CONNECTIONS]
        a.send(RawConn.build("DELETE", f"/v1/namespaces/{parent}"))
        b.send(RawConn.build("POST", "/v1/namespaces", json.dumps({"namespace": [parent, "c"]}).encode()))
        drop, child = a.read_response().status, b.read_response().status
        parent_exists = conns[5].request("GET", f"/v1/namespaces/{parent}").status == 200
        child_exists = conns[6].request("GET", f"/v1/namespaces/{parent}%1Fc").status == 200
        assert (drop, child) in ((204, 400), (409, 200)), (drop, child)
        assert parent_exists == (drop == 409) and child_exists == (child == 200)


def shard_cpus(server) -> dict[str, str]:
    """Each shard thread's allowed CPUs (its `Cpus_allowed_list`), by name."""
    placed = {}
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith("bingsan-shard-"):
            status = (task / "status").read_text()
            placed[name] = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M).group(1)
    return placed


@pytest.mark.single_node(reason="one process's shards and CPUs")
def test_shards_follow_the_affinity_mask(server_factory):
    """Under `taskset -c N`, the default shard count is the mask's size and
    shards run on the mask's CPUs, not on any online CPU."""
    last = max(os.sched_getaffinity(0))
    s = server_factory(name="masked", shards=0, affinity={last})
    assert shard_cpus(s) == {"bingsan-shard-0": str(last)}
    assert set(per_shard_connections(s)) <= {"0"}
    assert re.search(r"shard count shards=1 reason=the affinity mask allows 1 CPUs", s.log_text()), s.log_tail()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.fixture
def one_cpu_cgroup():
    """A child cgroup limited to one CPU of time (v1 `cpu.cfs_quota_us` or
    v2 `cpu.max`); yields its `cgroup.procs`. Skips where this process
    cannot make one (not root, no cpu controller)."""
    v1 = Path("/sys/fs/cgroup/cpu")
    v2 = Path("/sys/fs/cgroup")
    name = f"bingsan-test-{os.getpid()}"
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / name
        limit = (group / "cpu.cfs_quota_us", "100000")  # period: 100000 us
    elif "cpu" in _read(v2 / "cgroup.subtree_control").split():
        group = v2 / name
        limit = (group / "cpu.max", "100000 100000")
    else:
        pytest.skip("no cgroup cpu controller at /sys/fs/cgroup to limit a server with")
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup ({e.strerror}): needs root and a writable cgroup mount")
    try:
        limit[0].write_text(limit[1])
        yield group / "cgroup.procs"
    finally:
        # The server has stopped by now (server_factory's teardown runs first).
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.single_node(reason="one process's shards and CPUs")
def test_shards_follow_the_cgroup_cpu_limit(one_cpu_cgroup, server_factory):
    """With every CPU in the mask but one CPU of time in its cgroup (a
    container's CPU limit), the default is one shard, and the log says why."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs to tell the cgroup limit from the affinity mask")
    s = server_factory(name="cgroup-limited", shards=0, cgroup_procs=one_cpu_cgroup)
    assert len(shard_cpus(s)) == 1, shard_cpus(s)
    assert re.search(r"shard count shards=1 reason=the cgroup CPU limit \(\S+ = 100000", s.log_text()), s.log_tail()
