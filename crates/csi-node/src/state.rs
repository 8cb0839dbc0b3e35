//! Per-volume metadata on the node, so that a restarted driver knows every volume it serves.
//!
//! One JSON file per volume under `<state_dir>/volumes/<volume id>/meta.json`, replaced
//! atomically. It holds what is needed to find and renew the volume: never a token (tokens stay
//! in memory and kubelet's republish refreshes them) and never key material (the key lives only
//! in the volume).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::PodInfo;

/// The format version written today.
const VERSION: u32 = 1;
const META: &str = "meta.json";

/// What is remembered about a published volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VolumeRecord {
    pub(crate) version: u32,
    pub(crate) volume_id: String,
    pub(crate) target_path: PathBuf,
    pub(crate) pod: PodRecord,
    pub(crate) spiffe_id: String,
    pub(crate) fs_group: Option<u32>,
    pub(crate) key_algorithm: String,
}

/// The pod a volume belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodRecord {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) uid: String,
    pub(crate) service_account: String,
}

impl From<&PodInfo> for PodRecord {
    fn from(pod: &PodInfo) -> Self {
        Self {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            uid: pod.uid.clone(),
            service_account: pod.service_account.clone(),
        }
    }
}

impl From<&PodRecord> for PodInfo {
    fn from(pod: &PodRecord) -> Self {
        Self {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            uid: pod.uid.clone(),
            service_account: pod.service_account.clone(),
        }
    }
}

impl VolumeRecord {
    pub(crate) fn new(
        volume_id: &str,
        target_path: &Path,
        pod: &PodInfo,
        spiffe_id: &str,
        fs_group: Option<u32>,
        key_algorithm: nico_csr::KeyAlgorithm,
    ) -> Self {
        Self {
            version: VERSION,
            volume_id: volume_id.to_owned(),
            target_path: target_path.to_owned(),
            pod: pod.into(),
            spiffe_id: spiffe_id.to_owned(),
            fs_group,
            key_algorithm: key_algorithm.as_str().to_owned(),
        }
    }
}

/// A record that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("failed to read volume state {path}: {reason}")]
pub(crate) struct BrokenRecord {
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

/// The state directory.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    volumes: PathBuf,
}

impl StateDir {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            volumes: root.join("volumes"),
        }
    }

    /// The directory of one volume; the volume id was checked to be a plain name.
    pub(crate) fn volume_dir(&self, volume_id: &str) -> PathBuf {
        self.volumes.join(volume_id)
    }

    /// Writes a record: a temporary file, synced, renamed over the old one.
    pub(crate) fn save(&self, record: &VolumeRecord) -> io::Result<()> {
        let dir = self.volume_dir(&record.volume_id);
        fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        let tmp = dir.join(".meta.json.tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(META))?;
        fs::File::open(&dir)?.sync_all()
    }

    /// Forgets a volume: its record and whatever else is left in its directory (the caller
    /// unmounts first).
    pub(crate) fn remove(&self, volume_id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.volume_dir(volume_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record, and the ones that could not be read (reported, never fatal).
    pub(crate) fn load_all(&self) -> (Vec<VolumeRecord>, Vec<BrokenRecord>) {
        let (mut records, mut broken) = (Vec::new(), Vec::new());
        let entries = match fs::read_dir(&self.volumes) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (records, broken),
            Err(e) => {
                broken.push(BrokenRecord {
                    path: self.volumes.clone(),
                    reason: e.to_string(),
                });
                return (records, broken);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path().join(META);
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<VolumeRecord>(&bytes).map_err(|e| e.to_string())
                })
                .and_then(|record| {
                    let named_right = entry.file_name().to_str() == Some(&record.volume_id);
                    if record.version != VERSION {
                        Err(format!("unknown format version {}", record.version))
                    } else if !named_right {
                        Err("the record's volume id does not match its directory".to_owned())
                    } else {
                        Ok(record)
                    }
                });
            match parsed {
                Ok(record) => records.push(record),
                Err(reason) => broken.push(BrokenRecord { path, reason }),
            }
        }
        records.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        (records, broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> VolumeRecord {
        let pod = PodInfo {
            name: "web-0".into(),
            namespace: "demo".into(),
            uid: "uid-1".into(),
            service_account: "web".into(),
        };
        VolumeRecord::new(
            id,
            Path::new("/var/lib/kubelet/pods/uid-1/volumes/x/mount"),
            &pod,
            "spiffe://nico.local/demo/sa/web",
            Some(2000),
            nico_csr::KeyAlgorithm::EcdsaP256,
        )
    }

    #[test]
    fn records_round_trip_and_broken_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.save(&record("csi-a")).unwrap();
        state.save(&record("csi-b")).unwrap();
        state.save(&record("csi-b")).unwrap();
        fs::create_dir_all(state.volume_dir("csi-c")).unwrap();
        fs::write(state.volume_dir("csi-c").join(META), b"{not json").unwrap();
        let (records, broken) = state.load_all();
        assert_eq!(records, [record("csi-a"), record("csi-b")]);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].path.ends_with("csi-c/meta.json"));
        state.remove("csi-a").unwrap();
        state.remove("csi-a").unwrap();
        assert_eq!(state.load_all().0, [record("csi-b")]);
    }

    #[test]
    fn records_hold_no_secrets() {
        let json = serde_json::to_string(&record("csi-a")).unwrap();
        assert!(
            !json.contains("token") && !json.contains("PRIVATE KEY"),
            "{json}"
        );
    }
}
