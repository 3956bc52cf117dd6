//! Small durable cursors kept beside the write-ahead log, in their own sled tree of the same
//! database (one sled per data directory: sled locks its files, and a second database would
//! double its threads and cache).
//!
//! A cursor is a `u64` under a caller's key (the webhooks' delivery cursors, keyed by a stable
//! id of the URL). [`CursorTree::set`] writes to sled's memory; the write reaches the disk with
//! the log's next group commit or with [`CursorTree::flush`], so a crash can take back the last
//! moves of a cursor but never move it forward: a consumer that advances its cursor only after
//! its work is done sees some work again after a crash, never skips any.

use crate::wal::{io, WalError};

/// One sled tree of `u64` cursors (big-endian values).
#[derive(Clone)]
pub struct CursorTree {
    tree: sled::Tree,
}

impl CursorTree {
    pub(crate) fn new(tree: sled::Tree) -> CursorTree {
        CursorTree { tree }
    }

    /// The cursor under `key`; `None` if it was never set. A value that is not 8 bytes is
    /// refused (`Corrupt`), never read as a guess.
    pub fn get(&self, key: &[u8]) -> Result<Option<u64>, WalError> {
        let Some(value) = self.tree.get(key).map_err(io("cannot read a cursor"))? else {
            return Ok(None);
        };
        let bytes = <[u8; 8]>::try_from(&value[..]).map_err(|_| {
            WalError::Corrupt(format!("a cursor holds {} bytes, not 8", value.len()))
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Sets the cursor under `key` (in memory; durable with the next flush).
    pub fn set(&self, key: &[u8], value: u64) -> Result<(), WalError> {
        self.tree
            .insert(key, &value.to_be_bytes())
            .map_err(io("cannot write a cursor"))?;
        Ok(())
    }

    /// Writes the cursors to the OS (blocking: call it off the async runtime). Enough against
    /// a process crash; the log's own group commit adds the `fdatasync` against a power loss.
    pub fn flush(&self) -> Result<(), WalError> {
        self.tree.flush().map_err(io("cannot flush the cursors"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::wal::{Durability, Wal, WalConfig};

    #[test]
    fn cursors_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("holdfast-cursors-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let wal = Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap();
            let cursors = wal.cursor_tree("test_cursors").unwrap();
            assert_eq!(cursors.get(b"a").unwrap(), None);
            cursors.set(b"a", 41).unwrap();
            cursors.set(b"a", 42).unwrap();
            cursors.set(b"b", u64::MAX).unwrap();
            cursors.flush().unwrap();
            drop(cursors);
            wal.close().unwrap();
        }
        let wal = Wal::open(&dir, WalConfig::new(Durability::Sync)).unwrap();
        let cursors = wal.cursor_tree("test_cursors").unwrap();
        assert_eq!(cursors.get(b"a").unwrap(), Some(42));
        assert_eq!(cursors.get(b"b").unwrap(), Some(u64::MAX));
        assert_eq!(cursors.get(b"c").unwrap(), None);
        drop(cursors);
        wal.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
