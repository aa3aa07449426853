"""Raw HTTP (requests): status codes, ErrorModel bodies, paging, encoding."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from harness import SIMPLE_SCHEMA_JSON as SCHEMA, assert_error, collect_pages, unique

SEP = "%1F"


def enc(*parts: str, sep: str = SEP) -> str:
    """A namespace as a path segment: parts percent-encoded, joined by sep."""
    return sep.join(quote(p, safe="") for p in parts)


def create(server, http, *parts: str, properties: dict | None = None):
    body = {"namespace": list(parts)}
    if properties is not None:
        body["properties"] = properties
    r = http.post(server.api("namespaces"), json=body)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ shapes
def test_create_and_load_bodies(server, http):
    ns = unique()
    created = create(server, http, ns, properties={"a": "1"})
    assert created == {"namespace": [ns], "properties": {"a": "1"}}
    r = http.get(server.api(f"namespaces/{ns}"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"namespace": [ns], "properties": {"a": "1"}}


def test_head_exists_and_missing(server, http):
    ns = unique()
    create(server, http, ns)
    r = http.head(server.api(f"namespaces/{ns}"))
    assert r.status_code == 204, r.status_code
    assert r.content == b""
    r = http.head(server.api(f"namespaces/{unique('missing')}"))
    assert r.status_code == 404
    assert r.content == b""


def test_404_no_such_namespace(server, http):
    ns = unique("missing")
    for method, path in [
        ("GET", f"namespaces/{ns}"),
        ("DELETE", f"namespaces/{ns}"),
        ("POST", f"namespaces/{ns}/properties"),
        ("GET", f"namespaces?parent={ns}"),
    ]:
        body = {"updates": {"a": "b"}} if method == "POST" else None
        r = http.request(method, server.api(path), json=body)
        err = assert_error(r, 404, "NoSuchNamespaceException")
        assert ns in err["message"], err


def test_400_parent_missing_on_create(server, http):
    # createNamespace lists no 404 in the spec: a missing parent is a 400.
    missing = unique("missing")
    r = http.post(server.api("namespaces"), json={"namespace": [missing, "child"]})
    err = assert_error(r, 400, "BadRequestException")
    assert err["message"] == f"Parent namespace does not exist: {missing}"


@pytest.mark.parametrize(
    "namespace,message",
    [
        (["ok", ""], "namespace part must not be empty"),
        ([""], "namespace part must not be empty"),
        (["a\u0001b"], "namespace part must not contain control characters"),
        (["ok", "tab\there"], "namespace part must not contain control characters"),
        (["del\u007f"], "namespace part must not contain control characters"),
        ([], "namespace must have at least one part"),
    ],
    ids=["empty-part", "empty-name", "soh", "tab", "del", "no-parts"],
)
def test_400_names_the_rule_broken(server, http, namespace, message):
    r = http.post(server.api("namespaces"), json={"namespace": namespace})
    assert assert_error(r, 400, "BadRequestException")["message"] == message


@pytest.mark.parametrize(
    "kind,name,message",
    [
        ("tables", "", "table name must not be empty"),
        ("tables", "a\u0001b", "table name must not contain control characters"),
        ("views", "", "view name must not be empty"),
        ("views", "nl\nhere", "view name must not contain control characters"),
    ],
    ids=["table-empty", "table-soh", "view-empty", "view-newline"],
)
def test_400_names_the_rule_a_table_or_view_name_broke(server, http, kind, name, message):
    ns = unique()
    create(server, http, ns)
    body = {"name": name, "schema": SCHEMA}
    if kind == "views":
        body["view-version"] = {"version-id": 1, "timestamp-ms": 1, "schema-id": 0, "summary": {},
                                "default-namespace": [ns],
                                "representations": [{"type": "sql", "sql": "SELECT 1", "dialect": "spark"}]}
    r = http.post(server.api(f"namespaces/{ns}/{kind}"), json=body)
    assert assert_error(r, 400, "BadRequestException")["message"] == message


def test_empty_parent_lists_the_top_level(server, http):
    # The spec: "empty string is treated as absent".
    ns = unique()
    create(server, http, ns)
    create(server, http, ns, "child")
    r = http.get(server.api("namespaces?parent="))
    assert r.status_code == 200, r.text
    assert r.json() == http.get(server.api("namespaces")).json()
    assert [ns] in r.json()["namespaces"]
    assert [ns, "child"] not in r.json()["namespaces"]


def test_409_already_exists(server, http):
    ns = unique()
    create(server, http, ns)
    r = http.post(server.api("namespaces"), json={"namespace": [ns]})
    assert_error(r, 409, "AlreadyExistsException")


def test_409_not_empty(server, http):
    ns = unique()
    create(server, http, ns)
    create(server, http, ns, "child")
    r = http.delete(server.api(f"namespaces/{ns}"))
    assert_error(r, 409, "NamespaceNotEmptyException")
    # Nothing was dropped.
    assert http.get(server.api(f"namespaces/{enc(ns, 'child')}")).status_code == 200
    assert http.get(server.api(f"namespaces/{ns}")).status_code == 200


def test_drop_returns_204(server, http):
    ns = unique()
    create(server, http, ns)
    r = http.delete(server.api(f"namespaces/{ns}"))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert http.get(server.api(f"namespaces/{ns}")).status_code == 404


def test_422_set_and_remove_same_key(server, http):
    ns = unique()
    create(server, http, ns, properties={"k": "v"})
    r = http.post(server.api(f"namespaces/{ns}/properties"), json={"removals": ["k"], "updates": {"k": "w"}})
    assert_error(r, 422, "UnprocessableEntityException")
    assert http.get(server.api(f"namespaces/{ns}")).json()["properties"] == {"k": "v"}


def test_update_properties_response(server, http):
    ns = unique()
    create(server, http, ns, properties={"a": "1", "b": "2"})
    r = http.post(server.api(f"namespaces/{ns}/properties"),
                  json={"removals": ["a", "nope"], "updates": {"c": "3", "b": "22"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body["updated"]) == ["b", "c"]
    assert body["removed"] == ["a"]
    assert body["missing"] == ["nope"]
    assert http.get(server.api(f"namespaces/{ns}")).json()["properties"] == {"b": "22", "c": "3"}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"namespace": "flat-string"}',
        b'{"namespace": []}',
        b'{"namespace": ["ok", ""]}',
        b'{"namespace": ["a"], "properties": {"k": 1}}',
        b'{"namespace": ["a\\u0000b"]}',
    ],
    ids=["broken", "empty", "array", "string-ns", "empty-ns", "empty-part", "non-string-prop", "nul"],
)
def test_400_invalid_create_body(server, http, body):
    r = http.post(server.api("namespaces"), data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "BadRequestException")


def test_400_invalid_properties_body(server, http):
    ns = unique()
    create(server, http, ns)
    r = http.post(server.api(f"namespaces/{ns}/properties"), data=b'{"updates": [1,2]',
                  headers={"Content-Type": "application/json"})
    assert_error(r, 400, "BadRequestException")


@pytest.mark.single_node(reason="nginx refuses a bad escape itself (HTML 400): only the node shows its own parser")
@pytest.mark.parametrize("path", ["/v1/namespaces/a%zz", "/v1/namespaces/a%1", "/v1/namespaces/%FF%FE",
                                  "/v1/namespaces?parent=a%zz"])
def test_400_bad_percent_encoding(server, path):
    # Raw socket: requests would "fix" the escape into %25zz.
    with server.raw() as c:
        assert_error(c.request("GET", path), 400, "BadRequestException")


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("PUT", "/v1/namespaces", {"GET", "HEAD", "POST"}),
        ("DELETE", "/v1/namespaces", {"GET", "HEAD", "POST"}),
        ("PUT", "/v1/namespaces/x", {"GET", "HEAD", "DELETE"}),
        ("GET", "/v1/namespaces/x/properties", {"POST"}),
        ("POST", "/v1/config", {"GET", "HEAD"}),
    ],
)
def test_405_method_not_allowed(server, http, method, path, allowed):
    r = http.request(method, server.url(path))
    assert_error(r, 405, "MethodNotAllowedException")
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v2/config", "/v1/nope", "/v1/namespaces/a/nope", "/v1/othercat/namespaces"]
)
def test_404_unknown_route(server, http, path):
    r = http.get(server.url(path))
    assert_error(r, 404, "NotFoundException")


def test_404_wrong_prefix(prefixed_server, http):
    r = http.get(prefixed_server.url("/v1/wrong/namespaces"))
    assert_error(r, 404, "NotFoundException")


def test_prefix_optional_in_paths(prefixed_server, http):
    """With --prefix, /v1/{prefix}/... and /v1/... reach the same catalog."""
    s = prefixed_server
    ns = unique()
    r = http.post(s.api("namespaces"), json={"namespace": [ns]})
    assert r.status_code == 200, r.text
    assert http.get(s.api(f"namespaces/{ns}", prefixed=False)).status_code == 200
    r = http.post(s.api("namespaces", prefixed=False), json={"namespace": [ns, "c"]})
    assert r.status_code == 200, r.text
    assert http.get(s.api(f"namespaces/{enc(ns, 'c')}")).status_code == 200


# ------------------------------------------------------------------ paging
@pytest.fixture(scope="module")
def paged_parent(session_servers):
    """250 namespaces under one parent on the shared plain server."""
    import requests

    server = session_servers("plain")
    parent = unique("paging")
    names = [f"n{i:04d}_{'x' * (i % 7)}" for i in range(250)]
    with requests.Session() as s:
        assert s.post(server.api("namespaces"), json={"namespace": [parent]}, timeout=10).status_code == 200
        for n in names:
            r = s.post(server.api("namespaces"), json={"namespace": [parent, n]}, timeout=10)
            assert r.status_code == 200, r.text
    return server, parent, names


def list_page(server, http, parent, **params):
    r = http.get(server.api("namespaces"), params={"parent": parent, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_unpaged_list_returns_everything(paged_parent, http):
    server, parent, names = paged_parent
    body = list_page(server, http, parent)
    assert body["namespaces"] == [[parent, n] for n in names]
    assert body.get("next-page-token") is None


@pytest.mark.parametrize("page_size", [1, 7, 100, 249, 250, 251, 1000])
def test_paging_sees_every_namespace_once(paged_parent, http, page_size):
    server, parent, names = paged_parent
    seen, pages = collect_pages(
        lambda token: list_page(server, http, parent, pageToken=token, pageSize=page_size),
        "namespaces", page_size, len(names) + 1,
    )
    assert seen == [[parent, n] for n in names]
    assert pages >= -(-len(names) // page_size)


def test_paging_default_size(paged_parent, http):
    """pageToken without pageSize pages with the server default (100)."""
    server, parent, names = paged_parent
    body = list_page(server, http, parent, pageToken="")
    assert len(body["namespaces"]) == 100
    assert body["next-page-token"]


def test_paging_bad_parameters(paged_parent, http):
    server, parent, _ = paged_parent
    for params in ({"pageSize": "0"}, {"pageSize": "-1"}, {"pageSize": "abc"}, {"pageToken": "zz"}):
        r = http.get(server.api("namespaces"), params={"parent": parent, **params})
        assert_error(r, 400, "BadRequestException")


def test_top_level_paging(fresh_server, http):
    names = sorted(f"top{i:03d}" for i in range(30))
    for n in names:
        create(fresh_server, http, n)
    seen, token = [], ""
    while token is not None:
        body = list_page(fresh_server, http, None, pageToken=token, pageSize=8)
        seen += body["namespaces"]
        token = body["next-page-token"]
    assert seen == [[n] for n in names]


# ------------------------------------------------------------------ encoding
def test_unit_separator_paths(server, http):
    top = unique()
    create(server, http, top)
    create(server, http, top, "mid", properties={"m": "1"})
    create(server, http, top, "mid", "leaf")
    r = http.get(server.url(f"/v1/namespaces/{top}%1Fmid%1Fleaf"))
    assert r.status_code == 200, r.text
    assert r.json()["namespace"] == [top, "mid", "leaf"]
    # Lower-case hex works too.
    r = http.get(server.url(f"/v1/namespaces/{top}%1fmid"))
    assert r.json() == {"namespace": [top, "mid"], "properties": {"m": "1"}}
    body = list_page(server, http, f"{top}\x1fmid")
    assert body["namespaces"] == [[top, "mid", "leaf"]]


def test_dot_is_a_plain_character_without_configured_separator(server, http):
    name = unique("with.dot")
    create(server, http, name)
    r = http.get(server.url(f"/v1/namespaces/{name}"))
    assert r.status_code == 200, r.text
    assert r.json()["namespace"] == [name]


def test_configured_separator(dotsep_server, http):
    s = dotsep_server
    top = unique()
    create(s, http, top)
    create(s, http, top, "child", properties={"c": "1"})
    for path in (f"namespaces/{top}.child", f"namespaces/{top}%1Fchild", f"namespaces/{top}%2Echild"):
        r = http.get(s.api(path))
        assert r.status_code == 200, f"{path}: {r.text}"
        assert r.json() == {"namespace": [top, "child"], "properties": {"c": "1"}}
    assert list_page(s, http, top)["namespaces"] == [[top, "child"]]
    assert list_page(s, http, f"{top}.child")["namespaces"] == []
    assert http.head(s.api(f"namespaces/{top}.child")).status_code == 204
    assert http.delete(s.api(f"namespaces/{top}.child")).status_code == 204
    assert http.get(s.api(f"namespaces/{top}%1Fchild")).status_code == 404


def test_unicode_and_spaces_in_paths_and_parent(server, http):
    top = unique("ünï cødé")
    child = "日本 語 +&?#/"
    create(server, http, top, properties={"clé": "välue ✓"})
    create(server, http, top, child)
    r = http.get(server.url(f"/v1/namespaces/{enc(top)}"))
    assert r.json() == {"namespace": [top], "properties": {"clé": "välue ✓"}}
    r = http.get(server.url(f"/v1/namespaces/{enc(top, child)}"))
    assert r.status_code == 200, r.text
    assert r.json()["namespace"] == [top, child]
    # The parent query parameter, percent-encoded once (space as %20).
    for parent, expected in [(top, [[top, child]]), (f"{top}\x1f{child}", [])]:
        r = http.get(server.api("namespaces") + "?parent=" + quote(parent, safe=""))
        assert r.status_code == 200, r.text
        assert r.json()["namespaces"] == expected
    top_level = list_page(server, http, None)["namespaces"]
    assert [top] in top_level
    assert http.delete(server.url(f"/v1/namespaces/{enc(top, child)}")).status_code == 204
    assert http.delete(server.url(f"/v1/namespaces/{enc(top)}")).status_code == 204


def test_parent_query_plus_means_space(server, http):
    top = unique("with space")
    create(server, http, top)
    create(server, http, top, "child")
    # requests encodes the space as '+': ?parent=with+space_...
    r = http.get(server.api("namespaces"), params={"parent": top})
    assert "+" in r.request.url
    assert r.status_code == 200, r.text
    assert r.json()["namespaces"] == [[top, "child"]]


def test_response_json_is_valid_utf8(server, http):
    ns = unique("quote\"back\\slash")
    create(server, http, ns, properties={"k\n": "v\t\"", "emoji": "🧊"})
    raw = http.get(server.url(f"/v1/namespaces/{enc(ns)}")).content
    body = json.loads(raw.decode("utf-8"))
    assert body == {"namespace": [ns], "properties": {"k\n": "v\t\"", "emoji": "🧊"}}
