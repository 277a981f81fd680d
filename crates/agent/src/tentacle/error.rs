//! Errors reading and writing a `Tentacle.config`.

use std::fmt;
use std::path::{Path, PathBuf};

use octopoll_pki::Thumbprint;

/// Where in a `Tentacle.config` a problem is: the file, once known, and the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file; `None` when parsing text that came from elsewhere.
    pub path: Option<PathBuf>,
    /// The line, from 1.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} line {}", path.display(), self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// A well-formed XML document that is not a Tentacle config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Structure {
    /// No root element at all.
    #[error("there is no <octopus-settings> element")]
    NoRoot,
    /// The root element has another name.
    #[error("the root element is <{name}>, not <octopus-settings>")]
    WrongRoot {
        /// The root element's name.
        name: String,
    },
    /// A child of the root other than `<set>`.
    #[error(
        "<{name}> is not a <set> element: <octopus-settings> holds only <set key=\"…\">value</set>"
    )]
    NotSet {
        /// The element's name.
        name: String,
    },
    /// A `<set>` without its `key` attribute.
    #[error("a <set> element has no key attribute")]
    MissingKey,
    /// The same key twice.
    #[error("key {key} is set twice (keys ignore case): remove one")]
    DuplicateKey {
        /// The second spelling seen.
        key: String,
    },
    /// An element inside a value.
    #[error("the value of {key} holds an element <{name}>: values are text (write < as &lt;)")]
    NestedElement {
        /// The setting.
        key: String,
        /// The element's name.
        name: String,
    },
    /// Text directly inside `<octopus-settings>` or outside it.
    #[error("text outside a <set> element")]
    StrayText,
    /// An entity other than the five XML ones or a character reference.
    #[error("unknown entity &{name};")]
    UnknownEntity {
        /// The entity's name.
        name: String,
    },
    /// The file ends inside `<octopus-settings>`.
    #[error("the file ends before </octopus-settings>")]
    Unclosed,
    /// An element after `</octopus-settings>`.
    #[error("an element follows </octopus-settings>")]
    TrailingElement,
}

/// One entry of `Tentacle.Communication.TrustedOctopusServers` that is not a
/// trusted server. Entries count from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustedServerProblem {
    /// The value is JSON but not a list.
    #[error("is not a JSON list ([…]) of servers")]
    NotAList,
    /// An entry is not an object.
    #[error("entry {index} is not a JSON object")]
    NotAnObject {
        /// Which entry.
        index: usize,
    },
    /// An entry's thumbprint is missing or blank.
    #[error("entry {index} has no Thumbprint")]
    NoThumbprint {
        /// Which entry.
        index: usize,
    },
    /// A field that should be a string is something else.
    #[error("entry {index}: {field} is {value}, not a string or null")]
    NotText {
        /// Which entry.
        index: usize,
        /// The JSON field.
        field: &'static str,
        /// The JSON found.
        value: String,
    },
    /// A communication style other than the three octopoll knows.
    #[error(
        "entry {index}: CommunicationStyle {value} is not None (0), TentaclePassive (1, listening) or TentacleActive (2, polling)"
    )]
    CommunicationStyle {
        /// Which entry.
        index: usize,
        /// The JSON found.
        value: String,
    },
}

/// quick-xml's reason a text is not well-formed XML.
///
/// A wrapper so that the reason prints once: quick-xml's own error repeats its
/// cause in both its message and its source.
#[derive(Debug)]
pub struct XmlError(quick_xml::Error);

impl XmlError {
    /// quick-xml's error.
    pub fn inner(&self) -> &quick_xml::Error {
        &self.0
    }
}

impl From<quick_xml::Error> for XmlError {
    fn from(error: quick_xml::Error) -> Self {
        Self(error)
    }
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for XmlError {}

/// What went wrong reading, writing or interpreting a `Tentacle.config`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read the Tentacle config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 (a UTF-16 file, say).
    #[error("the Tentacle config {path} is not UTF-8 text: save it as UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be written; the old file, if any, is untouched.
    #[error("could not write the Tentacle config {path}; the previous file is unchanged")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed XML.
    #[error("Tentacle config {at}: not well-formed XML")]
    Xml {
        /// Where.
        at: Location,
        /// quick-xml's reason.
        #[source]
        source: XmlError,
    },
    /// Well-formed XML, but not an `<octopus-settings>` document.
    #[error("Tentacle config {at}: {problem}")]
    Structure {
        /// Where.
        at: Location,
        /// What is wrong.
        problem: Structure,
    },
    /// A setting holds a value its reader cannot use.
    #[error("config key {key} holds {value:?}, which is not {expected}: fix or remove it")]
    BadValue {
        /// The setting.
        key: &'static str,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// `Tentacle.Communication.TrustedOctopusServers` is not JSON.
    #[error("config key Tentacle.Communication.TrustedOctopusServers is not valid JSON")]
    TrustedServersJson {
        /// serde_json's reason, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// `Tentacle.Communication.TrustedOctopusServers` is JSON but not a server list.
    #[error("config key Tentacle.Communication.TrustedOctopusServers {problem}")]
    TrustedServers {
        /// What is wrong.
        problem: TrustedServerProblem,
    },
    /// `Tentacle.Certificate` is not base64.
    #[error("config key Tentacle.Certificate is not base64: set the certificate again")]
    CertificateBase64 {
        /// The decoder's reason.
        #[source]
        source: base64::DecodeError,
    },
    /// `Tentacle.Certificate` is base64 but not a password-less PFX.
    #[error(
        "config key Tentacle.Certificate does not hold a password-less PFX (a real Tentacle's config encrypts it with the machine key): import the certificate with import-certificate --from-file"
    )]
    Certificate {
        /// Why the PFX could not be read.
        #[source]
        source: octopoll_pki::Error,
    },
    /// The stored thumbprint is not the stored certificate's.
    #[error(
        "config key Tentacle.CertificateThumbprint is {stored} but Tentacle.Certificate holds {actual}: set the certificate again"
    )]
    CertificateMismatch {
        /// `Tentacle.CertificateThumbprint`.
        stored: Thumbprint,
        /// The certificate's thumbprint.
        actual: Thumbprint,
    },
    /// The certificate could not be made into a PFX.
    #[error("could not store certificate {thumbprint} in the Tentacle config")]
    CertificateExport {
        /// The certificate.
        thumbprint: Thumbprint,
        /// Why.
        #[source]
        source: octopoll_pki::Error,
    },
}

impl ConfigError {
    /// The same error, naming `path` as the file it came from.
    pub(super) fn in_file(mut self, path: &Path) -> Self {
        if let Self::Xml { at, .. } | Self::Structure { at, .. } = &mut self {
            at.path = Some(path.to_owned());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_the_file_once_known() {
        let err = ConfigError::Structure {
            at: Location {
                path: None,
                line: 3,
            },
            problem: Structure::MissingKey,
        };
        assert_eq!(
            err.to_string(),
            "Tentacle config line 3: a <set> element has no key attribute"
        );
        let err = err.in_file(Path::new("/etc/octopus/tentacle.config"));
        assert_eq!(
            err.to_string(),
            "Tentacle config /etc/octopus/tentacle.config line 3: a <set> element has no key attribute"
        );
    }
}
