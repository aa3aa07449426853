//! TLS set-up: rustls (ring provider), TLS 1.2 and 1.3, one acceptor shared
//! by the shards; each shard runs the handshakes of its own connections.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the acceptor, with a message naming the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read TLS certificate {cert:?}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in TLS certificate {cert:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {cert:?}"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read TLS private key {key:?}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate {cert:?} and key do not fit together: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
