//! What an election keeps in its data directory, one file per election name:
//!
//! - `gen_leader.<name>.incarnation`: a number that grows each time a node's instance starts,
//!   so that the other instances tell a restarted node from its earlier self;
//! - `gen_leader.<name>.term` (`majority` mode, voters): the latest term seen and the vote cast
//!   in it (`gen_leader-term-v1 7 b`, or `gen_leader-term-v1 7` with no vote), so that a
//!   restarted voter never votes twice in one term.
//!
//! Each is written to a temporary file, flushed to disk and renamed over the old one, then the
//! directory flushed: a crash leaves either the old content or the new one. The instance
//! ([`super::instance`]) reads them at start and writes the term before it sends what depends
//! on it.

use std::io::Write;
use std::path::{Path, PathBuf};

use gen_cluster_proto::NodeName;
use gen_cluster_proto::majority::Durable;

use crate::error::DataDirError;

/// Reads the incarnation kept in `dir` for `election` (none yet: 0), and keeps the next one.
pub(crate) fn next_incarnation(dir: &Path, election: &str) -> Result<u64, DataDirError> {
    let path = file(dir, election, "incarnation")?;
    let last = match read(&path)? {
        Some(text) => {
            parse_incarnation(&text).ok_or_else(|| DataDirError::Corrupt(path.clone()))?
        }
        None => 0,
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| DataDirError::Exhausted(path.clone()))?;
    write_synced(dir, &path, &format!("{INCARNATION_HEADER} {next}\n"))?;
    Ok(next)
}

/// Where a voter's term and vote are kept, and what they were at start.
pub(crate) struct TermFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TermFile {
    /// Opens the term file of `election` in `dir`, and reads what it holds (nothing yet: term 0,
    /// no vote). It is written back at once, so that a directory the node cannot write to stops
    /// it now, not at its first election; and a term that no later one can follow is refused.
    pub(crate) fn open(dir: &Path, election: &str) -> Result<(Self, Durable), DataDirError> {
        let path = file(dir, election, "term")?;
        let durable = match read(&path)? {
            Some(text) => parse_term(&text).ok_or_else(|| DataDirError::Corrupt(path.clone()))?,
            None => Durable::default(),
        };
        if durable.term == u64::MAX {
            return Err(DataDirError::Exhausted(path));
        }
        let file = Self {
            dir: dir.to_path_buf(),
            path,
        };
        file.store(&durable)?;
        Ok((file, durable))
    }

    /// Keeps `durable`, synced to disk when this returns.
    pub(crate) fn store(&self, durable: &Durable) -> Result<(), DataDirError> {
        let text = match &durable.voted_for {
            Some(vote) => format!("{TERM_HEADER} {} {vote}\n", durable.term),
            None => format!("{TERM_HEADER} {}\n", durable.term),
        };
        write_synced(&self.dir, &self.path, &text)
    }
}

const INCARNATION_HEADER: &str = "gen_leader-incarnation-v1";
const TERM_HEADER: &str = "gen_leader-term-v1";

/// The path of `election`'s file of `kind` in `dir`.
fn file(dir: &Path, election: &str, kind: &str) -> Result<PathBuf, DataDirError> {
    if dir.as_os_str().is_empty() {
        return Err(DataDirError::EmptyDataDir);
    }
    Ok(dir.join(format!("gen_leader.{election}.{kind}")))
}

/// The file's text, or `None` if there is no file yet.
fn read(path: &Path) -> Result<Option<String>, DataDirError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            Err(DataDirError::Corrupt(path.to_path_buf()))
        }
        Err(source) => Err(DataDirError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path`'s content with `text`, atomically and synced (see the module's notes).
fn write_synced(dir: &Path, path: &Path, text: &str) -> Result<(), DataDirError> {
    let io = |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

fn parse_incarnation(text: &str) -> Option<u64> {
    let number = text
        .strip_suffix('\n')?
        .strip_prefix(INCARNATION_HEADER)?
        .strip_prefix(' ')?;
    number.parse().ok().filter(|n| *n > 0)
}

fn parse_term(text: &str) -> Option<Durable> {
    let fields = text
        .strip_suffix('\n')?
        .strip_prefix(TERM_HEADER)?
        .strip_prefix(' ')?;
    let (term, voted_for) = match fields.split_once(' ') {
        Some((term, vote)) => (term, Some(NodeName::new(vote).ok()?)),
        None => (fields, None),
    };
    Some(Durable {
        term: term.parse().ok()?,
        voted_for,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    fn temporary_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gen-leader-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_incarnation_grows_across_starts_and_a_corrupt_or_exhausted_file_is_refused() {
        let dir = temporary_dir("inc");
        assert_eq!(next_incarnation(&dir, "e").unwrap(), 1);
        assert_eq!(next_incarnation(&dir, "e").unwrap(), 2);
        assert_eq!(next_incarnation(&dir, "other").unwrap(), 1);
        let file = dir.join("gen_leader.e.incarnation");
        std::fs::write(&file, "gen_leader-incarnation-v1 x\n").unwrap();
        let error = next_incarnation(&dir, "e").unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{error}");
        std::fs::write(&file, "").unwrap();
        assert!(
            next_incarnation(&dir, "e").is_err(),
            "an empty file is corrupt too"
        );
        std::fs::write(&file, format!("gen_leader-incarnation-v1 {}\n", u64::MAX)).unwrap();
        assert!(
            matches!(next_incarnation(&dir, "e"), Err(DataDirError::Exhausted(_))),
            "the largest incarnation has no successor; it must not wrap to 0"
        );
        assert!(
            matches!(
                next_incarnation(Path::new(""), "e"),
                Err(DataDirError::EmptyDataDir)
            ),
            "an empty data directory is not the working directory"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_term_and_vote_survive_a_reopening_and_a_corrupt_term_file_is_refused() {
        let dir = temporary_dir("term");
        let (file, durable) = TermFile::open(&dir, "e").unwrap();
        assert_eq!(durable, Durable::default(), "no file yet: term 0, no vote");
        let voted = Durable {
            term: 7,
            voted_for: Some(NodeName::new("b").unwrap()),
        };
        file.store(&voted).unwrap();
        assert_eq!(TermFile::open(&dir, "e").unwrap().1, voted);
        let unvoted = Durable {
            term: 8,
            voted_for: None,
        };
        file.store(&unvoted).unwrap();
        assert_eq!(TermFile::open(&dir, "e").unwrap().1, unvoted);
        let path = dir.join("gen_leader.e.term");
        let dash = Durable {
            term: 9,
            voted_for: Some(NodeName::new("-").unwrap()),
        };
        file.store(&dash).unwrap();
        assert_eq!(
            TermFile::open(&dir, "e").unwrap().1,
            dash,
            "a vote for a node named `-` is a vote"
        );
        for corrupt in [
            "",
            "gen_leader-term-v1\n",
            "gen_leader-term-v1 x\n",
            "gen_leader-term-v1 8 b c\n",
            "gen_leader-term-v1 8",
            "gen_leader-term-v1 8 not/a name\n",
        ] {
            std::fs::write(&path, corrupt).unwrap();
            let error = TermFile::open(&dir, "e").err().unwrap();
            assert!(
                matches!(error, DataDirError::Corrupt(_)),
                "{corrupt:?}: {error}"
            );
        }
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            TermFile::open(&dir, "e"),
            Err(DataDirError::Corrupt(_))
        ));
        std::fs::write(&path, format!("gen_leader-term-v1 {}\n", u64::MAX)).unwrap();
        assert!(
            matches!(TermFile::open(&dir, "e"), Err(DataDirError::Exhausted(_))),
            "a term no later one can follow is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `/proc/self` can be read but not written, even by root.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_term_file_that_cannot_be_written_is_an_error_at_once() {
        let error = TermFile::open(Path::new("/proc/self"), "e").err();
        assert!(
            matches!(error, Some(DataDirError::Io { .. })),
            "a directory that cannot be written is found at open: {error:?}"
        );
    }
}
