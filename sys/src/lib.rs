//! The OS layer of bidir: event backends, sockets, cpu enumeration and pinning.
