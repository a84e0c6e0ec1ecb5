//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

use bidir::DeflateConfig;
use bidir::client::WsUrl;
use bidir::rpc::{COMPRESS_ABOVE, KeyMode, Psk, Wire};
use bidir::tls::ClientTls;

use crate::bin::Key;

pub(crate) const USAGE: &str = "\
usage: bidir-load --url ws[s]://HOST:PORT/PATH [options]
       bidir-load plot --out FILE.svg [--title TEXT] [--log-y] RUN.hgrm[:LABEL]...

  --mode echo|connect|churn|fanout   echo (default): send and time echoes; connect: open
                         idle connections; churn: each connection repeatedly connects,
                         upgrades, sends --cycle-messages messages and waits for their echoes,
                         closes; fanout: --conns subscribers and one publisher, each event
                         timed from its stamp to its receipt by every subscriber
  --conns N              connections (default 100; fanout: subscribers)
  --inflight P           closed loop: messages outstanding per connection (default 1; fanout:
                         one event at a time, the next once the last reached every subscriber)
  --rate R               open loop: R messages per second in total, timed from the intended
                         send time (replaces --inflight; fanout: events per second)
  --size BYTES           message size (default 16; text needs 16, binary 8 for the timestamp);
                         --rpc: above 62 the call's item gets a name of words that makes
                         it BYTES of JSON (default: the 62-byte item)
  --binary               binary messages (default text)
  --raw                  echo mode over plain TCP against a raw echo server (the floor:
                         benches/peers floor-echo): no handshake, no framing, each message
                         --size bytes (at least 8) carrying the send time; --url tcp://HOST:PORT
                         (or ws://...: the path is ignored); connections over --threads threads
  --rpc bidir|jsonrpc    echo mode as calls: each message is a call of an echo method with a
                         small struct (bidir.json.v1 `Bench.echo`, or JSON-RPC 2.0 `echo` as
                         jsonrpsee serves it), its id carrying the send time; --size is unused;
                         fanout: subscribers send [\"sub\",1,\"bench\"], the publisher calls
                         Bench.publish with the stamp, events arrive as [\"event\",\"bench\",STAMP];
                         churn: connect (and exchange keys) and close, --cycle-messages 0
  --wire json|bin        --rpc bidir's encoding: bidir.json.v1 (default) or bidir.bin.v1, each
                         call [0,id,method,[item]] in MessagePack in the envelope (echo, churn)
  --compress-above N|off --wire bin: LZ4-compress calls longer than N bytes (default 512)
  --key FILE             --wire bin: encrypt with the pre-shared key in FILE (its bytes, at
                         least 32), keys agreed in the upgrade's Bidir-Key header
  --key-mode psk|ecdhe   how the keys are agreed (default ecdhe: X25519, forward secrecy)
  --pubsub plain         fanout over plain messages: subscribers connect to /sub (the server
                         subscribes them), the publisher to /pub (the server publishes each of
                         its messages as-is); --url names the server, its path is replaced
  --method NAME          the method called (default Bench.echo, or echo for jsonrpc; fanout:
                         Bench.publish)
  --deflate off|shared|dedicated:BITS   offer permessage-deflate (default off)
  --trust CERT.pem       wss://: trust the certificates in CERT.pem besides the webpki roots
                         (a test server's self-signed certificate); handshake times include
                         the TLS handshake
  --duration SECS        measured time (default 10; connect mode: hold time, default 0;
                         churn: time limit, default 10, or none when --cycles is given)
  --cycles N             churn: stop after N connect/upgrade/close cycles in total (and at
                         --duration, whichever comes first)
  --cycle-messages N     churn: messages echoed per cycle (default 1; 0: connect and close)
  --warmup SECS          unmeasured time before it (default 2)
  --threads N            engine workers (default 1)
  --connect-window N     handshakes in flight at once (default 256)
  --server-pid PID       report the server's CPU per message and memory per connection;
                         churn: its resident memory and descriptors at start, peak and end
  --label TEXT           names the run in the summary and the JSON
  --hgrm FILE            write the latency percentile distribution (HdrHistogram .hgrm, ms)
  --svg FILE             write a latency-by-percentile plot
  --json                 print the result as one JSON object on stdout
  --quiet                no progress line";

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Echo,
    Connect,
    /// Connections that repeatedly connect, upgrade, echo and close: counted cycles.
    Churn,
    /// One publisher and `--conns` subscribers: each event timed at every subscriber.
    Fanout,
}

impl Mode {
    /// The name `--mode` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Connect => "connect",
            Self::Churn => "churn",
            Self::Fanout => "fanout",
        }
    }
}

/// The call framing of `--rpc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `bidir.json.v1`: `["call", id, method, [args]]` answered `["ok", id, value]`.
    Bidir,
    /// JSON-RPC 2.0: `{"jsonrpc":"2.0","id":id,"method":m,"params":[args]}`.
    JsonRpc,
}

/// Parsed options.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) url: String,
    pub(crate) mode: Mode,
    pub(crate) conns: usize,
    pub(crate) inflight: usize,
    /// Open loop: messages per second in total.
    pub(crate) rate: Option<f64>,
    pub(crate) size: usize,
    pub(crate) binary: bool,
    /// Plain TCP echoes, no WebSocket (`--raw`).
    pub(crate) raw: bool,
    /// Calls instead of echoes, and the method called (fanout: the publishing method).
    pub(crate) rpc: Option<(Dialect, String)>,
    /// `--rpc bidir`'s encoding.
    pub(crate) wire: Wire,
    /// `--wire bin`: compress calls longer than this; `None`: never.
    pub(crate) compress_above: Option<usize>,
    /// `--wire bin`: encrypt, keys agreed in this mode from this pre-shared key.
    pub(crate) key: Option<Key>,
    /// Fanout over plain messages (`--pubsub plain`) rather than `bidir.json.v1` events.
    pub(crate) plain_pubsub: bool,
    pub(crate) deflate: Option<DeflateConfig>,
    /// `--trust`: the roots a `wss://` connection trusts (`None`: the webpki roots).
    pub(crate) trust: Option<ClientTls>,
    /// The measured time; churn: the time limit (`Duration::MAX`: none).
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    /// Churn: the number of cycles in total (`None`: until `duration`).
    pub(crate) cycles: Option<u64>,
    /// Churn: messages echoed per cycle.
    pub(crate) cycle_messages: usize,
    pub(crate) threads: usize,
    pub(crate) connect_window: usize,
    pub(crate) server_pid: Option<u32>,
    pub(crate) label: String,
    pub(crate) hgrm: Option<PathBuf>,
    pub(crate) svg: Option<PathBuf>,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

pub(crate) fn parse(argv: &[String]) -> Result<Options, String> {
    let mut o = Options {
        url: String::new(),
        mode: Mode::Echo,
        conns: 100,
        inflight: 1,
        rate: None,
        size: 16,
        binary: false,
        raw: false,
        rpc: None,
        wire: Wire::Json,
        compress_above: Some(COMPRESS_ABOVE),
        key: None,
        plain_pubsub: false,
        deflate: None,
        trust: None,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        cycles: None,
        cycle_messages: 1,
        threads: 1,
        connect_window: 256,
        server_pid: None,
        label: String::new(),
        hgrm: None,
        svg: None,
        json: false,
        quiet: false,
    };
    let mut duration_set = false;
    let mut inflight_set = false;
    let mut method = None;
    let mut bin_options = BinOptions::default();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => o.url = value()?,
            "--mode" => {
                o.mode = match value()?.as_str() {
                    "echo" => Mode::Echo,
                    "connect" => Mode::Connect,
                    "churn" => Mode::Churn,
                    "fanout" => Mode::Fanout,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            "--conns" => o.conns = number(&value()?)?,
            "--inflight" => {
                o.inflight = number(&value()?)?;
                inflight_set = true;
            }
            "--rate" => o.rate = Some(positive(&value()?)?),
            "--size" => o.size = number(&value()?)?,
            "--binary" => o.binary = true,
            "--raw" => o.raw = true,
            "--rpc" => {
                let dialect = match value()?.as_str() {
                    "bidir" => Dialect::Bidir,
                    "jsonrpc" => Dialect::JsonRpc,
                    other => return Err(format!("--rpc takes bidir or jsonrpc, not {other}")),
                };
                o.rpc = Some((dialect, String::new()));
            }
            "--wire" => {
                o.wire = match value()?.as_str() {
                    "json" => Wire::Json,
                    "bin" => Wire::Bin,
                    other => return Err(format!("--wire takes json or bin, not {other}")),
                }
            }
            "--compress-above" => {
                o.compress_above = match value()?.as_str() {
                    "off" => None,
                    n => Some(number(n)?),
                };
                bin_options.compress_above = true;
            }
            "--key" => o.key = Some((KeyMode::Ecdhe, read_key(&value()?)?)),
            "--key-mode" => {
                let mode = value()?;
                let mode = KeyMode::from_token(&mode)
                    .ok_or_else(|| format!("--key-mode takes psk or ecdhe, not {mode}"))?;
                bin_options.key_mode = Some(mode);
            }
            "--pubsub" => match value()?.as_str() {
                "plain" => o.plain_pubsub = true,
                other => return Err(format!("--pubsub takes plain, not {other}")),
            },
            "--method" => method = Some(value()?),
            "--deflate" => {
                o.deflate = match value()?.as_str() {
                    "off" => None,
                    "shared" => Some(DeflateConfig::shared()),
                    other => match other.strip_prefix("dedicated:").and_then(|b| b.parse().ok()) {
                        Some(bits @ 9..=15) => Some(DeflateConfig::dedicated(bits)),
                        _ => return Err("--deflate takes off, shared or dedicated:9..15".into()),
                    },
                }
            }
            "--trust" => o.trust = Some(read_trust(&value()?)?),
            "--duration" => {
                o.duration = seconds(&value()?)?;
                duration_set = true;
            }
            "--warmup" => o.warmup = seconds(&value()?)?,
            "--cycles" => o.cycles = Some(number(&value()?)? as u64),
            "--cycle-messages" => o.cycle_messages = number(&value()?)?,
            "--threads" => o.threads = number(&value()?)?,
            "--connect-window" => o.connect_window = number(&value()?)?,
            "--server-pid" => o.server_pid = Some(number(&value()?)? as u32),
            "--label" => o.label = value()?,
            "--hgrm" => o.hgrm = Some(value()?.into()),
            "--svg" => o.svg = Some(value()?.into()),
            "--json" => o.json = true,
            "--quiet" => o.quiet = true,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.url.is_empty() {
        return Err("--url is required".into());
    }
    if o.conns == 0 || o.inflight == 0 || o.threads == 0 || o.connect_window == 0 {
        return Err("--conns, --inflight, --threads and --connect-window must be positive".into());
    }
    raw_checks(&o)?;
    trust_checks(&o)?;
    let min = if o.binary || o.raw { 8 } else { 16 };
    if o.size < min {
        return Err(format!("--size must be at least {min} (the timestamp)"));
    }
    if o.mode == Mode::Connect && !duration_set {
        o.duration = Duration::ZERO;
    }
    if o.mode == Mode::Churn {
        if o.rate.is_some() {
            return Err("--rate does not apply to churn (each cycle echoes and closes)".into());
        }
        if o.cycles == Some(0) {
            return Err("--cycles must be positive".into());
        }
        if o.cycles.is_some() && !duration_set {
            o.duration = Duration::MAX;
        }
    } else if o.cycles.is_some() {
        return Err("--cycles needs --mode churn".into());
    }
    match (&mut o.rpc, method) {
        (Some((dialect, name)), method) => {
            let calls = match o.mode {
                Mode::Echo | Mode::Fanout => true,
                Mode::Churn => o.cycle_messages == 0,
                Mode::Connect => false,
            };
            if !calls || o.binary {
                return Err(
                    "--rpc needs echo or fanout mode (or churn with --cycle-messages 0) and text"
                        .into(),
                );
            }
            *name = method.unwrap_or_else(|| match (o.mode, *dialect) {
                (Mode::Fanout, _) => "Bench.publish".into(),
                (_, Dialect::Bidir) => "Bench.echo".into(),
                (_, Dialect::JsonRpc) => "echo".into(),
            });
        }
        (None, Some(_)) => return Err("--method needs --rpc".into()),
        (None, None) => {}
    }
    bin_options.apply(&mut o)?;
    fanout_checks(&o, inflight_set)?;
    if o.label.is_empty() {
        o.label = o.url.clone();
    }
    Ok(o)
}

/// The options of `--wire bin` given, checked once all are read.
#[derive(Default)]
struct BinOptions {
    compress_above: bool,
    key_mode: Option<KeyMode>,
}

impl BinOptions {
    /// Checks that the options of `--wire bin` come with it (and it with `--rpc bidir`, in a
    /// mode that makes calls or only connects), and sets the key's mode.
    fn apply(self, o: &mut Options) -> Result<(), String> {
        let bin = o.wire == Wire::Bin;
        if self.compress_above && !bin {
            return Err("--compress-above needs --wire bin".into());
        }
        if o.key.is_some() && !bin {
            return Err("--key needs --wire bin (bidir.json.v1 is never encrypted)".into());
        }
        match (&mut o.key, self.key_mode) {
            (Some((mode, _)), Some(given)) => *mode = given,
            (None, Some(_)) => return Err("--key-mode needs --key".into()),
            (_, None) => {}
        }
        if bin && !matches!(o.rpc, Some((Dialect::Bidir, _))) {
            return Err("--wire needs --rpc bidir".into());
        }
        if bin && o.mode == Mode::Fanout {
            return Err("fanout speaks bidir.json.v1 only (--wire json)".into());
        }
        Ok(())
    }
}

/// The pre-shared key in the file at `path`: its bytes.
fn read_key(path: &str) -> Result<Psk, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--key {path}: {e}"))?;
    Psk::new(&bytes).map_err(|e| format!("--key {path}: {e}"))
}

/// `--raw` is echo mode's closed loop over plain TCP: nothing of WebSocket applies.
/// `--trust` applies to a `wss://` URL only (it would be ignored on `ws://` or `--raw`).
fn trust_checks(o: &Options) -> Result<(), String> {
    let tls = !o.raw && WsUrl::parse(&o.url).is_ok_and(|url| url.tls);
    if o.trust.is_some() && !tls {
        return Err("--trust needs a wss:// URL".into());
    }
    Ok(())
}

/// The certificates of `--trust`'s PEM file, trusted beside the webpki roots.
fn read_trust(path: &str) -> Result<ClientTls, String> {
    ClientTls::trusting_pem_file(path).map_err(|e| format!("--trust {path}: {e}"))
}

fn raw_checks(o: &Options) -> Result<(), String> {
    if !o.raw {
        return Ok(());
    }
    if o.url.get(..6).is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://")) {
        return Err("--raw speaks no TLS: a tcp:// or ws:// URL".into());
    }
    if o.mode != Mode::Echo || o.rate.is_some() {
        return Err("--raw runs echo mode's closed loop only (no --mode, no --rate)".into());
    }
    if o.rpc.is_some() || o.deflate.is_some() || o.binary || o.plain_pubsub {
        return Err("--raw speaks no WebSocket: no --rpc, --deflate, --binary or --pubsub".into());
    }
    Ok(())
}

/// Fanout takes exactly one pub/sub dialect, `bidir.json.v1` or plain, one event at a time.
fn fanout_checks(o: &Options, inflight_set: bool) -> Result<(), String> {
    if o.mode != Mode::Fanout {
        return match o.plain_pubsub {
            true => Err("--pubsub needs --mode fanout".into()),
            false => Ok(()),
        };
    }
    match (&o.rpc, o.plain_pubsub) {
        (Some((Dialect::Bidir, _)), false) | (None, true) => {}
        (Some((Dialect::JsonRpc, _)), _) => return Err("fanout takes --rpc bidir only".into()),
        (Some(_), true) => {
            return Err("fanout takes --rpc bidir or --pubsub plain, not both".into());
        }
        (None, false) => return Err("fanout needs --rpc bidir or --pubsub plain".into()),
    }
    if inflight_set && o.inflight != 1 {
        return Err("fanout's closed loop has one event in flight (--inflight 1)".into());
    }
    Ok(())
}

fn number(s: &str) -> Result<usize, String> {
    s.replace('_', "").parse().map_err(|_| format!("not a number: {s}"))
}

fn positive(s: &str) -> Result<f64, String> {
    match s.replace('_', "").parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("not a positive number: {s}")),
    }
}

fn seconds(s: &str) -> Result<Duration, String> {
    let s = s.trim_end_matches('s');
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("not a number of seconds: {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Options, String> {
        parse(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_and_checks() {
        let o = parse_str("--url ws://h/e").unwrap();
        assert_eq!((o.conns, o.inflight, o.size, o.mode), (100, 1, 16, Mode::Echo));
        assert!(parse_str("--conns 5").is_err(), "no url");
        assert!(parse_str("--url ws://h/ --size 8").is_err(), "text needs 16 bytes");
        assert_eq!(parse_str("--url ws://h/ --size 8 --binary").unwrap().size, 8);
        assert!(parse_str("--url ws://h/ --deflate dedicated:8").is_err());
        let o = parse_str("--url ws://h/ --mode connect --conns 10_000 --rate 1e5").unwrap();
        assert_eq!((o.conns, o.rate, o.duration), (10_000, Some(1e5), Duration::ZERO));
        assert_eq!(parse_str("--url ws://h/ --duration 2.5s").unwrap().duration.as_millis(), 2500);
    }

    #[test]
    fn rpc() {
        let o = parse_str("--url ws://h/ --rpc bidir --inflight 16").unwrap();
        assert_eq!(o.rpc, Some((Dialect::Bidir, "Bench.echo".into())));
        let o = parse_str("--url ws://h/ --rpc jsonrpc --method e2").unwrap();
        assert_eq!(o.rpc, Some((Dialect::JsonRpc, "e2".into())));
        assert_eq!(parse_str("--url ws://h/ --rpc jsonrpc").unwrap().rpc.unwrap().1, "echo");
        assert!(parse_str("--url ws://h/ --rpc grpc").is_err());
        assert!(parse_str("--url ws://h/ --method m").is_err(), "a method without --rpc");
        assert!(parse_str("--url ws://h/ --rpc bidir --binary").is_err());
        assert!(parse_str("--url ws://h/ --rpc bidir --mode connect").is_err());
    }

    #[test]
    fn fanout() {
        let o = parse_str("--url ws://h/rpc --mode fanout --rpc bidir --conns 10_000").unwrap();
        assert_eq!((o.mode, o.conns, o.rate), (Mode::Fanout, 10_000, None));
        assert_eq!(
            (o.rpc, o.plain_pubsub),
            (Some((Dialect::Bidir, "Bench.publish".into())), false)
        );
        let o =
            parse_str("--url ws://h/ --mode fanout --pubsub plain --rate 100 --size 64").unwrap();
        assert_eq!((o.rpc, o.plain_pubsub, o.rate, o.size), (None, true, Some(100.0), 64));
        let o = parse_str("--url ws://h/ --mode fanout --rpc bidir --method Chat.say").unwrap();
        assert_eq!(o.rpc.unwrap().1, "Chat.say");
        assert!(parse_str("--url ws://h/ --mode fanout").is_err(), "no dialect");
        assert!(parse_str("--url ws://h/ --mode fanout --rpc bidir --pubsub plain").is_err());
        assert!(parse_str("--url ws://h/ --mode fanout --rpc jsonrpc").is_err());
        assert!(parse_str("--url ws://h/ --mode fanout --pubsub redis").is_err());
        assert!(parse_str("--url ws://h/ --pubsub plain").is_err(), "plain without fanout");
        assert!(parse_str("--url ws://h/ --mode fanout --pubsub plain --inflight 4").is_err());
        assert!(parse_str("--url ws://h/ --mode fanout --pubsub plain --inflight 1").is_ok());
    }

    #[test]
    fn churn() {
        let o = parse_str("--url ws://h/ --mode churn --conns 10_000 --cycles 1_000_000").unwrap();
        assert_eq!((o.mode, o.conns, o.cycles), (Mode::Churn, 10_000, Some(1_000_000)));
        assert_eq!((o.duration, o.cycle_messages), (Duration::MAX, 1), "no time limit by default");
        let o = parse_str("--url ws://h/ --mode churn --cycles 5 --duration 60").unwrap();
        assert_eq!((o.cycles, o.duration.as_secs()), (Some(5), 60), "both limits");
        let o = parse_str("--url ws://h/ --mode churn --cycle-messages 0").unwrap();
        assert_eq!((o.cycles, o.duration.as_secs(), o.cycle_messages), (None, 10, 0));
        assert!(parse_str("--url ws://h/ --cycles 5").is_err(), "cycles without churn");
        assert!(parse_str("--url ws://h/ --mode churn --cycles 0").is_err());
        assert!(parse_str("--url ws://h/ --mode churn --rate 100").is_err());
        assert!(parse_str("--url ws://h/ --mode churn --cycles x").is_err());
    }

    #[test]
    fn raw() {
        let o = parse_str("--url tcp://h:1 --raw --conns 1000 --size 8").unwrap();
        assert_eq!((o.raw, o.conns, o.size, o.mode), (true, 1000, 8, Mode::Echo));
        assert!(parse_str("--url tcp://h:1 --raw --size 7").is_err(), "the stamp needs 8");
        assert!(parse_str("--url tcp://h:1 --raw --mode churn").is_err());
        assert!(parse_str("--url tcp://h:1 --raw --rate 100").is_err());
        assert!(parse_str("--url tcp://h:1 --raw --rpc bidir").is_err());
        assert!(parse_str("--url tcp://h:1 --raw --deflate shared").is_err());
        assert!(parse_str("--url tcp://h:1 --raw --binary").is_err());
        assert!(parse_str("--url wss://h:1 --raw").is_err(), "no TLS");
        assert!(parse_str("--url WSS://h:1 --raw").is_err(), "no TLS");
    }

    /// A key file of `len` bytes in the temp directory, named by `name` and this process.
    fn key_file(name: &str, len: usize) -> PathBuf {
        let path = std::env::temp_dir().join(format!("bidir-load-{name}-{}", std::process::id()));
        std::fs::write(&path, vec![0x5a; len]).unwrap();
        path
    }

    #[test]
    fn bin_wire_compression_and_keys() {
        let o = parse_str("--url ws://h/ --rpc bidir").unwrap();
        assert_eq!((o.wire, o.compress_above, o.key.is_some()), (Wire::Json, Some(512), false));
        let o = parse_str("--url ws://h/ --rpc bidir --wire bin --compress-above off").unwrap();
        assert_eq!((o.wire, o.compress_above), (Wire::Bin, None));
        let o = parse_str("--url ws://h/ --rpc bidir --wire bin --compress-above 1_000").unwrap();
        assert_eq!(o.compress_above, Some(1000));
        assert!(parse_str("--url ws://h/ --rpc bidir --wire cbor").is_err());
        assert!(parse_str("--url ws://h/ --wire bin").is_err(), "bin without --rpc bidir");
        assert!(parse_str("--url ws://h/ --rpc jsonrpc --wire bin").is_err());
        assert!(parse_str("--url ws://h/ --rpc bidir --compress-above 9").is_err(), "json");
        assert!(parse_str("--url ws://h/ --rpc bidir --wire bin --compress-above x").is_err());
        let fanout = "--url ws://h/ --mode fanout --rpc bidir --wire bin";
        assert!(parse_str(fanout).unwrap_err().contains("fanout speaks bidir.json.v1"));

        let key = key_file("key", 32);
        let key = key.to_str().unwrap();
        let o = parse_str(&format!("--url ws://h/ --rpc bidir --wire bin --key {key}")).unwrap();
        assert_eq!(o.key.map(|(mode, _)| mode), Some(KeyMode::Ecdhe), "the default mode");
        let args = format!("--url ws://h/ --rpc bidir --wire bin --key-mode PSK --key {key}");
        assert_eq!(parse_str(&args).unwrap().key.map(|(mode, _)| mode), Some(KeyMode::Psk));
        let json = format!("--url ws://h/ --rpc bidir --key {key}");
        assert!(parse_str(&json).unwrap_err().contains("--key needs --wire bin"));
        let mode = format!("--url ws://h/ --rpc bidir --wire bin --key {key} --key-mode rsa");
        assert!(parse_str(&mode).is_err());
        assert!(parse_str("--url ws://h/ --rpc bidir --wire bin --key-mode psk").is_err());
        let short = key_file("short", 31);
        let args = format!("--url ws://h/ --rpc bidir --wire bin --key {}", short.display());
        assert!(parse_str(&args).unwrap_err().contains("--key "), "a short key names the file");
        let missing = "--url ws://h/ --rpc bidir --wire bin --key /nonexistent/bidir.key";
        assert!(parse_str(missing).unwrap_err().contains("/nonexistent/bidir.key"));

        // Churn exchanges keys in connects that send nothing.
        let churn = format!("--url ws://h/ --mode churn --rpc bidir --wire bin --key {key}");
        assert!(parse_str(&churn).is_err(), "churn with calls");
        let o = parse_str(&format!("{churn} --cycle-messages 0 --key-mode psk")).unwrap();
        assert_eq!((o.mode, o.key.map(|(mode, _)| mode)), (Mode::Churn, Some(KeyMode::Psk)));
        std::fs::remove_file(key).ok();
        std::fs::remove_file(short).ok();
    }
}
