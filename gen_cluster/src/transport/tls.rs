//! Mutual TLS over TCP ([`Tls`]), with rustls and its `ring` provider, TLS 1.3 only. Every node
//! holds a certificate signed by the cluster's CA and checks its peer's against that CA, on both
//! sides of every connection. The certificate also binds the node's name: the handshake
//! (`dist::handshake`) refuses a peer whose certificate is not valid for the name it claims
//! ([`PeerCertificate::certifies`], the rules of a TLS client checking a server's host name,
//! wildcards included). The TLS handshake therefore checks only the chain and the dates: a
//! node dialing a seed address does not yet know the name it will find there.
//!
//! The cookie handshake still runs inside TLS: a certificate leaked from one cluster sharing the
//! CA does not open another whose cookie differs, and a cluster moves to TLS one setting at a
//! time. Files are read again by [`Tls::reload`] (the CLI calls it on SIGHUP and when a file
//! changes); connections already open keep the certificate they were opened with.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gen_cluster_proto::NodeName;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, version,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Connection, Side, Transport, tune};
use crate::lock;

/// Where a node's TLS files are: PEM text each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate (first), then any intermediates.
    pub cert: PathBuf,
    /// The node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster's CA certificate(s): peers must hold a certificate signed by one.
    pub ca: PathBuf,
}

/// TLS settings that cannot be used; the message says which file and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {path}: {source}")]
    Read {
        /// Which file: certificate, key or CA.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds nothing usable.
    #[error("the TLS {what} file {path} holds no PEM {what}: {reason}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The node's own certificate would be refused by its peers.
    #[error(
        "this node's certificate ({path}) would be refused by its peers: {reason}; it must be \
         current, issued by the cluster's CA (the CA file), and allow the serverAuth and \
         clientAuth uses"
    )]
    NotUnderCa {
        /// The certificate file.
        path: PathBuf,
        /// What the check said.
        reason: rustls::Error,
    },
    /// The node's own certificate does not name it.
    #[error(
        "this node's certificate ({path}) is not valid for its name {name}: put the node's \
         name among the certificate's DNS names (subject alternative names); with TLS a node's \
         name is a DNS name: lower-case letters, digits, '-' and '.'"
    )]
    NotNamed {
        /// The certificate file.
        path: PathBuf,
        /// The node's name.
        name: NodeName,
    },
    /// rustls refused the key or the CA.
    #[error("the TLS settings are refused: {0}")]
    Refused(rustls::Error),
}

/// Mutual TLS over TCP. Clones share the files read: a clone kept beside the node reloads them.
#[derive(Clone)]
pub struct Tls {
    shared: Arc<Shared>,
}

struct Shared {
    files: TlsFiles,
    name: NodeName,
    current: Mutex<Sides>,
}

/// The two sides built from one reading of the files.
#[derive(Clone)]
struct Sides {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.shared.files)
            .finish()
    }
}

impl Tls {
    /// Reads the files of the node `name` (its `NodeConfig::name`: peers check the name it
    /// claims against its certificate) and checks that its certificate is signed by the CA,
    /// current, and valid for `name`: a node that peers would refuse does not start.
    pub fn load(files: TlsFiles, name: NodeName) -> Result<Self, TlsError> {
        let sides = build(&files, &name)?;
        let shared = Shared {
            files,
            name,
            current: Mutex::new(sides),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Reads the files again; new connections use them, open ones keep theirs. On error the
    /// files in use stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let sides = build(&self.shared.files, &self.shared.name)?;
        *lock(&self.shared.current) = sides;
        Ok(())
    }

    /// The files this transport reads.
    pub fn files(&self) -> &TlsFiles {
        &self.shared.files
    }

    fn sides(&self) -> Sides {
        lock(&self.shared.current).clone()
    }
}

/// The certificate a peer proved it holds, signed by the cluster's CA.
#[derive(Clone, Debug)]
pub struct PeerCertificate(CertificateDer<'static>);

impl PeerCertificate {
    /// Whether the certificate is valid for the node name `name`: one of its DNS names (or IP
    /// addresses) matches it as a TLS client matches a server's host name. Only a name in the
    /// one form a DNS name has (lower case, no final dot) can match: `A` and `a.` are other
    /// nodes than `a`, though a host name match would take them for it.
    pub fn certifies(&self, name: &NodeName) -> bool {
        let text = name.as_str();
        if text.ends_with('.') || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return false;
        }
        // An address too: `::1` and `0::1` are one address, not one node name.
        if let Ok(address) = text.parse::<std::net::IpAddr>()
            && address.to_string() != text
        {
            return false;
        }
        let (Ok(parsed), Ok(subject)) = (
            ParsedCertificate::try_from(&self.0),
            ServerName::try_from(name.as_str()),
        ) else {
            return false;
        };
        rustls::client::verify_server_name(&parsed, &subject).is_ok()
    }
}

impl Transport for Tls {
    type Listener = TcpListener;
    type Stream = TcpStream;

    async fn bind(&self, addr: &str) -> io::Result<(TcpListener, String)> {
        super::Tcp.bind(addr).await
    }

    async fn accept(&self, listener: &mut TcpListener) -> io::Result<(TcpStream, String)> {
        super::Tcp.accept(listener).await
    }

    async fn open(&self, stream: TcpStream, side: Side) -> io::Result<Connection> {
        tune(&stream)?;
        let Sides {
            acceptor,
            connector,
        } = self.sides();
        let stream = match side {
            Side::Accepted => acceptor
                .accept(stream)
                .await
                .map(tokio_rustls::TlsStream::from),
            Side::Dialed => connector
                .connect(unchecked_server_name(), stream)
                .await
                .map(tokio_rustls::TlsStream::from),
        };
        connection(stream.map_err(explain_handshake)?)
    }

    async fn resolve(&self, addr: &str) -> io::Result<Vec<String>> {
        super::Tcp.resolve(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        super::Tcp.connect(addr).await
    }
}

/// The server name a dialer gives rustls: not checked (the handshake checks the peer's claimed
/// node name instead) and not sent (an address, and SNI is off).
fn unchecked_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// The connection over `stream`, with the certificate the peer proved (both sides require
/// one: a connection without is refused, never taken as unauthenticated).
fn connection(stream: tokio_rustls::TlsStream<TcpStream>) -> io::Result<Connection> {
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(|cert| PeerCertificate(cert.clone().into_owned()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS: the peer presented no certificate",
            )
        })?;
    let (read, write) = tokio::io::split(stream);
    Ok(Connection {
        read: Box::new(Explained(read)),
        write: Box::new(Explained(write)),
        certificate: Some(certificate),
    })
}

/// A half of a TLS stream whose errors say what they most likely mean ([`explain`]): in TLS 1.3
/// a peer refuses the dialer's certificate after the dialer's side of the TLS handshake is done,
/// so the refusal comes as an error of the first read.
struct Explained<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Explained<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0)
            .poll_read(cx, buf)
            .map_err(explain)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Explained<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0)
            .poll_write(cx, buf)
            .map_err(explain)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0)
            .poll_flush(cx)
            .map_err(explain)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0)
            .poll_shutdown(cx)
            .map_err(explain)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0)
            .poll_write_vectored(cx, bufs)
            .map_err(explain)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// A failed TLS handshake, told as what it most likely means.
fn explain_handshake(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        return io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "TLS: the peer closed the connection during the TLS handshake: it does not speak \
             TLS (configure tls on every node of the cluster, or on none), or it refused this \
             node (see its log)",
        );
    }
    explain(error)
}

/// A TLS error, told as what it most likely means.
fn explain(error: io::Error) -> io::Error {
    let hint = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_)) => {
            "the peer does not speak TLS: configure tls on every node of the cluster, or on none"
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "the peer's certificate is not issued by this cluster's CA (--tls-ca)",
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        )) => "the peer's certificate is out of its dates: renew it (or check the clocks)",
        Some(rustls::Error::InvalidCertificate(_)) => {
            "the peer's certificate is refused: it must come from this cluster's CA, be current, \
             and allow the serverAuth and clientAuth uses"
        }
        Some(rustls::Error::AlertReceived(_)) => {
            "the peer refused this node's certificate, or does not speak TLS 1.3 \
             (see the peer's log)"
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            "the peer presented no certificate: configure tls on every node of the cluster"
        }
        _ => return error,
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}: {hint}"))
}

fn build(files: &TlsFiles, name: &NodeName) -> Result<Sides, TlsError> {
    let chain = read_certificates("certificate", &files.cert)?;
    let key = read_key(&files.key)?;
    let mut roots = RootCertStore::empty();
    for ca in read_certificates("CA", &files.ca)? {
        roots.add(ca).map_err(|error| TlsError::Pem {
            what: "CA",
            path: files.ca.clone(),
            reason: error.to_string(),
        })?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PeerVerifier {
        roots: Arc::clone(&roots),
        algorithms: provider.signature_verification_algorithms,
    };
    let clients = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|error| TlsError::Refused(rustls::Error::General(error.to_string())))?;
    check_own(&verifier, clients.as_ref(), &chain, files, name)?;

    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&version::TLS13])
        .map_err(TlsError::Refused)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(TlsError::Refused)?;
    // Links last: no resumption, so every connection proves a current certificate.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13])
        .map_err(TlsError::Refused)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::Refused)?;
    client.resumption = rustls::client::Resumption::disabled();
    client.enable_sni = false;

    Ok(Sides {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// Refuses to start with a certificate that peers would refuse, as a server (`verifier`) or as
/// a client (`clients`).
fn check_own(
    verifier: &PeerVerifier,
    clients: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
    files: &TlsFiles,
    name: &NodeName,
) -> Result<(), TlsError> {
    let not_under_ca = |reason| TlsError::NotUnderCa {
        path: files.cert.clone(),
        reason,
    };
    let (own, intermediates) = chain
        .split_first()
        .ok_or_else(|| not_under_ca(rustls::Error::NoCertificatesPresented))?;
    let now = UnixTime::now();
    verifier
        .verify_chain(own, intermediates, now)
        .map_err(not_under_ca)?;
    clients
        .verify_client_cert(own, intermediates, now)
        .map_err(not_under_ca)?;
    if !PeerCertificate(own.clone()).certifies(name) {
        return Err(TlsError::NotNamed {
            path: files.cert.clone(),
            name: name.clone(),
        });
    }
    Ok(())
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let text = read_file(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_file("key", path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| TlsError::Pem {
        what: "key",
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// A dialer's check of the node it reached: a chain to the cluster's CA, current, for a TLS
/// server; the name is left to the handshake (see the module's docs).
#[derive(Debug)]
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_chain(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
