//! jsonrpsee JSON-RPC 2.0 server over WebSocket on a tokio current_thread runtime.
//! Benchmark comparison peer only: the method `echo` answers its one parameter, a small
//! struct, as bidir's `Bench.echo` does (examples/rpc_echo.rs), for `bidir-load --rpc jsonrpc`.

use jsonrpsee::server::{RpcModule, Server, ServerConfig};
use serde::{Deserialize, Serialize};

const NAME: &str = "jsonrpsee-echo";

/// `{"id":42,"name":"sensor","values":[1.5,2.25,3.0],"ok":true}`, as bidir-load sends it.
#[derive(Clone, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    values: Vec<f64>,
    ok: bool,
}

fn main() -> std::io::Result<()> {
    let addr = bidir_bench_peers::startup(NAME);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        // WebSocket only, no connection cap to speak of (its default is 100), 64 MiB messages.
        let config = ServerConfig::builder()
            .ws_only()
            .max_connections(20_000)
            .max_request_body_size(64 << 20)
            .max_response_body_size(64 << 20)
            .build();
        let server = Server::builder().set_config(config).build(addr).await?;
        let mut module = RpcModule::new(());
        module
            .register_method("echo", |params, _, _| params.one::<Item>())
            .expect("one method, registered once");
        bidir_bench_peers::announce(NAME, server.local_addr()?);
        server.start(module).stopped().await;
        Ok(())
    })
}
