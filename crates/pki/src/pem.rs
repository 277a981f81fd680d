//! Identities as PEM files: `<name>.crt.pem` and `<name>.key.pem`.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::{Error, Identity, Result};

/// Paths of the two PEM files of identity `name` in `dir`.
pub fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt.pem")),
        dir.join(format!("{name}.key.pem")),
    )
}

/// The certificate as PEM text.
pub fn cert_pem(identity: &Identity) -> String {
    ::pem::encode(&::pem::Pem::new("CERTIFICATE", identity.cert().to_vec()))
}

/// Writes `<name>.crt.pem` and `<name>.key.pem` into `dir`, creating it.
///
/// Returns the certificate path. The key file is written readable by its owner only.
pub fn save(identity: &Identity, dir: &Path, name: &str) -> Result<PathBuf> {
    let (cert_path, key_path) = paths(dir, name);
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_owned(),
        source,
    })?;
    let key_pem = ::pem::encode(&::pem::Pem::new(
        "PRIVATE KEY",
        identity.private_key_pkcs8().to_vec(),
    ));
    write(&cert_path, cert_pem(identity).as_bytes(), 0o644)?;
    write(&key_path, key_pem.as_bytes(), 0o600)?;
    Ok(cert_path)
}

/// Reads the identity `name` saved by [`save`] from `dir`.
pub fn load(dir: &Path, name: &str) -> Result<Identity> {
    let (cert_path, key_path) = paths(dir, name);
    load_files(&cert_path, &key_path)
}

/// Reads an identity from a certificate PEM file and a PKCS#8 key PEM file.
pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Identity> {
    let cert_text = read(cert_path)?;
    let key_text = read(key_path)?;
    let cert = CertificateDer::from_pem_slice(&cert_text).map_err(|source| Error::Pem {
        path: cert_path.to_owned(),
        what: "certificate",
        source,
    })?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(&key_text).map_err(|source| Error::Pem {
        path: key_path.to_owned(),
        what: "PKCS#8 private key",
        source,
    })?;
    Ok(Identity::from_der(cert, key))
}

/// Reads a lone certificate PEM file (a peer's, to pin it).
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>> {
    let text = read(path)?;
    CertificateDer::from_pem_slice(&text).map_err(|source| Error::Pem {
        path: path.to_owned(),
        what: "certificate",
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// flushed, then renamed over it: the file ends up with `mode` whatever was
/// there before (`certs --force` over a world-readable key), a symlink at `path`
/// is replaced rather than followed, a reader never sees half a file, and a
/// failure leaves the old file as it was and no temporary file behind.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".octopoll-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable; the file is already complete either way.
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_file(path, bytes, mode).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;

    #[cfg(unix)]
    #[test]
    fn a_key_is_written_owner_only_over_a_readable_file_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate("node", KeyType::EcdsaP256).unwrap();
        let key = dir.path().join("node.key.pem");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&identity, dir.path(), "node").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.path().join("node.crt.pem")), 0o644);
        // A symlink planted where the key goes is replaced, its target untouched.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep me").unwrap();
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
        save(&identity, dir.path(), "node").unwrap();
        assert!(!std::fs::symlink_metadata(&key)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep me");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(
            load(dir.path(), "node").unwrap().thumbprint(),
            identity.thumbprint()
        );
    }

    #[test]
    fn save_then_load_keeps_thumbprint_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate("node", KeyType::EcdsaP256).unwrap();
        save(&id, dir.path(), "node").unwrap();
        let back = load(dir.path(), "node").unwrap();
        assert_eq!(back.thumbprint(), id.thumbprint());
        assert_eq!(back.private_key_pkcs8(), id.private_key_pkcs8());
    }

    #[test]
    fn missing_and_garbage_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), "nope").unwrap_err();
        assert!(err.to_string().contains("nope.crt.pem"), "{err}");
        std::fs::write(dir.path().join("bad.crt.pem"), "hello").unwrap();
        std::fs::write(dir.path().join("bad.key.pem"), "hello").unwrap();
        let err = load(dir.path(), "bad").unwrap_err();
        assert!(
            err.to_string()
                .contains("bad.crt.pem holds no PEM certificate"),
            "{err}"
        );
    }
}
