//! Accepted connections until their upgrade: admission (limits, per-peer counts), the HTTP
//! request parsed in place, routing, the Origin policy, the accept hook, and the answer — 101
//! and an open connection, or an HTTP response and a lingering close.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bidir_protocol::Connection;
use bidir_protocol::deflate::{self, DeflateConfig, DeflateParams};
use bidir_protocol::http::{self, Accept as HttpAccept, HandshakeError, StatusCode};

use super::codecs::open_deflate;
use super::slot::{Conns, Phase, Slot};
use crate::config::ServerConfig;
use crate::cx::WorkerCx;
use crate::meta::{ConnId, Meta, NO_TICK};
use crate::peers::Admission;
use crate::route::{Accepted, Request, Route, Router, WsHook};
use crate::tls::{ServerTls, Session};

/// What an accepted upgrade opens with: the hook's answer, the target in origin-form, and
/// permessage-deflate when negotiated.
type Upgraded = (Accepted, String, Option<(DeflateParams, DeflateConfig)>);

impl Conns {
    /// Admits an accepted stream from `peer`: a slot waiting for its upgrade request, whose
    /// key is returned for the stream's registration; `None` (the stream is dropped, which
    /// closes it) past the connection limits or while shutting down.
    pub(super) fn accept(
        &mut self,
        cx: &mut WorkerCx,
        shutting_down: bool,
        peer: SocketAddr,
        tls: Option<&ServerTls>,
    ) -> Option<usize> {
        cx.counters.accepted += 1;
        if shutting_down || self.is_full() {
            cx.counters.refused += 1;
            return None;
        }
        let peer_held = match &cx.shared.peers {
            None => false,
            Some(peers) => match peers.admit(peer.ip(), cx.wall_now()) {
                Admission::Refused => {
                    cx.counters.refused_per_peer += 1;
                    return None;
                }
                Admission::Held => true,
                Admission::Opened => false,
            },
        };
        let tls = match tls.map(Session::server) {
            None => None,
            Some(Ok(session)) => Some(Box::new(session)),
            Some(Err(_)) => {
                cx.counters.refused += 1;
                return None;
            }
        };
        let generation = self.next_generation();
        let key = self.slots.vacant_key();
        let deadline = (cx.now + cx.config().handshake_timeout).as_nanos();
        let tick = self.wheel.insert(key, deadline);
        let id = ConnId { worker: cx.index, slot: key as u32, generation };
        let mut meta = Meta::new(id, peer, tick);
        meta.peer_held = peer_held;
        self.slots.insert(Slot {
            meta,
            phase: Phase::Handshake { buf: Vec::new(), deadline },
            tls,
        });
        Some(key)
    }

    /// Handles handshake bytes: parse, route, answer.
    pub(super) fn handshake(
        &mut self,
        cx: &mut WorkerCx,
        router: &Router,
        key: usize,
        data: &[u8],
    ) {
        let slot = &mut self.slots[key];
        let Phase::Handshake { buf, .. } = &mut slot.phase else { return };
        buf.extend_from_slice(data);
        let head_bytes = std::mem::take(buf);
        let shared = Arc::clone(&cx.shared);
        let max = shared.config.max_handshake_size;
        let mut headers = [http::EMPTY_HEADER; 64];
        let (head, head_len) = match http::Request::parse(&head_bytes, &mut headers, max) {
            Ok(http::Status::Complete(parsed)) => parsed,
            Ok(http::Status::Partial) => {
                let Phase::Handshake { buf, .. } = &mut self.slots[key].phase else { return };
                *buf = head_bytes;
                return;
            }
            Err(e) => {
                cx.scratch.clear();
                e.write_response(&mut cx.scratch);
                self.respond(cx, key);
                return;
            }
        };
        cx.scratch.clear();
        // Ambiguous framing gets 400 on every route (RFC 9112 §6.3). A well-framed body is
        // never read: the answer closes the connection, so the body is not taken for the next
        // request.
        if let Err(e) = head.body() {
            e.write_response(&mut cx.scratch);
            self.respond(cx, key);
            return;
        }
        let req = Request { head, peer: slot.meta.peer };
        let accepted = match router.find(&req) {
            Route::WebSocket(hook, origins) => match head.upgrade() {
                Err(e) => {
                    e.write_response(&mut cx.scratch);
                    None
                }
                // The Origin policy applies once the upgrade is valid and before the accept
                // hook: a page from a site the route does not allow costs no application code.
                Ok(upgrade) => match origins.unwrap_or(&shared.config.origins).check(&req) {
                    Err(refused) => {
                        let body = refused.to_string();
                        write_status(&mut cx.scratch, StatusCode::FORBIDDEN, &[], body.as_bytes());
                        None
                    }
                    Ok(()) => {
                        run_accept_hook(hook, &req, &upgrade, &shared.config, &mut cx.scratch)
                    }
                },
            },
            Route::Http(hook) => {
                match catch_unwind(AssertUnwindSafe(|| hook(&req))) {
                    Ok(response) => write_http(&mut cx.scratch, &response),
                    Err(_) => {
                        write_status(&mut cx.scratch, StatusCode::INTERNAL_SERVER_ERROR, &[], b"")
                    }
                }
                None
            }
            Route::UpgradeRequired => {
                HandshakeError::NotWebSocket.write_response(&mut cx.scratch);
                None
            }
            Route::NotFound => {
                write_status(&mut cx.scratch, StatusCode::NOT_FOUND, &[], b"not found");
                None
            }
        };
        let Some((accepted, target, deflate)) = accepted else {
            self.respond(cx, key);
            return;
        };
        // Upgrade: answer 101, open the protocol connection, call on_open, then feed any bytes
        // that followed the request (a client may pipeline its first frames).
        let Accepted { handler, protocol, config, .. } = accepted;
        let config = config.unwrap_or_else(|| Arc::clone(&shared.protocol));
        let slot = &mut self.slots[key];
        slot.meta.out.push_copy(&mut cx.pool, &cx.scratch);
        cx.mark_dirty(&mut slot.meta);
        slot.meta.request = match protocol {
            Some(p) => format!("{target}\n{p}").into_boxed_str(),
            None => target.into_boxed_str(),
        };
        let mut conn = Connection::server(cx.now, config);
        if let Some((params, config)) = deflate {
            open_deflate(&mut conn, &mut slot.meta, params, &config);
        }
        slot.phase = Phase::Open { conn, handler, spill: Vec::new() };
        cx.counters.upgraded += 1;
        cx.counters.open += 1;
        slot.meta.timer_tick = NO_TICK; // the handshake deadline no longer applies
        self.opened(cx, key, head_bytes, head_len);
    }

    /// Queues the HTTP answer in `cx.scratch` and lets the slot linger until it is written.
    pub(super) fn respond(&mut self, cx: &mut WorkerCx, key: usize) {
        let slot = &mut self.slots[key];
        slot.meta.out.push_copy(&mut cx.pool, &cx.scratch);
        cx.mark_dirty(&mut slot.meta);
        cx.counters.http_responses += 1;
        let deadline = (cx.now + cx.config().linger).as_nanos();
        slot.phase = Phase::Linger { deadline };
        self.schedule(key, deadline);
    }
}

/// Runs a WebSocket route's accept hook on a valid upgrade and writes the answer to `out`:
/// 101 when the hook accepts (returned, to open the connection), else the hook's refusal or a
/// 500 for a panicking hook or an answer that cannot be written.
fn run_accept_hook(
    hook: &WsHook,
    req: &Request<'_>,
    upgrade: &http::Upgrade<'_, '_>,
    config: &ServerConfig,
    out: &mut Vec<u8>,
) -> Option<Upgraded> {
    let accepted = match catch_unwind(AssertUnwindSafe(|| hook(req))) {
        Err(_) => {
            write_status(out, StatusCode::INTERNAL_SERVER_ERROR, &[], b"accept hook failed");
            return None;
        }
        Ok(Err(refusal)) => {
            write_http(out, &refusal);
            return None;
        }
        Ok(Ok(accepted)) => accepted,
    };
    let offered = accepted.protocol.as_deref().is_none_or(|p| req.protocols().any(|o| o == p));
    let headers: Vec<(&str, &str)> =
        accepted.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let compression = match &accepted.compression {
        Some(route) => route.clone(),
        None => config.compression.clone(),
    };
    let deflate = compression.and_then(|config| {
        deflate::negotiate(req.extensions(), &config).map(|params| (params, config))
    });
    let extensions = deflate.as_ref().map(|(params, _)| params.answer());
    let answer = HttpAccept {
        key: upgrade.accept_key(),
        protocol: accepted.protocol.as_deref(),
        extensions: extensions.as_deref(),
        headers: &headers,
    };
    if offered && answer.write(out).is_ok() {
        Some((accepted, origin_target(req), deflate))
    } else {
        write_status(out, StatusCode::INTERNAL_SERVER_ERROR, &[], b"invalid handshake answer");
        None
    }
}

/// The target in origin-form (path and query), also for an absolute-form request, for
/// [`Context::target`](crate::Context::target).
fn origin_target(req: &Request<'_>) -> String {
    match req.query() {
        Some(query) => format!("{}?{query}", req.path()),
        None => req.path().to_owned(),
    }
}

fn write_http(out: &mut Vec<u8>, response: &crate::HttpResponse) {
    let headers: Vec<(&str, &str)> =
        response.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    write_status(out, response.status, &headers, &response.body);
}

fn write_status(out: &mut Vec<u8>, status: StatusCode, headers: &[(&str, &str)], body: &[u8]) {
    if http::write_response(out, status, headers, body).is_err() {
        out.clear();
        http::write_response(
            out,
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            b"invalid response header",
        )
        .expect("static response is valid");
    }
}
