//! Built without the `tls` feature: no TLS listener or `wss://` client can exist, so a TLS
//! session is a type with no values, and the worker's TLS paths compile to nothing. The items
//! mirror the `tls` module's crate-internal surface and are never built.
#![allow(dead_code)]

use crate::outq::{OutQueue, Pool};

/// A listener's TLS configuration: none can be made.
#[derive(Clone, Debug)]
pub(crate) enum ServerTls {}

/// A connection's TLS session: none can be made.
pub(crate) enum Session {}

/// What a session receive saw.
pub(crate) struct Received {
    pub(crate) established: bool,
    pub(crate) peer_closed: bool,
}

/// Why a session cannot go on.
#[derive(Debug)]
pub(crate) enum TlsError {
    NotTls,
    Broken,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plain bytes sent to a TLS port")
    }
}

impl Session {
    pub(crate) fn server(config: &ServerTls) -> Result<Self, std::convert::Infallible> {
        match *config {}
    }

    pub(crate) fn receive(
        &mut self,
        _data: &mut [u8],
        _scratch: &mut Vec<u8>,
        _deliver: impl FnMut(&mut [u8]) -> bool,
    ) -> Result<Received, TlsError> {
        match *self {}
    }

    pub(crate) fn queue_records(&mut self, _out: &mut OutQueue, _pool: &mut Pool) -> bool {
        match *self {}
    }

    pub(crate) fn seal(
        &mut self,
        _out: &mut OutQueue,
        _pool: &mut Pool,
        _close: bool,
    ) -> Result<(), TlsError> {
        match *self {}
    }
}
