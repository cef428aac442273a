//! The hub's configuration: a versioned TOML file (unknown keys rejected), with defaults that
//! let `tellonce serve` run with no file at all, and overrides passed in by the caller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of this file; only 1 exists.
    #[serde(default = "one")]
    pub version: u32,
    /// Network settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where and how the log is stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Partner systems allowed to publish. Empty: development credentials are made and printed.
    #[serde(default)]
    pub partners: Vec<PartnerConfig>,
}

fn one() -> u32 {
    1
}

/// Network settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The most events in one PublishRequest.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The most batches of one PublishStream being written at once.
    #[serde(default = "default_stream_window")]
    pub stream_window: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_max_batch() -> usize {
    1000
}
fn default_stream_window() -> usize {
    16
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_batch: default_max_batch(),
            stream_window: default_stream_window(),
        }
    }
}

/// Storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The log engine: `embedded` (segment files in `data_dir`) or `nats` (a JetStream stream,
    /// see `[storage.nats]`).
    #[serde(default = "default_engine")]
    pub engine: String,
    /// JetStream settings, for `engine = "nats"`.
    #[serde(default)]
    pub nats: NatsConfig,
    /// The data folder (the log lives in `DATA_DIR/log`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Size at which a log segment file is closed and a new one started, in MiB.
    #[serde(default = "default_segment_mib")]
    pub segment_mib: u64,
}

fn default_engine() -> String {
    "embedded".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_segment_mib() -> u64 {
    128
}

/// Where the log lives with `engine = "nats"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URL(s), comma separated.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The stream name.
    #[serde(default = "default_nats_stream")]
    pub stream: String,
    /// Subjects are `PREFIX.<source>`.
    #[serde(default = "default_nats_prefix")]
    pub subject_prefix: String,
    /// Stream replicas: 1 on one server, 3 in a cluster.
    #[serde(default = "one_usize")]
    pub replicas: usize,
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_nats_stream() -> String {
    "TELLONCE".into()
}
fn default_nats_prefix() -> String {
    "tellonce.log".into()
}
fn one_usize() -> usize {
    1
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: default_nats_url(),
            stream: default_nats_stream(),
            subject_prefix: default_nats_prefix(),
            replicas: 1,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: default_engine(),
            nats: NatsConfig::default(),
            data_dir: default_data_dir(),
            segment_mib: default_segment_mib(),
        }
    }
}

/// One partner system and its credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// The partner id events carry as `source`, e.g. `police`.
    pub id: String,
    /// A readable name.
    #[serde(default)]
    pub name: String,
    /// The bearer token this partner's system presents.
    pub token: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 1,
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            partners: Vec::new(),
        }
    }
}

/// Overrides from the command line, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--engine`.
    pub engine: Option<String>,
    /// `--nats-url`.
    pub nats_url: Option<String>,
}

impl Config {
    /// Reads a config file, or the defaults when `path` is `None`, then applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ServerError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ServerError::Config(format!("cannot read {}: {e}", p.display()))
                })?;
                Config::parse(&text)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", p.display())))?
            }
            None => Config::default(),
        };
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(engine) = &overrides.engine {
            config.storage.engine = engine.clone();
        }
        if let Some(url) = &overrides.nats_url {
            config.storage.nats.url = url.clone();
        }
        config.check()?;
        Ok(config)
    }

    /// Parses a config file's text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::Config(m));
        if self.version != 1 {
            return bad(format!(
                "config version {} is not supported (only 1)",
                self.version
            ));
        }
        if !matches!(self.storage.engine.as_str(), "embedded" | "nats") {
            return bad(format!(
                "storage.engine {:?} is not known; use \"embedded\" or \"nats\"",
                self.storage.engine
            ));
        }
        if !matches!(self.storage.nats.replicas, 1 | 3 | 5) {
            return bad("storage.nats.replicas must be 1, 3 or 5".into());
        }
        if !(1..=2048).contains(&self.storage.segment_mib) {
            return bad("storage.segment_mib must be 1-2048".into());
        }
        if !(1..=10_000).contains(&self.server.max_batch) {
            return bad("server.max_batch must be 1-10000".into());
        }
        if !(1..=1024).contains(&self.server.stream_window) {
            return bad("server.stream_window must be 1-1024".into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.partners {
            if p.id.is_empty() || p.token.len() < 16 {
                return bad(format!(
                    "partner {:?}: id must be set and token at least 16 characters",
                    p.id
                ));
            }
            if !seen.insert(&p.token) {
                return bad(format!(
                    "partner {:?}: token is shared with another partner",
                    p.id
                ));
            }
        }
        Ok(())
    }
}

/// The partners a development hub trusts when no partners are configured.
pub const DEV_PARTNERS: [(&str, &str); 6] = [
    ("police", "Northamptonshire Police"),
    ("childrens-trust", "Northamptonshire Children's Trust"),
    ("yos", "Youth Offending Service"),
    ("nhs-community", "NHS community health trust"),
    ("school-001", "Kingsthorpe Primary School"),
    ("early-intervention", "PFCC early intervention team"),
];

/// The development credentials file inside a data folder.
pub fn dev_credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-credentials.toml")
}

/// The file that holds development credentials.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevCredentials {
    /// One entry per development partner.
    pub partners: Vec<PartnerConfig>,
}

/// Loads the development credentials of `data_dir`, making (and saving) new random tokens the
/// first time.
pub fn dev_credentials(data_dir: &Path) -> Result<Vec<PartnerConfig>, ServerError> {
    let path = dev_credentials_path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds: DevCredentials = toml::from_str(&text)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
        return Ok(creds.partners);
    }
    let mut rng = rand::rng();
    let partners: Vec<PartnerConfig> = DEV_PARTNERS
        .iter()
        .map(|(id, name)| PartnerConfig {
            id: id.to_string(),
            name: name.to_string(),
            token: format!("dev-{id}-{:016x}", rng.random::<u64>()),
        })
        .collect();
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ServerError::Config(format!("cannot create {}: {e}", data_dir.display())))?;
    let text = toml::to_string(&DevCredentials {
        partners: partners.clone(),
    })
    .map_err(|e| ServerError::Config(e.to_string()))?;
    std::fs::write(&path, text)
        .map_err(|e| ServerError::Config(format!("cannot write {}: {e}", path.display())))?;
    Ok(partners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err =
            Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn dev_credentials_are_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let a = dev_credentials(tmp.path()).unwrap();
        let b = dev_credentials(tmp.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), DEV_PARTNERS.len());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let c = Config::parse(include_str!("../../../deploy/tellonce.example.toml")).unwrap();
        assert_eq!(c.partners.len(), 2);
        c.check().unwrap();
    }
}
