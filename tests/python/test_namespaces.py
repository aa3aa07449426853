"""Namespaces through PyIceberg's RestCatalog.

Each test runs against every shared server variant (`catalog` is
parametrized): no prefix, --prefix, and --prefix with --namespace-separator.
"""

from __future__ import annotations

import pytest
from pyiceberg.exceptions import (
    BadRequestError,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
)

from harness import unique


def test_create_with_properties_and_load(catalog):
    ns = unique()
    props = {"owner": "alice", "comment": "first namespace", "empty": ""}
    catalog.create_namespace(ns, props)
    assert catalog.load_namespace_properties(ns) == props
    assert (ns,) in catalog.list_namespaces()


def test_create_without_properties(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    assert catalog.load_namespace_properties(ns) == {}


def test_nested_namespaces_and_listing(catalog):
    top = unique("top")
    catalog.create_namespace((top,))
    catalog.create_namespace((top, "b"))
    catalog.create_namespace((top, "c"), {"k": "v"})
    catalog.create_namespace((top, "b", "deep"))

    listed_top = catalog.list_namespaces()
    assert (top,) in listed_top
    # Top-level listing holds only one-part namespaces.
    assert all(len(n) == 1 for n in listed_top), [n for n in listed_top if len(n) != 1]

    assert sorted(catalog.list_namespaces(top)) == [(top, "b"), (top, "c")]
    assert catalog.list_namespaces((top, "b")) == [(top, "b", "deep")]
    assert catalog.list_namespaces((top, "b", "deep")) == []
    assert catalog.load_namespace_properties((top, "c")) == {"k": "v"}
    assert catalog.load_namespace_properties((top, "b", "deep")) == {}


def test_nested_create_requires_parent(catalog):
    missing = unique("missing")
    # createNamespace lists no 404 in the spec: the server answers 400.
    with pytest.raises(BadRequestError, match="Parent namespace does not exist: "):
        catalog.create_namespace((missing, "child"))
    assert not catalog.namespace_exists((missing, "child"))
    assert not catalog.namespace_exists(missing)


def test_list_under_missing_parent(catalog):
    with pytest.raises(NoSuchNamespaceError):
        catalog.list_namespaces(unique("missing"))


def test_update_properties_summary(catalog):
    ns = unique()
    catalog.create_namespace(ns, {"a": "1", "b": "2", "c": "3"})
    summary = catalog.update_namespace_properties(ns, removals={"a", "zz"}, updates={"b": "20", "d": "4"})
    assert sorted(summary.updated) == ["b", "d"]
    assert summary.removed == ["a"]
    assert summary.missing == ["zz"]
    assert catalog.load_namespace_properties(ns) == {"b": "20", "c": "3", "d": "4"}

    # Only removals, all missing: nothing changes.
    summary = catalog.update_namespace_properties(ns, removals={"nope"})
    assert (summary.updated, summary.removed, summary.missing) == ([], [], ["nope"])
    assert catalog.load_namespace_properties(ns) == {"b": "20", "c": "3", "d": "4"}


def test_update_properties_of_missing_namespace(catalog):
    with pytest.raises(NoSuchNamespaceError):
        catalog.update_namespace_properties(unique("missing"), updates={"a": "b"})


def test_namespace_exists(catalog):
    ns = unique()
    assert not catalog.namespace_exists(ns)
    catalog.create_namespace(ns)
    assert catalog.namespace_exists(ns)
    catalog.create_namespace((ns, "child"))
    assert catalog.namespace_exists((ns, "child"))
    assert not catalog.namespace_exists((ns, "other"))


def test_drop_namespace(catalog):
    ns = unique()
    catalog.create_namespace(ns, {"x": "y"})
    catalog.drop_namespace(ns)
    assert not catalog.namespace_exists(ns)
    assert (ns,) not in catalog.list_namespaces()
    with pytest.raises(NoSuchNamespaceError):
        catalog.load_namespace_properties(ns)
    with pytest.raises(NoSuchNamespaceError):
        catalog.drop_namespace(ns)
    # The name is free again, without the old properties.
    catalog.create_namespace(ns)
    assert catalog.load_namespace_properties(ns) == {}


def test_already_exists(catalog):
    ns = unique()
    catalog.create_namespace(ns, {"v": "1"})
    with pytest.raises(NamespaceAlreadyExistsError):
        catalog.create_namespace(ns, {"v": "2"})
    # The failed create changed nothing.
    assert catalog.load_namespace_properties(ns) == {"v": "1"}


def test_not_empty(catalog):
    ns = unique()
    catalog.create_namespace(ns)
    catalog.create_namespace((ns, "child"))
    with pytest.raises(NamespaceNotEmptyError):
        catalog.drop_namespace(ns)
    # Still there, still usable, child intact.
    assert catalog.namespace_exists(ns)
    assert catalog.list_namespaces(ns) == [(ns, "child")]
    catalog.create_namespace((ns, "child2"))
    catalog.drop_namespace((ns, "child"))
    catalog.drop_namespace((ns, "child2"))
    catalog.drop_namespace(ns)
    assert not catalog.namespace_exists(ns)


def test_missing_namespace_errors(catalog):
    ns = unique("missing")
    with pytest.raises(NoSuchNamespaceError):
        catalog.load_namespace_properties(ns)
    with pytest.raises(NoSuchNamespaceError):
        catalog.drop_namespace(ns)


def test_unicode_and_spaces(catalog):
    top = unique("ünï cødé")
    child = "日本 語 / slash?&#"
    catalog.create_namespace(top, {"clé": "välue ✓"})
    catalog.create_namespace((top, child))
    assert catalog.load_namespace_properties(top) == {"clé": "välue ✓"}
    assert catalog.load_namespace_properties((top, child)) == {}
    assert catalog.namespace_exists((top, child))
    assert (top,) in catalog.list_namespaces()
    catalog.drop_namespace((top, child))
    catalog.drop_namespace(top)
    assert not catalog.namespace_exists(top)


def test_two_catalog_clients_see_each_other(any_server):
    a, b = any_server.catalog("a"), any_server.catalog("b")
    ns = unique()
    a.create_namespace(ns, {"p": "1"})
    assert b.load_namespace_properties(ns) == {"p": "1"}
    b.update_namespace_properties(ns, updates={"p": "2"})
    assert a.load_namespace_properties(ns) == {"p": "2"}
    b.drop_namespace(ns)
    assert not a.namespace_exists(ns)


def test_client_side_paging(any_server):
    """PyIceberg with `pageSize` set follows next-page-token to the end."""
    top = unique("paged")
    cat = any_server.catalog("paged", **{"rest-page-size": "7"})
    cat.create_namespace(top)
    children = [f"c{i:03d}" for i in range(23)]
    for c in children:
        cat.create_namespace((top, c))
    listed = cat.list_namespaces(top)
    assert listed == [(top, c) for c in children]


def test_list_under_unicode_parent_via_pyiceberg(catalog):
    # PyIceberg encodes each part and requests encodes the whole value again;
    # the server decodes `parent` twice, as the reference implementation does.
    top = unique("ünï cødé")
    catalog.create_namespace(top)
    catalog.create_namespace((top, "child"))
    assert catalog.list_namespaces(top) == [(top, "child")]
