"""DuckDB's iceberg extension against Bingsan: it attaches the catalog by its
URI alone (and, under `--auth`, a client credential), reads tables PyIceberg
wrote and writes tables PyIceberg reads, on an `s3://` warehouse (moto)
with vended credentials and on a local one.

DuckDB and its extensions come from PyPI wheels (requirements.txt); the
extensions are loaded from the packages' files, never downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from cluster import catalog_server
from harness import BingsanServer, unique
from test_auth import CLIENT_ID, SECRET, Keys
# The delegation suite's moto (recording what it serves), server and request
# helpers; `moto` and the autouse `no_client_credentials` are fixtures, so
# DuckDB gets no S3 keys from the environment either.
from test_s3_delegation import (  # noqa: F401
    SERVER_KEY, _credential_of, _server, _table_requests, moto, no_client_credentials,
)

try:
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_httpfs
    import duckdb_extension_iceberg
except ImportError as e:
    if os.environ.get("CI"):
        raise
    pytest.skip(f"{e.name} is not installed (pip install -r tests/python/requirements.txt)", allow_module_level=True)

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("v", pa.string())])


def _rows(ids) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "v": f"v{i}"} for i in ids], schema=SCHEMA)


def _duckdb() -> duckdb.DuckDBPyConnection:
    """A DuckDB with httpfs (S3), avro (manifests) and iceberg loaded from
    the wheels; nothing is fetched from the network."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for package in (duckdb_extension_httpfs, duckdb_extension_avro, duckdb_extension_iceberg):
        [path] = (Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}").glob("*.duckdb_extension")
        con.execute(f"LOAD '{path}'")
    return con


def _attach(con, server: BingsanServer, *options: str) -> None:
    """ATTACH as docs/storage.md shows it: the catalog URI, and under
    `--auth` a client credential (`SECRET name`, an iceberg secret)."""
    if not any(o.startswith("SECRET ") for o in options):
        options += ("AUTHORIZATION_TYPE 'none'",)
    con.execute(f"ATTACH 'lake' AS lake (TYPE iceberg, ENDPOINT '{server.base_url}', {', '.join(options)})")


def _pyiceberg(server: BingsanServer, **props):
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog(unique("c"), uri=server.base_url, warehouse="lake",
                       **{"py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO"}, **props)


def _round_trip(con, catalog) -> list[str]:
    """PyIceberg writes, DuckDB reads; DuckDB creates, inserts into both
    tables, deletes, updates and lists, PyIceberg reads. Returns the tables."""
    ns = unique("ns")
    catalog.create_namespace(ns)
    table = catalog.create_table(f"{ns}.t", schema=SCHEMA)
    table.append(_rows(range(1, 6)))
    assert con.execute(f"SELECT id, v FROM lake.{ns}.t ORDER BY id").fetchall() == [(i, f"v{i}") for i in range(1, 6)]

    con.execute(f"CREATE TABLE lake.{ns}.d (id BIGINT, v VARCHAR)")
    con.execute(f"INSERT INTO lake.{ns}.d VALUES (7, 'seven'), (8, 'eight'), (9, NULL)")
    con.execute(f"INSERT INTO lake.{ns}.t VALUES (6, 'v6')")
    con.execute(f"DELETE FROM lake.{ns}.t WHERE id = 2")
    con.execute(f"UPDATE lake.{ns}.t SET v = 'three' WHERE id = 3")
    listed = con.execute("SELECT database, schema, name FROM (SHOW ALL TABLES) WHERE schema = ?", [ns]).fetchall()
    assert sorted(listed) == [("lake", ns, "d"), ("lake", ns, "t")]

    written = catalog.load_table(f"{ns}.d")
    assert sorted(written.scan().to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 7, "v": "seven"}, {"id": 8, "v": "eight"}, {"id": 9, "v": None}]
    appended = catalog.load_table(f"{ns}.t")
    assert sorted(appended.scan().to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "v": "v1"}, {"id": 3, "v": "three"}, {"id": 4, "v": "v4"}, {"id": 5, "v": "v5"}, {"id": 6, "v": "v6"}]
    assert len(appended.history()) == 4, "PyIceberg's append, DuckDB's insert, delete and update"
    return [f"{ns}.t", f"{ns}.d"]


def _duckdb_keys(moto, location: str) -> set[str | None]:
    """The access keys of DuckDB's own S3 requests under `location`; it
    wrote there."""
    duck = [r for r in _table_requests(moto, location) if "duckdb" in r["headers"].get("User-Agent", "").lower()]
    assert any(r["method"] in ("PUT", "POST") for r in duck), f"DuckDB wrote under {location}"
    return {_credential_of(r) for r in duck}


def _assert_vended_keys_only(moto, catalog, tables: list[str]) -> None:
    """DuckDB signed every S3 request under each table with the keys the
    catalog vends for that table (cached per table on the one shard), never
    with the server's own or none."""
    for name in tables:
        table = catalog.load_table(name)
        vended = table.io.properties["s3.access-key-id"]
        assert vended != SERVER_KEY
        assert _duckdb_keys(moto, table.location()) == {vended}, name


@pytest.fixture(scope="module")
def vending(tmp_path_factory, moto):
    s = _server(tmp_path_factory, moto, "vended", "duck", BingsanServer).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def vending_auth(tmp_path_factory, moto):
    keys = Keys(tmp_path_factory.mktemp("duck-keys"))
    s = _server(tmp_path_factory, moto, "vended", "duck-auth", BingsanServer)
    s.extra_args += keys.args(jwks=False)
    yield s.start()
    s.stop()


def test_duckdb_reads_and_writes_s3_tables_with_vended_credentials(vending, moto):
    con = _duckdb()
    _attach(con, vending)
    catalog = _pyiceberg(vending)
    tables = _round_trip(con, catalog)

    # CREATE TABLE AS: a staged create, then one commit with its first snapshot.
    ns = unique("ns")
    con.execute(f"CREATE SCHEMA lake.{ns}")
    con.execute(f"CREATE TABLE lake.{ns}.ctas AS SELECT range AS i FROM range(100)")
    ctas = catalog.load_table(f"{ns}.ctas")
    assert sorted(ctas.scan().to_arrow()["i"].to_pylist()) == list(range(100))
    assert len(ctas.history()) == 1
    _assert_vended_keys_only(moto, catalog, [*tables, f"{ns}.ctas"])

    # DROP TABLE drops without purge: the catalog forgets it, the files stay.
    con.execute(f"DROP TABLE lake.{ns}.ctas")
    assert not catalog.table_exists(f"{ns}.ctas")
    deletes = [r["url"] for r in _table_requests(moto, ctas.location()) if r["method"] == "DELETE"]
    assert not deletes, f"nothing under the dropped table's location was deleted: {deletes}"


def test_concurrent_duckdb_commits_lose_nothing(vending):
    """Two DuckDB sessions write the same table in overlapping transactions:
    the first commit wins, the second is a 409 CommitFailedException
    (DuckDB's multi-table commit), and the table holds exactly the winner's rows."""
    ns = unique("ns")
    first, second = _duckdb(), _duckdb()
    for con in (first, second):
        _attach(con, vending)
    first.execute(f"CREATE SCHEMA lake.{ns}")
    first.execute(f"CREATE TABLE lake.{ns}.t (i INT)")
    for con, value in ((first, 1), (second, 2)):
        con.execute("BEGIN")
        con.execute(f"INSERT INTO lake.{ns}.t VALUES ({value})")
    first.execute("COMMIT")
    conflict = r"Conflict_409.*\n message: Requirement failed.*\n type: CommitFailedException"
    with pytest.raises(duckdb.Error, match=conflict):
        second.execute("COMMIT")
    table = _pyiceberg(vending).load_table(f"{ns}.t")
    assert table.scan().to_arrow()["i"].to_pylist() == [1]
    assert len(table.history()) == 1
    assert second.execute(f"SELECT i FROM lake.{ns}.t").fetchall() == [(1,)]


def test_duckdb_under_auth_needs_a_client_credential(vending_auth, moto):
    anonymous = _duckdb()
    with pytest.raises(duckdb.Error, match=r"/v1/config\?warehouse=lake.*Unauthorized_401"):
        _attach(anonymous, vending_auth)

    con = _duckdb()
    con.execute(f"CREATE SECRET bingsan (TYPE iceberg, CLIENT_ID '{CLIENT_ID}', CLIENT_SECRET '{SECRET}', "
                f"OAUTH2_SERVER_URI '{vending_auth.base_url}/v1/oauth/tokens')")
    _attach(con, vending_auth, "SECRET bingsan")
    catalog = _pyiceberg(vending_auth, credential=f"{CLIENT_ID}:{SECRET}",
                         **{"oauth2-server-uri": f"{vending_auth.base_url}/v1/oauth/tokens"})
    _assert_vended_keys_only(moto, catalog, _round_trip(con, catalog))


def test_duckdb_with_its_own_keys_where_nothing_is_vended(tmp_path_factory, moto):
    """A warehouse without delegation answers loads without storage config,
    so DuckDB (which asks for vended credentials by default) signs with its
    own S3 secret, not an empty table-scoped one."""
    server = _server(tmp_path_factory, moto, "none", "duck-none", catalog_server).start()
    try:
        catalog = _pyiceberg(server, **{"s3.access-key-id": "pyiceberg", "s3.secret-access-key": "x"})
        ns = unique("ns")
        catalog.create_namespace(ns)
        table = catalog.create_table(f"{ns}.t", schema=SCHEMA)
        table.append(_rows([1, 2]))
        con = _duckdb()
        con.execute(f"CREATE SECRET own (TYPE s3, KEY_ID 'duckdb-own', SECRET 'x', REGION 'us-east-1', "
                    f"ENDPOINT '127.0.0.1:{moto.port}', URL_STYLE 'path', USE_SSL false)")
        _attach(con, server)
        con.execute(f"INSERT INTO lake.{ns}.t VALUES (3, 'v3')")
        assert con.execute(f"SELECT id FROM lake.{ns}.t ORDER BY id").fetchall() == [(1,), (2,), (3,)]
        assert _duckdb_keys(moto, table.location()) == {"duckdb-own"}
    finally:
        server.stop()


def test_duckdb_reads_and_writes_a_local_warehouse(tmp_path):
    server = BingsanServer(tmp_path, prefix="lake", shards=1).start()
    try:
        con = _duckdb()
        # DuckDB does not make the directories of a staged table's first
        # manifest on a local disk: CREATE TABLE AS needs plain creates there.
        _attach(con, server, "SUPPORT_NESTED_NAMESPACES true", "STAGE_CREATE_TABLES false")
        catalog = _pyiceberg(server)
        tables = _round_trip(con, catalog)
        ns = unique("ns")
        con.execute(f"CREATE SCHEMA lake.{ns}")
        con.execute(f"CREATE TABLE lake.{ns}.ctas AS SELECT range AS i FROM range(10)")
        assert sorted(catalog.load_table(f"{ns}.ctas").scan().to_arrow()["i"].to_pylist()) == list(range(10))
        for name in [*tables, f"{ns}.ctas"]:
            assert catalog.load_table(name).location().startswith(f"file://{server.warehouse}/")

        # Nested namespaces: DuckDB names them dotted and lists them with ?parent=.
        parent = unique("ns")
        catalog.create_namespace(parent)
        catalog.create_namespace((parent, "child"))
        catalog.create_table((parent, "child", "t"), schema=SCHEMA).append(_rows([1]))
        con.execute(f'CREATE TABLE lake."{parent}.child".d (id BIGINT)')
        con.execute(f'INSERT INTO lake."{parent}.child".d VALUES (5)')
        assert con.execute(f'SELECT id, v FROM lake."{parent}.child".t').fetchall() == [(1, "v1")]
        listed = con.execute("SELECT name FROM (SHOW ALL TABLES) WHERE schema = ?", [f"{parent}.child"]).fetchall()
        assert sorted(listed) == [("d",), ("t",)]
        assert catalog.load_table((parent, "child", "d")).scan().to_arrow()["id"].to_pylist() == [5]
    finally:
        server.stop()
