//! Snapshot payloads in files of their own; sled's `snapshots` tree holds a small pointer to
//! each shard's current file.
//!
//! Why not the payload in the tree, as before: sled 0.34.7 keeps up to 16 keys in one leaf
//! and treats a leaf as one page. Every insert clones the whole leaf in memory
//! (`pagecache/mod.rs`, `link`: `old.as_node().clone()`), appends the new value as a delta,
//! and every tenth rewrites the whole leaf (`PAGE_CONSOLIDATION_THRESHOLD`); a leaf over a
//! quarter segment goes to a blob file of its own. With 64 shards of 10 M citizens, leaves of
//! up to 16 snapshots were 90 MB blobs: each snapshot of one shard cloned and later rewrote
//! its 15 neighbours, and a restart read and copied each leaf again for every shard in it
//! (a third of a restart's page faults). A file per snapshot is written once, read once, and
//! recovery reads only the pointers at open.
//!
//! Layout: `<wal>/shard-snapshots/<shard:08x>-<seq:016x>-<id:016x>.snap`, whose bytes are the
//! format's snapshot value (version byte, CRC32 over the shard key, seq and payload, seq,
//! payload: `format.rs`), so the file checks itself. `id` comes from sled's persistent id
//! generator, so a second snapshot at the same seq never overwrites the file a durable
//! pointer names.
//!
//! Durability and crashes, in the writer's order: the file is written under a `.tmp` name,
//! `fdatasync`ed and renamed; the directory is synced once per group commit holding
//! snapshots; only then is the pointer applied to sled, made durable by the group commit's
//! flush; only after that flush is the shard's previous file deleted. A crash anywhere leaves
//! either the old pointer with its file or the new pointer with its file, plus files no
//! pointer names, which [`SnapshotFiles::sweep`] deletes at the next open.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{
    check_snapshot, snapshot_header, snapshot_key, SnapshotFile, SNAPSHOT_HEADER_LEN, TMP_SUFFIX,
};

/// The snapshot files' directory, inside the log's sled directory (sled lists only its own
/// names there: `db`, `conf`, `blobs`, `snap.*`).
pub const SNAPSHOT_FILES_DIR: &str = "shard-snapshots";
/// The directory of snapshot files.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
}

fn context(what: &str, path: &Path) -> impl FnOnce(io::Error) -> String {
    let at = format!("{what} {}", path.display());
    move |e| format!("{at}: {e}")
}

impl SnapshotFiles {
    /// The directory under the log's root, created if needed. Its creation is made durable
    /// by the log's first flush (the root's listing changed).
    pub(crate) fn open(root: &Path) -> Result<SnapshotFiles, String> {
        let dir = root.join(SNAPSHOT_FILES_DIR);
        fs::create_dir_all(&dir).map_err(context("cannot create", &dir))?;
        Ok(SnapshotFiles { dir })
    }

    fn path(&self, file: &SnapshotFile) -> PathBuf {
        self.dir.join(file.name())
    }

    /// Writes `payload` as `file` (temporary name, `fdatasync`, rename) and returns the
    /// file's length. The rename is durable only after [`SnapshotFiles::sync_dir`].
    pub(crate) fn write(&self, file: &SnapshotFile, payload: &[u8]) -> Result<u64, String> {
        let path = self.path(file);
        let tmp = self.dir.join(format!("{}{TMP_SUFFIX}", file.name()));
        let header = snapshot_header(&snapshot_key(file.shard), file.seq, payload);
        let mut out = File::create(&tmp).map_err(context("cannot create", &tmp))?;
        out.write_all(&header)
            .and_then(|()| out.write_all(payload))
            .map_err(context("cannot write", &tmp))?;
        out.sync_data().map_err(context("fdatasync", &tmp))?;
        drop(out);
        fs::rename(&tmp, &path).map_err(context("cannot rename to", &path))?;
        Ok((SNAPSHOT_HEADER_LEN + payload.len()) as u64)
    }

    /// Makes the renames since the last call durable.
    pub(crate) fn sync_dir(&self) -> Result<(), String> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(context("cannot sync directory", &self.dir))
    }

    /// True when `file` is there with `len` bytes (checked at open, without reading it).
    pub(crate) fn looks_whole(&self, file: &SnapshotFile, len: u64) -> bool {
        fs::metadata(self.path(file)).is_ok_and(|meta| meta.len() == len)
    }

    /// The payload of `file`, read once into a buffer of its size, or why it cannot be
    /// trusted (missing, another length than the pointer says, wrong version, checksum).
    pub(crate) fn read(&self, file: &SnapshotFile, len: u64) -> Result<Vec<u8>, String> {
        let path = self.path(file);
        let mut input = File::open(&path).map_err(context("cannot open", &path))?;
        let on_disk = input
            .metadata()
            .map_err(context("cannot stat", &path))?
            .len();
        if on_disk != len || len < SNAPSHOT_HEADER_LEN as u64 {
            return Err(format!(
                "{} holds {on_disk} bytes, its pointer says {len}",
                path.display()
            ));
        }
        let mut header = [0u8; SNAPSHOT_HEADER_LEN];
        input
            .read_exact(&mut header)
            .map_err(context("cannot read", &path))?;
        // The seq ends the header: a file under another seq's name fails before its payload
        // is read.
        if header[SNAPSHOT_HEADER_LEN - 8..] != file.seq.to_be_bytes() {
            return Err(format!("{}: holds another seq", path.display()));
        }
        let payload_len =
            usize::try_from(len).expect("a file that fits in memory") - SNAPSHOT_HEADER_LEN;
        let mut payload = Vec::with_capacity(payload_len);
        input
            .take(payload_len as u64)
            .read_to_end(&mut payload)
            .map_err(context("cannot read", &path))?;
        if payload.len() != payload_len {
            return Err(format!("{}: cut short", path.display()));
        }
        check_snapshot(&snapshot_key(file.shard), &header, &payload)
            .map_err(|why| format!("{}: {why}", path.display()))?;
        Ok(payload)
    }

    /// Deletes `file`. A file already gone is fine; any other error is returned but leaves
    /// nothing wrong (the next open's sweep deletes it).
    pub(crate) fn remove(&self, file: &SnapshotFile) -> Result<(), String> {
        let path = self.path(file);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(context("cannot delete", &path)(e)),
        }
    }

    /// Deletes every file in the directory that `live` does not name: snapshots a crash
    /// left before their pointer was durable or after a newer one was, and temporary files.
    /// Returns how many it deleted.
    pub(crate) fn sweep(&self, live: &BTreeSet<SnapshotFile>) -> Result<usize, String> {
        let mut deleted = 0;
        for entry in fs::read_dir(&self.dir).map_err(context("cannot list", &self.dir))? {
            let entry = entry.map_err(context("cannot list", &self.dir))?;
            let name = entry.file_name();
            let keep = name
                .to_str()
                .and_then(SnapshotFile::parse)
                .is_some_and(|file| live.contains(&file));
            if !keep {
                let path = entry.path();
                fs::remove_file(&path).map_err(context("cannot delete", &path))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "holdfast-snapfiles-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_round_trip_and_others_are_not_snapshots() {
        let file = SnapshotFile {
            shard: 63,
            seq: 1 << 40,
            id: u64::MAX,
        };
        assert_eq!(SnapshotFile::parse(&file.name()), Some(file));
        for other in [
            format!("{}{TMP_SUFFIX}", file.name()),
            "0000003f-0000010000000000.snap".to_string(),
            "conf".to_string(),
            "0000003f-0000010000000000-ffffffffffffffff-00.snap".to_string(),
            "zzzzzzzz-0000010000000000-ffffffffffffffff.snap".to_string(),
        ] {
            assert_eq!(SnapshotFile::parse(&other), None, "{other}");
        }
    }

    #[test]
    fn a_written_file_reads_back_and_damage_is_caught() {
        let root = dir("damage");
        let files = SnapshotFiles::open(&root).unwrap();
        let file = SnapshotFile {
            shard: 5,
            seq: 60,
            id: 1,
        };
        let len = files.write(&file, b"state at 60").unwrap();
        files.sync_dir().unwrap();
        assert!(files.looks_whole(&file, len));
        assert_eq!(files.read(&file, len).unwrap(), b"state at 60");

        // Another length than the pointer's, a flipped payload byte, another seq in the name.
        assert!(!files.looks_whole(&file, len + 1));
        assert!(files
            .read(&file, len + 1)
            .unwrap_err()
            .contains("pointer says"));
        let path = files.path(&file);
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(files.read(&file, len).unwrap_err().contains("checksum"));
        let moved = SnapshotFile { seq: 61, ..file };
        fs::rename(&path, files.path(&moved)).unwrap();
        assert!(files.read(&moved, len).unwrap_err().contains("another seq"));
        assert!(files.read(&file, len).unwrap_err().contains("cannot open"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_sweep_keeps_only_the_live_files() {
        let root = dir("sweep");
        let files = SnapshotFiles::open(&root).unwrap();
        let live = SnapshotFile {
            shard: 1,
            seq: 10,
            id: 7,
        };
        let stale = SnapshotFile { seq: 5, ..live };
        let orphan = SnapshotFile {
            seq: 20,
            id: 8,
            ..live
        };
        for file in [live, stale, orphan] {
            files.write(&file, b"x").unwrap();
        }
        fs::write(
            files.dir.join(format!("{}{TMP_SUFFIX}", orphan.name())),
            b"torn",
        )
        .unwrap();
        let deleted = files.sweep(&BTreeSet::from([live])).unwrap();
        assert_eq!(deleted, 3);
        let left: Vec<_> = fs::read_dir(&files.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![live.name()]);
        files.remove(&live).unwrap();
        files.remove(&live).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
