"""Delegation with the server's credentials from the AWS chain
(`credentials = { source = "chain" }`): from the environment, and from a
web identity token as on EKS (AssumeRoleWithWebIdentity at
AWS_ENDPOINT_URL_STS). The server writes its metadata files, signs STS
calls (vending) and clients' S3 requests (remote signing) with the keys
the chain gave it.

STS is moto's behind `StsGate` (s3.py), which records each call. The web
identity exchange must be HTTPS (object_store refuses plain HTTP for it),
so that gate serves TLS with a certificate made here and the server trusts
it through SSL_CERT_FILE."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import requests

from harness import BingsanServer, unique
from s3 import REGION, StsGate, warehouses_file

HEADER = "X-Iceberg-Access-Delegation"
VEND_ROLE = "arn:aws:iam::123456789012:role/bingsan-vend"
SERVER_ROLE = "arn:aws:iam::123456789012:role/bingsan-server"


@contextlib.contextmanager
def server_environment(**variables: str):
    """The process environment the server starts with: no AWS_* variable
    but `variables` (the chain must find only what the test gives it)."""
    saved = dict(os.environ)
    for k in [k for k in os.environ if k.startswith("AWS_") or k == "SSL_CERT_FILE"]:
        del os.environ[k]
    os.environ.update(variables, AWS_EC2_METADATA_DISABLED="true")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _server(work, moto, bucket: str, delegation: str, sts_endpoint: str, **env: str) -> BingsanServer:
    moto.client().create_bucket(Bucket=bucket)
    warehouses_file(work / "warehouses.toml", "lake", f"s3://{bucket}/wh", moto.endpoint, None,
                    credentials='{ source = "chain" }', delegation=delegation, sts_role=VEND_ROLE,
                    sts_endpoint=sts_endpoint)
    s = BingsanServer(work, prefix="lake", shards=1, extra_args=["--warehouses-file", str(work / "warehouses.toml")])
    with server_environment(**env):
        return s.start()


def _create(server: BingsanServer) -> tuple[str, str]:
    """A table (its metadata file written to S3 with the server's keys); its URL and location."""
    ns = unique("ns")
    requests.post(server.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    r = requests.post(server.api(f"namespaces/{ns}/tables"), timeout=30,
                      json={"name": "t", "schema": {"type": "struct", "fields": []}})
    assert r.status_code == 200, r.text
    return server.api(f"namespaces/{ns}/tables/t"), r.json()["metadata"]["location"]


def _signed_key(server: BingsanServer, moto, url: str, location: str) -> dict:
    """Signs a GET of an object of the table; the headers the signer gave."""
    config = requests.get(url, headers={HEADER: "remote-signing"}, timeout=10).json()["config"]
    uri = f"{moto.endpoint}/{location.removeprefix('s3://')}/data/f.parquet"
    body = {"region": REGION, "method": "GET", "uri": uri, "headers": {"Host": [urlsplit(uri).netloc]}}
    r = requests.post(f"{server.base_url}/{config['s3.signer.endpoint']}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["headers"]


def _credential(authorization: str) -> str:
    m = re.search(r"Credential=([^/]+)/", authorization)
    assert m, authorization
    return m.group(1)


def test_environment_keys_sign_vending_and_the_metadata_writes(moto, tmp_path):
    gate = StsGate(moto.endpoint)
    try:
        server = _server(tmp_path, moto, unique("chain-env").replace("_", "-"), "vended", gate.endpoint,
                         AWS_ACCESS_KEY_ID="chainenvkey", AWS_SECRET_ACCESS_KEY="chainenvsecret")
        try:
            url, location = _create(server)
            bucket, key = location.removeprefix("s3://").split("/", 1)
            assert any(k.startswith(key + "/metadata/") for k in moto.keys(bucket)), "metadata written"
            r = requests.get(url, headers={HEADER: "vended-credentials"}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["config"]["s3.session-token"]
            [call] = [c for c in gate.calls if c["form"].get("Action") == "AssumeRole"]
            assert call["form"]["RoleArn"] == VEND_ROLE
            assert _credential(call["authorization"]) == "chainenvkey", "STS call signed with the chain's keys"
        finally:
            server.stop()
    finally:
        gate.close()


@pytest.fixture
def tls_cert(tmp_path):
    """A certificate for 127.0.0.1 signed by a test CA: (CA file, (cert,
    key)). rustls takes no self-signed CA certificate as a server's own."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, csr, ext = (tmp_path / f"sts.{x}" for x in ("pem", "key", "csr", "ext"))
    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=bingsan-test-ca", "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
            "-extfile", str(ext), "-out", str(cert))
    return ca, (cert, key)


def test_web_identity_keys_sign_remote_signing(moto, tmp_path, tls_cert):
    ca, pair = tls_cert
    gate = StsGate(moto.endpoint, tls=pair)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bGFrZTpiaW5nc2FuIn0.c2ln")
    try:
        server = _server(tmp_path, moto, unique("chain-wi").replace("_", "-"), "remote-signing", gate.endpoint,
                         AWS_ROLE_ARN=SERVER_ROLE, AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
                         AWS_ENDPOINT_URL_STS=gate.endpoint, SSL_CERT_FILE=str(ca))
        try:
            url, location = _create(server)
            bucket, key = location.removeprefix("s3://").split("/", 1)
            assert any(k.startswith(key + "/metadata/") for k in moto.keys(bucket)), "metadata written"
            headers = _signed_key(server, moto, url, location)
            exchanges = [c for c in gate.calls if c["form"].get("Action") == "AssumeRoleWithWebIdentity"]
            assert exchanges, "the server exchanged its web identity token"
            for c in exchanges:
                assert c["form"]["RoleArn"] == SERVER_ROLE and c["form"]["WebIdentityToken"] == token.read_text()
            # The file I/O and delegation each hold the chain's provider: one exchange each.
            issued = {re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", c["answer"]).group(1) for c in exchanges}
            assert _credential(headers["authorization"][0]) in issued, "signed with the web identity's keys"
            assert headers["x-amz-security-token"][0], "temporary keys carry their session token"
        finally:
            server.stop()
    finally:
        gate.close()
