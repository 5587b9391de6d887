//! Mutual TLS between nodes, with certificates made here (rcgen): a cluster of three runs the
//! dictionary over TLS; peers with an expired certificate, one from another CA, one that does not
//! name them, and plaintext peers are refused, each side saying why; every node's certificate
//! (and the CA) is rotated while the cluster runs, without a link dropping.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{HANG, config, connect, one_group, scratch_dir};
use gen_cluster::services::dict::{Dict, Read, ReadReply, Write};
use gen_cluster::{
    ConnectError, Leader, LeaderConfig, Node, NodeEvent, NodeName, Tls, TlsError, TlsFiles,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration as TimeSpan, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate authority that writes the files of the certificates it issues.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, label: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {label}"));
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let dir = dir.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), &pem).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
            dir,
        }
    }

    /// Files for a node whose certificate names `names`, valid from `from` to `until` days
    /// from now, trusting this CA.
    fn issue_for(&self, file: &str, names: &[&str], from: i64, until: i64) -> TlsFiles {
        let uses = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue_with(file, names, from, until, &uses)
    }

    /// Files for a certificate allowing only the extended key uses `uses`.
    fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        from: i64,
        until: i64,
        uses: &[ExtendedKeyUsagePurpose],
    ) -> TlsFiles {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = uses.to_vec();
        let now = OffsetDateTime::now_utc();
        params.not_before = now + TimeSpan::days(from);
        params.not_after = now + TimeSpan::days(until);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            ca: self.dir.join("ca.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// Files for the node `name`, current for a year.
    fn issue(&self, name: &str) -> TlsFiles {
        self.issue_for(name, &[name], -1, 365)
    }
}

fn name(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}

async fn tls_node(name_: &str, files: TlsFiles) -> Node {
    let tls = Tls::load(files, name(name_)).unwrap();
    Node::start_with(config(name_), tls).await.unwrap()
}

/// The error of `from` dialing `to`, with its causes.
async fn refused(from: &Node, to: &Node) -> String {
    let error = from.connect(to.listen_addr()).await.unwrap_err();
    with_causes(&error)
}

fn with_causes(error: &ConnectError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[tokio::test]
async fn a_tls_cluster_of_three_runs_the_dictionary() {
    let dir = scratch_dir("tls-cluster");
    let ca = Ca::new(&dir, "ca");
    let mut nodes = Vec::new();
    for n in ["a", "b", "c"] {
        nodes.push(tls_node(n, ca.issue(n)).await);
    }
    connect(&nodes[0], &nodes[1]).await;
    connect(&nodes[0], &nodes[2]).await;
    one_group(&nodes.iter().collect::<Vec<_>>()).await;
    let candidates: Vec<NodeName> = ["a", "b", "c"].map(name).to_vec();
    let mut dicts = Vec::new();
    for node in &nodes {
        let config = LeaderConfig::new("dict", candidates.clone());
        dicts.push(Leader::start(node, config, Dict::default()).await.unwrap());
    }
    dicts[2]
        .leader_call(Write::Put("color".into(), "blue".into()).into(), HANG)
        .await
        .unwrap();
    for dict in &dicts {
        let value = async {
            loop {
                match dict.call(Read::Get("color".into()), HANG).await.unwrap() {
                    ReadReply::Value(Some(value)) => return value,
                    _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
            }
        };
        assert_eq!(tokio::time::timeout(HANG, value).await.unwrap(), "blue");
    }
}

#[tokio::test]
async fn a_node_does_not_start_with_a_certificate_its_peers_would_refuse() {
    let dir = scratch_dir("tls-own");
    let ca = Ca::new(&dir, "ca");
    let other = Ca::new(&dir, "other");
    let expired = ca.issue_for("expired", &["a"], -30, -1);
    let error = Tls::load(expired, name("a")).unwrap_err();
    assert!(matches!(error, TlsError::NotUnderCa { .. }), "{error}");
    assert!(error.to_string().contains("expired"), "{error}");

    let mut foreign = other.issue("a");
    foreign.ca = ca.dir.join("ca.pem");
    let error = Tls::load(foreign, name("a")).unwrap_err();
    assert!(matches!(error, TlsError::NotUnderCa { .. }), "{error}");

    let error = Tls::load(ca.issue("b"), name("a")).unwrap_err();
    assert!(matches!(error, TlsError::NotNamed { .. }), "{error}");

    // Names a host name match would take for "a" are other nodes.
    for other in ["A", "a."] {
        let error = Tls::load(ca.issue("a"), name(other)).unwrap_err();
        assert!(
            matches!(error, TlsError::NotNamed { .. }),
            "{other}: {error}"
        );
    }
    // An address has one name too: `0::1` is not the node `::1`.
    let address = ca.issue_for("address", &["::1"], -1, 1);
    assert!(Tls::load(address.clone(), name("::1")).is_ok());
    let error = Tls::load(address, name("0::1")).unwrap_err();
    assert!(matches!(error, TlsError::NotNamed { .. }), "{error}");

    // A certificate only a server may use: peers it dials would refuse it.
    let server_only = [ExtendedKeyUsagePurpose::ServerAuth];
    let files = ca.issue_with("server-only", &["a"], -1, 1, &server_only);
    let error = Tls::load(files, name("a")).unwrap_err();
    assert!(matches!(error, TlsError::NotUnderCa { .. }), "{error}");

    let mut missing = ca.issue("a");
    missing.key = dir.join("no-such.key");
    let error = Tls::load(missing, name("a")).unwrap_err();
    assert!(error.to_string().contains("no-such.key"), "{error}");

    // A wildcard certificate names every node under it.
    let wildcard = ca.issue_for("wild", &["*.clients.example"], -1, 1);
    assert!(Tls::load(wildcard, name("x1.clients.example")).is_ok());
}

#[tokio::test]
async fn a_peer_under_another_ca_is_refused_on_both_sides() {
    let dir = scratch_dir("tls-other-ca");
    let ca = Ca::new(&dir, "ca");
    let other = Ca::new(&dir, "other");
    let a = tls_node("a", ca.issue("a")).await;
    // x trusts both CAs, but holds a certificate of the other one, which a does not trust.
    let mut files = other.issue("x");
    files.ca = dir.join("both.pem");
    std::fs::write(&files.ca, format!("{}{}", ca.pem, other.pem)).unwrap();
    let x = tls_node("x", files).await;
    let mut events = a.subscribe();
    // a, dialed, refuses x's certificate: x is told so.
    let error = refused(&x, &a).await;
    assert!(error.contains("refused this node's certificate"), "{error}");
    // a, dialing, refuses x's certificate.
    let error = refused(&a, &x).await;
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("cluster's CA"), "{error}");
    assert!(!a.is_connected(&name("x")) && !x.is_connected(&name("a")));
    assert!(events.try_recv().is_err(), "a saw no node up");
}

#[tokio::test]
async fn a_peer_whose_certificate_does_not_name_it_is_refused_after_its_proof() {
    let dir = scratch_dir("tls-wrong-name");
    let ca = Ca::new(&dir, "ca");
    let a = tls_node("a", ca.issue("a")).await;
    // A node that calls itself b but holds c's certificate (a certificate stolen from c, or a
    // misconfigured node): the transport is loaded for c, the node runs as b.
    let tls_of_c = Tls::load(ca.issue("c"), name("c")).unwrap();
    let b = Node::start_with(config("b"), tls_of_c).await.unwrap();
    let error = refused(&b, &a).await;
    assert!(error.contains("not valid for the node name b"), "{error}");
    assert!(error.contains("the peer refused us"), "{error}");
    let error = refused(&a, &b).await;
    assert!(error.contains("not valid for the node name b"), "{error}");
    assert!(error.contains("refused the peer"), "{error}");
    assert!(!a.is_connected(&name("b")) && !b.is_connected(&name("a")));
}

#[tokio::test]
async fn plaintext_and_tls_nodes_refuse_each_other() {
    let dir = scratch_dir("tls-plain");
    let ca = Ca::new(&dir, "ca");
    let secure = tls_node("a", ca.issue("a")).await;
    let plain = Node::start(config("p")).await.unwrap();
    let error = refused(&plain, &secure).await;
    assert!(error.contains("configure tls on every node"), "{error}");
    let error = refused(&secure, &plain).await;
    assert!(error.contains("TLS: "), "{error}");
    assert!(error.contains("does not speak TLS"), "{error}");
    assert!(!secure.is_connected(&name("p")) && !plain.is_connected(&name("a")));
}

/// An outsider with a certificate of the cluster's CA but expired, speaking TLS itself: the
/// node ends the TLS handshake, before a byte of the cookie handshake is read.
#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let dir = scratch_dir("tls-expired");
    let ca = Ca::new(&dir, "ca");
    let a = tls_node("a", ca.issue("a")).await;
    let expired = ca.issue_for("old", &["old"], -30, -1);
    let started = std::time::Instant::now();
    let error = raw_tls_dial(&a, &expired).await.unwrap_err();
    // Refused at once, not closed by the pre-auth deadline after the certificate was taken.
    assert!(
        started.elapsed() < a.config().auth_timeout / 2,
        "{error} after {:?}",
        started.elapsed()
    );
    assert!(
        error.contains("CertificateExpired") || error.contains("closed"),
        "{error}"
    );
}

/// Dials `node` with TLS as `files` says (no check of the node's certificate), sends a byte and
/// reads: the error the node's refusal gives, if any.
async fn raw_tls_dial(node: &Node, files: &TlsFiles) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let chain = vec![CertificateDer::from_pem_file(&files.cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&files.ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(node.listen_addr())
        .await
        .unwrap();
    let server = ServerName::try_from("a").unwrap();
    let mut stream = connector
        .connect(server, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3: the client's certificate is checked after the client's side is done; the
    // refusal arrives on the first read.
    stream.write_all(&[0]).await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(HANG, stream.read(&mut byte)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Ok(()),
    }
}

#[tokio::test]
async fn every_certificate_and_the_ca_rotate_while_the_cluster_runs() {
    let dir = scratch_dir("tls-rotate");
    let old_ca = Ca::new(&dir, "old");
    let new_ca = Ca::new(&dir, "new");
    let names = ["a", "b", "c"];
    let mut transports = Vec::new();
    let mut nodes = Vec::new();
    for n in names {
        let tls = Tls::load(old_ca.issue(n), name(n)).unwrap();
        nodes.push(Node::start_with(config(n), tls.clone()).await.unwrap());
        transports.push(tls);
    }
    connect(&nodes[0], &nodes[1]).await;
    connect(&nodes[0], &nodes[2]).await;
    one_group(&nodes.iter().collect::<Vec<_>>()).await;
    let mut downs: Vec<_> = nodes.iter().map(Node::subscribe).collect();

    // Step 1: every node trusts both CAs. Step 2: every node holds a certificate of the new
    // CA. The files are replaced in place, as a certificate manager does, then reloaded.
    let both = format!("{}{}", old_ca.pem, new_ca.pem);
    for tls in &transports {
        std::fs::write(&tls.files().ca, &both).unwrap();
        tls.reload().unwrap();
    }
    for (tls, n) in transports.iter().zip(names) {
        let fresh = new_ca.issue(n);
        std::fs::copy(&fresh.cert, &tls.files().cert).unwrap();
        std::fs::copy(&fresh.key, &tls.files().key).unwrap();
        tls.reload().unwrap();
    }
    // Step 3: the old CA is dropped.
    for tls in &transports {
        std::fs::write(&tls.files().ca, &new_ca.pem).unwrap();
        tls.reload().unwrap();
    }
    // A newcomer that knows only the new CA reaches every node: they present new certificates.
    let d = tls_node("d", new_ca.issue("d")).await;
    for node in &nodes {
        connect(&d, node).await;
    }
    // A reload that fails keeps the files in use.
    std::fs::write(&transports[0].files().key, "not a key").unwrap();
    assert!(transports[0].reload().is_err());
    let e = tls_node("e", new_ca.issue("e")).await;
    connect(&e, &nodes[0]).await;

    for (events, node) in downs.iter_mut().zip(&nodes) {
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event, NodeEvent::NodeDown { .. }),
                "{}: a link dropped during the rotation: {event:?}",
                node.name()
            );
        }
    }
}

/// The TLS handshake runs in the connection's own task under the pre-auth deadline: silent
/// sockets and half-finished TLS handshakes hold no one else up.
#[tokio::test]
async fn silent_sockets_do_not_keep_a_tls_peer_out() {
    let dir = scratch_dir("tls-silent");
    let ca = Ca::new(&dir, "ca");
    let a = tls_node("a", ca.issue("a")).await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        let mut socket = tokio::net::TcpStream::connect(a.listen_addr())
            .await
            .unwrap();
        // The first bytes of a TLS record, then nothing.
        socket.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        silent.push(socket);
    }
    let b = tls_node("b", ca.issue("b")).await;
    let started = std::time::Instant::now();
    connect(&b, &a).await;
    assert!(started.elapsed() < HANG);
    drop(silent);
}
