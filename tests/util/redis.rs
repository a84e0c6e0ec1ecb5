//! A `redis-server` of a test's own, on loopback and a free port, with or without
//! persistence, and a cluster of three (scripts/redis/install.sh installs them).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of this test's own, killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Child,
    /// Where a persistent one keeps its append-only file (removed when dropped).
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// One without persistence: a restart loses everything.
    pub fn start() -> Self {
        let port = free_port();
        Self { port, child: Self::spawn(port, None), dir: None }
    }

    /// One that writes every command to its append-only file before answering
    /// (`appendfsync always`): a restart, even a kill, keeps what it answered.
    pub fn start_persistent() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("bidir-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { port, child: Self::spawn(port, Some(&dir)), dir: Some(dir) }
    }

    fn spawn(port: u16, dir: Option<&std::path::Path>) -> Child {
        match dir {
            None => spawn(port, None, &["--appendonly", "no"]),
            Some(dir) => {
                spawn(port, Some(dir), &["--appendonly", "yes", "--appendfsync", "always"])
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, self.dir.as_deref());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A `redis-server` on loopback at `port`, saving no snapshot, with `args` (and `--dir` if
/// given); returns once it listens.
fn spawn(port: u16, dir: Option<&std::path::Path>, args: &[&str]) -> Child {
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
    command.args(["--protected-mode", "yes"]).args(args);
    if let Some(dir) = dir {
        command.arg("--dir").arg(dir);
    }
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
        panic!("redis-server did not start ({e}): run scripts/redis/install.sh")
    });
    let up = super::wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "redis-server is not listening on {port}");
    child
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Runs a command on this Redis (`CLIENT KILL TYPE pubsub`: cut every node's
    /// subscriptions) and returns its answer.
    pub fn command(&self, args: &[&str]) -> redis::Value {
        command(self.port, args)
    }
}

/// A Redis cluster of three primaries on loopback, with `replicas` replicas each, its slots
/// spread by `redis-cli --cluster create` (a primary that stops answering for 1 s fails
/// over to its replica); killed, and its files removed, when dropped.
pub struct RedisCluster {
    servers: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::with_replicas(0)
    }

    pub fn with_replicas(replicas: usize) -> Self {
        let ports: Vec<u16> = (0..3 * (1 + replicas)).map(|_| free_port()).collect();
        let dir =
            std::env::temp_dir().join(format!("bidir-cluster-{}-{}", std::process::id(), ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let servers = ports
            .iter()
            .map(|&port| {
                let config = format!("nodes-{port}.conf");
                let args = ["--appendonly", "no", "--cluster-enabled", "yes"];
                let cluster = ["--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0"];
                let args = [&args[..], &cluster, &["--cluster-config-file", &config]].concat();
                (port, spawn(port, Some(&dir), &args))
            })
            .collect();
        let cluster = Self { servers, dir };
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (scripts/redis/install.sh)");
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in ports {
            let ok = super::wait_until(Duration::from_secs(20), || {
                let info: String = redis::FromRedisValue::from_redis_value(
                    cluster.command(port, &["CLUSTER", "INFO"]),
                )
                .unwrap();
                info.contains("cluster_state:ok")
            });
            assert!(ok, "the cluster is not ok on {port}");
        }
        // Replicas in sync with their primaries: only then can one take over.
        for &port in &cluster.ports() {
            let synced = super::wait_until(Duration::from_secs(20), || {
                let info: String = redis::FromRedisValue::from_redis_value(
                    cluster.command(port, &["INFO", "replication"]),
                )
                .unwrap();
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            assert!(synced, "the replica on {port} did not sync");
        }
        cluster
    }

    /// The first primary's URL: a node is given one address and reads the slot map there.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.servers[0].0)
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|(port, _)| *port).collect()
    }

    /// Kills the server at `port`.
    pub fn kill(&mut self, port: u16) {
        for (_, child) in self.servers.iter_mut().filter(|(p, _)| *p == port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The port of the primary that serves `slot`, as the server at `asked` sees it
    /// (`CLUSTER NODES`), if one does.
    pub fn owner(&self, asked: u16, slot: u16) -> Option<u16> {
        let nodes: String =
            redis::FromRedisValue::from_redis_value(self.command(asked, &["CLUSTER", "NODES"]))
                .unwrap();
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let primary =
                fields.get(2)?.split(',').any(|f| f == "master") && !fields[2].contains("fail");
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(first)), Some(Ok(last))) => (first..=last).contains(&slot),
                    (Some(Ok(only)), None) => only == slot,
                    _ => false,
                }
            });
            let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            (primary && serves).then_some(port)
        })
    }

    /// Runs a command on the primary at `port`.
    pub fn command(&self, port: u16, args: &[&str]) -> redis::Value {
        command(port, args)
    }
}

/// Runs a command on the Redis at `port` and returns its answer.
fn command(port: u16, args: &[&str]) -> redis::Value {
    let url = format!("redis://127.0.0.1:{port}");
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut con).unwrap()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
