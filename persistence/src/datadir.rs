//! The data directory's manifest: the format version and the shard count, fixed when the
//! directory is created (`--shards` takes effect only then; docs/ARCHITECTURE.md, "Partitioning"),
//! and `write_atomically` for small files that must be either old or new after a crash.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST_FILE: &str = "holdfast.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub shards: u32,
}

/// An opened data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    manifest: Manifest,
    created: bool,
}

/// Why a data directory could not be opened or a file in it written; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirError {
    /// The manifest exists but does not parse.
    UnreadableManifest { path: PathBuf, reason: String },
    /// The directory was written by a build with another on-disk format.
    UnsupportedFormat { path: PathBuf, found: u32 },
    /// `--shards` differs from the count the directory was created with.
    ShardsFixed {
        path: PathBuf,
        shards: u32,
        requested: u32,
    },
    /// A file or the directory could not be created, read, written or synced.
    Io {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::UnreadableManifest { path, reason } => write!(
                f,
                "{}: unreadable manifest ({reason}); is this a holdfast data directory?",
                path.display()
            ),
            DataDirError::UnsupportedFormat { path, found } => write!(
                f,
                "{}: data format version {found} is not supported by this build (it reads \
                 version {FORMAT_VERSION}); run the build that wrote it, or use a new --data-dir",
                path.display()
            ),
            DataDirError::ShardsFixed {
                path,
                shards,
                requested,
            } => write!(
                f,
                "{} was created with --shards {shards}; it cannot change to {requested}. Omit \
                 --shards, or use a new --data-dir",
                path.display()
            ),
            DataDirError::Io { what, path, reason } => write!(
                f,
                "{what} {}: {reason}; check the disk and the permissions of the data directory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |e| DataDirError::Io {
        what,
        path,
        reason: e.to_string(),
    }
}

impl DataDir {
    /// Opens `path`, creating it (with `shards_requested`, or `shards_default` when absent)
    /// if it has no manifest. An existing directory keeps its shard count: asking for a
    /// different one, or finding an unknown format, is an error that says what to do.
    pub fn open(
        path: &Path,
        shards_requested: Option<u32>,
        shards_default: u32,
    ) -> Result<DataDir, DataDirError> {
        let manifest_path = path.join(MANIFEST_FILE);
        match fs::read(&manifest_path) {
            Ok(bytes) => {
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    DataDirError::UnreadableManifest {
                        path: manifest_path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if manifest.format_version != FORMAT_VERSION {
                    return Err(DataDirError::UnsupportedFormat {
                        path: path.to_path_buf(),
                        found: manifest.format_version,
                    });
                }
                if let Some(requested) = shards_requested {
                    if requested != manifest.shards {
                        return Err(DataDirError::ShardsFixed {
                            path: path.to_path_buf(),
                            shards: manifest.shards,
                            requested,
                        });
                    }
                }
                Ok(DataDir {
                    path: path.to_path_buf(),
                    manifest,
                    created: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(io_error("cannot create data directory", path))?;
                let manifest = Manifest {
                    format_version: FORMAT_VERSION,
                    shards: shards_requested.unwrap_or(shards_default),
                };
                write_atomically(
                    &manifest_path,
                    &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
                )?;
                Ok(DataDir {
                    path: path.to_path_buf(),
                    manifest,
                    created: true,
                })
            }
            Err(e) => Err(io_error("cannot read", &manifest_path)(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shards(&self) -> u32 {
        self.manifest.shards
    }

    /// True when this call created the directory's manifest.
    pub fn created(&self) -> bool {
        self.created
    }
}

/// Writes `bytes` to `path` so a crash leaves either the old file or the new one: a
/// temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io_error("cannot create", path))?;
    file.write_all(bytes)
        .map_err(io_error("cannot write", path))?;
    file.sync_all().map_err(io_error("cannot sync", path))?;
    fs::rename(&tmp, path).map_err(io_error("cannot rename into", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("cannot sync directory of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "holdfast-persistence-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn shard_count_is_fixed_at_creation() {
        let dir = temp_dir("shards");
        let created = DataDir::open(&dir, Some(8), 64).unwrap();
        assert!(created.created());
        assert_eq!(created.shards(), 8);
        let reopened = DataDir::open(&dir, None, 64).unwrap();
        assert!(!reopened.created());
        assert_eq!(reopened.shards(), 8);
        assert_eq!(DataDir::open(&dir, Some(8), 64).unwrap().shards(), 8);
        let err = DataDir::open(&dir, Some(16), 64).unwrap_err().to_string();
        assert!(err.contains("--shards 8"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_and_unknown_format() {
        let dir = temp_dir("format");
        assert_eq!(DataDir::open(&dir, None, 64).unwrap().shards(), 64);
        fs::write(
            dir.join(MANIFEST_FILE),
            br#"{"format_version": 99, "shards": 64}"#,
        )
        .unwrap();
        assert!(DataDir::open(&dir, None, 64)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
        fs::write(dir.join(MANIFEST_FILE), b"garbage").unwrap();
        assert!(DataDir::open(&dir, None, 64)
            .unwrap_err()
            .to_string()
            .contains("unreadable"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
