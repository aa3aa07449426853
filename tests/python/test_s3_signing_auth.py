"""Remote signing under `--auth`: `POST /v1/aws/s3/sign` needs the caller's
bearer token, and signs only for the tables *that principal* loaded: a
grant made for one client (or JWT subject) is refused to another (403) and
to a caller without a token (401). PyIceberg with a client credential and
no S3 keys reads and writes an s3:// table through remote signing."""

from __future__ import annotations

from urllib.parse import urlsplit

import pyarrow as pa
import pytest
import requests

from harness import BingsanServer, assert_error, unique
from s3 import REGION, hide_client_credentials, s3_client_per_file_io, warehouses_file
from test_auth import CLIENT_ID, OTHER_ID, OTHER_SECRET, SECRET, Keys, assert_401, bearer, token_of

HEADER = "X-Iceberg-Access-Delegation"
SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("v", pa.string())])


@pytest.fixture(scope="module")
def signing(moto, tmp_path_factory):
    work = tmp_path_factory.mktemp("signing-auth")
    keys = Keys(work / "keys")
    bucket = unique("sign-auth").replace("_", "-")
    moto.client().create_bucket(Bucket=bucket)
    warehouses_file(work / "warehouses.toml", "lake", f"s3://{bucket}/wh", moto.endpoint, None,
                    delegation="remote-signing")
    s = BingsanServer(work, prefix="lake", shards=1,
                      extra_args=[*keys.args(), "--warehouses-file", str(work / "warehouses.toml")])
    s.start()
    s.keys = keys
    yield s
    s.stop()


def _grant(server: BingsanServer, url: str, auth: dict) -> str:
    r = requests.get(url, headers={HEADER: "remote-signing", **auth}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["config"]["s3.signer.endpoint"]


def _sign(server: BingsanServer, endpoint: str, uri: str, auth: dict) -> requests.Response:
    body = {"region": REGION, "method": "GET", "uri": uri, "headers": {"Host": [urlsplit(uri).netloc]}}
    return requests.post(f"{server.base_url}/{endpoint}", json=body, headers=auth, timeout=10)


def test_a_grant_signs_only_for_the_principal_that_loaded_the_table(signing, moto):
    a = bearer(token_of(signing, client_id=CLIENT_ID, secret=SECRET))
    b = bearer(token_of(signing, client_id=OTHER_ID, secret=OTHER_SECRET))
    idp = signing.keys.idp
    alice = bearer(idp.sign(idp.claims(sub="alice")))
    bob = bearer(idp.sign(idp.claims(sub="bob")))
    no_sub = bearer(idp.sign(idp.claims(sub=None)))

    ns = unique("ns")
    requests.post(signing.api("namespaces"), json={"namespace": [ns]}, headers=a, timeout=10).raise_for_status()
    r = requests.post(signing.api(f"namespaces/{ns}/tables"), headers=a, timeout=10,
                      json={"name": "t", "schema": {"type": "struct", "fields": []}})
    location = r.json()["metadata"]["location"]
    url = signing.api(f"namespaces/{ns}/tables/t")
    obj = f"{moto.endpoint}/{location.removeprefix('s3://')}/data/f.parquet"

    for owner, others in ((a, (b, alice, bob)), (alice, (bob, a, b))):
        endpoint = _grant(signing, url, owner)
        assert _sign(signing, endpoint, obj, owner).status_code == 200
        for other in others:
            assert_error(_sign(signing, endpoint, obj, other), 403, "ForbiddenException")
        assert_401(_sign(signing, endpoint, obj, {}), what="no token")
        assert_401(_sign(signing, endpoint, obj, bearer("x.y")), invalid_token=True, what="a forged token")
    # A load without a token is refused before any grant; a JWT without
    # `sub` names no principal, so it gets no signer.
    assert_401(requests.get(url, headers={HEADER: "remote-signing"}, timeout=10), what="load without a token")
    r = requests.get(url, headers={HEADER: "remote-signing", **no_sub}, timeout=10)
    assert r.status_code == 200 and "s3.signer.endpoint" not in r.json()["config"], r.text


@pytest.fixture
def no_client_credentials(monkeypatch, tmp_path):
    """The client has no S3 credentials of its own, and no S3 client shared
    between FileIOs (the signer race of `s3_client_per_file_io`)."""
    hide_client_credentials(monkeypatch, tmp_path)
    s3_client_per_file_io(monkeypatch)


def test_pyiceberg_with_a_client_credential_writes_and_reads_through_the_signer(signing, moto, no_client_credentials):
    from pyiceberg.catalog.rest import RestCatalog

    catalog = RestCatalog(
        unique("c"), uri=signing.base_url, warehouse="lake", credential=f"{CLIENT_ID}:{SECRET}",
        **{"py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO", f"header.{HEADER}": "remote-signing"},
    )
    ns = unique("ns")
    catalog.create_namespace(ns)
    table = catalog.create_table(f"{ns}.t", schema=SCHEMA)
    table.append(pa.Table.from_pylist([{"id": i, "v": f"v{i}"} for i in (1, 2, 3)], schema=SCHEMA))
    table = catalog.load_table(f"{ns}.t")
    table.overwrite(pa.Table.from_pylist([{"id": 7, "v": "v7"}], schema=SCHEMA))
    assert catalog.load_table(f"{ns}.t").scan().to_arrow()["id"].to_pylist() == [7]
    bucket, key = table.location().removeprefix("s3://").split("/", 1)
    assert any(k.startswith(key + "/data/") for k in moto.keys(bucket)), "the client wrote data files"
