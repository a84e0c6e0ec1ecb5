//! Connections over TLS: received bytes go through the slot's session, which hands each
//! record's plaintext to the same dispatch as a plain connection's bytes; the session's own
//! records (handshake, alerts) join the send queue's sealed front. Sealing the plaintext
//! happens at the flush ([`flush`](super::flush)).

use bidir_protocol::CloseCode;
use bidir_protocol::http::StatusCode;

use super::slot::{Conns, Phase};
use crate::client::ConnectError;
use crate::cx::WorkerCx;
use crate::handler::CloseInfo;
use crate::route::Router;
use crate::tls::TlsError;

impl Conns {
    /// Received bytes on a TLS connection.
    pub(super) fn tls_received(
        &mut self,
        cx: &mut WorkerCx,
        router: &Router,
        key: usize,
        data: &mut [u8],
    ) {
        // The session leaves the slot while its plaintext is dispatched, which may touch the
        // slot; slots are freed only after the turn, so it always has one to go back to.
        let Some(mut tls) = self.slots[key].tls.take() else { return };
        let mut scratch = std::mem::take(&mut self.tls_scratch);
        let received = tls.receive(data, &mut scratch, |plain| {
            self.dispatch(cx, router, key, plain);
            !self.slots[key].meta.retired
        });
        self.tls_scratch = scratch;
        let slot = &mut self.slots[key];
        if slot.meta.retired {
            return;
        }
        if tls.queue_records(&mut slot.meta.out, &mut cx.pool) {
            cx.mark_dirty(&mut slot.meta);
        }
        match received {
            Ok(received) => {
                slot.tls = Some(tls);
                if received.established {
                    self.release_request(cx, key);
                }
                if received.peer_closed {
                    // close_notify: the peer sends nothing more, as at the end of the stream.
                    self.on_closed(cx, key, None);
                }
            }
            Err(TlsError::NotTls) => {
                // Plain HTTP on a TLS port: answered in plain text (without the session), as
                // nginx and most servers do, then closed.
                cx.scratch.clear();
                let body = b"plain HTTP request sent to a TLS port: use https:// or wss://";
                bidir_protocol::http::write_response(
                    &mut cx.scratch,
                    StatusCode::BAD_REQUEST,
                    &[],
                    body,
                )
                .expect("a static response is valid");
                self.respond(cx, key);
            }
            Err(e) => {
                // The alert rustls made (if any) is queued; the session stays to send it and
                // seals nothing more.
                slot.tls = Some(tls);
                self.tls_failed(cx, key, &e);
            }
        }
    }

    /// Starts a client connection's TLS handshake once it is connected: its first flight.
    pub(super) fn tls_start(&mut self, cx: &mut WorkerCx, key: usize) {
        let slot = &mut self.slots[key];
        let Some(tls) = slot.tls.as_mut() else { return };
        let mut scratch = Vec::new();
        let started = tls.receive(&mut [], &mut scratch, |_| false);
        if tls.queue_records(&mut slot.meta.out, &mut cx.pool) {
            cx.mark_dirty(&mut slot.meta);
        }
        if let Err(e) = started {
            self.tls_failed(cx, key, &e);
        }
    }

    /// A client's TLS handshake is over: its upgrade request may go.
    fn release_request(&mut self, cx: &mut WorkerCx, key: usize) {
        let slot = &mut self.slots[key];
        if let Phase::Connecting(connecting) = &mut slot.phase
            && !connecting.request.is_empty()
        {
            let request = std::mem::take(&mut connecting.request);
            slot.meta.out.push_copy(&mut cx.pool, &request);
            cx.mark_dirty(&mut slot.meta);
        }
    }

    /// The session broke: a client connection fails, an open one reports 1006 (the reason
    /// names TLS), and the slot lingers to send the alert, if any.
    fn tls_failed(&mut self, cx: &mut WorkerCx, key: usize, error: &TlsError) {
        let reason = error.to_string();
        if matches!(self.slots[key].phase, Phase::Connecting(_)) {
            self.fail_connect(cx, key, ConnectError::Tls(reason));
            return;
        }
        self.report_close(cx, key, CloseInfo::failed(CloseCode::ABNORMAL, &reason));
        let slot = &mut self.slots[key];
        if matches!(slot.phase, Phase::Open { .. }) {
            cx.counters.open -= 1;
        }
        let deadline = (cx.now + cx.config().linger).as_nanos();
        slot.phase = Phase::Linger { deadline };
        cx.mark_dirty(&mut slot.meta);
        self.schedule(key, deadline);
    }
}
