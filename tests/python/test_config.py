"""GET /v1/config, health endpoints, and "advertised exactly when implemented"."""

from __future__ import annotations

import re

import pytest

NAMESPACE_ENDPOINTS = {
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
}

#: Every catalog endpoint of the REST spec the server routes (tables and
#: views included); each must be advertised exactly when it is implemented.
SPEC_ENDPOINTS = NAMESPACE_ENDPOINTS | {
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
    "POST /v1/{prefix}/transactions/commit",
    "GET /v1/{prefix}/namespaces/{namespace}/views",
    "POST /v1/{prefix}/namespaces/{namespace}/views",
    "GET /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "POST /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/views/{view}",
    "POST /v1/{prefix}/views/rename",
    "POST /v1/{prefix}/namespaces/{namespace}/register-view",
}

ENDPOINT_FORM = re.compile(r"^(GET|HEAD|POST|DELETE) /v1/\{prefix\}(/[a-z-]+|/\{[a-z]+\})+$")


def get_config(server, http, **params):
    r = http.get(server.url("/v1/config"), params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_config_without_prefix(server, http):
    cfg = get_config(server, http)
    assert isinstance(cfg["defaults"], dict)
    assert isinstance(cfg["overrides"], dict)
    assert "prefix" not in cfg["overrides"]
    assert cfg["overrides"].get("namespace-separator", "%1F") == "%1F"


def test_config_with_prefix(prefixed_server, http):
    cfg = get_config(prefixed_server, http)
    assert cfg["overrides"]["prefix"] == "cat"


def test_config_with_separator(dotsep_server, http):
    cfg = get_config(dotsep_server, http)
    assert cfg["overrides"]["prefix"] == "dots"
    # Advertised url-encoded, as the spec says.
    assert cfg["overrides"]["namespace-separator"] == "%2E"


def test_config_ignores_warehouse_param(server, http):
    assert get_config(server, http, warehouse="s3://nowhere") == get_config(server, http)


@pytest.mark.parametrize("variant", ["plain", "prefixed"])
def test_endpoints_list(session_servers, http, variant):
    endpoints = get_config(session_servers(variant), http)["endpoints"]
    assert isinstance(endpoints, list)
    assert len(endpoints) == len(set(endpoints)), "duplicate endpoints"
    for e in endpoints:
        assert ENDPOINT_FORM.match(e), f"endpoint not in 'VERB /v1/{{prefix}}/...' form: {e!r}"
    missing = NAMESPACE_ENDPOINTS - set(endpoints)
    assert not missing, f"namespace endpoints not advertised: {sorted(missing)}"
    unknown = set(endpoints) - SPEC_ENDPOINTS
    assert not unknown, f"advertised endpoints this suite does not know: {sorted(unknown)}"


def _probe_url(server, endpoint: str) -> tuple[str, str]:
    method, template = endpoint.split(" ", 1)
    path = (
        template.replace("/v1/{prefix}", "")
        .replace("{namespace}", "probe_missing_ns")
        .replace("{table}", "t")
        .replace("{view}", "v")
    )
    return method, server.api(path)


@pytest.mark.parametrize("endpoint", sorted(SPEC_ENDPOINTS))
def test_advertised_exactly_when_implemented(prefixed_server, http, endpoint):
    """An advertised endpoint never answers 501; one that is not advertised
    answers 501 NotImplementedException (so clients that trust `endpoints`
    never call something that is missing, and miss nothing that exists)."""
    advertised = endpoint in get_config(prefixed_server, http)["endpoints"]
    method, url = _probe_url(prefixed_server, endpoint)
    body = None if method in ("GET", "HEAD", "DELETE") else b"{}"
    r = http.request(method, url, data=body, headers={"Content-Type": "application/json"})
    if advertised:
        assert r.status_code != 501, f"{endpoint} is advertised but answers 501: {r.text}"
        # The route exists: a generic "no route" 404 would mean it is not wired.
        if r.status_code == 404 and method != "HEAD":
            assert r.json()["error"]["type"] != "NotFoundException", f"{endpoint}: {r.text}"
        assert r.status_code != 405, f"{endpoint}: {r.text}"
    else:
        assert r.status_code == 501, f"{endpoint} is not advertised but answers {r.status_code}: {r.text}"
        if method != "HEAD":
            assert r.json()["error"]["type"] == "NotImplementedException"


def test_health(server, http):
    live = http.get(server.url("/health/live"))
    assert live.status_code == 200, live.text
    ready = http.get(server.url("/health/ready"))
    assert ready.status_code == 200, ready.text


def test_config_served_identically_with_prefix_path(prefixed_server, http):
    """/v1/config is never prefixed; /v1/{prefix}/config is no route."""
    r = http.get(prefixed_server.url("/v1/cat/config"))
    assert r.status_code == 404, r.text
