//! Loading the configuration: the compiled-in defaults, then the TOML file, then
//! `RECORDHOOK_<SECTION>__<KEY>` environment variables, each layer overriding the last.
//!
//! Every error names the key at fault and where its value came from (the file or the
//! environment variable), so `check-config` can tell an operator exactly what to fix.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use serde::{Deserialize, Deserializer};

use super::{Config, SignatureMode, StoreKind};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "RECORDHOOK_";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A value has the wrong type or shape, or the TOML does not parse.
    #[error("{message}")]
    Parse {
        /// The key, its origin and what is wrong, phrased like the other variants.
        message: String,
        /// The underlying error.
        #[source]
        source: Box<figment::Error>,
    },
    /// A key the configuration does not know (a typo, or an option of another handler type).
    #[error("unknown key `{key}`{origin}")]
    UnknownKey {
        /// Dotted path of the key.
        key: String,
        /// Where it came from, e.g. ` in config.toml`.
        origin: String,
    },
    /// A value that parses but cannot be used.
    #[error("invalid `{key}`{origin}: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// Where it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads and checks the configuration. `path` is the TOML file (optional: defaults and
/// environment alone make a valid config for trying things out).
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_with_env(path, Env::prefixed(ENV_PREFIX))
}

/// [`load`] with an explicit environment provider (tests use `Env::raw`-free
/// providers instead of touching the process environment).
pub(crate) fn load_with_env(path: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
    let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));
    if let Some(path) = path {
        // figment skips a missing file silently; an operator who names one means it.
        std::fs::metadata(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    // `RECORDHOOK_CONFIG` names the file; it is not a config key.
    extract(figment.merge(env.ignore(&["CONFIG"]).split("__")))
}

/// Loads and checks a configuration from TOML text over the defaults, ignoring the
/// environment: the same parsing and checks as [`load`], for callers that hold the text
/// (the config fuzz target, tools that generate configs).
pub fn load_str(toml: &str) -> Result<Config, ConfigError> {
    extract(Figment::new().merge(Serialized::defaults(Config::default())).merge(Toml::string(toml)))
}

/// Extracts the layered figment into a [`Config`] and runs every check on it.
fn extract(figment: Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(parse_error)?;
    reject_unknown_keys(&figment, &config)?;
    validate(&figment, &config)?;
    Ok(config)
}

/// Rephrases figment's error so that it names the key and its origin the way our own
/// errors do (figment's own text names environment variables by an internal spelling).
fn parse_error(error: figment::Error) -> ConfigError {
    let key = error.path.join(".");
    let origin = error.metadata.as_ref().map(|m| describe(m, &key)).unwrap_or_default();
    let message = if key.is_empty() {
        format!("{}{origin}", error.kind)
    } else {
        format!("invalid `{key}`{origin}: {}", error.kind)
    };
    ConfigError::Parse { message, source: Box::new(error) }
}

/// Names where a key's value came from, for error messages.
fn origin(figment: &Figment, key: &str) -> String {
    figment.find_metadata(key).map(|m| describe(m, key)).unwrap_or_default()
}

fn describe(meta: &figment::Metadata, key: &str) -> String {
    match &meta.source {
        Some(figment::Source::File(path)) => format!(" in {}", path.display()),
        Some(figment::Source::Code(_)) | Some(figment::Source::Custom(_)) | None
            if meta.name.contains("environment") =>
        {
            // Rebuild the variable's name from the key, as `split("__")` took it apart.
            format!(" from environment variable {ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"))
        }
        _ => format!(" ({})", meta.name),
    }
}

/// Serde quietly ignores keys it does not know where `deny_unknown_fields` cannot be
/// used (flattened handler options). So compare what was written with what was
/// understood: every key present in the input must reappear when the parsed config is
/// serialized again.
fn reject_unknown_keys(figment: &Figment, config: &Config) -> Result<(), ConfigError> {
    let raw: Value = figment.extract().map_err(parse_error)?;
    let understood = serde_json::to_value(config).expect("config serializes");
    let mut unknown = Vec::new();
    walk(&raw, &understood, String::new(), &mut unknown);
    match unknown.into_iter().next() {
        Some(key) => Err(ConfigError::UnknownKey { origin: origin(figment, &key), key }),
        None => Ok(()),
    }
}

fn walk(raw: &Value, understood: &serde_json::Value, prefix: String, unknown: &mut Vec<String>) {
    let (Value::Dict(_, dict), serde_json::Value::Object(map)) = (raw, understood) else { return };
    for (key, value) in dict {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match map.get(key) {
            Some(inner) => walk(value, inner, path, unknown),
            None => unknown.push(path),
        }
    }
}

/// Checks that serde cannot express: relations between keys and values that parse but
/// cannot work. Handlers are built here too, so their own checks run before the port opens.
fn validate(figment: &Figment, config: &Config) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        origin: origin(figment, key),
        key: key.to_owned(),
        message,
    };
    let server = &config.server;
    if !server.path.starts_with('/') {
        return Err(invalid("server.path", "must start with `/`".into()));
    }
    if matches!(server.path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        return Err(invalid("server.path", "collides with an operational route".into()));
    }
    if let Some(public_url) = &server.public_url {
        check_public_url(public_url).map_err(|m| invalid("server.public_url", m))?;
    }
    if server.max_body_bytes == 0 {
        return Err(invalid("server.max_body_bytes", "must be greater than zero".into()));
    }
    if server.request_timeout.is_zero() {
        return Err(invalid("server.request_timeout", "must be greater than zero".into()));
    }
    if config.signature.mode == SignatureMode::Required {
        if config.signature.signing_keys.is_empty() {
            return Err(invalid(
                "signature.signing_keys",
                "is empty while signature.mode is \"required\": add your SignalWire Signing Key \
                 (RECORDHOOK_SIGNATURE__SIGNING_KEYS) or set mode = \"disabled\""
                    .into(),
            ));
        }
        if config.signature.signing_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("signature.signing_keys", "contains an empty key".into()));
        }
    }
    check_store(config).map_err(|(key, message)| match key {
        // Missing: it has no origin of its own; say where the type came from instead.
        "store.url" if config.store.url.is_none() => ConfigError::Invalid {
            key: key.to_owned(),
            origin: String::new(),
            message: format!("{message}; store.type is set{}", origin(figment, "store.type")),
        },
        _ => invalid(key, message),
    })?;
    if config.dispatch.poll_interval.is_zero() {
        return Err(invalid("dispatch.poll_interval", "must be greater than zero".into()));
    }
    config.signalwire.check().map_err(|p| invalid(p.key, p.message))?;
    let context = crate::handlers::BuildContext { signalwire: &config.signalwire };
    for (name, handler) in &config.handlers {
        let key = format!("handlers.{name}");
        if !is_snake_case(name) {
            return Err(invalid(&key, "handler names are snake_case: [a-z][a-z0-9_]*".into()));
        }
        if let Err(e) = handler.build_with(name, &context) {
            return Err(invalid(&e.key(), e.message));
        }
    }
    Ok(())
}

fn check_store(config: &Config) -> Result<(), (&'static str, String)> {
    let store = &config.store;
    if store.retention.is_some_and(|r| r < std::time::Duration::from_secs(60)) {
        return Err(("store.retention", "must be at least 1m (it is a history window, e.g. \"30d\")".into()));
    }
    if store.kind != StoreKind::Postgres {
        return Ok(());
    }
    let Some(url) = store.url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Err((
            "store.url",
            "is required when store.type is \"postgres\" (e.g. RECORDHOOK_STORE__URL=postgres://user@host/db)".into(),
        ));
    };
    // Parsed the way the store will parse it; the error never repeats the URL (it may hold
    // a password).
    if let Err(e) = url.parse::<tokio_postgres::Config>() {
        return Err(("store.url", format!("not a PostgreSQL connection URL: {e}")));
    }
    if store.pool_size == 0 {
        return Err(("store.pool_size", "must be greater than zero".into()));
    }
    if let Err(e) = crate::store::postgres::tls::connector(store.ca_file.as_deref()) {
        return Err(("store.ca_file", e.to_string()));
    }
    Ok(())
}

fn check_public_url(value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be scheme://host[:port] only; the request's path and query are appended".into());
    }
    Ok(())
}

fn is_snake_case(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Accepts a list, or a single string of comma-separated items (the natural shape of an
/// environment variable such as `RECORDHOOK_SIGNATURE__SIGNING_KEYS=PSK_a,PSK_b`).
pub(crate) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    /// An environment provider that reads no real variables.
    fn no_env() -> Env {
        Env::prefixed("RECORDHOOK_TEST_NOTHING_SET_")
    }

    const BASE: &str = "[signature]\nsigning_keys = [\"PSK_x\"]\n";

    #[test]
    fn defaults_plus_a_key_load() {
        let f = file(BASE);
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.server.path, "/recording-status");
        assert_eq!(c.signature.signing_keys, vec!["PSK_x"]);
        assert_eq!(c.server.max_body_bytes, 65536);
    }

    #[test]
    fn unknown_top_level_key_is_named_with_its_file() {
        let f = file(&format!("{BASE}[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("server.lisen"), "{e}");
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(e.contains(&name), "{e}");
    }

    #[test]
    fn unknown_handler_option_is_an_error() {
        let f = file(&format!("{BASE}[handlers.audit]\ntype = \"log\"\nlevel = \"info\"\nurl = \"http://x\"\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("unknown key `handlers.audit.url`"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let f = file(&format!("{BASE}[server]\nmax_body_bytes = \"lots\"\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("max_body_bytes"), "{e}");
    }

    #[test]
    fn required_signatures_need_a_key() {
        let f = file("[server]\npath = \"/cb\"\n");
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("signature.signing_keys"), "{e}");
    }

    #[test]
    fn public_url_must_not_carry_a_path() {
        let f = file(&format!("{BASE}[server]\npublic_url = \"https://h.example.com/x\"\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("server.public_url"), "{e}");
    }

    #[test]
    fn text_loads_like_a_file() {
        let c = load_str(&format!("{BASE}[server]\npath = \"/cb\"\n")).unwrap();
        assert_eq!(c.server.path, "/cb");
        let e = load_str(&format!("{BASE}[server]\npth = 1\n")).unwrap_err().to_string();
        assert!(e.contains("server.pth"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = load_with_env(Some(Path::new("/nonexistent/recordhook.toml")), no_env()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn bad_handler_name_is_rejected() {
        let f = file(&format!("{BASE}[handlers.Audit]\ntype = \"log\"\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("handlers.Audit"), "{e}");
    }

    #[test]
    fn signalwire_section_loads_and_its_errors_name_the_key() {
        let f = file(&format!(
            "{BASE}[signalwire]\nspace_url = \"example.signalwire.com\"\nrecording_hosts = \"*.signalwire.com, files.example.com\"\n"
        ));
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.signalwire.recording_hosts, vec!["*.signalwire.com", "files.example.com"]);
        assert_eq!(
            load_with_env(Some(file(BASE).path()), no_env()).unwrap().signalwire.recording_hosts,
            vec!["*.signalwire.com"]
        );
        for (text, key) in [
            ("[signalwire]\nspace_ur = \"x\"\n", "signalwire.space_ur"),
            ("[signalwire]\nrecording_hosts = [\"bad host\"]\n", "signalwire.recording_hosts"),
            ("[signalwire]\nspace_url = \"ftp://x\"\n", "signalwire.space_url"),
        ] {
            let f = file(&format!("{BASE}{text}"));
            let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn comma_separated_keys_become_a_list() {
        let f = file("[signature]\nsigning_keys = \"PSK_a, PSK_b\"\n");
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.signature.signing_keys, vec!["PSK_a", "PSK_b"]);
    }

    #[test]
    fn postgres_needs_a_url_and_retention_is_a_duration() {
        let f = file(&format!("{BASE}[store]\ntype = \"postgres\"\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("store.url"), "{e}");
        let f =
            file(&format!("{BASE}[store]\ntype = \"postgres\"\nurl = \"postgres://rh:s3cret@db/rh\"\npool_size = 4\n"));
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.store.pool_size, 4);
        assert_eq!(c.store.retention, None);
        let f = file(&format!("{BASE}[store]\nretention = \"30d\"\n"));
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.store.retention, Some(std::time::Duration::from_secs(30 * 86_400)));
        let f = file(&format!("{BASE}[store]\nretention = \"1s\"\n"));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("store.retention"), "{e}");
        let f = file(&format!("{BASE}[store]\ntype = \"postgres\"\nurl = \"postgres://rh:s3cret@db/rh\"\n"));
        let c = load_with_env(Some(f.path()), no_env()).unwrap();
        let shown = format!("{:?}", c.store);
        assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn an_unusable_ca_file_is_a_config_error_naming_the_key_and_file() {
        let f = file(&format!(
            "{BASE}[store]\ntype = \"postgres\"\nurl = \"postgres://rh@db/rh?sslmode=require\"\n\
             ca_file = \"/nonexistent/db-ca.pem\"\n"
        ));
        let e = load_with_env(Some(f.path()), no_env()).unwrap_err().to_string();
        assert!(e.contains("store.ca_file") && e.contains("/nonexistent/db-ca.pem"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn environment_overrides_the_file_and_is_named_in_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", &format!("{BASE}[server]\nlisten = \"127.0.0.1:1\"\n"))?;
            jail.set_env("RECORDHOOK_SERVER__LISTEN", "127.0.0.1:9999");
            jail.set_env("RECORDHOOK_CONFIG", "ignored.toml");
            let c = load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.listen.port(), 9999);

            jail.set_env("RECORDHOOK_SERVER__PUBLIC_URL", "ftp://nope");
            let e = load(Some(Path::new("c.toml"))).unwrap_err().to_string();
            assert!(e.contains("RECORDHOOK_SERVER__PUBLIC_URL"), "{e}");
            jail.set_env("RECORDHOOK_SERVER__PUBLIC_URL", "https://ok.example.com");

            jail.set_env("RECORDHOOK_SERVER__LISTN", "x");
            let e = load(Some(Path::new("c.toml"))).unwrap_err().to_string();
            assert!(e.contains("server.listn") && e.contains("RECORDHOOK_SERVER__LISTN"), "{e}");
            Ok(())
        });
    }
}
