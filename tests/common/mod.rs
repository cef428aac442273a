//! Helpers for end-to-end tests: start the real `tellonce` binary on a free loopback port with
//! its own data folder, talk gRPC to it, and stop it (gracefully or with SIGKILL).

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tellonce_proto::v1 as pb;
use tellonce_proto::v1::ingest_service_client::IngestServiceClient;
use tonic::transport::Channel;

/// Tokens of the partners the test hub trusts.
pub const POLICE_TOKEN: &str = "test-police-token-0123456789";
/// The school's token.
pub const SCHOOL_TOKEN: &str = "test-school-token-0123456789";
/// The NHS community trust's token.
pub const NHS_TOKEN: &str = "test-nhs-token-0123456789";
/// A police officer (practitioner).
pub const OFFICER_TOKEN: &str = "test-officer-token-0123456789";
/// A teacher at school-001 (practitioner).
pub const TEACHER_TOKEN: &str = "test-teacher-token-0123456789";
/// School-001's designated safeguarding lead.
pub const DSL_TOKEN: &str = "test-dsl-token-0123456789";
/// A social worker at the Children's Trust, which has no events in the tests' families.
pub const SOCIAL_WORKER_TOKEN: &str = "test-sw-token-0123456789";
/// The data protection officer.
pub const DPO_TOKEN: &str = "test-dpo-token-0123456789";
/// An auditor.
pub const AUDITOR_TOKEN: &str = "test-auditor-token-0123456789";

/// The tellonce binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tellonce"))
}

/// A running hub process.
pub struct Hub {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
}

/// Writes the test config into `dir` and returns its path.
pub fn write_config(dir: &Path) -> PathBuf {
    write_config_with(dir, "")
}

/// Writes the test config, with `extra` TOML appended, into `dir` and returns its path.
pub fn write_config_with(dir: &Path, extra: &str) -> PathBuf {
    let config = format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{}"
segment_mib = 1
[[partners]]
id = "police"
token = "{POLICE_TOKEN}"
[[partners]]
id = "school-001"
token = "{SCHOOL_TOKEN}"
[[partners]]
id = "nhs-community"
token = "{NHS_TOKEN}"
[[practitioners]]
user_id = "pc-1"
organisation = "police"
roles = ["practitioner"]
token = "{OFFICER_TOKEN}"
[[practitioners]]
user_id = "teacher-1"
organisation = "school-001"
roles = ["practitioner"]
token = "{TEACHER_TOKEN}"
[[practitioners]]
user_id = "dsl-1"
organisation = "school-001"
roles = ["practitioner", "safeguarding_lead"]
token = "{DSL_TOKEN}"
[[practitioners]]
user_id = "sw-1"
organisation = "childrens-trust"
roles = ["practitioner"]
token = "{SOCIAL_WORKER_TOKEN}"
[[practitioners]]
user_id = "dpo-1"
organisation = "childrens-trust"
roles = ["dpo"]
token = "{DPO_TOKEN}"
[[practitioners]]
user_id = "auditor-1"
organisation = "childrens-trust"
roles = ["auditor"]
token = "{AUDITOR_TOKEN}"
"#,
        dir.join("data").display()
    ) + extra;
    let path = dir.join("tellonce.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

impl Hub {
    /// Starts `tellonce serve` with the test config in `dir`, waiting (at most 60 s) until it
    /// listens.
    pub fn start(dir: &Path) -> Hub {
        Hub::start_with(dir, &[])
    }

    /// Like [`Hub::start`], with more `tellonce serve` arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Hub {
        Hub::start_configured(dir, "", extra)
    }

    /// Like [`Hub::start_with`], with `toml` appended to the test config.
    pub fn start_configured(dir: &Path, toml: &str, extra: &[&str]) -> Hub {
        let config = write_config_with(dir, toml);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hub.log"))
            .expect("hub log");
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tellonce serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("tellonce listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("hub.log")).unwrap_or_default();
                panic!("the hub did not start within 60 s; its log:\n{log}");
            }
        };
        Hub {
            child,
            addr,
            data_dir: dir.join("data"),
        }
    }

    /// A client presenting `token`.
    pub async fn client(
        &self,
        token: &str,
    ) -> IngestServiceClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl tonic::service::Interceptor + Clone,
        >,
    > {
        IngestServiceClient::with_interceptor(channel(&self.addr).await, bearer(token))
    }

    /// A client sending no credential at all.
    pub async fn anonymous(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the hub")
    }

    /// Kills the hub with SIGKILL (no chance to clean up).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the hub with SIGTERM and waits (at most 30 s) for a clean exit; returns whether
    /// it exited successfully.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a run of the `tellonce` command did.
pub struct Ran {
    /// Whether it exited with success.
    pub ok: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Ran {
    /// Both outputs, stdout first (for messages and for checks that do not care which).
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `tellonce` with `args` to its end.
pub fn run<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Ran {
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = Command::new(bin())
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("could not run tellonce {args:?}: {e}"));
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tellonce` with `args`, which must succeed; returns both outputs (stdout first).
pub fn run_ok<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Ran {
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let ran = run(&args);
    assert!(ran.ok, "tellonce {args:?} failed: {}", ran.text());
    ran
}

/// Runs `tellonce log verify --json` on a data folder and returns its JSON answer.
pub fn verify(data_dir: &Path) -> serde_json::Value {
    let ran = run([
        OsStr::new("log"),
        "verify".as_ref(),
        "--json".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ]);
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {}", ran.text()))
}

/// The outcome of one event, as a short tag and the offset or rejection.
pub fn outcome(r: &pb::EventResult) -> (&'static str, u64, i32, String) {
    match &r.outcome {
        Some(pb::event_result::Outcome::Accepted(a)) => ("accepted", a.offset, 0, String::new()),
        Some(pb::event_result::Outcome::Duplicate(d)) => ("duplicate", d.offset, 0, String::new()),
        Some(pb::event_result::Outcome::Rejected(x)) => ("rejected", 0, x.code, x.reason.clone()),
        None => ("none", 0, 0, String::new()),
    }
}

/// A connection to the hub at `addr`.
pub async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect to the hub")
}

/// Adds `authorization: Bearer <token>` to every call.
pub fn bearer(token: &str) -> impl tonic::service::Interceptor + Clone {
    let value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("header value");
    move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    }
}

/// A query client presenting `token`.
pub async fn query_client(
    addr: &str,
    token: &str,
) -> tellonce_proto::v1::query_service_client::QueryServiceClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl tonic::service::Interceptor + Clone,
    >,
> {
    tellonce_proto::v1::query_service_client::QueryServiceClient::with_interceptor(
        channel(addr).await,
        bearer(token),
    )
}

/// A consent client presenting `token`.
pub async fn consent_client(
    addr: &str,
    token: &str,
) -> tellonce_proto::v1::consent_service_client::ConsentServiceClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl tonic::service::Interceptor + Clone,
    >,
> {
    tellonce_proto::v1::consent_service_client::ConsentServiceClient::with_interceptor(
        channel(addr).await,
        bearer(token),
    )
}

/// An access log client presenting `token`.
pub async fn access_log_client(
    addr: &str,
    token: &str,
) -> tellonce_proto::v1::access_log_service_client::AccessLogServiceClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl tonic::service::Interceptor + Clone,
    >,
> {
    tellonce_proto::v1::access_log_service_client::AccessLogServiceClient::with_interceptor(
        channel(addr).await,
        bearer(token),
    )
}
