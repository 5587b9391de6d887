//! `gen-cluster certs`: a cluster's CA and its nodes' TLS certificates, for a first cluster or a
//! test; production clusters usually take theirs from their own PKI (any CA works, see the
//! README). The CA is made once in the directory and reused: certificates issued later are
//! signed by the same CA, so a node can be added, or its certificate renewed, at any time.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gen_cluster::{NodeName, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::CertsArgs;

pub fn run(args: CertsArgs) -> Result<()> {
    if args.names.is_empty() {
        bail!("which nodes? name them: gen-cluster certs --dir DIR a b c");
    }
    for name in &args.names {
        let files = issue(&args.dir, name, args.days)?;
        println!(
            "{} {} (CA {})",
            files.cert.display(),
            files.key.display(),
            files.ca.display()
        );
    }
    Ok(())
}

/// Issues a certificate for `name`, valid for `days`, from the CA in `dir` (made if missing);
/// the node's files.
pub fn issue(dir: &Path, name: &str, days: i64) -> Result<TlsFiles> {
    if !(1..=MAX_DAYS).contains(&days) {
        bail!("--days must be from 1 to {MAX_DAYS}");
    }
    // A node name, or a wildcard over node names.
    let node = name.strip_prefix("*.").unwrap_or(name);
    if !is_dns_name(node) {
        bail!(
            "{name:?} cannot name a node under TLS: use a DNS name (lower-case letters, digits, \
             '-', and '.' between labels), or *. before one for a wildcard"
        );
    }
    if name.starts_with("*.") && !node.contains('.') {
        bail!(
            "{name:?} would match no node: TLS takes a wildcard only over two labels or more \
             (*.clients.example, not *.clients)"
        );
    }
    if name == "ca" {
        bail!("\"ca\" would overwrite the CA's own files (ca.pem, ca.key): choose another name");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = ca(dir)?;
    let mut params = CertificateParams::new(vec![name.to_string()])
        .with_context(|| format!("{name:?} cannot be a certificate's DNS name"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    let name = name_for_file(name);
    let files = TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    };
    write(&files.cert, &cert.pem(), false)?;
    write(&files.key, &key.serialize_pem(), true)?;
    Ok(files)
}

/// The CA's validity, and so the longest a certificate it issues can be valid.
const MAX_DAYS: i64 = 3_650;

/// Whether `name` is a node name that is also a DNS name in its one form: the only names
/// a certificate can bind (see `gen_cluster::PeerCertificate::certifies`).
fn is_dns_name(name: &str) -> bool {
    NodeName::new(name).is_ok()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A wildcard name's file name: `*.clients.example` → `_.clients.example`.
fn name_for_file(name: &str) -> String {
    name.replace('*', "_")
}

/// The directory's CA: made (ca.pem, ca.key) if it has none.
fn ca(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let (cert_path, key_path): (PathBuf, PathBuf) = (dir.join("ca.pem"), dir.join("ca.key"));
    if key_path.exists() {
        if !cert_path.exists() {
            bail!(
                "{} exists without its certificate ca.pem: put it beside the key (peers check \
                 certificates against it), or use another directory",
                key_path.display()
            );
        }
        let pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let key = KeyPair::from_pem(&pem)
            .with_context(|| format!("{} holds no usable key", key_path.display()))?;
        return Ok(Issuer::new(ca_params(&key)?, key));
    }
    if cert_path.exists() {
        bail!(
            "{} exists without its key ca.key: this command signs with the CA's key, so it \
             cannot issue for that CA (put ca.key beside it, or use another directory)",
            cert_path.display()
        );
    }
    let key = KeyPair::generate()?;
    let mut params = ca_params(&key)?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(MAX_DAYS);
    let cert = params.self_signed(&key)?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok(Issuer::new(params, key))
}

/// The CA's name and uses; all that signing needs besides its key. The name carries a digest
/// of the CA's public key, so that two CAs made here never share a name (a peer under another
/// CA is then told "unknown issuer", not a bad signature).
fn ca_params(key: &KeyPair) -> Result<CertificateParams> {
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let digest = key
        .public_key_raw()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let mut params = CertificateParams::new(Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(DnType::CommonName, format!("gen-cluster CA {digest:016x}"));
    Ok(params)
}

/// Writes `text` to `path`; a private key readable by its owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_over_one_label_is_refused_as_matching_nothing() {
        let dir = std::env::temp_dir().join(format!("gen-cluster-certs-{}", std::process::id()));
        let refused = issue(&dir, "*.clients", 1).unwrap_err().to_string();
        assert!(refused.contains("would match no node"), "{refused}");
        assert!(!dir.exists(), "nothing is written for a refused name");
        let files = issue(&dir, "*.clients.example", 1).unwrap();
        let tls = gen_cluster::Tls::load(files, NodeName::new("c1.clients.example").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        tls.unwrap();
    }
}
