//! TLS on the TCP listener (spec §0.3): loading `[tcp.tls]`'s certificate
//! chain and key into a rustls acceptor, once, at start-up.
//!
//! When TLS is on, the listener's address speaks TLS only, as Iggy's does;
//! the frames inside are the same, and framing detection runs on the first
//! decrypted bytes. The handshake itself runs in [`crate::connection`],
//! under the login timeout.
//!
//! Everything that can be wrong with the files is found here, before the
//! server binds, and named with the file it is about: a server that starts
//! has a certificate and key that belong together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TcpTlsConfig;

/// Why TLS could not be set up. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[tcp.tls] enabled = true needs {key} (or LATCHKEY_TCP_TLS_{env})")]
    Missing { key: &'static str, env: &'static str },
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("TLS {what} file {path} is not valid PEM: {reason}")]
    Pem { what: &'static str, path: PathBuf, reason: String },
    #[error("TLS certificate file {path} holds no CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error("TLS key file {path} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM block)")]
    NoKey { path: PathBuf },
    #[error("TLS key file {key_path} does not fit certificate file {cert_path}: {reason}")]
    Mismatch { cert_path: PathBuf, key_path: PathBuf, reason: String },
}

/// The acceptor for `config`, or `None` when TLS is off.
pub fn acceptor(config: &TcpTlsConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    if !config.enabled {
        return Ok(None);
    }
    let cert_path = config
        .cert_file
        .as_deref()
        .ok_or(TlsError::Missing { key: "[tcp.tls] cert_file", env: "CERT_FILE" })?;
    let key_path =
        config.key_file.as_deref().ok_or(TlsError::Missing { key: "[tcp.tls] key_file", env: "KEY_FILE" })?;
    let chain = certificate_chain(cert_path)?;
    let key = private_key(key_path)?;
    // An explicit provider, not the process default: the build enables ring
    // only, and naming it keeps that true if a dependency ever adds another.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| mismatch(cert_path, key_path, error))?
        .with_no_client_auth()
        // Checks that the key is usable and that its public half is the
        // end-entity certificate's.
        .with_single_cert(chain, key)
        .map_err(|error| mismatch(cert_path, key_path, error))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server_config))))
}

fn mismatch(cert_path: &Path, key_path: &Path, error: rustls::Error) -> TlsError {
    TlsError::Mismatch {
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
        reason: error.to_string(),
    }
}

/// Every CERTIFICATE block in `path`, end-entity first (a chain may follow).
fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(path, "certificate", error))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(chain)
}

/// The first private key block in `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        other => pem_error(path, "key", other),
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn pem_error(path: &Path, what: &'static str, error: pem::Error) -> TlsError {
    TlsError::Pem { what, path: path.to_owned(), reason: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost and its key, as PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files { dir: tempfile::tempdir().unwrap() }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    /// Why `tls` is refused (the acceptor has no `Debug`, so no `unwrap_err`).
    fn refusal(tls: &TcpTlsConfig) -> TlsError {
        match acceptor(tls) {
            Ok(_) => panic!("accepted {tls:?}"),
            Err(error) => error,
        }
    }

    fn config(cert_file: Option<PathBuf>, key_file: Option<PathBuf>) -> TcpTlsConfig {
        TcpTlsConfig { enabled: true, cert_file, key_file }
    }

    #[test]
    fn off_builds_nothing_and_on_accepts_a_matching_pair() {
        assert!(acceptor(&TcpTlsConfig::default()).unwrap().is_none());
        let files = Files::new();
        let (cert, key) = self_signed();
        let tls = config(Some(files.write("cert.pem", &cert)), Some(files.write("key.pem", &key)));
        assert!(acceptor(&tls).unwrap().is_some());
        // A chain: the end-entity certificate first, then another one.
        let (other_cert, _) = self_signed();
        let chain = files.write("chain.pem", &format!("{cert}{other_cert}"));
        assert!(acceptor(&config(Some(chain), tls.key_file.clone())).unwrap().is_some());
    }

    #[test]
    fn every_bad_file_is_named() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert_path = files.write("cert.pem", &cert);
        let key_path = files.write("key.pem", &key);

        let error = refusal(&config(None, Some(key_path.clone())));
        assert!(
            matches!(error, TlsError::Missing { .. }) && error.to_string().contains("cert_file"),
            "{error}"
        );
        let error = refusal(&config(Some(cert_path.clone()), None));
        assert!(error.to_string().contains("LATCHKEY_TCP_TLS_KEY_FILE"), "{error}");

        let absent = files.dir.path().join("absent.pem");
        let error = refusal(&config(Some(absent.clone()), Some(key_path.clone())));
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(error.to_string().contains(&*absent.to_string_lossy()), "{error}");

        let garbage = files.write("garbage.pem", "not pem at all\n");
        let error = refusal(&config(Some(garbage.clone()), Some(key_path.clone())));
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        let error = refusal(&config(Some(cert_path.clone()), Some(garbage.clone())));
        assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
        assert!(error.to_string().contains(&*garbage.to_string_lossy()), "{error}");

        // A block whose base64 is broken.
        let broken =
            files.write("broken.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let error = refusal(&config(Some(broken), Some(key_path.clone())));
        assert!(matches!(error, TlsError::Pem { .. }), "{error}");

        // The certificate and key swapped: no key in the key file.
        let error = refusal(&config(Some(key_path.clone()), Some(cert_path.clone())));
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");

        let other_key_path = files.write("other-key.pem", &other_key);
        let error = refusal(&config(Some(cert_path.clone()), Some(other_key_path.clone())));
        assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
        let text = error.to_string();
        assert!(
            text.contains(&*other_key_path.to_string_lossy()) && text.contains(&*cert_path.to_string_lossy())
        );
    }
}
