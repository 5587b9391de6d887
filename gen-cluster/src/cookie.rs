//! Where the cluster secret comes from: a file named on the command line, the
//! `GEN_CLUSTER_COOKIE` variable, or `~/.gen_cluster.cookie` (made by the first node started
//! without the other two, with a random secret readable by its owner only — as Erlang does with
//! `~/.erlang.cookie`; a client never makes it: a fresh secret could reach no node). A cookie file
//! that group or others may read is used, with a warning (as ssh warns of an exposed key).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

/// Whether a missing `~/.gen_cluster.cookie` is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A node makes it.
    Create,
    /// A client refuses to run without it.
    Refuse,
}

/// Reads the secret as the flags and environment say.
pub fn load(file: Option<&Path>, missing: Missing) -> Result<Vec<u8>> {
    if let Some(file) = file {
        return read(file);
    }
    if let Ok(cookie) = std::env::var("GEN_CLUSTER_COOKIE") {
        if cookie.is_empty() {
            bail!("GEN_CLUSTER_COOKIE is set but empty");
        }
        return Ok(cookie.into_bytes());
    }
    let home =
        std::env::var_os("HOME").context("no --cookie-file, no GEN_CLUSTER_COOKIE and no HOME")?;
    let file = PathBuf::from(home).join(".gen_cluster.cookie");
    if !file.exists() {
        match missing {
            Missing::Create => create(&file)?,
            Missing::Refuse => bail!(
                "no cookie: {} does not exist (a node started here makes it); give the nodes' \
                 cookie with GEN_CLUSTER_COOKIE or --cookie-file",
                file.display()
            ),
        }
    }
    if missing == Missing::Create {
        remove_stale_drafts(&file, SystemTime::now());
    }
    read(&file)
}

fn read(file: &Path) -> Result<Vec<u8>> {
    if let Some(mode) = readable_by_others(file) {
        tracing::warn!(
            file = %file.display(),
            mode = format_args!("{mode:04o}"),
            "the cookie file can be read by group or others, who can then join the cluster; \
             make it readable by its owner only (chmod 600)"
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the cookie file {}", file.display()))?;
    let cookie = text.trim();
    if cookie.is_empty() {
        bail!("the cookie file {} is empty", file.display());
    }
    Ok(cookie.as_bytes().to_vec())
}

/// Makes `file` with a fresh secret, whole or not at all: the secret is written to a file of
/// its own beside it, then linked to `file`'s name, which fails if `file` exists. So nodes
/// started at once on a fresh host all read the one secret that was linked first, and none
/// reads a file half written. The directory is synced after the link, so that a power loss
/// cannot take the name back from nodes that already use the secret.
fn create(file: &Path) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let mut random = [0u8; 28];
    getrandom::fill(&mut random).context("no OS randomness for a new cookie")?;
    let (secret, draft_tag) = random.split_at(20);
    let mut draft = draft_prefix(file).into_os_string();
    draft.push(hex(draft_tag));
    let draft = PathBuf::from(draft);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = options.open(&draft).and_then(|mut out| {
        writeln!(out, "{}", hex(secret))?;
        out.sync_all()
    });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&draft);
        return Err(error)
            .with_context(|| format!("cannot write a new cookie to {}", draft.display()));
    }
    let linked = match std::fs::hard_link(&draft, file) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    };
    let _ = std::fs::remove_file(&draft);
    #[cfg(unix)]
    if linked.is_ok()
        && let Some(dir) = file.parent()
        && let Err(error) = std::fs::File::open(dir).and_then(|dir| dir.sync_all())
    {
        tracing::warn!(dir = %dir.display(), %error, "could not sync the cookie file's directory");
    }
    linked.with_context(|| {
        format!(
            "cannot create the cookie file {} (the secret is written beside it, then linked to \
             its name: the filesystem must allow hard links); give the nodes' cookie with \
             GEN_CLUSTER_COOKIE or --cookie-file",
            file.display()
        )
    })
}

/// A draft older than this was left by a node that ended between writing it and removing it
/// ([`create`] takes milliseconds).
const STALE_DRAFT: Duration = Duration::from_secs(60);

/// How the names of `file`'s drafts begin (16 hex digits follow).
fn draft_prefix(file: &Path) -> PathBuf {
    let mut prefix = file.as_os_str().to_owned();
    prefix.push(".");
    PathBuf::from(prefix)
}

/// Removes the drafts of `file` that were last written [`STALE_DRAFT`] or more before `now`:
/// a node that ended while making the cookie leaves its draft, a copy of a secret (readable by
/// its owner only), which would otherwise stay beside the cookie for good. A draft younger
/// than that may be another node's, being made now, and is left alone. Best effort: what
/// cannot be read or removed is left.
fn remove_stale_drafts(file: &Path, now: SystemTime) {
    let prefix = draft_prefix(file);
    let (Some(dir), Some(prefix)) = (file.parent(), prefix.file_name()) else {
        return;
    };
    let prefix = prefix.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_draft = name
            .to_str()
            .and_then(|name| name.strip_prefix(&*prefix))
            .is_some_and(|tag| tag.len() == 16 && tag.bytes().all(|byte| byte.is_ascii_hexdigit()));
        let stale = || {
            let written = entry.metadata().and_then(|meta| meta.modified()).ok();
            written.is_some_and(|written| {
                now.duration_since(written)
                    .is_ok_and(|age| age >= STALE_DRAFT)
            })
        };
        if is_draft && stale() {
            let draft = entry.path();
            match std::fs::remove_file(&draft) {
                Ok(()) => tracing::info!(
                    draft = %draft.display(),
                    "removed a cookie draft left by a node that ended while making the cookie"
                ),
                Err(error) => tracing::debug!(
                    draft = %draft.display(),
                    %error,
                    "could not remove a stale cookie draft"
                ),
            }
        }
    }
}

/// The file's permission bits, if group or others may read it.
#[cfg(unix)]
fn readable_by_others(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_file: &Path) -> Option<u32> {
    None
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_cookie_file_readable_by_others_is_told_apart() {
        let file = std::env::temp_dir().join(format!("gen-cluster-cookie-{}", std::process::id()));
        std::fs::write(&file, "secret\n").unwrap();
        let chmod = |mode| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode));
        chmod(0o644).unwrap();
        assert_eq!(readable_by_others(&file), Some(0o644));
        chmod(0o640).unwrap();
        assert_eq!(readable_by_others(&file), Some(0o640));
        chmod(0o600).unwrap();
        assert_eq!(readable_by_others(&file), None);
        assert_eq!(read(&file).unwrap(), b"secret");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn nodes_started_at_once_make_one_cookie_and_all_read_it() {
        let dir = std::env::temp_dir().join(format!("gen-cluster-cookies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".gen_cluster.cookie");
        let start = std::sync::Barrier::new(8);
        let cookies: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let nodes: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        create(&file).unwrap();
                        read(&file).unwrap()
                    })
                })
                .collect();
            nodes.into_iter().map(|node| node.join().unwrap()).collect()
        });
        assert_eq!(cookies[0].len(), 40);
        assert!(cookies.iter().all(|cookie| *cookie == cookies[0]));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "drafts left behind: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_draft_left_by_a_node_that_ended_is_removed_and_one_being_made_is_not() {
        let dir = std::env::temp_dir().join(format!("gen-cluster-drafts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(".gen_cluster.cookie");
        std::fs::write(&file, "secret\n").unwrap();
        let make = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, "secret\n").unwrap();
            path
        };
        let left = make(".gen_cluster.cookie.0123456789abcdef");
        let being_made = make(".gen_cluster.cookie.fedcba9876543210");
        let not_drafts = [
            make(".gen_cluster.cookie.backup"),
            make(".gen_cluster.cookie.0123456789abcdef0"),
            make("gen_cluster.cookie.0123456789abcdef"),
        ];
        let now = SystemTime::now() + STALE_DRAFT;
        std::fs::File::options()
            .write(true)
            .open(&being_made)
            .unwrap()
            .set_modified(now - STALE_DRAFT / 2)
            .unwrap();
        remove_stale_drafts(&file, now);
        assert!(!left.exists(), "a stale draft is left");
        assert!(being_made.exists(), "a draft being made is removed");
        assert!(file.exists());
        for kept in not_drafts {
            assert!(kept.exists(), "{} is removed", kept.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
