//! Writing a volume's files so that a reader never sees a key and a certificate that do not
//! belong together.
//!
//! The layout is kubelet's own for projected volumes: the files live in a fresh hidden
//! directory `..<stamp>`, `..data` is a symlink to it, and each visible name (`tls.crt`, ...)
//! is a symlink through `..data`. Swapping `..data` with one `rename` switches all files at
//! once; the volume directory itself is never replaced, so a bind mount of it stays valid.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use crate::config::FileNames;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
/// Owner and group may read, nobody may write: the pod reads through its group.
const FILE_MODE: u32 = 0o440;
const DIR_MODE: u32 = 0o755;

/// The content of one volume.
pub(crate) struct VolumeFiles<'a> {
    pub(crate) certificate_chain: &'a [u8],
    pub(crate) key: &'a [u8],
    pub(crate) ca: &'a [u8],
}

impl std::fmt::Debug for VolumeFiles<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFiles")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Writes the three files into `target` and switches to them atomically.
pub(crate) fn write_atomically(
    target: &Path,
    names: &FileNames,
    files: &VolumeFiles<'_>,
    group: Option<u32>,
) -> io::Result<()> {
    fs::create_dir_all(target)?;
    let stamp = format!(
        "..{}_{:08x}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f"),
        fastrand::u32(..)
    );
    let staging = target.join(&stamp);
    fs::create_dir(&staging)?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(DIR_MODE))?;
    let written = (|| {
        for (name, content) in [
            (&names.certificate, files.certificate_chain),
            (&names.key, files.key),
            (&names.ca, files.ca),
        ] {
            write_file(&staging.join(name), content, group)?;
        }
        fs::File::open(&staging)?.sync_all()?;
        replace_symlink(target, DATA_LINK_TMP, DATA_LINK, Path::new(&stamp))?;
        for name in [&names.certificate, &names.key, &names.ca] {
            let link_target = Path::new(DATA_LINK).join(name);
            if fs::read_link(target.join(name)).ok().as_deref() != Some(link_target.as_path()) {
                let tmp = format!("..{name}_tmp");
                replace_symlink(target, &tmp, name, &link_target)?;
            }
        }
        fs::File::open(target)?.sync_all()
    })();
    if let Err(error) = written {
        // The old generation is still the one `..data` points to; drop the half-written one.
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    remove_old_generations(target, &stamp);
    Ok(())
}

fn write_file(path: &Path, content: &[u8], group: Option<u32>) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.write_all(content)?;
    // The umask may have narrowed the mode at creation.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    file.sync_all()
}

/// Points `dir/name` at `link_target` by renaming a fresh symlink over it.
fn replace_symlink(dir: &Path, tmp: &str, name: &str, link_target: &Path) -> io::Result<()> {
    let tmp_path = dir.join(tmp);
    match fs::remove_file(&tmp_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(link_target, &tmp_path)?;
    fs::rename(&tmp_path, dir.join(name))
}

/// Removes every `..<stamp>` directory but the current one. Failures only leave litter.
fn remove_old_generations(target: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(target) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_generation = name.starts_with("..")
            && name != current
            && name != DATA_LINK
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if is_generation && let Err(error) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), %error, "failed to remove old files");
        }
    }
}

/// The files a volume currently shows.
pub(crate) struct CurrentFiles {
    pub(crate) certificate_chain: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) ca: Vec<u8>,
}

impl std::fmt::Debug for CurrentFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentFiles")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Reads all three files through one resolution of `..data`, so they belong together.
pub(crate) fn read_current(dir: &Path, names: &FileNames) -> io::Result<Option<CurrentFiles>> {
    let generation = match fs::read_link(dir.join(DATA_LINK)) {
        Ok(generation) => dir.join(generation),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let read = |name: &str| match fs::read(generation.join(name)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    match (
        read(&names.certificate)?,
        read(&names.key)?,
        read(&names.ca)?,
    ) {
        (Some(certificate_chain), Some(key), Some(ca)) => Ok(Some(CurrentFiles {
            certificate_chain,
            key,
            ca,
        })),
        _ => Ok(None),
    }
}

/// The current certificate chain, if the volume has one.
#[cfg(test)]
pub(crate) fn read_certificate_chain(
    target: &Path,
    names: &FileNames,
) -> io::Result<Option<Vec<u8>>> {
    match fs::read(target.join(DATA_LINK).join(&names.certificate)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes what [`write_atomically`] created, then the directory if it is left empty. Never
/// follows a symlink out of `target`.
pub(crate) fn remove_volume_files(target: &Path, names: &FileNames) -> io::Result<()> {
    let entries = match fs::read_dir(target) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| {
            n.starts_with("..") || n == names.certificate || n == names.key || n == names.ca
        });
        if !ours {
            continue;
        }
        // `file_type` does not follow symlinks, and remove_dir_all does not either.
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    match fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Something else lives there (a mount point or a user's file): leave the directory.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files<'a>(cert: &'a [u8], key: &'a [u8]) -> VolumeFiles<'a> {
        VolumeFiles {
            certificate_chain: cert,
            key,
            ca: b"ca",
        }
    }

    #[test]
    fn writes_switch_all_files_together() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mount");
        let names = FileNames::default();
        write_atomically(&target, &names, &files(b"cert-1", b"key-1"), None).unwrap();
        assert_eq!(fs::read(target.join("tls.crt")).unwrap(), b"cert-1");
        write_atomically(&target, &names, &files(b"cert-2", b"key-2"), None).unwrap();
        assert_eq!(fs::read(target.join("tls.crt")).unwrap(), b"cert-2");
        assert_eq!(fs::read(target.join("tls.key")).unwrap(), b"key-2");
        assert_eq!(
            read_certificate_chain(&target, &names).unwrap().unwrap(),
            b"cert-2"
        );
        let mode = fs::metadata(target.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);
        // One generation directory, ..data, three links: nothing else is left behind.
        let mut names_on_disk: Vec<String> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names_on_disk.sort();
        assert_eq!(names_on_disk.len(), 5, "{names_on_disk:?}");
        assert_eq!(
            &names_on_disk[1..],
            ["..data", "ca.crt", "tls.crt", "tls.key"]
        );
    }

    #[test]
    fn readers_never_see_a_mixed_pair() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mount");
        let names = FileNames::default();
        write_atomically(&target, &names, &files(b"0", b"0"), None).unwrap();
        let writer_target = target.clone();
        let writer = std::thread::spawn(move || {
            for i in 1..200u32 {
                let v = i.to_string();
                write_atomically(
                    &writer_target,
                    &FileNames::default(),
                    &files(v.as_bytes(), v.as_bytes()),
                    None,
                )
                .unwrap();
            }
        });
        // Read both files through one resolution of ..data, as a pod reading a directory would.
        while !writer.is_finished() {
            let Ok(generation) = fs::read_link(target.join("..data")) else {
                continue;
            };
            let base = target.join(generation);
            if let (Ok(cert), Ok(key)) = (
                fs::read(base.join("tls.crt")),
                fs::read(base.join("tls.key")),
            ) {
                assert_eq!(cert, key);
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn removal_leaves_foreign_files_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mount");
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        let names = FileNames::default();
        write_atomically(&target, &names, &files(b"c", b"k"), None).unwrap();
        // A hostile link named like one of our files must be unlinked, not followed.
        fs::remove_file(target.join("ca.crt")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("ca.crt")).unwrap();
        remove_volume_files(&target, &names).unwrap();
        assert!(!target.exists());
        assert!(outside.join("keep").exists());
        // Removing again is fine.
        remove_volume_files(&target, &names).unwrap();
    }
}
