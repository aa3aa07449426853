"""An s3:// warehouse on moto: the warehouses file and /v1/config, PyIceberg
end to end with static client credentials, confinement, purge, register,
and S3 faults (a missing bucket, S3 down in the middle of commits, a slow
S3). See s3.py for the moto server and the fault proxy."""

from __future__ import annotations

import concurrent.futures
import time

import pyarrow as pa
import pytest

from harness import PG_URL, SIMPLE_SCHEMA_JSON, TEST_STORE, assert_error, create_table_raw, pg_store, table_url, unique
from s3 import KEY, REGION, SECRET, FaultProxy, warehouses_file

NAME = "lake"


@pytest.fixture
def s3_server(moto, server_factory, tmp_path):
    """Starts a server on a fresh bucket (or none, `bucket=False`), reaching
    moto through a fault proxy; returns (server, bucket, proxy)."""
    proxies = []

    def make(bucket: bool = True, timeout_ms: int = 1000):
        name = unique("bkt").replace("_", "-")
        if bucket:
            moto.client().create_bucket(Bucket=name)
        proxy = FaultProxy(moto.port)
        proxies.append(proxy)
        path = warehouses_file(tmp_path / f"{name}.toml", NAME, f"s3://{name}/wh", proxy.endpoint, timeout_ms)
        server = server_factory(name="s3", extra_args=["--warehouses-file", str(path)])
        # Served under its name: the warehouse's prefix.
        server.prefix = NAME
        return server, name, proxy

    yield make
    for p in proxies:
        p.close()


def pyiceberg(server, moto):
    """A PyIceberg catalog asking for the warehouse by name, with static
    client credentials, writing data straight to moto (not the proxy)."""
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog(
        "s3", uri=server.base_url, warehouse=NAME, **{
            "s3.endpoint": moto.endpoint, "s3.access-key-id": KEY, "s3.secret-access-key": SECRET,
            "s3.region": REGION,
        },
    )


def test_config_answers_the_named_warehouse_and_404s_others(s3_server, http):
    server, bucket, proxy = s3_server()
    for query in (f"?warehouse={NAME}", ""):
        r = http.get(server.url("/v1/config" + query))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["overrides"]["prefix"] == NAME
        assert body["defaults"] == {
            "s3.endpoint": proxy.endpoint, "s3.region": REGION, "s3.path-style-access": "true",
        }
    for other in ("nope", "", "lake2"):
        assert_error(http.get(server.url(f"/v1/config?warehouse={other}")), 404, "NotFoundException")


def test_pyiceberg_lifecycle_on_s3_with_purge_and_register(s3_server, moto):
    from pyiceberg.expressions import EqualTo
    from pyiceberg.types import LongType, NestedField, StringType

    server, bucket, _ = s3_server()
    cat = pyiceberg(server, moto)
    ns = unique()
    cat.create_namespace(ns)
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
    from pyiceberg.schema import Schema

    t = cat.create_table((ns, "events"), schema=Schema(
        NestedField(1, "id", LongType(), required=True), NestedField(2, "name", StringType(), required=False)))
    assert t.location().startswith(f"s3://{bucket}/wh/{ns}/events-"), t.location()
    prefix = t.location()[len(f"s3://{bucket}/"):]

    t.append(pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}, schema=schema))
    first = t.current_snapshot().snapshot_id
    t.overwrite(pa.table({"id": [4, 5], "name": ["d", "e"]}, schema=schema))
    t.delete(EqualTo("id", 4))
    assert sorted(t.scan().to_arrow()["id"].to_pylist()) == [5]
    assert sorted(t.scan(snapshot_id=first).to_arrow()["id"].to_pylist()) == [1, 2, 3], "time travel"
    with t.update_schema() as u:
        u.add_column("score", LongType())
    t = cat.load_table((ns, "events"))
    assert "score" in t.schema().column_names
    assert t.metadata_location.startswith(f"s3://{bucket}/wh/")
    assert t.metadata_location[len(f"s3://{bucket}/"):] in moto.keys(bucket, prefix)

    cat.rename_table((ns, "events"), (ns, "renamed"))
    t = cat.load_table((ns, "renamed"))
    assert sorted(t.scan().to_arrow()["id"].to_pylist()) == [5]

    # Drop keeps the files; register brings the table back from its s3:// metadata file.
    metadata = t.metadata_location
    cat.drop_table((ns, "renamed"))
    assert moto.keys(bucket, prefix)
    back = cat.register_table((ns, "back"), metadata)
    assert sorted(back.scan().to_arrow()["id"].to_pylist()) == [5]

    # Purge: everything under the table's prefix goes, nothing else.
    s3 = moto.client()
    neighbours = [f"{prefix}-x/keep.txt", f"wh/{ns}/other.txt", "outside.txt", f"{prefix}x"]
    for key in neighbours:
        s3.put_object(Bucket=bucket, Key=key, Body=b"keep")
    before = moto.keys(bucket, prefix + "/")
    assert any("/data/" in k for k in before) and any("/metadata/" in k for k in before)
    cat.purge_table((ns, "back"))
    assert moto.keys(bucket, prefix + "/") == set()
    assert set(neighbours) <= moto.keys(bucket)


def test_locations_outside_the_warehouse_are_refused(s3_server, http):
    server, bucket, _ = s3_server()
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    inside = create_table_raw(http, server, ns, "t", location=f"s3://{bucket}/wh/{ns}/mine")
    assert inside["metadata"]["location"] == f"s3://{bucket}/wh/{ns}/mine"
    for location in (f"s3://{bucket}/elsewhere/t", f"s3://{bucket}/wh", f"s3://{bucket}/wh/../x",
                     "s3://other-bucket/wh/t", "file:///tmp/t", f"s3://{bucket}/wh/{ns}/mine/nested"):
        r = http.post(table_url(server, ns), json={"name": unique("t"), "schema": SIMPLE_SCHEMA_JSON,
                                                   "location": location})
        assert_error(r, 400)
    # A register may not read a file outside the warehouse either.
    r = http.post(server.api(f"namespaces/{ns}/register"),
                  json={"name": "r", "metadata-location": f"s3://{bucket}/elsewhere/00000-x.metadata.json"})
    assert_error(r, 400)


def test_a_missing_bucket_is_a_clear_error_and_reads_go_on(s3_server, http):
    server, _, _ = s3_server(bucket=False)
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    r = http.post(table_url(server, ns), json={"name": "t", "schema": SIMPLE_SCHEMA_JSON})
    err = assert_error(r, 503, "ServiceUnavailableException")
    assert err["message"].startswith("storage I/O error"), err
    assert "the warehouse bucket does not exist" in server.log_text(), "the operator's log names the cause"
    assert http.get(table_url(server, ns)).json()["identifiers"] == []
    assert http.get(server.url("/health/ready")).status_code == 200


def _commit(http, url: str, key: str):
    body = {"requirements": [], "updates": [{"action": "set-properties", "updates": {key: "1"}}]}
    return http.post(url, json=body, timeout=30)


def _assert_every_acknowledged_commit_is_there(http, moto, bucket: str, url: str, acked: list[str]) -> None:
    r = http.get(url)
    assert r.status_code == 200, r.text
    loaded = r.json()
    missing = [k for k in acked if k not in loaded["metadata"]["properties"]]
    assert not missing, f"acknowledged commits lost: {missing}"
    location = loaded["metadata-location"]
    assert location.startswith(f"s3://{bucket}/")
    assert location[len(f"s3://{bucket}/"):] in moto.keys(bucket), "the table points at a missing file"


def test_s3_down_in_the_middle_of_commits_loses_no_acknowledged_commit(s3_server, moto, http):
    server, bucket, proxy = s3_server(timeout_ms=500)
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    # One table per writer: no commit contends with another, so any failure is S3's.
    urls = []
    for name in ("a", "b"):
        create_table_raw(http, server, ns, name)
        urls.append(table_url(server, ns, name))
    acked: dict[str, list[str]] = {u: [] for u in urls}
    failed: dict[str, list[str]] = {u: [] for u in urls}

    def writer(url: str) -> None:
        for i in range(40):
            r = _commit(http, url, f"k{i}")
            if r.status_code == 200:
                acked[url].append(f"k{i}")
            else:
                err = assert_error(r, 503, "ServiceUnavailableException")
                assert "s3://" not in err["message"] and "testing" not in err["message"], err
                failed[url].append(f"k{i}")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(writer, u) for u in urls]
        deadline = time.monotonic() + 30
        while sum(map(len, acked.values())) < 5 and not any(j.done() for j in jobs):
            assert time.monotonic() < deadline, "no commit went through before the fault"
            time.sleep(0.01)
        proxy.set("down")
        time.sleep(2)
        proxy.set("up")
        for j in jobs:
            j.result()
    assert any(failed.values()), "S3 going down failed no commit: the fault was not exercised"
    for url in urls:
        _assert_every_acknowledged_commit_is_there(http, moto, bucket, url, acked[url])
        props = http.get(url).json()["metadata"]["properties"]
        assert not set(failed[url]) & set(props), "a commit answered 503 took effect"
        # And it commits again.
        assert _commit(http, url, "after").status_code == 200


def test_a_slow_s3_times_out_with_a_clear_error_within_bounds(s3_server, moto, http):
    server, bucket, proxy = s3_server(timeout_ms=300)
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    create_table_raw(http, server, ns, "t")
    url = table_url(server, ns, "t")
    assert _commit(http, url, "fast").status_code == 200
    proxy.set("slow", delay=3.0)
    started = time.monotonic()
    r = _commit(http, url, "slow")
    elapsed = time.monotonic() - started
    err = assert_error(r, 503, "ServiceUnavailableException")
    assert "timed out" in err["message"], err
    assert elapsed < 5, f"a slow S3 held the commit {elapsed:.1f}s (limit: 4 request timeouts)"
    # Loads never touch S3.
    assert http.get(url).status_code == 200
    proxy.set("up")
    assert _commit(http, url, "again").status_code == 200
    _assert_every_acknowledged_commit_is_there(http, moto, bucket, url, ["fast", "again"])
    assert "slow" not in http.get(url).json()["metadata"]["properties"]


@pytest.mark.skipif(TEST_STORE != "postgres", reason="the store is cut mid-commit through a TCP proxy: PostgreSQL only")
def test_a_store_lost_after_the_metadata_file_is_written_is_an_unknown_outcome(moto, server_factory, tmp_path, http):
    """S3 acknowledged the new metadata file, then the store's swap fails:
    whether the pointer moved is unknown, so the answer is a 5xx
    CommitStateUnknownException (never 409, never a retryable 503), the
    file stays, and the table afterwards points at a file that exists."""
    bucket = unique("bkt").replace("_", "-")
    moto.client().create_bucket(Bucket=bucket)
    s3_proxy, pg_proxy = FaultProxy(moto.port), FaultProxy(int(PG_URL.rsplit(":", 1)[1].split("/")[0]))
    try:
        path = warehouses_file(tmp_path / "wh.toml", NAME, f"s3://{bucket}/wh", s3_proxy.endpoint, 1000)
        store = pg_store().replace(PG_URL.split("@", 1)[1].split("/")[0], f"127.0.0.1:{pg_proxy.port}")
        server = server_factory(name="s3", store=store, extra_args=["--warehouses-file", str(path)])
        server.prefix = NAME
        ns = unique()
        assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
        create_table_raw(http, server, ns, "t")
        url = table_url(server, ns, "t")
        assert _commit(http, url, "before").status_code == 200
        files_before = {k for k in moto.keys(bucket) if k.endswith(".metadata.json")}

        def cut_the_store(data: bytes) -> None:
            if data.startswith(b"PUT ") and b".metadata.json" in data.split(b"\r\n", 1)[0]:
                s3_proxy.on_request = None
                pg_proxy.set("down")

        s3_proxy.on_request = cut_the_store
        r = _commit(http, url, "unknown")
        assert pg_proxy.mode == "down", "the commit wrote its metadata file: the fault was exercised"
        err = assert_error(r, r.status_code, "CommitStateUnknownException")
        assert r.status_code >= 500 and r.status_code != 503, r.text
        assert "s3://" not in err["message"] and "127.0.0.1" not in err["message"], err
        written = {k for k in moto.keys(bucket) if k.endswith(".metadata.json")} - files_before
        assert len(written) == 1, "S3 holds the file the commit wrote (the pointer may name it)"

        pg_proxy.set("up")
        deadline = time.monotonic() + 30
        while (loaded := http.get(url)).status_code != 200:
            assert time.monotonic() < deadline, f"no load after the store came back: {loaded.text}"
            time.sleep(0.2)
        _assert_every_acknowledged_commit_is_there(http, moto, bucket, url, ["before"])
        assert _commit(http, url, "after").status_code == 200
    finally:
        s3_proxy.close()
        pg_proxy.close()


def test_a_named_local_warehouse(server_factory, tmp_path, http):
    root = tmp_path / "named-wh"
    path = tmp_path / "local.toml"
    path.write_text(f'[[warehouse]]\nname = "disk"\nroot = "file://{root}"\n')
    server = server_factory(name="named", extra_args=["--warehouses-file", str(path)])
    server.prefix = "disk"
    body = http.get(server.url("/v1/config?warehouse=disk")).json()
    assert body["overrides"]["prefix"] == "disk" and body["defaults"] == {}
    assert_error(http.get(server.url("/v1/config?warehouse=default")), 404, "NotFoundException")
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    created = create_table_raw(http, server, ns, "t")
    assert created["metadata"]["location"].startswith(f"file://{root}/{ns}/t-")


def test_metadata_files_that_fall_off_the_log_are_deleted_from_s3(s3_server, moto, http):
    server, bucket, _ = s3_server()
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    created = create_table_raw(http, server, ns, "t", properties={
        "write.metadata.delete-after-commit.enabled": "true", "write.metadata.previous-versions-max": "1"})
    prefix = created["metadata"]["location"][len(f"s3://{bucket}/"):] + "/metadata/"
    url = table_url(server, ns, "t")
    for i in range(4):
        assert _commit(http, url, f"k{i}").status_code == 200
    loaded = http.get(url).json()
    kept = {loaded["metadata-location"]} | {e["metadata-file"] for e in loaded["metadata"]["metadata-log"]}
    assert len(kept) == 2
    assert {f"s3://{bucket}/{k}" for k in moto.keys(bucket, prefix)} == kept


def test_register_refuses_what_is_not_a_metadata_file_without_quoting_it(s3_server, moto, http):
    server, bucket, _ = s3_server()
    ns = unique()
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    s3 = moto.client()
    for key, body in (("empty.json", b""), ("secret.json", b"TOPSECRET not json")):
        s3.put_object(Bucket=bucket, Key=f"wh/{ns}/{key}", Body=body)
    for key in ("empty.json", "secret.json", "missing.json"):
        r = http.post(server.api(f"namespaces/{ns}/register"),
                      json={"name": unique("r"), "metadata-location": f"s3://{bucket}/wh/{ns}/{key}"})
        err = assert_error(r, 400)
        assert "TOPSECRET" not in err["message"], err
