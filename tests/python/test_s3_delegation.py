"""Access delegation on an S3 warehouse (moto): vended credentials and
remote signing, with PyIceberg clients that have no S3 credentials at all.

moto records every request it serves (its recorder), so the tests see what
the catalog and the clients really sent: the STS `AssumeRole` calls with
their session policies, and the key each S3 request was signed with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pyarrow as pa
import pytest
import requests

from cluster import catalog_server
from harness import TEST_STORE, BingsanServer, _die_with_parent, assert_error, free_port, unique
from s3 import hide_client_credentials, s3_client_per_file_io, warehouses_file

#: moto accepts any keys: these are the server's own.
SERVER_KEY, SERVER_SECRET, REGION = "testing", "testing", "us-east-1"
BUCKET = "delegation"
ROLE = "arn:aws:iam::123456789012:role/bingsan-vend"
HEADER = "X-Iceberg-Access-Delegation"

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("v", pa.string())])


class Moto:
    """A moto server on loopback that records the requests it serves."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.recording = workdir / "moto-recording.jsonl"
        env = dict(os.environ, MOTO_RECORDER_FILEPATH=str(self.recording))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=open(workdir / "moto.log", "wb"), stderr=subprocess.STDOUT,
            env=env, preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.endpoint + "/moto-api/", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto did not start")
                time.sleep(0.1)
        requests.put(f"{self.endpoint}/{BUCKET}", timeout=10).raise_for_status()
        requests.post(self.endpoint + "/moto-api/recorder/start-recording", timeout=10).raise_for_status()

    def requests(self) -> list[dict]:
        if not self.recording.exists():
            return []
        return [json.loads(line) for line in self.recording.read_text().splitlines() if line.strip()]

    def assume_role_calls(self) -> list[dict[str, str]]:
        """The form parameters of every STS AssumeRole the catalog made."""
        calls = []
        for r in self.requests():
            body = r.get("body") or ""
            if r.get("body_encoded"):
                body = base64.b64decode(body).decode("utf-8", "replace")
            if "Action=AssumeRole" in body:
                calls.append({k: v[0] for k, v in parse_qs(body).items()})
        return calls

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


def _server(tmp_path_factory, moto: Moto, mode: str, root: str, make) -> BingsanServer:
    work = tmp_path_factory.mktemp(f"bingsan-{mode}")
    keys = work / "keys.toml"
    keys.write_text(f'access-key-id = "{SERVER_KEY}"\nsecret-access-key = "{SERVER_SECRET}"\n')
    warehouses_file(work / "warehouses.toml", "lake", f"s3://{BUCKET}/{root}", moto.endpoint, None,
                    credentials=f'{{ source = "file", path = "{keys}" }}', delegation=mode, sts_role=ROLE,
                    sts_endpoint=moto.endpoint)
    # One shard: credentials are cached per shard, and the tests compare the
    # keys a load answers with the keys a client used before it. For that
    # reason vending is one process in the multi-node pass too (each node
    # caches its own); remote signing runs on every node of a catalog.
    return make(work, prefix="lake", shards=1, extra_args=["--warehouses-file", str(work / "warehouses.toml")])


@pytest.fixture(scope="module")
def vending(tmp_path_factory, moto):
    s = _server(tmp_path_factory, moto, "vended", "vended", BingsanServer).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def signing(tmp_path_factory, moto):
    s = _server(tmp_path_factory, moto, "remote-signing", "signed", catalog_server).start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def no_client_credentials(monkeypatch, tmp_path):
    """The clients have no S3 credentials of their own: no AWS variables,
    no ~/.aws files, no instance metadata to fall back on; and no S3 client
    shared between FileIOs (the signer race of `s3_client_per_file_io`)."""
    hide_client_credentials(monkeypatch, tmp_path)
    s3_client_per_file_io(monkeypatch)


#: s3fs (aiobotocore) as the clients' S3 library: PyArrow's multipart
#: uploads fail on moto (CompleteMultipartUpload answers INTERNAL_FAILURE),
#: and remote signing needs it anyway (PyIceberg signs through botocore).
FSSPEC = {"py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO"}


def _catalog(server: BingsanServer, **props):
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog(unique("c"), uri=server.base_url, warehouse="lake", **FSSPEC, **props)


def _rows(ids):
    return pa.Table.from_pylist([{"id": i, "v": f"v{i}"} for i in ids], schema=SCHEMA)


def _exercise(catalog) -> tuple[str, str]:
    """Create, append, read back, overwrite, delete; returns the table's
    namespace and location."""
    ns = unique("ns")
    catalog.create_namespace(ns)
    table = catalog.create_table(f"{ns}.t", schema=SCHEMA)
    table.append(_rows([1, 2, 3]))
    assert sorted(catalog.load_table(f"{ns}.t").scan().to_arrow()["id"].to_pylist()) == [1, 2, 3]
    table = catalog.load_table(f"{ns}.t")
    table.overwrite(_rows([10, 11, 12]))
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == [10, 11, 12]
    table.delete("id = 11")
    assert sorted(catalog.load_table(f"{ns}.t").scan().to_arrow()["id"].to_pylist()) == [10, 12]
    return ns, table.location()


def _credential_of(request: dict) -> str | None:
    auth = {k.lower(): v for k, v in request["headers"].items()}.get("authorization", "")
    m = re.search(r"Credential=([^/]+)/", auth)
    return m.group(1) if m else None


def _table_requests(moto: Moto, location: str) -> list[dict]:
    """The S3 requests moto served for objects under `location`."""
    key_prefix = "/" + location.removeprefix("s3://") + "/"
    return [r for r in moto.requests() if unquote(urlsplit(r["url"]).path).startswith(key_prefix)]


# ------------------------------------------------------------ vended credentials


def test_vended_credentials_let_a_client_without_keys_read_and_write(vending, moto):
    calls_before = len(moto.assume_role_calls())
    ns, location = _exercise(_catalog(vending))
    assert len(moto.assume_role_calls()) > calls_before, "the catalog called STS"
    # Every data file the client wrote was signed with vended (STS) keys,
    # never with the server's own.
    data = [r for r in _table_requests(moto, location) if "/data/" in r["url"]]
    writes = [r for r in data if r["method"] in ("PUT", "POST")]
    assert writes, "the client wrote data files"
    used = {_credential_of(r) for r in data}
    assert None not in used and SERVER_KEY not in used, used

    r = requests.get(vending.api(f"namespaces/{ns}/tables/t"), headers={HEADER: "vended-credentials"}, timeout=10)
    body = r.json()
    config = body["config"]
    assert config["s3.access-key-id"] in used
    assert {"s3.secret-access-key", "s3.session-token"} <= config.keys()
    expires = int(config["s3.session-token-expires-at-ms"])
    assert time.time() * 1000 < expires <= (time.time() + 3600 + 60) * 1000
    assert config["s3.endpoint"] == moto.endpoint
    [cred] = body["storage-credentials"]
    assert cred["prefix"] == location and cred["config"]["s3.access-key-id"] == config["s3.access-key-id"]


def test_without_the_header_a_load_vends_nothing(vending):
    ns = unique("ns")
    requests.post(vending.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    created = requests.post(vending.api(f"namespaces/{ns}/tables"), timeout=10,
                            json={"name": "t", "schema": {"type": "struct", "fields": []}})
    assert created.status_code == 200 and "storage-credentials" not in created.json()
    assert "s3.access-key-id" not in created.json()["config"]
    loaded = requests.get(vending.api(f"namespaces/{ns}/tables/t"), headers={HEADER: "remote-signing"}, timeout=10)
    assert loaded.status_code == 200 and "s3.access-key-id" not in loaded.json()["config"]


def _allowed(policy: dict, action: str, resource: str, prefix: str | None = None) -> bool:
    """A small IAM evaluator for the policies the catalog sends: Allow
    statements with exact or trailing-`*` resources and a StringLike on
    s3:prefix."""
    def like(pattern: str, value: str) -> bool:
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None

    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if st["Effect"] != "Allow" or action not in actions or not any(like(p, resource) for p in resources):
            continue
        cond = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if cond is not None:
            patterns = cond if isinstance(cond, list) else [cond]
            if prefix is None or not any(like(p, prefix) for p in patterns):
                continue
        return True
    return False


def test_the_session_policy_scopes_credentials_to_the_table(vending, moto):
    ns = unique("ns")
    catalog = _catalog(vending)
    catalog.create_namespace(ns)
    table = catalog.create_table(f"{ns}.t", schema=SCHEMA)
    sibling = catalog.create_table(f"{ns}.t2", schema=SCHEMA)
    location = table.location()
    bucket, key = location.removeprefix("s3://").split("/", 1)
    calls = [c for c in moto.assume_role_calls() if key in c["Policy"]]
    assert calls, "an AssumeRole named this table's location"
    for call in calls:
        assert call["RoleArn"] == ROLE and int(call["DurationSeconds"]) <= 3600
        policy = json.loads(call["Policy"])
        obj = lambda k: f"arn:aws:s3:::{bucket}/{k}"  # noqa: E731
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert _allowed(policy, action, obj(f"{key}/data/f.parquet"))
            assert _allowed(policy, action, obj(f"{key}/metadata/m.json"))
            other = sibling.location().removeprefix(f"s3://{bucket}/")
            assert not _allowed(policy, action, obj(f"{other}/data/f.parquet")), "another table"
            assert not _allowed(policy, action, obj(f"{key}x/data/f.parquet")), "a name sharing the prefix"
            assert not _allowed(policy, action, obj("elsewhere/f"))
            assert not _allowed(policy, action, f"arn:aws:s3:::other-bucket/{key}/data/f.parquet")
        assert _allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", prefix=f"{key}/data/")
        assert not _allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", prefix=key[: key.rfind("/") + 1])
        assert not _allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}")
        assert not _allowed(policy, "s3:PutBucketPolicy", f"arn:aws:s3:::{bucket}")


def test_cached_credentials_are_reused_across_loads(vending, moto):
    ns = unique("ns")
    requests.post(vending.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    requests.post(vending.api(f"namespaces/{ns}/tables"), timeout=10,
                  json={"name": "t", "schema": {"type": "struct", "fields": []}}).raise_for_status()
    before = len(moto.assume_role_calls())
    keys = set()
    with requests.Session() as http:
        for _ in range(60):
            r = http.get(vending.api(f"namespaces/{ns}/tables/t"), headers={HEADER: "vended-credentials"}, timeout=10)
            keys.add(r.json()["config"]["s3.access-key-id"])
        creds = http.get(vending.api(f"namespaces/{ns}/tables/t/credentials"), timeout=10).json()
    # At most one STS call per shard for 60 loads (and the credentials endpoint).
    assert len(moto.assume_role_calls()) - before <= vending.shards
    assert 1 <= len(keys) <= vending.shards
    assert creds["storage-credentials"][0]["config"]["s3.access-key-id"] in keys


def test_credentials_endpoint_and_sts_failure(vending, moto, tmp_path_factory):
    ns = unique("ns")
    requests.post(vending.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    requests.post(vending.api(f"namespaces/{ns}/tables"), timeout=10,
                  json={"name": "t", "schema": {"type": "struct", "fields": []}}).raise_for_status()
    r = requests.get(vending.api(f"namespaces/{ns}/tables/t/credentials"), timeout=10)
    [cred] = r.json()["storage-credentials"]
    assert cred["prefix"].startswith(f"s3://{BUCKET}/vended/") and cred["config"]["s3.session-token"]
    assert_error(requests.get(vending.api(f"namespaces/{ns}/tables/nope/credentials"), timeout=10),
                 404, "NoSuchTableException")


# ------------------------------------------------------------ remote signing


def _verify_sigv4(request: dict, secret: str) -> bool:
    """Recomputes the SigV4 signature of a request moto recorded."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, "
                 r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})", headers["authorization"])
    assert m, headers["authorization"]
    _, day, region, signed, signature = m.groups()
    url = urlsplit(request["url"])
    query = sorted(
        (quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~"))
        for k, _, v in (p.partition("=") for p in url.query.split("&") if p)
    )
    canonical = "\n".join([
        request["method"],
        quote(unquote(url.path), safe="/-_.~"),
        "&".join(f"{k}={v}" for k, v in query),
        "".join(f"{h}:{' '.join(headers[h].strip().split())}\n" for h in signed.split(";")),
        signed,
        headers["x-amz-content-sha256"],
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", headers["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


def _signing_catalog(server: BingsanServer):
    return _catalog(server, **{f"header.{HEADER}": "remote-signing"})


def test_remote_signing_lets_a_client_without_keys_read_and_write(signing, moto):
    ns, location = _exercise(_signing_catalog(signing))
    data = [r for r in _table_requests(moto, location) if "/data/" in r["url"]]
    assert any(r["method"] in ("PUT", "POST") for r in data), "the client wrote data files"
    client = [r for r in data if "botocore" in r["headers"].get("User-Agent", "").lower()]
    assert client, "requests from the client's S3 library were recorded"
    for r in client:
        assert _credential_of(r) == SERVER_KEY, "signed by the catalog"
        assert _verify_sigv4(r, SERVER_SECRET), f"a valid signature for {r['method']} {r['url']}"

    r = requests.get(signing.api(f"namespaces/{ns}/tables/t"), headers={HEADER: "remote-signing"}, timeout=10)
    config = r.json()["config"]
    assert config["s3.remote-signing-enabled"] == "true"
    assert config["s3.signer.uri"] == signing.base_url
    assert config["s3.signer.endpoint"].startswith("v1/aws/s3/sign?grant=")
    assert "s3.access-key-id" not in config and "storage-credentials" not in r.json()


def _grant(server: BingsanServer, ns: str, name: str) -> str:
    r = requests.get(server.api(f"namespaces/{ns}/tables/{name}"), headers={HEADER: "remote-signing"}, timeout=10)
    return r.json()["config"]["s3.signer.endpoint"]


def _sign(server: BingsanServer, endpoint: str, uri: str, method: str = "GET"):
    body = {"region": REGION, "method": method, "uri": uri, "headers": {"Host": [urlsplit(uri).netloc]}}
    return requests.post(f"{server.base_url}/{endpoint}", json=body, timeout=10)


def test_signer_refuses_what_the_grant_does_not_cover(signing, moto):
    ns = unique("ns")
    requests.post(signing.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    tables = {}
    for name in ("a", "b"):
        r = requests.post(signing.api(f"namespaces/{ns}/tables"), timeout=10,
                          json={"name": name, "schema": {"type": "struct", "fields": []}})
        tables[name] = r.json()["metadata"]["location"]
    endpoint = _grant(signing, ns, "a")
    path = lambda loc: f"{moto.endpoint}/{loc.removeprefix('s3://')}"  # noqa: E731

    ok = _sign(signing, endpoint, path(tables["a"]) + "/data/f.parquet")
    assert ok.status_code == 200
    assert ok.json()["uri"] == path(tables["a"]) + "/data/f.parquet"
    assert ok.json()["headers"]["authorization"][0].startswith(f"AWS4-HMAC-SHA256 Credential={SERVER_KEY}/")

    # Another table's objects, the bucket, a path escaping the location, a bulk delete.
    for uri, method in [
        (path(tables["b"]) + "/data/f.parquet", "GET"),
        (path(tables["b"]) + "/data/f.parquet", "PUT"),
        (f"{moto.endpoint}/{BUCKET}", "GET"),
        (path(tables["a"]) + "/../b/data/f.parquet", "GET"),
        (f"{moto.endpoint}/{BUCKET}?delete", "POST"),
    ]:
        assert_error(_sign(signing, endpoint, uri, method), 403, "ForbiddenException")
    # No grant, a forged grant, a grant of table b used for table a's files.
    assert_error(_sign(signing, "v1/aws/s3/sign", path(tables["a"]) + "/x"), 403, "ForbiddenException")
    forged = endpoint[:-4] + ("AAAA" if not endpoint.endswith("AAAA") else "BBBB")
    assert_error(_sign(signing, forged, path(tables["a"]) + "/x"), 403, "ForbiddenException")
    assert_error(_sign(signing, _grant(signing, ns, "b"), path(tables["a"]) + "/x"), 403, "ForbiddenException")
    assert_error(requests.post(f"{signing.base_url}/{endpoint}", data=b"{", timeout=10), 400, "BadRequestException")


# ------------------------------------------------------------ hot path figures

HOT_LOADS, ROUNDS = 500, 4


def test_hot_vended_loads_allocate_nothing_and_call_sts_once(vending, moto):
    """A load answered with cached credentials allocates nothing on the
    request path and calls no STS; loads/s with and without vending on the
    same table and connection, in alternating rounds of one run (a figure
    for docs/performance.md, not asserted)."""
    ns = unique("ns")
    requests.post(vending.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    requests.post(vending.api(f"namespaces/{ns}/tables"), timeout=10,
                  json={"name": "t", "schema": {"type": "struct", "fields": []}}).raise_for_status()
    path = vending.api_path(f"namespaces/{ns}/tables/t")
    modes = {"plain": {}, "vended": {HEADER: "vended-credentials"}}
    seconds = dict.fromkeys(modes, 0.0)
    with vending.raw() as c:
        for headers in modes.values():
            for _ in range(50):  # warm-up: pools, caches, the shard's credentials
                r = c.request("GET", path, headers=headers)
                assert r.status == 200, r.body
        sts_before = len(moto.assume_role_calls())
        for _ in range(ROUNDS):
            for label, headers in modes.items():
                before = vending.metrics()
                started = time.perf_counter()
                for _ in range(HOT_LOADS):
                    r = c.request("GET", path, headers=headers)
                    assert r.status == 200
                seconds[label] += time.perf_counter() - started
                after = vending.metrics()
                allocs = after.sum("bingsan_request_allocs_total") - before.sum("bingsan_request_allocs_total")
                # On PostgreSQL each read is a query through tokio-postgres,
                # which allocates (measured in test_metrics, not asserted).
                if TEST_STORE != "postgres":
                    assert allocs == 0, f"{label}: {allocs:.0f} allocations on the request path over {HOT_LOADS} loads"
        assert len(moto.assume_role_calls()) == sts_before, "no STS call while credentials are fresh"
        assert "s3.session-token" in r.json()["config"]
    from harness import MEASUREMENTS

    rate = {label: ROUNDS * HOT_LOADS / t for label, t in seconds.items()}
    MEASUREMENTS.append(
        f"hot loads on one keep-alive connection: {rate['plain']:.0f}/s plain, {rate['vended']:.0f}/s with "
        f"vended credentials from cache (ratio {rate['vended'] / rate['plain']:.2f}) on {TEST_STORE}"
    )


def test_big_tables_get_their_delegation_through_gzip_clients(vending, signing):
    """A load answer over the compression threshold is stored gzip; a client
    that accepts gzip and asks for delegation must still get its config."""
    fields = [{"id": i, "name": f"c{i}", "required": False, "type": "string"} for i in range(1, 121)]
    for server, mode, key in ((vending, "vended-credentials", "s3.access-key-id"),
                              (signing, "remote-signing", "s3.signer.endpoint")):
        ns = unique("ns")
        requests.post(server.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
        created = requests.post(server.api(f"namespaces/{ns}/tables"), timeout=10,
                                json={"name": "big", "schema": {"type": "struct", "fields": fields}})
        created.raise_for_status()
        path = server.api(f"namespaces/{ns}/tables/big")
        plain = requests.get(path, headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert plain.headers.get("Content-Encoding") == "gzip", "big enough to be served compressed"
        r = requests.get(path, headers={HEADER: mode, "Accept-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 200, r.text
        assert key in r.json()["config"], (mode, r.headers)
