//! The election incarnation kept on disk: a number that grows each time a node's instance of an
//! election starts with the same data directory, so that the other instances tell a restarted
//! node from its earlier self. One file per election name, `gen_leader.<name>.incarnation`,
//! written to a temporary file, flushed to disk and renamed over the old one, then the directory
//! flushed: a crash leaves either the old number or the new one.

use std::io::Write;
use std::path::Path;

use crate::error::IncarnationError;

/// Reads the incarnation kept in `dir` for `election` (none yet: 0), and keeps the next one.
pub(crate) fn next(dir: &Path, election: &str) -> Result<u64, IncarnationError> {
    if dir.as_os_str().is_empty() {
        return Err(IncarnationError::EmptyDataDir);
    }
    let path = dir.join(format!("gen_leader.{election}.incarnation"));
    let io = |source| IncarnationError::Io {
        path: path.clone(),
        source,
    };
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).ok_or_else(|| IncarnationError::Corrupt(path.clone()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(io(error)),
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| IncarnationError::Exhausted(path.clone()))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = path.with_extension("incarnation.new");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(format!("{HEADER} {next}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(next)
}

const HEADER: &str = "gen_leader-incarnation-v1";

fn parse(text: &str) -> Option<u64> {
    let number = text
        .strip_suffix('\n')?
        .strip_prefix(HEADER)?
        .strip_prefix(' ')?;
    number.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn the_incarnation_grows_across_starts_and_a_corrupt_or_exhausted_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("gen-leader-inc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(next(&dir, "e").unwrap(), 1);
        assert_eq!(next(&dir, "e").unwrap(), 2);
        assert_eq!(next(&dir, "other").unwrap(), 1);
        let file = dir.join("gen_leader.e.incarnation");
        std::fs::write(&file, "gen_leader-incarnation-v1 x\n").unwrap();
        let error = next(&dir, "e").unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{error}");
        std::fs::write(&file, "").unwrap();
        assert!(next(&dir, "e").is_err(), "an empty file is corrupt too");
        std::fs::write(&file, format!("gen_leader-incarnation-v1 {}\n", u64::MAX)).unwrap();
        assert!(
            matches!(next(&dir, "e"), Err(IncarnationError::Exhausted(_))),
            "the largest incarnation has no successor; it must not wrap to 0"
        );
        assert!(
            matches!(
                next(Path::new(""), "e"),
                Err(IncarnationError::EmptyDataDir)
            ),
            "an empty data directory is not the working directory"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
