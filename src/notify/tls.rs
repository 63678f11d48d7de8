//! The TLS client settings of notifications: the system's roots (the distribution's bundle, as
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` or the usual paths name it) and the certificates of
//! `notify.ca_file`, for a server whose certificate a private CA signed.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    // A system without a bundle (a minimal container) still works with a ca_file.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| {
                format!(
                    "cannot read the certificates of notify.ca_file {}: {e}",
                    path.display()
                )
            })?;
        if certificates.is_empty() {
            return Err(format!(
                "notify.ca_file {} holds no certificate",
                path.display()
            ));
        }
        let (_, refused) = roots.add_parsable_certificates(certificates);
        if refused > 0 {
            return Err(format!(
                "notify.ca_file {}: {refused} certificate(s) cannot be used as roots",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err("no trusted certificates: this system has no CA bundle; install ca-certificates or give notify.ca_file".into());
    }
    // Deprecated for its lack of post-quantum key exchange, which a notification's content does
    // not call for; ring is the crypto the binary already has (russh), where aws-lc-rs would
    // add a second, C-built one to the static binary.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
