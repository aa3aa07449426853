"""The three-node pass itself (BINGSAN_TEST_NODES=3): the catalog fixtures
really are several nodes behind nginx, and one client connection's requests
really land on different nodes, so every other test of the pass exercises
the catalog across nodes rather than one node behind a proxy."""

from __future__ import annotations

import json
import time

import pytest

from cluster import TEST_NODES
from harness import unique

pytestmark = pytest.mark.skipif(TEST_NODES < 2, reason="the catalog fixtures are one process (BINGSAN_TEST_NODES=1)")


def test_one_connection_reaches_every_node_in_turn(server):
    nodes = {f"127.0.0.1:{n.port}" for n in server.nodes}
    assert len(nodes) == TEST_NODES
    before = len(server.front.upstreams())
    ns = unique("front")
    with server.raw() as c:
        assert c.request("POST", server.api_path("namespaces"), json.dumps({"namespace": [ns]}).encode()).status == 200
        # Read-your-writes on one client connection, whichever node answers.
        for _ in range(2 * TEST_NODES):
            r = c.request("GET", server.api_path(f"namespaces/{ns}"))
            assert r.status == 200 and r.json()["namespace"] == [ns], (r.status, r.body[:200])
    # nginx logs a request after its response: wait for the last line.
    deadline = time.monotonic() + 5
    while len(served := server.front.upstreams()[before:]) < 1 + 2 * TEST_NODES and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(served) == 1 + 2 * TEST_NODES, served
    assert set(served) == nodes, f"requests of one connection did not spread over the nodes: {served}"
    # Round robin: no two consecutive requests on the same node.
    assert all(a != b for a, b in zip(served, served[1:])), served

