"""STS failing under a vending warehouse: down, slow beyond the timeout, or
refusing AssumeRole. A vended load and `/credentials` answer a clear 503 in
the ErrorModel shape naming no role, endpoint or STS message; loads
without delegation go on; vending recovers once STS is back; every
failure is counted in `bingsan_sts_calls_total`.

STS is moto's, behind `StsGate` (s3.py), which fails calls on demand."""

from __future__ import annotations

import time

import pytest
import requests

from harness import BingsanServer, assert_error, unique
from s3 import StsGate, warehouses_file

ROLE = "arn:aws:iam::123456789012:role/secret-vending-role"
HEADER = "X-Iceberg-Access-Delegation"


@pytest.fixture(scope="module")
def gate(moto):
    g = StsGate(moto.endpoint, slow_secs=13)  # beyond the catalog's 10 s STS timeout
    yield g
    g.close()


@pytest.fixture(scope="module")
def vending(moto, gate, tmp_path_factory):
    work = tmp_path_factory.mktemp("sts-faults")
    bucket = unique("sts").replace("_", "-")
    moto.client().create_bucket(Bucket=bucket)
    warehouses_file(work / "warehouses.toml", "lake", f"s3://{bucket}/wh", moto.endpoint, None,
                    delegation="vended", sts_role=ROLE, sts_endpoint=gate.endpoint)
    s = BingsanServer(work, prefix="lake", shards=1, extra_args=["--warehouses-file", str(work / "warehouses.toml")])
    s.start()
    yield s
    s.stop()


def _new_table(server: BingsanServer) -> str:
    """A fresh table (so no credentials are cached for it); its URL."""
    ns = unique("ns")
    requests.post(server.api("namespaces"), json={"namespace": [ns]}, timeout=10).raise_for_status()
    requests.post(server.api(f"namespaces/{ns}/tables"), timeout=10,
                  json={"name": "t", "schema": {"type": "struct", "fields": []}}).raise_for_status()
    return server.api(f"namespaces/{ns}/tables/t")


def _assert_clear_503(r: requests.Response, gate: StsGate) -> None:
    err = assert_error(r, 503, "ServiceUnavailableException")
    assert err["message"].startswith("cannot vend credentials for this table now"), err
    for leak in (ROLE, "secret-vending-role", *StsGate.DENIAL_WORDS, str(gate.port), "127.0.0.1"):
        assert leak not in r.text, f"the answer leaks {leak!r}: {r.text}"


@pytest.mark.parametrize("fault, result", [("down", "unreachable"), ("deny", "refused"), ("slow", "unreachable")])
def test_a_failing_sts_is_a_clear_503_that_recovers(vending, gate, fault, result):
    url = _new_table(vending)
    before = vending.metrics().sum("bingsan_sts_calls_total", result=result)
    gate.mode = fault
    try:
        started = time.monotonic()
        _assert_clear_503(requests.get(url, headers={HEADER: "vended-credentials"}, timeout=30), gate)
        assert time.monotonic() - started < 12, "the STS call is bounded by its 10 s timeout"
        if fault != "slow":  # the same path; one more 10 s wait proves nothing new
            _assert_clear_503(requests.get(url + "/credentials", timeout=30), gate)
        # A load without delegation never calls STS.
        plain = requests.get(url, timeout=10)
        assert plain.status_code == 200 and "s3.access-key-id" not in plain.json()["config"]
        assert vending.metrics().sum("bingsan_sts_calls_total", result=result) > before, "the failure is counted"
        assert "vending failed" in vending.log_text(), "the operator's log has the cause"
    finally:
        gate.mode = "up"
    ok_before = vending.metrics().sum("bingsan_sts_calls_total", result="ok")
    r = requests.get(url, headers={HEADER: "vended-credentials"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["config"]["s3.session-token"], "vending is back once STS is"
    assert vending.metrics().sum("bingsan_sts_calls_total", result="ok") == ok_before + 1
