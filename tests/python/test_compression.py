"""Compressed answers and gzip metadata files (issue 21).

Loads of big tables and views answer the gzip form stored with the metadata
version when the client accepts gzip (`Content-Encoding: gzip`, `Vary:
Accept-Encoding`, an ETag of its own); a client that does not ask gets plain
JSON. `write.metadata.compression-codec=gzip` (or the catalog's
`--metadata-compression-codec gzip`) writes `*.gz.metadata.json` files that
PyIceberg reads, registers and appends to.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import uuid

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.table import StaticTable
from pyiceberg.table.metadata import TableMetadataUtil
from pyiceberg.types import LongType, NestedField

from harness import SIMPLE_SCHEMA_JSON, create_table_raw, local_path, table_url, unique, view_url

SNAPSHOTS = 3000
CODEC = "write.metadata.compression-codec"
SCHEMA = Schema(NestedField(1, "id", LongType(), required=True))
ARROW = pa.schema([pa.field("id", pa.int64(), nullable=False)])


def snapshot(i: int) -> dict:
    """A snapshot with the summary an append writes (~600 bytes of JSON), its
    manifest list named by a random-looking UUID as engines name them."""
    s = {
        "snapshot-id": i, "sequence-number": i, "timestamp-ms": 1_700_000_000_000 + 1000 * i, "schema-id": 0,
        "manifest-list": f"file:///nonexistent/metadata/snap-{i}-1-{uuid.UUID(bytes=hashlib.md5(str(i).encode()).digest())}.avro",
        "summary": {
            "operation": "append", "added-data-files": "4", "added-records": "40000",
            "added-files-size": "1234567", "changed-partition-count": "1", "total-records": str(40000 * i),
            "total-files-size": str(1234567 * i), "total-data-files": str(4 * i), "total-delete-files": "0",
            "total-position-deletes": "0", "total-equality-deletes": "0",
            "engine-name": "spark", "engine-version": "3.5.1", "app-id": f"app-{i:08d}",
        },
    }
    if i > 1:
        s["parent-snapshot-id"] = i - 1
    return s


def add_snapshots(http, server, ns: str, name: str, count: int) -> None:
    updates = [{"action": "add-snapshot", "snapshot": snapshot(i)} for i in range(1, count + 1)]
    updates.append({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": count})
    r = http.post(table_url(server, ns, name), json={"updates": updates})
    assert r.status_code == 200, r.text[:300]


@pytest.fixture(scope="module")
def big(session_servers):
    """A table with SNAPSHOTS snapshots on the shared server: (server, ns, name)."""
    import requests

    s = session_servers("plain")
    ns = unique("gz")
    with requests.Session() as http:
        assert http.post(s.api("namespaces"), json={"namespace": [ns]}).status_code == 200
        create_table_raw(http, s, ns, "big")
        add_snapshots(http, s, ns, "big", SNAPSHOTS)
    return s, ns, "big"


def test_pyiceberg_loads_a_big_table_through_a_gzip_answer(big, http):
    s, ns, name = big
    with s.raw() as c:
        plain = c.request("GET", s.api_path(f"namespaces/{ns}/tables/{name}"))
    assert plain.status == 200 and "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    expected = json.loads(plain.body)

    # requests (PyIceberg's HTTP client) asks for gzip by default.
    r = http.get(table_url(s, ns, name), stream=True)
    wire = r.raw.read(decode_content=False)
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
    assert int(r.headers["Content-Length"]) == len(wire)
    assert len(wire) * 8 <= len(plain.body), (len(wire), len(plain.body))
    assert json.loads(gzip.decompress(wire)) == expected

    catalog = s.catalog()
    encodings = []
    catalog._session.hooks["response"].append(lambda resp, *a, **k: encodings.append(resp.headers.get("Content-Encoding")))
    table = catalog.load_table((ns, name))
    assert encodings == ["gzip"], encodings
    assert table.metadata == TableMetadataUtil.parse_raw(json.dumps(expected["metadata"]))
    assert len(table.metadata.snapshots) == SNAPSHOTS
    assert table.metadata_location == expected["metadata-location"]


@pytest.mark.parametrize("accept", [None, "identity", "deflate, br", "gzip;q=0", "gzip;q=0, *", "*;q=0"])
def test_clients_that_do_not_accept_gzip_get_plain_json(big, accept):
    s, ns, name = big
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    with s.raw() as c:
        r = c.request("GET", s.api_path(f"namespaces/{ns}/tables/{name}"), headers=headers)
    assert r.status == 200
    assert "content-encoding" not in r.headers and r.headers["vary"] == "Accept-Encoding"
    assert len(json.loads(r.body)["metadata"]["snapshots"]) == SNAPSHOTS


def test_etags_and_304s_are_per_representation(big):
    s, ns, name = big
    path = s.api_path(f"namespaces/{ns}/tables/{name}")
    gz = {"Accept-Encoding": "deflate, gzip;q=0.5"}
    with s.raw() as c:
        plain = c.request("GET", path)
        zipped = c.request("GET", path, headers=gz)
        assert zipped.headers["content-encoding"] == "gzip"
        assert plain.headers["etag"] != zipped.headers["etag"]
        hit = c.request("GET", path, headers={**gz, "If-None-Match": zipped.headers["etag"]})
        assert (hit.status, hit.headers["etag"], hit.headers["vary"]) == (304, zipped.headers["etag"], "Accept-Encoding")
        # The gzip form's tag does not match the plain form: a full plain answer.
        miss = c.request("GET", path, headers={"If-None-Match": zipped.headers["etag"]})
        assert miss.status == 200 and "content-encoding" not in miss.headers and miss.body == plain.body
        assert c.request("GET", path, headers={"If-None-Match": plain.headers["etag"]}).status == 304
        # snapshots=refs of this table is small: plain even when gzip is accepted.
        refs = c.request("GET", path + "?snapshots=refs", headers=gz)
        assert refs.status == 200 and "content-encoding" not in refs.headers
        assert len(json.loads(refs.body)["metadata"]["snapshots"]) == 1


def test_gzip_answers_stay_whole_across_commits_of_a_big_table(server, http):
    """A big table's commits reuse the chunks of the stored gzip answer
    that their document copies; after each kind of edit (snapshots added
    and expired, properties set and removed, a ref moved back) the gzip
    answer must decode, in requests/urllib3 and in PyIceberg, to exactly
    the plain answer."""
    ns = unique("gz")
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    create_table_raw(http, server, ns, "chunks")
    add_snapshots(http, server, ns, "chunks", 1000)  # ~600 KB: a big table's commit path
    url = table_url(server, ns, "chunks")
    edits = [
        [{"action": "add-snapshot", "snapshot": snapshot(1001)},
         {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": 1001},
         {"action": "remove-snapshots", "snapshot-ids": [1, 2]}],
        [{"action": "set-properties", "updates": {"owner": "x" * 5000, "k": "v"}}],
        [{"action": "remove-snapshots", "snapshot-ids": list(range(400, 420))}],
        [{"action": "remove-properties", "removals": ["owner"]}],
        [{"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": 900}],
        [{"action": "add-snapshot", "snapshot": {**snapshot(1002), "parent-snapshot-id": 900}},
         {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": 1002}],
    ]
    catalog = server.catalog()
    for i, updates in enumerate(edits):
        r = http.post(url, json={"updates": updates})
        assert r.status_code == 200, (i, r.text[:300])
        with server.raw() as c:
            plain = c.request("GET", server.api_path(f"namespaces/{ns}/tables/chunks"))
        assert plain.status == 200
        r = http.get(url, stream=True)
        wire = r.raw.read(decode_content=False)
        assert r.headers["Content-Encoding"] == "gzip", i
        assert gzip.decompress(wire) == plain.body, i
        assert http.get(url).content == plain.body, i
        assert catalog.load_table((ns, "chunks")).metadata == TableMetadataUtil.parse_raw(
            json.dumps(json.loads(plain.body)["metadata"])), i


def test_small_tables_stay_plain_and_big_views_are_compressed(server, http):
    ns = unique("gz")
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    create_table_raw(http, server, ns, "small")
    r = http.get(table_url(server, ns, "small"))
    assert r.status_code == 200 and "Content-Encoding" not in r.headers and r.headers["Vary"] == "Accept-Encoding"

    sql = "SELECT " + ", ".join(f"col_{i} AS alias_{i}" for i in range(600)) + " FROM t"
    version = {"version-id": 1, "timestamp-ms": 1, "schema-id": 0, "summary": {}, "default-namespace": [ns],
               "representations": [{"type": "sql", "sql": sql, "dialect": "spark"}]}
    r = http.post(view_url(server, ns), json={"name": "v", "schema": SIMPLE_SCHEMA_JSON, "view-version": version})
    assert r.status_code == 200, r.text
    created = r.json()
    r = http.get(view_url(server, ns, "v"), stream=True)
    wire = r.raw.read(decode_content=False)
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
    assert json.loads(gzip.decompress(wire)) == created
    r = http.get(view_url(server, ns, "v"), headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers and r.json() == created


def gz_files(table) -> list:
    return sorted(local_path(table.metadata_location).parent.glob("*.metadata.json"))


def test_gzip_metadata_files_round_trip_through_pyiceberg(plain_catalog):
    catalog = plain_catalog
    ns = unique("gz")
    catalog.create_namespace(ns)
    t = catalog.create_table((ns, "t"), schema=SCHEMA, properties={CODEC: "gzip"})
    for i in range(3):
        t.append(pa.Table.from_pylist([{"id": i}], schema=ARROW))
    t = catalog.load_table((ns, "t"))
    assert t.metadata_location.endswith(".gz.metadata.json")
    files = gz_files(t)
    assert len(files) == 4 and all(f.name.endswith(".gz.metadata.json") for f in files)
    assert all(f.read_bytes()[:2] == b"\x1f\x8b" for f in files)
    # PyIceberg reads the file itself (it picks gzip by the name).
    on_disk = StaticTable.from_metadata(t.metadata_location).metadata
    assert on_disk == t.metadata
    assert sorted(r["id"] for r in t.scan().to_arrow().to_pylist()) == [0, 1, 2]

    # Dropped without purge, then registered from its gzip file.
    location = t.metadata_location
    catalog.drop_table((ns, "t"))
    back = catalog.register_table((ns, "back"), location)
    assert back.metadata == on_disk and back.metadata_location == location
    back.append(pa.Table.from_pylist([{"id": 3}], schema=ARROW))
    back = catalog.load_table((ns, "back"))
    assert back.metadata_location.endswith(".gz.metadata.json")
    assert sorted(r["id"] for r in back.scan().to_arrow().to_pylist()) == [0, 1, 2, 3]
    # Turning the property off writes plain files from the next version on.
    with back.transaction() as tx:
        tx.set_properties({CODEC: "none"})
    back = catalog.load_table((ns, "back"))
    assert back.metadata_location.endswith(".metadata.json") and ".gz." not in back.metadata_location
    assert StaticTable.from_metadata(back.metadata_location).metadata == back.metadata
    # A purge deletes the gzip files with the plain one.
    metadata_dir = local_path(back.metadata_location).parent
    assert len(list(metadata_dir.glob("*.gz.metadata.json"))) == 5
    catalog.purge_table((ns, "back"))
    assert not list(metadata_dir.glob("*.metadata.json"))


def test_register_refuses_a_gz_name_that_is_not_gzip(server, http):
    ns = unique("gz")
    assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    body = create_table_raw(http, server, ns, "t")
    plain = local_path(body["metadata-location"])
    fake = plain.with_name("00009-fake.gz.metadata.json")
    shutil.copy(plain, fake)
    r = http.post(server.api(f"namespaces/{ns}/register"), json={"name": "r", "metadata-location": f"file://{fake}"})
    assert r.status_code == 400 and "not a valid gzip file" in r.json()["error"]["message"], r.text
    r = http.post(table_url(server, ns, "t"), json={"updates": [{"action": "set-properties", "updates": {CODEC: "lz4"}}]})
    assert r.status_code == 400 and CODEC in r.json()["error"]["message"], r.text


def test_catalog_default_codec_and_check_with_gzip_files(server_factory, http):
    from test_metadata_integrity import check, damage

    s = server_factory(name="gzdefault", extra_args=["--metadata-compression-codec", "gzip"])
    ns = unique("gz")
    assert http.post(s.api("namespaces"), json={"namespace": [ns]}).status_code == 200
    created = create_table_raw(http, s, ns, "t")
    assert created["metadata-location"].endswith(".gz.metadata.json")
    r = http.post(table_url(s, ns, "t"), json={"updates": [{"action": "set-properties", "updates": {"v": "1"}}]})
    assert r.status_code == 200, r.text
    location = r.json()["metadata-location"]
    original = local_path(location).read_bytes()
    assert json.loads(gzip.decompress(original)) == r.json()["metadata"]
    opted_out = create_table_raw(http, s, ns, "plain", properties={CODEC: "none"})
    assert ".gz." not in opted_out["metadata-location"]

    # A commit's size check of its base knows the file is the gzip form.
    r = http.post(table_url(s, ns, "t"), json={"updates": [{"action": "set-properties", "updates": {"v": "2"}}]})
    assert r.status_code == 200 and local_path(location).read_bytes() == original
    assert s.metrics().sum("bingsan_metadata_damaged_total") == 0
    location = r.json()["metadata-location"]
    original = local_path(location).read_bytes()

    s.stop()
    assert check(s).stdout.splitlines()[-1] == "checked 2 metadata files: 0 damaged, 0 repaired"
    damage(local_path(location), "truncate")
    repaired = check(s, "--repair")
    assert repaired.stdout.splitlines()[-1] == "checked 2 metadata files: 1 damaged, 1 repaired", repaired
    assert local_path(location).read_bytes() == original
