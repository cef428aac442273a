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
    /// Static practitioner tokens, for development (production uses `[auth.jwt]`).
    #[serde(default)]
    pub practitioners: Vec<PractitionerConfig>,
    /// How people authenticate.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Access rules.
    #[serde(default)]
    pub access: AccessConfig,
    /// Signed checkpoints of the log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Sealed payloads, erasure and retention.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// Traces over OTLP.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

/// Sealed payloads, erasure and retention.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Seal event payloads under per-record data keys, so content can be erased. Default:
    /// on for the embedded engine, off for NATS (the key store is one folder; several
    /// replicas cannot share it yet).
    #[serde(default)]
    pub seal_payloads: Option<bool>,
    /// The key store's folder. Default `DATA_DIR/keys`. Back it up with the log, but apart
    /// from it: the log without the keys cannot be read, and that is the point.
    #[serde(default)]
    pub key_store_dir: Option<PathBuf>,
    /// The retention rule, applied on a period.
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// When content is erased without a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Apply the rule (only when payloads are sealed).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Years after the family's last activity, with no service involved.
    #[serde(default = "default_after_years")]
    pub after_last_activity_years: u32,
    /// And not before this birthday.
    #[serde(default = "default_until_age")]
    pub until_age_years: u32,
    /// Seconds between sweeps (the first runs a minute after start).
    #[serde(default = "default_sweep_every")]
    pub check_every_s: u64,
}

fn yes() -> bool {
    true
}
fn default_after_years() -> u32 {
    6
}
fn default_until_age() -> u32 {
    25
}
fn default_sweep_every() -> u64 {
    86_400
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            after_last_activity_years: default_after_years(),
            until_age_years: default_until_age(),
            check_every_s: default_sweep_every(),
        }
    }
}

/// Signed checkpoints of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 signing key (PKCS#8 PEM, as `tellonce keygen` writes). Absent: a
    /// development key is made in `DATA_DIR/audit-signing-key.pem`.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Seconds between checkpoints made while the log grows (0: only on demand).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every_s: u64,
}

fn default_checkpoint_every() -> u64 {
    3600
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key_file: None,
            checkpoint_every_s: default_checkpoint_every(),
        }
    }
}

/// How people authenticate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// JWTs from the partnership's identity provider.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

/// The identity provider whose JWTs (EdDSA) the hub accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Its Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Or a file holding it.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Seconds of clock difference allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_s: i64,
}

fn default_audience() -> String {
    "tellonce".into()
}
fn default_leeway() -> i64 {
    60
}

/// Access rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// How long a break-glass grant lasts, in minutes.
    #[serde(default = "default_break_glass")]
    pub break_glass_minutes: u32,
}

fn default_break_glass() -> u32 {
    240
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            break_glass_minutes: default_break_glass(),
        }
    }
}

/// A practitioner's static development token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PractitionerConfig {
    /// The user id.
    pub user_id: String,
    /// Their organisation (a partner id).
    pub organisation: String,
    /// Role names: practitioner, safeguarding_lead, auditor, dpo, admin.
    pub roles: Vec<String>,
    /// A readable name.
    #[serde(default)]
    pub name: String,
    /// The bearer token.
    pub token: String,
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
            practitioners: Vec::new(),
            auth: AuthConfig::default(),
            access: AccessConfig::default(),
            audit: AuditConfig::default(),
            privacy: PrivacyConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
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

    /// Whether event payloads are sealed (see [`PrivacyConfig::seal_payloads`]).
    pub fn seals(&self) -> bool {
        self.privacy
            .seal_payloads
            .unwrap_or(self.storage.engine != "nats")
    }

    /// The key store's folder.
    pub fn key_store_dir(&self) -> PathBuf {
        self.privacy
            .key_store_dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("keys"))
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
        if !(1..=24 * 60).contains(&self.access.break_glass_minutes) {
            return bad("access.break_glass_minutes must be 1-1440".into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.practitioners {
            if p.user_id.is_empty() || p.organisation.is_empty() || p.token.len() < 16 {
                return bad(format!(
                    "practitioner {:?}: user_id and organisation must be set and token at least 16 characters",
                    p.user_id
                ));
            }
            if let Some(r) = p
                .roles
                .iter()
                .find(|r| tellonce_domain::access::Role::parse(r).is_none())
            {
                return bad(format!(
                    "practitioner {:?}: role {r:?} is not one of practitioner, safeguarding_lead, auditor, dpo, admin",
                    p.user_id
                ));
            }
            if !seen.insert(&p.token) {
                return bad(format!(
                    "practitioner {:?}: token is shared with another credential",
                    p.user_id
                ));
            }
        }
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
    /// Development people: a practitioner per partner, a safeguarding lead, a DPO, an auditor.
    #[serde(default)]
    pub practitioners: Vec<PractitionerConfig>,
}

/// The development people: `(user id, organisation, roles)`.
pub const DEV_PRACTITIONERS: [(&str, &str, &[&str]); 9] = [
    ("police-officer", "police", &["practitioner"]),
    ("social-worker", "childrens-trust", &["practitioner"]),
    ("yos-worker", "yos", &["practitioner"]),
    ("health-visitor", "nhs-community", &["practitioner"]),
    ("teacher", "school-001", &["practitioner"]),
    (
        "school-dsl",
        "school-001",
        &["practitioner", "safeguarding_lead"],
    ),
    ("ei-worker", "early-intervention", &["practitioner"]),
    ("dpo", "childrens-trust", &["dpo"]),
    ("auditor", "childrens-trust", &["auditor"]),
];

/// Loads the development credentials of `data_dir`, making (and saving) new random tokens the
/// first time (and development people, for a file written before there were any).
pub fn dev_credentials(data_dir: &Path) -> Result<DevCredentials, ServerError> {
    let path = dev_credentials_path(data_dir);
    let mut rng = rand::rng();
    let people = |rng: &mut rand::rngs::ThreadRng| -> Vec<PractitionerConfig> {
        DEV_PRACTITIONERS
            .iter()
            .map(|(user, org, roles)| PractitionerConfig {
                user_id: user.to_string(),
                organisation: org.to_string(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                name: String::new(),
                token: format!("dev-{user}-{:016x}", rng.random::<u64>()),
            })
            .collect()
    };
    let save = |creds: &DevCredentials| -> Result<(), ServerError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            ServerError::Config(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let text = toml::to_string(creds).map_err(|e| ServerError::Config(e.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|e| ServerError::Config(format!("cannot write {}: {e}", path.display())))
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut creds: DevCredentials = toml::from_str(&text)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
        if creds.practitioners.is_empty() {
            creds.practitioners = people(&mut rng);
            save(&creds)?;
        }
        return Ok(creds);
    }
    let partners: Vec<PartnerConfig> = DEV_PARTNERS
        .iter()
        .map(|(id, name)| PartnerConfig {
            id: id.to_string(),
            name: name.to_string(),
            token: format!("dev-{id}-{:016x}", rng.random::<u64>()),
        })
        .collect();
    let creds = DevCredentials {
        partners,
        practitioners: people(&mut rng),
    };
    save(&creds)?;
    Ok(creds)
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
        assert_eq!(a.partners, b.partners);
        assert_eq!(a.practitioners, b.practitioners);
        assert_eq!(a.partners.len(), DEV_PARTNERS.len());
        assert_eq!(a.practitioners.len(), DEV_PRACTITIONERS.len());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let c = Config::parse(include_str!("../../../deploy/tellonce.example.toml")).unwrap();
        assert_eq!(c.partners.len(), 2);
        assert!(c.auth.jwt.is_some());
        c.check().unwrap();
    }
}
