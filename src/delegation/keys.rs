//! The server's own AWS credentials, which sign the STS calls of vending
//! and the requests of remote signing: static keys, or the AWS chain as
//! `object_store` resolves it for the warehouse (environment, web identity
//! token as on EKS, container credentials, instance metadata).
//!
//! The chain's provider caches temporary credentials and renews them
//! before they expire; asking it may call STS or the instance metadata
//! service, so it runs on an `IoThread` (a tokio runtime of its own), and
//! a shard only awaits the answer, within [`CHAIN_TIMEOUT`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AwsCredentialProvider;

use super::sts::ServerKey;
use crate::fileio::IoThread;
use crate::metrics::DELEGATION;

/// How long resolving the chain may take (an STS exchange included).
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub enum ServerKeys {
    Static(Arc<ServerKey>),
    Chain { provider: AwsCredentialProvider, io: IoThread },
}

impl ServerKeys {
    /// The keys to sign with now. The error is safe for a client: the
    /// chain's own error (endpoints, role names) goes to the log only.
    pub async fn current(&self) -> Result<Arc<ServerKey>, &'static str> {
        let (provider, io) = match self {
            ServerKeys::Static(key) => return Ok(key.clone()),
            ServerKeys::Chain { provider, io } => (provider.clone(), io),
        };
        let got =
            io.run(CHAIN_TIMEOUT, async move { provider.get_credential().await.map_err(std::io::Error::other) }).await;
        match got {
            Ok(c) => Ok(Arc::new(ServerKey {
                access_key_id: c.key_id.clone(),
                secret_access_key: c.secret_key.clone(),
                session_token: c.token.clone(),
            })),
            Err(e) => {
                DELEGATION.server_credentials_failed.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "cannot resolve the server's AWS credentials from the chain");
                Err("the server's own storage credentials are unavailable")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use object_store::aws::AwsCredential;
    use object_store::{CredentialProvider, StaticCredentialProvider};

    use super::*;

    /// A chain that finds nothing, naming a secret in its error.
    #[derive(Debug)]
    struct Failing;

    impl CredentialProvider for Failing {
        type Credential = AwsCredential;
        // `#[async_trait]`'s desugared form: the crate is object_store's dependency, not ours.
        fn get_credential<'a, 'b>(
            &'a self,
        ) -> Pin<Box<dyn Future<Output = object_store::Result<Arc<AwsCredential>>> + Send + 'b>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async {
                Err(object_store::Error::Generic { store: "S3", source: "role arn:aws:iam::1:role/secret".into() })
            })
        }
    }

    #[test]
    fn the_chain_is_asked_on_the_io_thread_and_its_errors_stay_in_the_log() {
        let io = IoThread::start("bingsan-test-keys").unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let found = AwsCredential { key_id: "ASIA1".into(), secret_key: "s".into(), token: Some("t".into()) };
                let chain =
                    ServerKeys::Chain { provider: Arc::new(StaticCredentialProvider::new(found)), io: io.clone() };
                let key = chain.current().await.unwrap();
                assert_eq!((key.access_key_id.as_str(), key.session_token.as_deref()), ("ASIA1", Some("t")));

                let before = DELEGATION.server_credentials_failed.load(Relaxed);
                let failing = ServerKeys::Chain { provider: Arc::new(Failing), io };
                let why = failing.current().await.unwrap_err();
                assert!(!why.contains("secret") && !why.contains("arn:"), "{why}");
                assert!(DELEGATION.server_credentials_failed.load(Relaxed) > before);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
