"""Several named warehouses in one process (docs/storage.md): each its own
catalog under its own prefix. Two local warehouses, and a local one beside
an s3:// one on moto: /v1/config per warehouse, the same names independent,
files and records of one never touched from the other, locations confined,
restarts, the default warehouse's records as before, zero-allocation reads."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from harness import TEST_STORE, SIMPLE_SCHEMA_JSON, assert_error, create_table_raw, local_path, unique, uuid7
from s3 import warehouses_file

IDS = Schema(NestedField(1, "id", LongType(), required=True))
IDS_ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False)])


def local_entries(roots: dict[str, Path]) -> str:
    return "".join(f'[[warehouse]]\nname = "{n}"\nroot = "file://{r}"\n' for n, r in roots.items())


@pytest.fixture
def two(server_factory, tmp_path):
    """A server with two local warehouses, `main` (the default) and `other`."""
    roots = {"main": tmp_path / "wh-main", "other": tmp_path / "wh-other"}
    path = tmp_path / "warehouses.toml"
    path.write_text(local_entries(roots))
    server = server_factory(name="two", extra_args=["--warehouses-file", str(path)])
    return server, roots


def catalog(server, warehouse: str, **props) -> RestCatalog:
    return RestCatalog(warehouse, uri=server.base_url, warehouse=warehouse, **props)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def ids(table) -> list[int]:
    return sorted(table.scan().to_arrow()["id"].to_pylist())


def test_config_answers_each_warehouse_and_404s_unknown_ones(two, http):
    server, _ = two
    for query, prefix in (("", "main"), ("?warehouse=main", "main"), ("?warehouse=other", "other")):
        r = http.get(server.url("/v1/config" + query))
        assert r.status_code == 200, r.text
        assert r.json()["overrides"]["prefix"] == prefix, query
    for query in ("?warehouse=nope", "?warehouse=", "?warehouse=main&warehouse=other"):
        body = assert_error(http.get(server.url("/v1/config" + query)), 404, "NotFoundException")
        message = body["message"]
        assert "main" not in message and "other" not in message, "no listing of the served names"
    assert http.get(server.url("/v1/other/namespaces")).status_code == 200
    assert_error(http.get(server.url("/v1/nope/namespaces")), 404)


def test_the_same_names_in_two_warehouses_are_independent(two, http):
    server, roots = two
    main, other = catalog(server, "main"), catalog(server, "other")
    for cat in (main, other):
        cat.create_namespace("shared")
    main.create_namespace("only_main")
    assert ("only_main",) in main.list_namespaces() and ("only_main",) not in other.list_namespaces()

    tm = main.create_table(("shared", "t"), schema=IDS)
    to = other.create_table(("shared", "t"), schema=IDS)
    assert tm.location().startswith(f"file://{roots['main']}/shared/t-"), tm.location()
    assert to.location().startswith(f"file://{roots['other']}/shared/t-"), to.location()
    tm.append(pa.table({"id": [1, 2]}, schema=IDS_ARROW))
    to.append(pa.table({"id": [7]}, schema=IDS_ARROW))
    assert ids(main.load_table(("shared", "t"))) == [1, 2]
    assert ids(other.load_table(("shared", "t"))) == [7]
    main.create_table(("only_main", "m"), schema=IDS)

    # Renames and transactions name tables of their own warehouse only.
    r = http.post(server.url("/v1/other/tables/rename"), json={
        "source": {"namespace": ["only_main"], "name": "m"}, "destination": {"namespace": ["shared"], "name": "m"}})
    assert_error(r, 404)
    r = http.post(server.url("/v1/other/transactions/commit"), json={"table-changes": [
        {"identifier": {"namespace": ["only_main"], "name": "m"}, "requirements": [], "updates": [
            {"action": "set-properties", "updates": {"x": "y"}}]}]})
    assert_error(r, 404)
    assert "x" not in main.load_table(("only_main", "m")).properties

    # A purge in one warehouse deletes its own files and records only.
    other_files = files_under(roots["other"])
    main_table = local_path(tm.location())
    assert files_under(main_table)
    main.purge_table(("shared", "t"))
    assert not files_under(main_table)
    with pytest.raises(NoSuchTableError):
        main.load_table(("shared", "t"))
    assert files_under(roots["other"]) == other_files
    assert ids(other.load_table(("shared", "t"))) == [7]

    main.drop_namespace("shared")
    assert ("shared",) in other.list_namespaces()


def test_a_location_of_the_other_warehouse_is_refused(two, http):
    server, roots = two
    for wh in ("main", "other"):
        assert http.post(server.url(f"/v1/{wh}/namespaces"), json={"namespace": ["ns"]}).status_code == 200
    server.prefix = "other"
    theirs = create_table_raw(http, server, "ns", "t")
    assert theirs["metadata-location"].startswith(f"file://{roots['other']}/")
    for location in (f"file://{roots['other']}/ns/mine", f"file://{roots['other']}"):
        r = http.post(server.url("/v1/main/namespaces/ns/tables"),
                      json={"name": unique("t"), "schema": SIMPLE_SCHEMA_JSON, "location": location})
        assert_error(r, 400)
    r = http.post(server.url("/v1/main/namespaces/ns/register"),
                  json={"name": "stolen", "metadata-location": theirs["metadata-location"]})
    assert_error(r, 400)
    assert_error(http.get(server.url("/v1/main/namespaces/ns/tables/stolen")), 404)


def test_idempotency_keys_are_per_warehouse(two, http):
    server, _ = two
    key = uuid7()
    for wh in ("main", "other"):
        r = http.post(server.url(f"/v1/{wh}/namespaces"), json={"namespace": [f"idem_{wh}"]},
                      headers={"Idempotency-Key": key})
        assert r.status_code == 200, r.text
        assert r.json()["namespace"] == [f"idem_{wh}"], "a key of one warehouse replayed in the other"
    assert http.get(server.url("/v1/other/namespaces/idem_other")).status_code == 200
    assert_error(http.get(server.url("/v1/other/namespaces/idem_main")), 404)


@pytest.mark.single_node(reason="restarts its server with other arguments")
def test_the_default_warehouse_keeps_existing_records_and_restarts_keep_both(server_factory, tmp_path, http):
    """A store written with `--warehouse` loads unchanged as the default
    warehouse of a warehouses file (no migration); both survive restarts."""
    roots = {"main": tmp_path / "wh-main", "other": tmp_path / "wh-other"}
    server = server_factory(name="legacy", warehouse=roots["main"])
    assert http.post(server.api("namespaces"), json={"namespace": ["old"]}).status_code == 200
    before = create_table_raw(http, server, "old", "t")
    server.stop()

    path = tmp_path / "warehouses.toml"
    path.write_text(local_entries(roots))
    server.extra_args += ["--warehouses-file", str(path)]
    server.start()
    for url in ("/v1/namespaces/old/tables/t", "/v1/main/namespaces/old/tables/t"):
        r = http.get(server.url(url))
        assert r.status_code == 200, r.text
        assert r.json()["metadata-location"] == before["metadata-location"]
    assert_error(http.get(server.url("/v1/other/namespaces/old")), 404)
    other = catalog(server, "other")
    other.create_namespace("old")
    other.create_table(("old", "t"), schema=IDS).append(pa.table({"id": [3]}, schema=IDS_ARROW))

    server.restart()
    assert catalog(server, "main").load_table(("old", "t")).metadata_location == before["metadata-location"]
    assert ids(catalog(server, "other").load_table(("old", "t"))) == [3]


@pytest.mark.single_node(reason="restarts its server with a configuration that must be refused")
def test_another_default_warehouse_is_refused_and_the_records_stay(two, http):
    """The default warehouse's records sit in the store's default keyspace:
    making another warehouse the default would serve them as its own (under
    the wrong root). The server and `bingsan check` refuse that; a rename of
    the same root (the legacy test above) is allowed; the old configuration
    starts again with every record."""
    from harness import ServerError
    from test_metadata_integrity import check

    server, roots = two
    path = Path(server.extra_args[-1])
    original = path.read_text()
    assert http.post(server.api("namespaces"), json={"namespace": ["kept"]}).status_code == 200
    before = create_table_raw(http, server, "kept", "t")
    server.stop()

    path.write_text(local_entries({"other": roots["other"], "main": roots["main"]}))
    with pytest.raises(ServerError, match='default warehouse is "main"'):
        server.start(ready_timeout=10)
    server.stop()
    refused = check(server, "--warehouses-file", str(path))
    assert refused.returncode != 0 and 'default warehouse is "main"' in refused.stderr, refused.stdout + refused.stderr
    assert not any(roots["other"].rglob("*.metadata.json")), "nothing written under the refused default"

    path.write_text(original)
    server.start()
    r = http.get(server.url("/v1/main/namespaces/kept/tables/t"))
    assert r.status_code == 200 and r.json()["metadata-location"] == before["metadata-location"], r.text
    assert_error(http.get(server.url("/v1/other/namespaces/kept")), 404)


@pytest.mark.single_node(reason="runs bingsan check on its stopped server's store")
def test_check_finds_and_repairs_every_warehouse(two):
    from test_metadata_integrity import check

    server, _ = two
    warehouses = ("--warehouses-file", server.extra_args[-1])
    tables = []
    for wh in ("main", "other"):
        cat = catalog(server, wh)
        cat.create_namespace("c")
        tables.append(cat.create_table(("c", "t"), schema=IDS))
    server.stop()
    for t in tables:
        local_path(t.metadata_location).unlink()
    found = check(server, *warehouses)
    assert found.returncode == 1 and found.stdout.count("damaged: ") == 2, found.stdout + found.stderr
    fixed = check(server, *warehouses, "--repair")
    assert fixed.returncode == 0 and fixed.stdout.count("repaired: ") == 2, fixed.stdout + fixed.stderr
    assert all(local_path(t.metadata_location).is_file() for t in tables)
    server.start()


def test_nested_roots_and_two_defaults_are_refused(tmp_path):
    from harness import BingsanServer, ServerError

    marked = "".join(f'[[warehouse]]\nname = "{n}"\nroot = "file://{tmp_path / n}"\ndefault = true\n' for n in "xy")
    for body, why in ((local_entries({"a": tmp_path / "w", "b": tmp_path / "w" / "b"}), "inside"),
                      (marked, "mark one")):
        path = tmp_path / "bad.toml"
        path.write_text(body)
        refused = BingsanServer(tmp_path / unique("bad"), name="bad", extra_args=["--warehouses-file", str(path)])
        with pytest.raises(ServerError, match=why):
            refused.start(ready_timeout=10)
        refused.stop()


@pytest.mark.single_node(reason="restarts its server")
def test_a_local_and_an_s3_warehouse_in_one_process(moto, server_factory, tmp_path, http):
    from test_s3_warehouse import NAME as LAKE, pyiceberg

    bucket = unique("bkt").replace("_", "-")
    moto.client().create_bucket(Bucket=bucket)
    disk_root = tmp_path / "disk"
    path = warehouses_file(tmp_path / "w.toml", LAKE, f"s3://{bucket}/wh", moto.endpoint)
    path.write_text(local_entries({"disk": disk_root}) + path.read_text())
    server = server_factory(name="mixed", extra_args=["--warehouses-file", str(path)])

    assert http.get(server.url("/v1/config")).json()["overrides"]["prefix"] == "disk"
    cfg = http.get(server.url(f"/v1/config?warehouse={LAKE}")).json()
    assert cfg["overrides"]["prefix"] == LAKE and cfg["defaults"]["s3.endpoint"] == moto.endpoint

    disk, lake = catalog(server, "disk"), pyiceberg(server, moto)
    tables = {}
    for cat, rows in ((disk, [1]), (lake, [2, 3])):
        cat.create_namespace("a")
        tables[cat] = cat.create_table(("a", "t"), schema=IDS)
        tables[cat].append(pa.table({"id": rows}, schema=IDS_ARROW))
    assert tables[disk].location().startswith(f"file://{disk_root}/a/t-")
    assert tables[lake].location().startswith(f"s3://{bucket}/wh/a/t-")
    assert ids(disk.load_table(("a", "t"))) == [1] and ids(lake.load_table(("a", "t"))) == [2, 3]

    for wh, location in (("disk", f"s3://{bucket}/wh/a/x"), (LAKE, f"file://{disk_root}/a/x")):
        r = http.post(server.url(f"/v1/{wh}/namespaces/a/tables"),
                      json={"name": unique("t"), "schema": SIMPLE_SCHEMA_JSON, "location": location})
        assert_error(r, 400)

    server.restart()
    assert ids(disk.load_table(("a", "t"))) == [1] and ids(lake.load_table(("a", "t"))) == [2, 3]

    # A purge in either warehouse leaves the other's files alone.
    lake_prefix = tables[lake].location()[len(f"s3://{bucket}/"):] + "/"
    lake_keys = moto.keys(bucket)
    disk.purge_table(("a", "t"))
    assert not files_under(local_path(tables[disk].location()))
    assert moto.keys(bucket) == lake_keys
    disk.create_table(("a", "u"), schema=IDS).append(pa.table({"id": [9]}, schema=IDS_ARROW))
    disk_files = files_under(disk_root)
    lake.purge_table(("a", "t"))
    assert moto.keys(bucket, lake_prefix) == set()
    assert files_under(disk_root) == disk_files
    assert ids(disk.load_table(("a", "u"))) == [9]


N = 300
HOT = {
    "GET /v1/config?warehouse=other": ("GET", "/v1/config?warehouse=other", 200),
    "GET /v1/other/namespaces/{ns}": ("GET", "/v1/other/namespaces/hot", 200),
    "GET /v1/other/.../tables/{t}": ("GET", "/v1/other/namespaces/hot/tables/t", 200),
    "HEAD /v1/other/.../tables/{t}": ("HEAD", "/v1/other/namespaces/hot/tables/t", 204),
    "GET /v1/other/.../tables": ("GET", "/v1/other/namespaces/hot/tables", 200),
}


@pytest.mark.parametrize("name", list(HOT))
def test_hot_reads_of_a_non_default_warehouse_allocate_nothing(two, name):
    server, _ = two
    method, path, status = HOT[name]
    with server.raw() as c:
        assert c.request("POST", "/v1/other/namespaces", b'{"namespace":["hot"]}').status == 200
        body = json.dumps({"name": "t", "schema": SIMPLE_SCHEMA_JSON}).encode()
        assert c.request("POST", "/v1/other/namespaces/hot/tables", body).status == 200
        for _ in range(100):
            assert c.request(method, path).status == status
        before = server.metrics()
        for _ in range(N):
            assert c.request(method, path).status == status
        after = server.metrics()
    allocs = after.sum("bingsan_request_allocs_total") - before.sum("bingsan_request_allocs_total")
    if TEST_STORE == "postgres" and "config" not in path:
        return  # reads through tokio-postgres allocate per query (test_metrics says so too)
    assert allocs == 0, f"{name}: {allocs:.0f} allocations on the request path over {N} requests"
