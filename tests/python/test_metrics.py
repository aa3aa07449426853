"""/metrics in Prometheus text format, and zero allocations on hot reads."""

from __future__ import annotations

import json

import pytest
import requests

from harness import MEASUREMENTS, TEST_STORE, Metrics

REQUIRED = [
    "bingsan_pool_hits_total",
    "bingsan_pool_misses_total",
    "bingsan_pool_returns_total",
    "bingsan_pool_discards_total",
    "bingsan_pool_retained_bytes",
    "bingsan_allocs_total",
    "bingsan_alloc_bytes_total",
    "bingsan_request_allocs_total",
    "bingsan_http_requests_total",
    "bingsan_http_request_duration_seconds",
    "bingsan_http_connections",
    "bingsan_commits_total",
    "bingsan_metadata_verified_total",
    "bingsan_metadata_damaged_total",
    "bingsan_metadata_repaired_total",
    "bingsan_store_operation_duration_seconds",
    "bingsan_write_failures_total",
    "bingsan_storage_free_bytes",
    "bingsan_storage_writable",
    "process_resident_memory_bytes",
]


@pytest.mark.single_node(reason="the metrics of one process")
@pytest.mark.parametrize("where", ["shard-port", "metrics-listen"])
def test_metrics_exposition(server, where):
    url = server.url("/metrics") if where == "shard-port" else server.metrics_url
    r = requests.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    m = Metrics(r.text)  # raises on anything that is not Prometheus text
    missing = [n for n in REQUIRED if n not in m.names()]
    assert not missing, f"missing metrics: {missing}"
    assert m.family("bingsan_http_request_duration_seconds").type == "histogram"
    for name in ("bingsan_pool_retained_bytes", "bingsan_http_connections"):
        assert m.family(name).type == "gauge", name
    for name in ("bingsan_pool_hits", "bingsan_allocs", "bingsan_request_allocs", "bingsan_http_requests"):
        assert m.family(name).type == "counter", name
    assert m.sum("process_resident_memory_bytes") > 0
    assert set(m.by_label("bingsan_allocs_total", "shard")) == {"0", "1"}


@pytest.mark.single_node(reason="the metrics of one process")
def test_metrics_listen_other_paths(server):
    r = requests.get(f"http://127.0.0.1:{server.metrics_port}/nope", timeout=10)
    assert r.status_code == 404


@pytest.mark.single_node(reason="the metrics of one process")
def test_request_counters_are_exact(fresh_server):
    s = fresh_server
    before = s.metrics()
    with s.raw() as c:
        for _ in range(7):
            assert c.request("GET", "/v1/config").status == 200
        for _ in range(3):
            assert c.request("GET", "/v1/namespaces/nope").status == 404
        assert c.request("POST", "/v1/namespaces", b'{"namespace":["m"]}').status == 200
        assert c.request("GET", "/nowhere").status == 404
    after = s.metrics()

    def delta(sample, **labels):
        return after.sum(sample, **labels) - before.sum(sample, **labels)

    assert delta("bingsan_http_requests_total", route="get_config", status="200") == 7
    assert delta("bingsan_http_requests_total", route="load_namespace_metadata", status="404") == 3
    assert delta("bingsan_http_requests_total", route="create_namespace", status="200") == 1
    assert delta("bingsan_http_requests_total", route="unmatched", status="404") == 1
    assert delta("bingsan_http_request_duration_seconds_count", route="get_config") == 7
    # Histogram buckets are cumulative and end at the count.
    fam = after.family("bingsan_http_request_duration_seconds")
    buckets = [(float(x.labels["le"]), x.value) for x in fam.samples
               if x.name.endswith("_bucket") and x.labels["route"] == "get_config"]
    values = [v for _, v in sorted(buckets)]
    assert values == sorted(values)
    assert values[-1] == after.sum("bingsan_http_request_duration_seconds_count", route="get_config")


@pytest.mark.single_node(reason="the metrics of one process")
def test_pool_counters_move(fresh_server):
    s = fresh_server
    before = s.metrics()
    with s.raw() as c:
        for _ in range(50):
            assert c.request("GET", "/v1/config").status == 200
    after = s.metrics()
    gets = (after.sum("bingsan_pool_hits_total") + after.sum("bingsan_pool_misses_total")
            - before.sum("bingsan_pool_hits_total") - before.sum("bingsan_pool_misses_total"))
    assert gets >= 50
    assert after.sum("bingsan_pool_hits_total") > before.sum("bingsan_pool_hits_total")


# ---------------------------------------------------------------- zero alloc
N = 500
WARMUP = 100


@pytest.fixture(scope="module")
def alloc_server(tmp_path_factory, binary):
    """One server with a parent holding 100 namespaces."""
    from harness import BingsanServer

    s = BingsanServer(tmp_path_factory.mktemp("alloc"), name="alloc", binary=binary, shards=2).start()
    with s.raw() as c:
        assert c.request("POST", "/v1/namespaces", b'{"namespace":["hot"],"properties":{"owner":"me"}}').status == 200
        assert c.request("POST", "/v1/namespaces", b'{"namespace":["parent"]}').status == 200
        for i in range(100):
            body = json.dumps({"namespace": ["parent", f"child{i:03d}"]}).encode()
            assert c.request("POST", "/v1/namespaces", body).status == 200
        for name, columns in (("typical", 10), ("wide", 120)):
            fields = [
                {"id": i, "name": f"c{i}", "required": i == 1, "type": ["long", "string", "double", "date"][i % 4]}
                for i in range(1, columns + 1)
            ]
            body = json.dumps({"name": name, "schema": {"type": "struct", "fields": fields}}).encode()
            assert c.request("POST", "/v1/namespaces/hot/tables", body).status == 200
        # Big enough to have a stored gzip answer, small enough for pooled buffers.
        body = json.dumps({"name": "history", "schema": {"type": "struct", "fields": fields}}).encode()
        assert c.request("POST", "/v1/namespaces/hot/tables", body).status == 200
        from test_compression import snapshot

        updates = [{"action": "add-snapshot", "snapshot": snapshot(i)} for i in range(1, 41)]
        updates.append({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": 40})
        body = json.dumps({"updates": updates}).encode()
        assert c.request("POST", "/v1/namespaces/hot/tables/history", body).status == 200
    yield s
    code = s.stop()
    assert code == 0, f"alloc server: SIGTERM exit code {code}\n{s.log_tail()}"


GZIP = {"Accept-Encoding": "gzip, deflate"}
HOT_READS = {
    "GET /v1/config": ("GET", "/v1/config"),
    "GET /v1/namespaces/{ns}": ("GET", "/v1/namespaces/hot"),
    "HEAD /v1/namespaces/{ns}": ("HEAD", "/v1/namespaces/hot"),
    "GET /v1/namespaces?parent (100 children)": ("GET", "/v1/namespaces?parent=parent"),
    "GET .../tables/{t} (10 columns)": ("GET", "/v1/namespaces/hot/tables/typical"),
    "GET .../tables/{t} (120 columns)": ("GET", "/v1/namespaces/hot/tables/wide"),
    "GET .../tables/{t}?snapshots=refs": ("GET", "/v1/namespaces/hot/tables/wide?snapshots=refs"),
    "GET .../tables/{t} (40 snapshots)": ("GET", "/v1/namespaces/hot/tables/history"),
    "GET .../tables/{t} (40 snapshots, gzip)": ("GET", "/v1/namespaces/hot/tables/history", GZIP),
    "HEAD .../tables/{t}": ("HEAD", "/v1/namespaces/hot/tables/typical"),
    "GET .../tables": ("GET", "/v1/namespaces/hot/tables"),
}


@pytest.mark.parametrize("name", list(HOT_READS))
def test_hot_read_path_allocates_nothing(alloc_server, name):
    s = alloc_server
    method, path, *headers = HOT_READS[name]
    headers = headers[0] if headers else {}
    # An existence check answers 204 without a body; a read answers 200.
    expected = 204 if method == "HEAD" else 200
    with s.raw() as c:
        # Warm-up on the same connection: pools fill, caches load.
        for _ in range(WARMUP):
            r = c.request(method, path, headers=headers)
            assert r.status == expected, r.body
        # The gzip case is served compressed, the others plain.
        assert r.headers.get("content-encoding") == ("gzip" if headers else None), name
        before = s.metrics()  # from --metrics-listen: not a shard thread
        for _ in range(N):
            r = c.request(method, path, headers=headers)
            assert r.status == expected, r.body
        after = s.metrics()
    request_allocs = after.sum("bingsan_request_allocs_total") - before.sum("bingsan_request_allocs_total")
    all_allocs = after.sum("bingsan_allocs_total") - before.sum("bingsan_allocs_total")
    alloc_bytes = after.sum("bingsan_alloc_bytes_total") - before.sum("bingsan_alloc_bytes_total")
    MEASUREMENTS.append(
        f"{name}: {N} requests on one keep-alive connection: bingsan_request_allocs_total +{request_allocs:.0f}; "
        f"bingsan_allocs_total +{all_allocs:.0f} ({all_allocs / N:.2f}/request, {alloc_bytes / N:.0f} B/request)"
    )
    if TEST_STORE == "postgres" and name != "GET /v1/config":
        # Each read is a query through tokio-postgres, which allocates:
        # measured (docs/performance.md), not asserted.
        return
    assert request_allocs == 0, f"{name}: {request_allocs:.0f} allocations on the request path over {N} requests"


def test_request_alloc_counter_is_live(alloc_server):
    """Control for the zero-allocation test: the counter does count (a create
    parses JSON and writes to the store, which allocates)."""
    s = alloc_server
    before = s.metrics().sum("bingsan_request_allocs_total")
    with s.raw() as c:
        for i in range(20):
            body = json.dumps({"namespace": [f"alloc_control_{i}"], "properties": {"k": "v" * 100}}).encode()
            assert c.request("POST", "/v1/namespaces", body).status == 200
    after = s.metrics().sum("bingsan_request_allocs_total")
    assert after - before > 0, "bingsan_request_allocs_total did not move on creates: is counting off?"


# Request-path allocations per commit on a typical table (issue 14's "<= 60"):
# measured 40.6 to 41.2 on this tree (sled's own work varies a little); the
# bound is the target and fails a regression past it
# (docs/performance.md, "Allocations per commit").
COMMIT_ALLOCS_MAX = 60
COMMITS = 100


@pytest.mark.sled_only(reason="the store's own allocations differ (tokio-postgres); the bound is sled's")
def test_commit_allocations_per_typical_commit(alloc_server):
    """Exact request-path allocations of a commit on a typical table (10
    columns; an append's Spark summary; main moved with
    `assert-ref-snapshot-id`; the oldest of 3 snapshots expired; metadata log
    full at 100 with delete-after-commit), as `scripts/measure-big-commits`
    measures them: the average over COMMITS commits after 110 warm-up ones."""
    from test_compression import snapshot

    s = alloc_server
    fields = [{"id": i, "name": f"c{i}", "type": "long", "required": False} for i in range(1, 11)]
    props = {"write.metadata.delete-after-commit.enabled": "true"}
    body = json.dumps({"name": "commits", "schema": {"type": "struct", "fields": fields}, "properties": props})
    path = "/v1/namespaces/hot/tables/commits"
    with s.raw(timeout=60) as c:
        assert c.request("POST", "/v1/namespaces/hot/tables", body.encode()).status == 200

        def commit(i: int) -> None:
            updates = [
                {"action": "add-snapshot", "snapshot": snapshot(i)},
                {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": i},
            ]
            if i > 3:
                updates.append({"action": "remove-snapshots", "snapshot-ids": [i - 3]})
            req = [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": i - 1 if i > 1 else None}]
            r = c.request("POST", path, json.dumps({"requirements": req, "updates": updates}).encode())
            assert r.status == 200, r.body[:300]

        for i in range(1, 111):
            commit(i)
        before = s.metrics()
        for i in range(111, 111 + COMMITS):
            commit(i)
        after = s.metrics()
    per_commit = (after.sum("bingsan_request_allocs_total") - before.sum("bingsan_request_allocs_total")) / COMMITS
    shard = (after.sum("bingsan_allocs_total") - before.sum("bingsan_allocs_total")) / COMMITS
    MEASUREMENTS.append(
        f"commit on a typical table: {per_commit:.2f} request-path allocations per commit "
        f"({shard:.2f} on the shard threads in all), bound {COMMIT_ALLOCS_MAX}"
    )
    assert per_commit > 0, "the counter did not move: is counting off?"
    assert per_commit <= COMMIT_ALLOCS_MAX, f"{per_commit:.2f} allocations per commit (bound {COMMIT_ALLOCS_MAX})"


def test_sustained_load_hits_the_pools_and_stays_within_the_cap(alloc_server):
    """After sustained load the buffer pool serves at least 99% of gets from
    its free list, and what it retains stays within its cap (128 buffers of
    at most 64 KiB per shard, the defaults)."""
    s = alloc_server
    conns = [s.raw() for _ in range(8)]
    try:
        for _ in range(250):
            for c in conns:
                assert c.request("GET", "/v1/namespaces/hot/tables/wide").status == 200
                assert c.request("GET", "/v1/namespaces?parent=parent").status == 200
        m = s.metrics()
    finally:
        for c in conns:
            c.close()
    hits = m.sum("bingsan_pool_hits_total", pool="buffer")
    misses = m.sum("bingsan_pool_misses_total", pool="buffer")
    rate = hits / (hits + misses)
    MEASUREMENTS.append(f"buffer pool after 4000 requests on 8 connections: hit rate {rate:.4f} ({hits:.0f} hits, {misses:.0f} misses)")
    assert rate >= 0.99, f"buffer pool hit rate {rate:.4f}"
    # The idle budget per shard (defaults): 128 x 4 KiB of buffers, 64 arenas
    # of at most 8 KiB; 1 MiB in all.
    for shard in ("0", "1"):
        buffers = m.sum("bingsan_pool_retained_bytes", pool="buffer", shard=shard)
        arenas = m.sum("bingsan_pool_retained_bytes", pool="arena", shard=shard)
        assert buffers <= 128 * 4096, f"shard {shard} retains {buffers:.0f} bytes of buffers"
        assert arenas <= 64 * 8192, f"shard {shard} retains {arenas:.0f} bytes of arenas"
        assert buffers + arenas <= 1 << 20


@pytest.mark.single_node(reason="the metrics of one process")
def test_first_scrape_of_a_fresh_server_is_complete(fresh_server):
    """Before any request, families without samples are left out rather than
    failing the encoder and cutting the exposition short."""
    r = requests.get(fresh_server.metrics_url, timeout=10)
    assert r.status_code == 200
    m = Metrics(r.text)
    for name in ("bingsan_pool_hits_total", "bingsan_store_operation_duration_seconds", "bingsan_commits_total",
                 "process_resident_memory_bytes"):
        assert name in m.names(), name
    assert "encoding metrics failed" not in fresh_server.log_tail()


IDLE_CONNECTIONS = 1000


def test_idle_connections_cost_little_memory(alloc_server):
    """An idle keep-alive connection keeps no request state or buffer: the
    server's RSS grows by well under 3 KiB per connection accepted, answered
    once and left idle (about 10.5 KB before the request state moved to a
    pooled slot; docs/architecture.md, "An idle connection's memory"). RSS,
    not the allocation counters: those count every transient allocation of
    the runtime too."""
    s = alloc_server
    # Warm the pools (slots, buffers) so they do not count as per-connection.
    with s.raw() as c:
        assert c.request("GET", "/v1/config").status == 200
    before = s.metrics().sum("process_resident_memory_bytes")
    conns = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            conns.append(s.raw())
            assert conns[-1].request("GET", "/v1/config").status == 200
        held = s.metrics().sum("process_resident_memory_bytes")
    finally:
        for c in conns:
            c.close()
    per_conn = (held - before) / IDLE_CONNECTIONS
    MEASUREMENTS.append(f"idle keep-alive connection: server RSS +{per_conn:.0f} B per connection")
    assert per_conn <= 3072, f"server RSS grew {per_conn:.0f} B per idle connection"
