//! Where a volume's files live.
//!
//! - `Mounted` (production): a small tmpfs per volume at `<state_dir>/volumes/<id>/data`,
//!   bound read-only at kubelet's target path. The tmpfs is mounted on a host path that the
//!   driver's pod shares with the host (bidirectional mount propagation), so it outlives the
//!   driver: after a restart the driver finds the same tmpfs, still bound into every pod, and
//!   renewals written into it reach the pods. The key never touches a disk.
//! - `Direct` (`mount = false`): the files are written into the target directory itself, for
//!   unprivileged environments and tests.
//!
//! Both are idempotent: preparing a volume twice leaves exactly one mount of each kind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::config::FileNames;
use crate::files;
use crate::state::StateDir;

/// Size of each volume's tmpfs: three PEM files with room for long chains and RSA keys.
const TMPFS_OPTIONS: &std::ffi::CStr = c"size=1m,mode=0755";

/// How volumes are laid out.
#[derive(Clone, Debug)]
pub(crate) enum Layout {
    /// Files written into the target directory.
    Direct,
    /// A tmpfs per volume under the state directory, bound read-only at the target.
    Mounted(StateDir),
}

impl Layout {
    /// Where the files of a volume are written.
    pub(crate) fn data_dir(&self, volume_id: &str, target: &Path) -> PathBuf {
        match self {
            Self::Direct => target.to_owned(),
            Self::Mounted(state) => state.volume_dir(volume_id).join("data"),
        }
    }

    /// Makes the volume's storage and the target mount exist; a no-op when they do.
    pub(crate) fn prepare(&self, volume_id: &str, target: &Path) -> io::Result<()> {
        let Self::Mounted(_) = self else {
            return fs::create_dir_all(target);
        };
        let data = self.data_dir(volume_id, target);
        fs::create_dir_all(&data)?;
        let data = fs::canonicalize(&data)?;
        if mount_at(&data)?.is_none() {
            rustix::mount::mount(
                "nico-identity",
                &data,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(TMPFS_OPTIONS),
            )?;
            tracing::debug!(volume_id, "tmpfs mounted");
        }
        let data_mount = mount_at(&data)?.ok_or_else(|| io::Error::other("tmpfs vanished"))?;
        fs::create_dir_all(target)?;
        match mount_at(target)? {
            Some(existing) if existing.device == data_mount.device => Ok(()),
            Some(existing) => Err(io::Error::other(format!(
                "{} is already a mount of {} ({}), not of this volume",
                target.display(),
                existing.source,
                existing.fstype
            ))),
            None => {
                rustix::mount::mount_bind(&data, target)?;
                // A bind mount takes its read-only flag only from a remount.
                let read_only = MountFlags::BIND
                    | MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC;
                if let Err(error) = rustix::mount::mount_remount(target, read_only, "") {
                    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                    return Err(error.into());
                }
                tracing::debug!(volume_id, target = %target.display(), "bound read-only");
                Ok(())
            }
        }
    }

    /// Removes the target mount, the storage and the files; absent pieces are fine.
    pub(crate) fn teardown(
        &self,
        volume_id: &str,
        target: &Path,
        names: &FileNames,
    ) -> io::Result<()> {
        match self {
            Self::Direct => files::remove_volume_files(target, names),
            Self::Mounted(state) => {
                unmount(target)?;
                match fs::remove_dir(target) {
                    Err(e)
                        if !matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                        ) =>
                    {
                        return Err(e);
                    }
                    _ => {}
                }
                unmount(&self.data_dir(volume_id, target))?;
                state.remove(volume_id)
            }
        }
    }
}

/// Unmounts `path`; not mounted or missing means done already. A mount still in use is
/// detached so that it goes away once the last user lets go.
fn unmount(path: &Path) -> io::Result<()> {
    loop {
        if mount_at(path)?.is_none() {
            return Ok(());
        }
        match rustix::mount::unmount(path, UnmountFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => return Ok(()),
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(path, UnmountFlags::DETACH)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) device: String,
    pub(crate) fstype: String,
    pub(crate) source: String,
}

/// The topmost mount whose mount point is exactly `path`, if any.
pub(crate) fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let table = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(find_mount(&table, path))
}

fn find_mount(table: &str, path: &Path) -> Option<MountEntry> {
    let wanted = path.to_str()?;
    table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        let rest = line.split_once(" - ")?.1;
        let mut rest = rest.split(' ');
        let (fstype, source) = (rest.next()?, rest.next()?);
        (unescape(mount_point) == wanted).then(|| MountEntry {
            device: device.to_owned(),
            fstype: fstype.to_owned(),
            source: unescape(source),
        })
    })
}

/// mountinfo writes space, tab, newline and backslash as three-digit octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
45 27 0:40 / /var/lib/x/data rw,relatime - tmpfs nico-identity rw,size=1024k
46 27 0:40 / /var/lib/kubelet/pods/a\\040b/mount ro,relatime shared:5 - tmpfs nico-identity rw
47 46 0:41 / /var/lib/kubelet/pods/a\\040b/mount rw - ext4 /dev/sda1 rw
";

    #[test]
    fn mountinfo_lines_are_read_with_escapes_and_the_topmost_mount_wins() {
        let data = find_mount(TABLE, Path::new("/var/lib/x/data")).unwrap();
        assert_eq!(
            (data.device.as_str(), data.fstype.as_str()),
            ("0:40", "tmpfs")
        );
        let target = find_mount(TABLE, Path::new("/var/lib/kubelet/pods/a b/mount")).unwrap();
        assert_eq!(target.device, "0:41");
        assert_eq!(find_mount(TABLE, Path::new("/var/lib/x")), None);
    }
}
