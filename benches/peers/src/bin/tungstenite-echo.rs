//! tokio-tungstenite echo server on a tokio current_thread runtime.
//! Benchmark comparison peer only. Echoes text and binary messages with their
//! type; pings are answered by tungstenite itself; no compression.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const NAME: &str = "tungstenite-echo";

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
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of exiting.
                    eprintln!("{NAME}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // 64 MiB messages / 64 MiB frames: well above the 16 MiB floor.
    let config =
        WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(msg) = ws.next().await {
        let Ok(msg) = msg else { return };
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            // Ping: tungstenite queues the pong and flushes it on the next read/write.
            // Close: tungstenite replies; the stream then ends.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }
}
