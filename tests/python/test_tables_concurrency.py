"""Concurrent writers on one table.

PyIceberg writers each bring their own RestCatalog and retry on
CommitFailedException the way a writer would (refresh, write again). The
server must never lose or duplicate an acknowledged append.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from harness import assert_metadata_file_matches, local_path, table_url, unique

THREADS = 8
APPENDS_PER_THREAD = 3
ROWS_PER_APPEND = 5
#: Wall-clock bound for all writers together.
DEADLINE_S = 90.0

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "writer", StringType(), required=False),
)
ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("writer", pa.string())])


def test_eight_pyiceberg_writers_append_concurrently(server):
    admin = server.catalog("admin")
    ns = unique()
    admin.create_namespace(ns)
    ident = (ns, "hot")
    admin.create_table(ident, schema=SCHEMA)

    start = threading.Barrier(THREADS, timeout=30)
    deadline = time.monotonic() + DEADLINE_S

    def writer(k: int) -> dict:
        cat = server.catalog(f"writer{k}")
        table = cat.load_table(ident)
        start.wait()
        done, conflicts = [], 0
        for j in range(APPENDS_PER_THREAD):
            ids = [k * 10_000 + j * 100 + r for r in range(ROWS_PER_APPEND)]
            df = pa.Table.from_pylist([{"id": i, "writer": f"w{k}"} for i in ids], schema=ARROW)
            while True:
                assert time.monotonic() < deadline, f"writer {k} still retrying at the deadline"
                try:
                    table.append(df)
                    break
                except CommitFailedException:
                    conflicts += 1
                    table = cat.load_table(ident)
            done.append((table.current_snapshot().snapshot_id, ids))
        return {"appends": done, "conflicts": conflicts}

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(writer, range(THREADS), timeout=DEADLINE_S + 30))

    expected_ids = sorted(i for r in results for _, ids in r["appends"] for i in ids)
    assert len(expected_ids) == THREADS * APPENDS_PER_THREAD * ROWS_PER_APPEND

    t = admin.load_table(ident)
    assert_metadata_file_matches(t.metadata_location, t.metadata)
    got = sorted(t.scan().to_arrow()["id"].to_pylist())
    assert got == expected_ids, "rows lost or duplicated"

    # One snapshot per acknowledged append, in one chain from main.
    committed = {sid for r in results for sid, _ in r["appends"]}
    assert len(committed) == THREADS * APPENDS_PER_THREAD
    chain, sid = [], t.current_snapshot().snapshot_id
    while sid is not None:
        chain.append(sid)
        sid = t.snapshot_by_id(sid).parent_snapshot_id
    assert set(chain) == committed, "main's history is not exactly the acknowledged appends"
    assert len(t.snapshots()) == len(committed)
    assert sorted(s.sequence_number for s in t.snapshots()) == list(range(1, len(committed) + 1))
    # Every writer's rows came from that writer.
    rows = t.scan().to_arrow().to_pylist()
    assert all(r["writer"] == f"w{r['id'] // 10_000}" for r in rows)


def test_concurrent_commits_without_requirements_are_all_applied(server, http):
    """Commits whose requirements still hold on the new base are re-applied
    by the server (bounded retries): 8 threads x 10 property commits. A 409
    may only say the retry budget ran out (no requirement can fail here); the
    client retries it, and afterwards every property is present and every
    commit wrote exactly one metadata version."""
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    r = http.post(table_url(server, ns), json={
        "name": "props",
        "schema": {"type": "struct", "fields": [{"id": 1, "name": "id", "type": "long", "required": True}]},
    })
    assert r.status_code == 200, r.text
    url = table_url(server, ns, "props")
    per_thread = 10
    start = threading.Barrier(THREADS, timeout=30)
    deadline = time.monotonic() + DEADLINE_S

    def committer(k: int) -> list[str]:
        refused = []
        with type(http)() as s:
            start.wait()
            for j in range(per_thread):
                while True:
                    assert time.monotonic() < deadline, f"committer {k} still retrying at the deadline"
                    resp = s.post(url, json={"requirements": [], "updates": [
                        {"action": "set-properties", "updates": {f"k{k}_{j}": str(j)}}]}, timeout=30)
                    if resp.status_code == 200:
                        break
                    assert resp.status_code == 409, resp.text
                    refused.append(resp.json()["error"]["message"])
        return refused

    with ThreadPoolExecutor(THREADS) as pool:
        refused = [m for ms in pool.map(committer, range(THREADS), timeout=DEADLINE_S + 30) for m in ms]
    assert all("contention" in m for m in refused), refused
    body = http.get(url).json()
    props = body["metadata"]["properties"]
    assert {f"k{k}_{j}" for k in range(THREADS) for j in range(per_thread)} <= set(props)
    # One metadata version per acknowledged commit, none for a refused one.
    assert len(body["metadata"]["metadata-log"]) == THREADS * per_thread
    assert body["metadata-location"].rsplit("/", 1)[1].startswith(f"{THREADS * per_thread:05d}-")
    assert_metadata_file_matches(body["metadata-location"], body["metadata"])
    # Files written by attempts that lost the swap were deleted again.
    files = sorted(p.name for p in (local_path(body["metadata"]["location"]) / "metadata").glob("*.metadata.json"))
    assert len(files) == THREADS * per_thread + 1, f"{len(files)} metadata files for {THREADS * per_thread + 1} versions"
