//! The browser client: an ES module the server serves itself, so a page needs no build step
//! and no package to speak `bidir.json.v1` (docs/rpc.md, "The browser module").

use crate::{HttpResponse, Request};

/// The browser client of `bidir.json.v1`, a dependency-free ES module (src/rpc/js/bidir.js):
/// `connect(url, options)` → calls returning promises, service proxies from the server's
/// description, callbacks passed as plain objects of functions, subscriptions, answer timeouts
/// and reconnection. Serve it with [`serve_module`].
pub const BROWSER_MODULE: &str = include_str!("js/bidir.js");

/// The `Content-Type` browsers require of a module script.
const MODULE_TYPE: &str = "text/javascript; charset=utf-8";

/// Answers any request with [`BROWSER_MODULE`] (200, `text/javascript`): a plain HTTP route,
/// `ServerBuilder::http("/bidir.js", bidir::rpc::serve_module)`, so pages import it from their
/// own server (`import { connect } from '/bidir.js'`). No cache validators: browsers fetch it
/// again on each page load, so a page never runs a module older than its server.
pub fn serve_module(_req: &Request<'_>) -> HttpResponse {
    HttpResponse::status(200).header("Content-Type", MODULE_TYPE).body(BROWSER_MODULE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_exports_the_documented_api() {
        for export in [
            "export function connect(",
            "export class RpcError ",
            "export const PROTOCOL = 'bidir.json.v1';",
            "export const DEFAULT_TIMEOUT = 30000;",
        ] {
            assert!(BROWSER_MODULE.contains(export), "{export}");
        }
        // Dependency-free: a module that imports nothing.
        assert!(!BROWSER_MODULE.lines().any(|l| l.starts_with("import ")));
    }
}
