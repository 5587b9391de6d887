//! Where the cluster secret comes from: a file named on the command line, the
//! `GEN_CLUSTER_COOKIE` variable, or `~/.gen_cluster.cookie` (made with a random secret, readable
//! by its owner only, the first time — as Erlang does with `~/.erlang.cookie`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Reads the secret as the flags and environment say.
pub fn load(file: Option<&Path>) -> Result<Vec<u8>> {
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
        create(&file)?;
    }
    read(&file)
}

fn read(file: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the cookie file {}", file.display()))?;
    let cookie = text.trim();
    if cookie.is_empty() {
        bail!("the cookie file {} is empty", file.display());
    }
    Ok(cookie.as_bytes().to_vec())
}

fn create(file: &Path) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = [0u8; 20];
    getrandom::fill(&mut random).context("no OS randomness for a new cookie")?;
    let cookie: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut out = options
        .open(file)
        .with_context(|| format!("cannot create the cookie file {}", file.display()))?;
    writeln!(out, "{cookie}")?;
    Ok(())
}
