//! [`TentacleConfig`]: the settings in a `Tentacle.config`, every key kept, with
//! typed accessors for the ones octopoll uses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use octopoll_pki::{Identity, Thumbprint};

use super::error::{ConfigError, Location, Structure};
use super::trusted_servers::{self, TrustedOctopusServer};
use super::xml;

/// The home directory (`--home`).
pub const OCTOPUS_HOME: &str = "Octopus.Home";
/// The certificate: base64 of a password-less PFX (see [`TentacleConfig::certificate`]).
pub const CERTIFICATE: &str = "Tentacle.Certificate";
/// The certificate's thumbprint, uppercase hex, in plain text.
pub const CERTIFICATE_THUMBPRINT: &str = "Tentacle.CertificateThumbprint";
/// The trusted servers, a JSON list (see [`TrustedOctopusServer`]).
pub const TRUSTED_OCTOPUS_SERVERS: &str = "Tentacle.Communication.TrustedOctopusServers";
/// How many connections poll each server address.
pub const POLLING_CONNECTION_COUNT: &str = "Tentacle.Communication.PollingConnectionCount";
/// The listening port.
pub const PORT_NUMBER: &str = "Tentacle.Services.PortNumber";
/// `true` for a polling-only Tentacle that opens no port.
pub const NO_LISTEN: &str = "Tentacle.Services.NoListen";
/// The address to listen on; unset means every address.
pub const LISTEN_IP: &str = "Tentacle.Services.ListenIP";
/// Where packages are extracted.
pub const APPLICATION_DIRECTORY: &str = "Tentacle.Deployment.ApplicationDirectory";

/// Tentacle's `ServicesPortNumber` when `Tentacle.Services.PortNumber` is unset.
pub const DEFAULT_PORT: u16 = 10933;
/// Tentacle's polling connection count when the key is unset.
pub const DEFAULT_POLLING_CONNECTION_COUNT: usize = 1;

/// The settings of a `Tentacle.config`: `<set key="K">value</set>` entries.
///
/// Every key is kept, known or not, so a file read and saved again loses
/// nothing. Keys ignore case, as Tentacle's store does, and keep the spelling
/// first seen. A value is `None` for `<set key="K" />`, empty or blank text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TentacleConfig {
    /// By case-folded key, which is also the order they are written in.
    settings: BTreeMap<String, Setting>,
}

#[derive(Clone, PartialEq, Eq)]
struct Setting {
    key: String,
    value: Option<String>,
}

fn fold(key: &str) -> String {
    key.to_lowercase()
}

impl TentacleConfig {
    /// An empty config, as `create-instance` starts with.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a `Tentacle.config`'s text: an optional UTF-8 byte order mark, the
    /// XML declaration, `<octopus-settings>` with any attributes, and `<set>`
    /// children. Anything else is an error naming the line. Never panics.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::new();
        for entry in xml::parse(text)? {
            let folded = fold(&entry.key);
            if config.settings.contains_key(&folded) {
                return Err(ConfigError::Structure {
                    at: Location {
                        path: None,
                        line: entry.line,
                    },
                    problem: Structure::DuplicateKey { key: entry.key },
                });
            }
            let setting = Setting {
                key: entry.key,
                value: entry.value,
            };
            config.settings.insert(folded, setting);
        }
        Ok(config)
    }

    /// Reads the `Tentacle.config` at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
            path: path.to_owned(),
        })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// The file as Tentacle's XmlSerializer writes it: the declaration, the root
    /// with its two xmlns attributes, entries sorted by key and indented two
    /// spaces, a null as `<set key="K" />`. No byte order mark, no final newline.
    pub fn to_xml(&self) -> String {
        xml::write(
            self.settings
                .values()
                .map(|s| (s.key.as_str(), s.value.as_deref())),
        )
    }

    /// Writes the file at `path` atomically: into a temporary file in the same
    /// directory, flushed, then renamed over `path`. A failure leaves the old
    /// file as it was and no temporary file behind. On unix the file is mode
    /// 0600, since it holds the private key.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        octopoll_pki::pem::write_file(path, self.to_xml().as_bytes(), 0o600).map_err(|source| {
            ConfigError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// The value of `key` (any case); `None` when unset or null.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(&fold(key))?.value.as_deref()
    }

    /// Sets `key`; a blank string is stored as null, as Tentacle does. An
    /// existing key keeps its spelling.
    pub fn set(&mut self, key: &str, value: Option<String>) {
        let value = value.filter(|v| !v.trim().is_empty());
        let setting = self.settings.entry(fold(key)).or_insert_with(|| Setting {
            key: key.to_owned(),
            value: None,
        });
        setting.value = value;
    }

    /// Removes `key` (any case) and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.settings.remove(&fold(key))?.value
    }

    /// Every key with its value, in the order they are written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.settings
            .values()
            .map(|s| (s.key.as_str(), s.value.as_deref()))
    }

    /// How many keys there are, null ones included.
    pub fn len(&self) -> usize {
        self.settings.len()
    }

    /// Whether there are no keys at all.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// The trimmed value of `key`, if any.
    fn trimmed(&self, key: &str) -> Option<&str> {
        self.get(key).map(str::trim)
    }

    fn bad(key: &'static str, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::BadValue {
            key,
            value: value.to_owned(),
            expected,
        }
    }
}

/// Typed settings.
impl TentacleConfig {
    /// `Octopus.Home`.
    pub fn home(&self) -> Option<PathBuf> {
        self.trimmed(OCTOPUS_HOME).map(PathBuf::from)
    }

    /// Sets `Octopus.Home` (a non-UTF-8 path is stored lossily).
    pub fn set_home(&mut self, home: &Path) {
        self.set(OCTOPUS_HOME, Some(home.to_string_lossy().into_owned()));
    }

    /// `Tentacle.Deployment.ApplicationDirectory`; Tentacle's Linux default when
    /// unset is `/home/Octopus/Applications`, left to the caller.
    pub fn application_directory(&self) -> Option<PathBuf> {
        self.trimmed(APPLICATION_DIRECTORY).map(PathBuf::from)
    }

    /// Sets `Tentacle.Deployment.ApplicationDirectory`.
    pub fn set_application_directory(&mut self, dir: &Path) {
        let dir = dir.to_string_lossy().into_owned();
        self.set(APPLICATION_DIRECTORY, Some(dir));
    }

    /// `Tentacle.Services.PortNumber`, [`DEFAULT_PORT`] when unset.
    pub fn port(&self) -> Result<u16, ConfigError> {
        let Some(text) = self.trimmed(PORT_NUMBER) else {
            return Ok(DEFAULT_PORT);
        };
        match text.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(Self::bad(PORT_NUMBER, text, "a port number (1-65535)")),
        }
    }

    /// Sets `Tentacle.Services.PortNumber`.
    pub fn set_port(&mut self, port: u16) {
        self.set(PORT_NUMBER, Some(port.to_string()));
    }

    /// `Tentacle.Services.NoListen`, false when unset. Reads `true` or `false`
    /// in any case, as .NET's `bool.Parse` does.
    pub fn no_listen(&self) -> Result<bool, ConfigError> {
        let Some(text) = self.trimmed(NO_LISTEN) else {
            return Ok(false);
        };
        if text.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if text.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err(Self::bad(NO_LISTEN, text, "true or false"))
        }
    }

    /// Sets `Tentacle.Services.NoListen`, written `true`/`false` as Tentacle does.
    pub fn set_no_listen(&mut self, no_listen: bool) {
        self.set(NO_LISTEN, Some(no_listen.to_string()));
    }

    /// `Tentacle.Services.ListenIP`; `None` (every address) when unset. IPv6
    /// may be in brackets.
    pub fn listen_ip(&self) -> Result<Option<IpAddr>, ConfigError> {
        let Some(text) = self.trimmed(LISTEN_IP) else {
            return Ok(None);
        };
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        bare.parse()
            .map(Some)
            .map_err(|_| Self::bad(LISTEN_IP, text, "an IPv4 or IPv6 address"))
    }

    /// Sets or clears `Tentacle.Services.ListenIP`.
    pub fn set_listen_ip(&mut self, ip: Option<IpAddr>) {
        self.set(LISTEN_IP, ip.map(|ip| ip.to_string()));
    }

    /// `Tentacle.Communication.PollingConnectionCount`,
    /// [`DEFAULT_POLLING_CONNECTION_COUNT`] when unset; at least 1.
    pub fn polling_connection_count(&self) -> Result<usize, ConfigError> {
        let Some(text) = self.trimmed(POLLING_CONNECTION_COUNT) else {
            return Ok(DEFAULT_POLLING_CONNECTION_COUNT);
        };
        match text.parse::<usize>() {
            Ok(count) if count >= 1 => Ok(count),
            _ => Err(Self::bad(
                POLLING_CONNECTION_COUNT,
                text,
                "a whole number of at least 1",
            )),
        }
    }

    /// Sets `Tentacle.Communication.PollingConnectionCount`.
    pub fn set_polling_connection_count(&mut self, count: NonZeroUsize) {
        self.set(POLLING_CONNECTION_COUNT, Some(count.to_string()));
    }

    /// `Tentacle.Communication.TrustedOctopusServers`; empty when unset or null.
    /// Never panics, whatever the value.
    pub fn trusted_servers(&self) -> Result<Vec<TrustedOctopusServer>, ConfigError> {
        match self.get(TRUSTED_OCTOPUS_SERVERS) {
            Some(json) => trusted_servers::from_json(json),
            None => Ok(Vec::new()),
        }
    }

    /// Writes `Tentacle.Communication.TrustedOctopusServers` as Tentacle does.
    pub fn set_trusted_servers(&mut self, servers: &[TrustedOctopusServer]) {
        let json = trusted_servers::to_json(servers);
        self.set(TRUSTED_OCTOPUS_SERVERS, Some(json));
    }

    /// Adds `entry` by Tentacle's AddOrUpdate rule (see
    /// [`trusted_servers::add_or_update`]); fails if the current list is unreadable.
    pub fn add_or_update_trusted_server(
        &mut self,
        entry: TrustedOctopusServer,
    ) -> Result<(), ConfigError> {
        let mut servers = self.trusted_servers()?;
        trusted_servers::add_or_update(&mut servers, entry);
        self.set_trusted_servers(&servers);
        Ok(())
    }

    /// `Tentacle.CertificateThumbprint`.
    pub fn thumbprint(&self) -> Result<Option<Thumbprint>, ConfigError> {
        let Some(text) = self.trimmed(CERTIFICATE_THUMBPRINT) else {
            return Ok(None);
        };
        text.parse()
            .map(Some)
            .map_err(|_| Self::bad(CERTIFICATE_THUMBPRINT, text, "a thumbprint (40 hex digits)"))
    }

    /// The identity in `Tentacle.Certificate`, checked against
    /// `Tentacle.CertificateThumbprint` when that is set.
    ///
    /// The real Tentacle encrypts this value with a machine key (DPAPI on
    /// Windows; on Linux AES keyed by `/etc/machine-id`), so its config only
    /// works on the machine that wrote it. octopoll stores the password-less
    /// PFX unencrypted, so a config copied to another machine still works: the
    /// file holds a private key, so keep it private ([`save`](Self::save)
    /// writes it mode 0600 on unix). A real Tentacle's encrypted value fails
    /// here with [`ConfigError::Certificate`].
    ///
    /// Reading an RSA PFX takes PBKDF2 rounds: use `spawn_blocking` on a runtime.
    pub fn certificate(&self) -> Result<Option<Identity>, ConfigError> {
        let Some(text) = self.get(CERTIFICATE) else {
            return Ok(None);
        };
        // .NET's Convert.FromBase64String skips whitespace; so does this.
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let pfx = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|source| ConfigError::CertificateBase64 { source })?;
        let identity = octopoll_pki::pfx::import(&pfx, "")
            .map_err(|source| ConfigError::Certificate { source })?;
        if let Some(stored) = self.thumbprint()? {
            let actual = identity.thumbprint();
            if stored != actual {
                return Err(ConfigError::CertificateMismatch { stored, actual });
            }
        }
        Ok(Some(identity))
    }

    /// Stores `identity` as Tentacle does: base64 of a password-less PFX in
    /// `Tentacle.Certificate` and the uppercase thumbprint in
    /// `Tentacle.CertificateThumbprint`. Unencrypted; see [`certificate`](Self::certificate).
    pub fn set_certificate(&mut self, identity: &Identity) -> Result<(), ConfigError> {
        let pfx = octopoll_pki::pfx::export(identity, "").map_err(|source| {
            ConfigError::CertificateExport {
                thumbprint: identity.thumbprint(),
                source,
            }
        })?;
        let text = base64::engine::general_purpose::STANDARD.encode(pfx);
        self.set(CERTIFICATE, Some(text));
        let thumbprint = identity.thumbprint().to_string();
        self.set(CERTIFICATE_THUMBPRINT, Some(thumbprint));
        Ok(())
    }
}

impl fmt::Debug for TentacleConfig {
    /// Lists every setting but the certificate, which holds the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = fold(CERTIFICATE);
        let mut map = f.debug_map();
        for (folded, setting) in &self.settings {
            let value = match &setting.value {
                Some(_) if *folded == redacted => Some("<PFX, not shown>"),
                value => value.as_deref(),
            };
            map.entry(&setting.key, &value);
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tentacle::CommunicationStyle;
    use octopoll_pki::KeyType;

    /// The example in the Octopus docs ("Polling Tentacles over standard HTTPS",
    /// high availability), inside a full file as Tentacle writes it.
    const DOCS_EXAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<octopus-settings xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <set key="Octopus.Home">/etc/octopus/Tentacle</set>
  <set key="Tentacle.CertificateThumbprint">1A2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D</set>
  <set key="Tentacle.Communication.TrustedOctopusServers">
[
{"Thumbprint":"77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6","CommunicationStyle":2,"Address":"https://10.0.255.160:10943","Squid":null,"SubscriptionId":"poll://g3662re9njtelsyfhm7t/"},
{"Thumbprint":"77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6","CommunicationStyle":2,"Address":"https://10.0.255.161:10943","Squid":null,"SubscriptionId":"poll://g3662re9njtelsyfhm7t/"},
{"Thumbprint":"77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6","CommunicationStyle":2,"Address":"https://10.0.255.162:10943","Squid":null,"SubscriptionId":"poll://g3662re9njtelsyfhm7t/"}
]
</set>
  <set key="Tentacle.Deployment.ApplicationDirectory">/home/Octopus/Applications</set>
  <set key="Tentacle.Services.IsRegistered" />
  <set key="Tentacle.Services.NoListen">True</set>
</octopus-settings>"#;

    fn config_with(key: &str, value: &str) -> TentacleConfig {
        let mut config = TentacleConfig::new();
        config.set(key, Some(value.to_owned()));
        config
    }

    fn bad_value<T: fmt::Debug>(result: Result<T, ConfigError>) -> (&'static str, String) {
        match result {
            Err(ConfigError::BadValue { key, value, .. }) => (key, value),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_docs_example_loads() {
        let config = TentacleConfig::parse(DOCS_EXAMPLE).unwrap();
        let servers = config.trusted_servers().unwrap();
        assert_eq!(servers.len(), 3);
        let addresses: Vec<_> = servers
            .iter()
            .filter_map(|s| s.address.as_deref())
            .collect();
        assert_eq!(
            addresses,
            [
                "https://10.0.255.160:10943",
                "https://10.0.255.161:10943",
                "https://10.0.255.162:10943"
            ]
        );
        for server in &servers {
            assert_eq!(
                server.thumbprint,
                "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6"
            );
            assert_eq!(
                server.communication_style,
                CommunicationStyle::TentacleActive
            );
            assert_eq!(
                server.subscription_id.as_deref(),
                Some("poll://g3662re9njtelsyfhm7t/")
            );
            assert_eq!(server.squid, None);
        }
        assert!(config.no_listen().unwrap(), "True reads as true");
        assert_eq!(config.home(), Some(PathBuf::from("/etc/octopus/Tentacle")));
        assert_eq!(config.port().unwrap(), DEFAULT_PORT);
        assert_eq!(config.get("Tentacle.Services.IsRegistered"), None);
        assert_eq!(config.len(), 6);
    }

    #[test]
    fn round_trip_keeps_every_key_and_null() {
        let original = TentacleConfig::parse(DOCS_EXAMPLE).unwrap();
        let text = original.to_xml();
        let back = TentacleConfig::parse(&text).unwrap();
        assert_eq!(back, original);
        assert_eq!(back.to_xml(), text, "writing is stable");
        assert!(text.contains("<set key=\"Tentacle.Services.IsRegistered\" />"));

        let mut config = TentacleConfig::new();
        config.set("Zeta.Unknown", Some("<x & y>".into()));
        config.set("alpha.lower", Some("1".into()));
        config.set("Octopus.Null", None);
        config.set_port(10934);
        config.set_no_listen(true);
        let text = config.to_xml();
        let keys: Vec<_> = TentacleConfig::parse(&text)
            .unwrap()
            .iter()
            .map(|(k, _)| k.to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "alpha.lower",
                "Octopus.Null",
                "Tentacle.Services.NoListen",
                "Tentacle.Services.PortNumber",
                "Zeta.Unknown"
            ]
        );
        assert_eq!(TentacleConfig::parse(&text).unwrap(), config);
        assert!(text.contains("<set key=\"Zeta.Unknown\">&lt;x &amp; y&gt;</set>"));
        assert!(text.contains("<set key=\"Tentacle.Services.NoListen\">true</set>"));
    }

    #[test]
    fn a_fresh_file_is_empty() {
        let fresh = "<?xml version='1.0' encoding='UTF-8' ?><octopus-settings></octopus-settings>";
        assert!(TentacleConfig::parse(fresh).unwrap().is_empty());
        let with_bom = format!("\u{feff}{fresh}");
        assert!(TentacleConfig::parse(&with_bom).unwrap().is_empty());
    }

    #[test]
    fn keys_ignore_case_and_keep_their_spelling() {
        let mut config = TentacleConfig::parse(DOCS_EXAMPLE).unwrap();
        assert_eq!(config.get("octopus.home"), Some("/etc/octopus/Tentacle"));
        config.set("OCTOPUS.HOME", Some("/srv".into()));
        assert!(config
            .to_xml()
            .contains("<set key=\"Octopus.Home\">/srv</set>"));
        config.set("octopus.home", Some("   ".into()));
        assert!(config.to_xml().contains("<set key=\"Octopus.Home\" />"));
        assert_eq!(config.remove("OCTOPUS.home"), None);
        assert_eq!(config.len(), 5);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let text = "<octopus-settings>\n<set key=\"A\">1</set>\n<set key=\"a\">2</set>\n</octopus-settings>";
        match TentacleConfig::parse(text) {
            Err(ConfigError::Structure { at, problem }) => {
                assert_eq!(at.line, 3);
                assert_eq!(problem, Structure::DuplicateKey { key: "a".into() });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_documents_give_clear_errors() {
        let cases = [
            (
                "<octopus-settings><set key=\"a\">1</set>",
                "Tentacle config line 1: the file ends before </octopus-settings>",
            ),
            (
                "<octopus-settings>\n<setting key=\"a\">1</setting></octopus-settings>",
                "Tentacle config line 2: <setting> is not a <set> element: \
                 <octopus-settings> holds only <set key=\"…\">value</set>",
            ),
            (
                "<octopus-settings>\n  <set name=\"a\">1</set></octopus-settings>",
                "Tentacle config line 2: a <set> element has no key attribute",
            ),
            (
                "<octopus-settings><set key=\"a\">1</set></octopus-setting>",
                "Tentacle config line 1: not well-formed XML",
            ),
        ];
        for (text, message) in cases {
            let err = TentacleConfig::parse(text).unwrap_err();
            assert_eq!(err.to_string(), message, "{text:?}");
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let err = config_with(TRUSTED_OCTOPUS_SERVERS, "[{\"Thumbprint\":").trusted_servers();
        assert!(
            matches!(err, Err(ConfigError::TrustedServersJson { .. })),
            "{err:?}"
        );

        let config = config_with(PORT_NUMBER, "10933x");
        assert_eq!(bad_value(config.port()), (PORT_NUMBER, "10933x".into()));
        assert_eq!(
            config.port().unwrap_err().to_string(),
            "config key Tentacle.Services.PortNumber holds \"10933x\", \
             which is not a port number (1-65535): fix or remove it"
        );
        for port in ["0", "65536", "-1"] {
            bad_value(config_with(PORT_NUMBER, port).port());
        }

        let config = config_with(NO_LISTEN, "yes");
        assert_eq!(bad_value(config.no_listen()), (NO_LISTEN, "yes".into()));
        assert!(!config_with(NO_LISTEN, " FALSE ").no_listen().unwrap());

        bad_value(config_with(POLLING_CONNECTION_COUNT, "0").polling_connection_count());
        bad_value(config_with(LISTEN_IP, "localhost").listen_ip());
        bad_value(config_with(CERTIFICATE_THUMBPRINT, "ABC").thumbprint());
    }

    #[test]
    fn typed_settings_have_tentacles_defaults_and_round_trip() {
        let mut config = TentacleConfig::new();
        assert_eq!(config.port().unwrap(), 10933);
        assert!(!config.no_listen().unwrap());
        assert_eq!(config.listen_ip().unwrap(), None);
        assert_eq!(config.polling_connection_count().unwrap(), 1);
        assert!(config.trusted_servers().unwrap().is_empty());
        assert_eq!(config.thumbprint().unwrap(), None);
        assert!(config.certificate().unwrap().is_none());

        config.set_port(10934);
        config.set_listen_ip(Some("::1".parse().unwrap()));
        config.set_polling_connection_count(NonZeroUsize::new(5).unwrap());
        config.set_home(Path::new("/srv/tentacle"));
        config.set_application_directory(Path::new("/srv/apps"));
        let config = TentacleConfig::parse(&config.to_xml()).unwrap();
        assert_eq!(config.port().unwrap(), 10934);
        assert_eq!(config.listen_ip().unwrap(), Some("::1".parse().unwrap()));
        assert_eq!(config.polling_connection_count().unwrap(), 5);
        assert_eq!(config.home(), Some(PathBuf::from("/srv/tentacle")));
        assert_eq!(
            config.application_directory(),
            Some(PathBuf::from("/srv/apps"))
        );
        let bracketed = config_with(LISTEN_IP, "[::1]").listen_ip().unwrap();
        assert_eq!(bracketed, Some("::1".parse().unwrap()));
    }

    #[test]
    fn trusted_servers_are_written_as_tentacle_writes_them() {
        let tp = "77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6";
        let mut config = TentacleConfig::new();
        let first = TrustedOctopusServer::polling(tp, "https://a:10943", "poll://s/");
        config.add_or_update_trusted_server(first).unwrap();
        let second = TrustedOctopusServer::polling(tp, "https://b:10943", "poll://s/");
        config.add_or_update_trusted_server(second).unwrap();
        let again = TrustedOctopusServer::polling(tp, "https://A:10943", "poll://s/");
        config.add_or_update_trusted_server(again).unwrap();
        let servers = config.trusted_servers().unwrap();
        let addresses: Vec<_> = servers
            .iter()
            .filter_map(|s| s.address.as_deref())
            .collect();
        assert_eq!(addresses, ["https://b:10943", "https://A:10943"]);
        assert!(config.get(TRUSTED_OCTOPUS_SERVERS).unwrap().starts_with(
            r#"[{"Thumbprint":"77751F90F9EEDCEE0C0CD84F7A3CC726AD123FA6","CommunicationStyle":2,"Address":"https://b:10943","Squid":null,"SubscriptionId":"poll://s/"}"#
        ));
    }

    #[test]
    fn certificate_round_trips_through_the_file() {
        let identity = Identity::generate("tentacle", KeyType::EcdsaP256).unwrap();
        let mut config = TentacleConfig::new();
        config.set_certificate(&identity).unwrap();
        let text = config.to_xml();
        let thumbprint = identity.thumbprint().to_string();
        assert!(text.contains(&format!(
            "<set key=\"Tentacle.CertificateThumbprint\">{thumbprint}</set>"
        )));
        let config = TentacleConfig::parse(&text).unwrap();
        let back = config.certificate().unwrap().unwrap();
        assert_eq!(back.thumbprint(), identity.thumbprint());
        assert_eq!(config.thumbprint().unwrap(), Some(identity.thumbprint()));
        assert!(!format!("{config:?}").contains(config.get(CERTIFICATE).unwrap()));
    }

    #[test]
    fn certificate_errors_say_what_to_do() {
        let identity = Identity::generate("tentacle", KeyType::EcdsaP256).unwrap();
        let other = Identity::generate("other", KeyType::EcdsaP256).unwrap();
        let mut config = TentacleConfig::new();
        config.set_certificate(&identity).unwrap();
        config.set(CERTIFICATE_THUMBPRINT, Some(other.thumbprint().to_string()));
        let err = config.certificate().unwrap_err();
        assert!(
            matches!(err, ConfigError::CertificateMismatch { .. }),
            "{err:?}"
        );

        let err = config_with(CERTIFICATE, "not base64!")
            .certificate()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::CertificateBase64 { .. }),
            "{err:?}"
        );
        // What a real Tentacle stores: base64 of an encrypted blob.
        let err = config_with(CERTIFICATE, "q83vASNFZ4k=")
            .certificate()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Certificate { .. }), "{err:?}");
        assert!(err.to_string().contains("import-certificate --from-file"));
    }

    #[test]
    fn save_then_load_gives_the_same_config_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tentacle.config");
        let mut config = TentacleConfig::parse(DOCS_EXAMPLE).unwrap();
        config.save(&path).unwrap();
        config.set_port(10999);
        config.save(&path).unwrap();
        assert_eq!(TentacleConfig::load(&path).unwrap(), config);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tentacle.config"], "no temporary file is left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn save_into_a_missing_directory_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let path = missing.join("tentacle.config");
        let err = TentacleConfig::new().save(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains("tentacle.config"));
        assert!(!missing.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tentacle.config");
        let err = TentacleConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");

        std::fs::write(&path, "<octopus-settings>\n<x/></octopus-settings>").unwrap();
        let err = TentacleConfig::load(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("{} line 2", path.display())),
            "{message}"
        );

        std::fs::write(&path, b"\xff\xfe<\x00").unwrap();
        let err = TentacleConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::NotUtf8 { .. }), "{err:?}");
    }
}
