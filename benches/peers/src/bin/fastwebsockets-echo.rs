//! fastwebsockets echo server (hyper 1 upgrade) on a tokio current_thread
//! runtime. Benchmark comparison peer only. auto_close and auto_pong are on;
//! FragmentCollector reassembles fragmented messages so they are echoed whole,
//! with their type. fastwebsockets has no compression.

use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

const NAME: &str = "fastwebsockets-echo";

fn main() -> std::io::Result<()> {
    let addr = bidir_bench_peers::startup(NAME);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        bidir_bench_peers::announce(NAME, listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_http(stream));
                }
                Err(e) => {
                    eprintln!("{NAME}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

async fn serve_http(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(upgrade_request))
        .with_upgrades();
    let _ = conn.await;
}

async fn upgrade_request(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    // Any path is accepted; hyper closes the connection on a non-upgrade request.
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        // As in fastwebsockets' own echo_server example.
        let _ = tokio::task::unconstrained(echo(fut)).await;
    });
    Ok(response)
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    ws.set_max_message_size(64 << 20);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
