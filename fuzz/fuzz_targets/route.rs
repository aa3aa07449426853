//! Any method, path and query: routing, percent-decoding, namespace parsing
//! and page tokens must answer Ok or a clean error, never panic.
#![no_main]

use bingsan::catalog::Page;
use bingsan::http::Method;
use bingsan::routes::{parse_namespace, route, RouteConfig, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (method, rest) = text.split_once(' ').unwrap_or(("GET", text));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let arena = bumpalo::Bump::new();
    for cfg in [
        RouteConfig { prefixes: vec![String::new()], separator: String::new() },
        RouteConfig { prefixes: vec!["cat".into(), "lake".into()], separator: ".".into() },
    ] {
        if let Ok(m) = route(Method::parse(method), path, &cfg, &arena) {
            assert!(m.namespace.iter().all(|p| !p.contains('\u{1f}')));
        }
        let _ = parse_namespace(query, Source::Query, &cfg.separator, &arena);
    }
    let _ = Page::from_query(query, 100, 1000, &arena);
});
