//! TLS on the server's listener (spec/security.md): a certificate chain and key from PEM
//! files, read again when either file changes (checked at most once a second, as connections
//! arrive), and optionally client certificates required and checked against a CA bundle.
//!
//! Handshakes run beside the accept loop, each with a deadline, so a slow or silent client
//! never holds up the next connection; the server sees only finished TLS streams.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use crate::tasks::Tasks;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the files are looked at for a change.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Handshakes under way at once; past it no connection is accepted until one ends, so
/// silent connections cannot use up the process's file descriptors.
const MAX_HANDSHAKES: usize = 512;
/// Finished handshakes waiting for the server to take them.
const FINISHED_QUEUE: usize = 64;
/// Connections a TLS listener holds besides those the server serves (its handshakes under
/// way and those waiting to be taken), for the open-file budget.
pub const MAX_PENDING_CONNECTIONS: u64 = (MAX_HANDSHAKES + FINISHED_QUEUE) as u64;

/// Where the server's certificate, key and (optionally) client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The certificate chain, PEM (the server's certificate first).
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS #8, PKCS #1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates, PEM: when given, every client must present a certificate they
    /// signed.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsOptions {
    fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.cert_file.as_path(), self.key_file.as_path()];
        files.extend(self.client_ca_file.as_deref());
        files
    }

    /// Reads the files into a server configuration.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert_file)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", self.cert_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{} holds no certificate (PEM `CERTIFICATE` blocks)",
                self.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key_file)?)
            .map_err(|e| format!("{}: no private key: {e}", self.key_file.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(file) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read(file)?) {
                    let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("{}: {e}", file.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The configuration in force, taken again from the files when they change.
struct Reloading {
    options: TlsOptions,
    config: Arc<rustls::ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

impl Reloading {
    fn current(&mut self) -> Arc<rustls::ServerConfig> {
        if self.checked.elapsed() >= CHECK_INTERVAL {
            self.checked = Instant::now();
            let stamps = self.options.stamps();
            if stamps != self.stamps {
                match self.options.load() {
                    Ok(config) => {
                        tracing::info!("TLS certificate files changed: reloaded");
                        self.config = config;
                        self.stamps = stamps;
                    }
                    // Not taken as seen: a file caught half-written is read again at the
                    // next check, even when its last write left the same time stamp.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate files changed but do not load; keeping the ones in use"
                    ),
                }
            }
        }
        Arc::clone(&self.config)
    }
}

/// A listener that hands out TLS streams whose handshake is done.
pub struct TlsListener {
    done: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _tasks: Tasks,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `options` on `tcp`; the files must load now.
    pub fn new(tcp: TcpListener, options: TlsOptions) -> Result<TlsListener, String> {
        let config = options.load()?;
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        let reloading = Reloading {
            stamps: options.stamps(),
            options,
            config,
            checked: Instant::now(),
        };
        let (tx, done) = mpsc::channel(FINISHED_QUEUE);
        let mut tasks = Tasks::new("tls listener");
        tasks.spawn(accept_loop(tcp, reloading, tx));
        Ok(TlsListener {
            done,
            local,
            _tasks: tasks,
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    mut reloading: Reloading,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let acceptor = TlsAcceptor::from(reloading.current());
                    handshakes.spawn(async move {
                        let _slot = slot;
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((tls, peer)),
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(finished) = handshakes.join_next() => {
                if let Ok(Some(connection)) = finished
                    && done.send(connection).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.done.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TLS client configuration for the servers sources and sinks connect to (an MQTT broker):
/// trusting the PEM CA certificates `ca` — or, without them, the system's bundle
/// (`SSL_CERT_FILE`, else `/etc/ssl/certs/ca-certificates.crt`) — and presenting `client`
/// (PEM certificate chain, PEM key) when given.
pub fn client_config(
    ca: Option<&[u8]>,
    client: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let bundle;
    let ca = match ca {
        Some(ca) => ca,
        None => {
            let path = std::env::var_os("SSL_CERT_FILE").map_or_else(
                || PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
                PathBuf::from,
            );
            bundle = std::fs::read(&path).map_err(|e| {
                format!(
                    "no CA certificate given and the system's ({}) cannot be read: {e}",
                    path.display()
                )
            })?;
            &bundle
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(ca)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CA certificates: {e}"))?;
    // A system bundle may hold a certificate rustls cannot use; that one is passed over.
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err("the CA certificates hold no PEM `CERTIFICATE` block".to_owned());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key: {e}"))?
        }
    };
    Ok(config)
}

/// [`client_config`] from a source's or sink's `tls` settings (secrets read now).
pub fn client_config_of(
    tls: Option<&switchyard_core::streams::ClientTls>,
) -> Result<rustls::ClientConfig, String> {
    let read = |field: &str, v: Option<&switchyard_core::sources::SecretValue>| {
        v.map(|v| v.resolve().map_err(|e| format!("tls.{field}: {e}")))
            .transpose()
    };
    let ca = read("caCert", tls.and_then(|t| t.ca_cert.as_ref()))?;
    let cert = read("cert", tls.and_then(|t| t.cert.as_ref()))?;
    let key = read("key", tls.and_then(|t| t.key.as_ref()))?;
    let client = cert
        .as_deref()
        .zip(key.as_deref())
        .map(|(c, k)| (c.as_bytes(), k.as_bytes()));
    client_config(ca.as_deref().map(str::as_bytes), client).map_err(|e| format!("tls: {e}"))
}
