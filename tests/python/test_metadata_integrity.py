"""Damaged metadata files: a table's current metadata file truncated,
overwritten or deleted behind the catalog's back.

The store's record holds the metadata exactly as written to the file, so it
is the truth: loads keep answering from it (200, the same metadata), a
commit restores its base file when its size is wrong, the start-up pass
restores any file that differs, and `bingsan check [--repair]` reports and
restores them on a stopped server. Each repair is counted in
`bingsan_metadata_damaged_total` / `bingsan_metadata_repaired_total`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import SIMPLE_SCHEMA_JSON, create_table_raw, local_path, table_url, unique, view_url


def new_table(s, http, ns: str, name: str) -> tuple[str, bytes, dict]:
    """A table with one commit: (current location, its file's bytes, metadata)."""
    create_table_raw(http, s, ns, name)
    r = http.post(table_url(s, ns, name), json={"updates": [{"action": "set-properties", "updates": {"v": "1"}}]})
    assert r.status_code == 200, r.text
    loaded = http.get(table_url(s, ns, name)).json()
    location = loaded["metadata-location"]
    return location, local_path(location).read_bytes(), loaded["metadata"]


def make_ns(s, http) -> str:
    ns = unique()
    assert http.post(s.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    return ns


def damage(path: Path, how: str) -> None:
    original = path.read_bytes()
    if how == "truncate":
        path.write_bytes(original[: len(original) // 2])
    elif how == "overwrite":
        path.write_bytes(b'{"format-version":2}')
    elif how == "overwrite-same-size":
        path.write_bytes(original.replace(b'"v":"1"', b'"v":"X"'))
        assert len(path.read_bytes()) == len(original)
    elif how == "delete":
        path.unlink()
    assert not path.exists() or path.read_bytes() != original


def new_view(s, http, ns: str, name: str) -> tuple[str, bytes]:
    version = {"version-id": 1, "timestamp-ms": 1, "schema-id": 0, "summary": {}, "default-namespace": [ns],
               "representations": [{"type": "sql", "sql": "SELECT 1 AS id", "dialect": "spark"}]}
    r = http.post(view_url(s, ns), json={"name": name, "schema": SIMPLE_SCHEMA_JSON, "view-version": version})
    assert r.status_code == 200, r.text
    location = r.json()["metadata-location"]
    return location, local_path(location).read_bytes()


def counters(s) -> tuple[float, float]:
    m = s.metrics()
    return m.sum("bingsan_metadata_damaged_total"), m.sum("bingsan_metadata_repaired_total")


def check(s, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINGSAN_")}
    return subprocess.run([str(s.binary), "check", "--data-dir", str(s.data_dir), "--store", s.store,
                           "--warehouse", str(s.warehouse),
                           *flags], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("how", ["truncate", "overwrite", "delete"])
def test_load_answers_from_the_store_and_a_commit_restores_its_base(fresh_server, http, how):
    s = fresh_server
    ns = make_ns(s, http)
    location, original, metadata = new_table(s, http, ns, "t")
    before = counters(s)
    damage(local_path(location), how)

    loaded = http.get(table_url(s, ns, "t"))
    assert loaded.status_code == 200, loaded.text
    assert (loaded.json()["metadata-location"], loaded.json()["metadata"]) == (location, metadata)

    r = http.post(table_url(s, ns, "t"), json={"updates": [{"action": "set-properties", "updates": {"w": "2"}}]})
    assert r.status_code == 200, r.text
    assert local_path(location).read_bytes() == original
    assert counters(s) == (before[0] + 1, before[1] + 1)
    assert f"table {ns}.t" in s.log_text()
    assert not [p.name for p in local_path(location).parent.iterdir() if ".restore-" in p.name]
    new = r.json()["metadata-location"]
    assert r.json()["metadata"]["metadata-log"][-1]["metadata-file"] == location
    assert http.get(table_url(s, ns, "t")).json()["metadata-location"] == new


@pytest.mark.single_node(reason="the start-up pass and counters of one restarted process")
def test_startup_pass_restores_a_same_size_overwrite(fresh_server, http):
    s = fresh_server
    ns = make_ns(s, http)
    location, original, _ = new_table(s, http, ns, "t")
    _, intact, _ = new_table(s, http, ns, "intact")
    s.stop()
    damage(local_path(location), "overwrite-same-size")
    s.start()
    deadline = time.monotonic() + 20
    while counters(s) != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counters(s) == (1, 1), s.log_tail()
    assert local_path(location).read_bytes() == original
    assert s.metrics().sum("bingsan_metadata_verified_total") == 2
    assert f"table {ns}.t" in s.log_text()


def test_check_reports_and_repairs_a_stopped_servers_files(fresh_server, http):
    s = fresh_server
    ns = make_ns(s, http)
    tables = {how: new_table(s, http, ns, how.replace("-", "_")) for how in
              ("truncate", "overwrite-same-size", "delete", "intact")}
    view_location, view_bytes = new_view(s, http, ns, "v")
    if not s.store:  # sled locks its directory; nothing locks a database
        running = check(s)
        assert running.returncode == 1 and "is the server running?" in running.stderr, running
    s.stop()
    for how, (location, _, _) in tables.items():
        if how != "intact":
            damage(local_path(location), how)
    damage(local_path(view_location), "delete")

    found = check(s)
    assert found.returncode == 1, found
    lines = found.stdout.splitlines()
    assert sorted(lines[:-1]) == sorted([
        f"damaged: table {ns}.truncate: {tables['truncate'][0]} differs from the catalog's record",
        f"damaged: table {ns}.overwrite_same_size: {tables['overwrite-same-size'][0]} differs from the catalog's record",
        f"damaged: table {ns}.delete: {tables['delete'][0]} missing",
        f"damaged: view {ns}.v: {view_location} missing",
    ])
    assert lines[-1] == "checked 5 metadata files: 4 damaged, 0 repaired"
    assert "--repair" in found.stderr
    assert not local_path(tables["delete"][0]).exists()  # a check alone changes nothing

    repaired = check(s, "--repair")
    assert repaired.returncode == 0, repaired
    assert repaired.stdout.count("repaired: table ") == 3
    assert repaired.stdout.count("repaired: view ") == 1
    assert repaired.stdout.splitlines()[-1] == "checked 5 metadata files: 4 damaged, 4 repaired"
    for location, original, _ in tables.values():
        assert local_path(location).read_bytes() == original
    assert local_path(view_location).read_bytes() == view_bytes

    clean = check(s)
    assert (clean.returncode, clean.stdout) == (0, "checked 5 metadata files: 0 damaged, 0 repaired\n")
    s.start()
    for how, (location, _, metadata) in tables.items():
        loaded = http.get(table_url(s, ns, how.replace("-", "_"))).json()
        assert (loaded["metadata-location"], loaded["metadata"]) == (location, metadata)


def test_a_view_commit_restores_its_base(fresh_server, http):
    s = fresh_server
    ns = make_ns(s, http)
    location, original = new_view(s, http, ns, "v")
    local_path(location).unlink()
    loaded = http.get(view_url(s, ns, "v"))
    assert (loaded.status_code, loaded.json()["metadata-location"]) == (200, location)
    r = http.post(view_url(s, ns, "v"), json={"updates": [{"action": "set-properties", "updates": {"k": "v"}}]})
    assert r.status_code == 200, r.text
    assert local_path(location).read_bytes() == original
    assert counters(s) == (1, 1)
    assert f"view {ns}.v" in s.log_text()
