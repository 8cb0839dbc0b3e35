//! Turning kubelet's NodePublishVolume request into checked facts about the pod and volume.
//!
//! Everything in the request is untrusted input: each problem becomes an `InvalidArgument`
//! naming the field, and nothing here touches the disk or the network.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use jiff::Timestamp;
use nico_runtime::BearerToken;
use serde::Deserialize;

use crate::proto::TOKENS_KEY;
use crate::proto::csi::{self, volume_capability};

const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
const POD_NAME_KEY: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE_KEY: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID_KEY: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT_KEY: &str = "csi.storage.k8s.io/serviceAccount.name";
/// Volume attribute that sets the group of the files, as in csi-driver-spiffe.
pub(crate) const FS_GROUP_KEY: &str = "spiffe.csi.cert-manager.io/fs-group";

/// The pod a volume belongs to, as kubelet describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) uid: String,
    pub(crate) service_account: String,
}

/// The pod's service-account token for the configured audience.
#[derive(Clone, Debug)]
pub(crate) struct PodToken {
    pub(crate) token: BearerToken,
    pub(crate) expires: Option<Timestamp>,
}

/// A checked NodePublishVolume request.
#[derive(Clone, Debug)]
pub(crate) struct PublishRequest {
    pub(crate) volume_id: String,
    pub(crate) target_path: PathBuf,
    pub(crate) pod: PodInfo,
    pub(crate) token: PodToken,
    pub(crate) fs_group: Option<u32>,
}

/// A request field that is missing or wrong. Its message is for the operator reading the
/// pod's events: it names the field and never repeats a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub(crate) struct InvalidRequest {
    pub(crate) field: String,
    pub(crate) reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenEntry {
    token: String,
    #[serde(default)]
    expiration_timestamp: Option<Timestamp>,
}

/// Checks a volume id: kubelet makes them `csi-<hex>`; anything that could act as a path or
/// hide in logs is refused.
pub(crate) fn check_volume_id(volume_id: &str) -> Result<(), InvalidRequest> {
    if volume_id.is_empty() {
        return Err(invalid("volume_id", "required"));
    }
    let plain = volume_id.len() <= 128
        && !volume_id.starts_with('.')
        && volume_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(invalid(
            "volume_id",
            "must be at most 128 characters of [A-Za-z0-9._-], no leading dot",
        ))
    }
}

/// Checks a target path: absolute, normal components only.
pub(crate) fn check_target_path(target_path: &str) -> Result<PathBuf, InvalidRequest> {
    if target_path.is_empty() {
        return Err(invalid("target_path", "required"));
    }
    let path = Path::new(target_path);
    let normal = path.is_absolute()
        && !target_path.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if normal && path.components().count() > 1 {
        Ok(path.to_owned())
    } else {
        Err(invalid(
            "target_path",
            "must be an absolute path without '.' or '..' components",
        ))
    }
}

/// Checks a NodePublishVolume request and extracts the pod's facts and token.
pub(crate) fn parse_publish(
    request: &csi::NodePublishVolumeRequest,
    token_audience: &str,
) -> Result<PublishRequest, InvalidRequest> {
    check_volume_id(&request.volume_id)?;
    let target_path = check_target_path(&request.target_path)?;
    let capability = request
        .volume_capability
        .as_ref()
        .ok_or_else(|| invalid("volume_capability", "required"))?;
    let mount = match &capability.access_type {
        Some(volume_capability::AccessType::Mount(mount)) => mount,
        Some(volume_capability::AccessType::Block(_)) => {
            return Err(invalid(
                "volume_capability",
                "block volumes are not supported: use a mount",
            ));
        }
        None => return Err(invalid("volume_capability.access_type", "required: mount")),
    };
    if !request.readonly {
        return Err(invalid(
            "readonly",
            "the volume must be mounted read-only (readOnly: true)",
        ));
    }
    let context = &request.volume_context;
    match context.get(EPHEMERAL_KEY).map(String::as_str) {
        Some("true") => {}
        _ => {
            return Err(invalid(
                format!("volume_context[{EPHEMERAL_KEY}]"),
                "only ephemeral inline volumes are supported: the pod must declare the volume \
                 inline (volumes[].csi) and the CSIDriver must allow the Ephemeral mode",
            ));
        }
    }
    let required = |key: &'static str| {
        context
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| {
                invalid(
                    format!("volume_context[{key}]"),
                    "required: set podInfoOnMount",
                )
            })
    };
    let pod = PodInfo {
        name: required(POD_NAME_KEY)?,
        namespace: required(POD_NAMESPACE_KEY)?,
        uid: required(POD_UID_KEY)?,
        service_account: required(SERVICE_ACCOUNT_KEY)?,
    };
    let token = parse_token(context, token_audience)?;
    let fs_group = parse_fs_group(&mount.volume_mount_group, context)?;
    Ok(PublishRequest {
        volume_id: request.volume_id.clone(),
        target_path,
        pod,
        token,
        fs_group,
    })
}

fn parse_token(
    context: &std::collections::HashMap<String, String>,
    audience: &str,
) -> Result<PodToken, InvalidRequest> {
    let field = || format!("volume_context[{TOKENS_KEY}]");
    let raw = context.get(TOKENS_KEY).ok_or_else(|| {
        invalid(
            field(),
            "required: the CSIDriver must request a token (tokenRequests)",
        )
    })?;
    // Never echo the value: it holds tokens.
    let tokens: BTreeMap<String, TokenEntry> = serde_json::from_str(raw).map_err(|_| {
        invalid(
            field(),
            "not a JSON map of audience to {token, expirationTimestamp}",
        )
    })?;
    let entry = tokens.get(audience).ok_or_else(|| {
        invalid(
            field(),
            format!("no token for audience {audience:?}: check tokenRequests"),
        )
    })?;
    if entry.token.is_empty() {
        return Err(invalid(
            field(),
            format!("the token for audience {audience:?} is empty"),
        ));
    }
    Ok(PodToken {
        token: BearerToken::new(entry.token.clone()),
        expires: entry.expiration_timestamp,
    })
}

fn parse_fs_group(
    mount_group: &str,
    context: &std::collections::HashMap<String, String>,
) -> Result<Option<u32>, InvalidRequest> {
    let parse = |field: String, value: &str| {
        value
            .parse::<u32>()
            .map_err(|_| invalid(field, format!("{value:?} is not a numeric group id")))
    };
    if !mount_group.is_empty() {
        return parse(
            "volume_capability.mount.volume_mount_group".into(),
            mount_group,
        )
        .map(Some);
    }
    match context.get(FS_GROUP_KEY) {
        Some(value) => parse(format!("volume_context[{FS_GROUP_KEY}]"), value).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request as kubelet sends it for an inline volume with `readOnly: true`.
    pub(crate) fn kubelet_request(token: &str) -> csi::NodePublishVolumeRequest {
        let mut request = csi::NodePublishVolumeRequest {
            volume_id: "csi-0123abcd".into(),
            target_path: "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/spiffe/mount"
                .into(),
            volume_capability: Some(csi::VolumeCapability {
                access_type: Some(volume_capability::AccessType::Mount(Default::default())),
                access_mode: Some(volume_capability::AccessMode {
                    mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
            }),
            readonly: true,
            ..Default::default()
        };
        let context = &mut request.volume_context;
        for (k, v) in [
            (EPHEMERAL_KEY, "true"),
            (POD_NAME_KEY, "web-0"),
            (POD_NAMESPACE_KEY, "demo"),
            (POD_UID_KEY, "uid-1"),
            (SERVICE_ACCOUNT_KEY, "web"),
        ] {
            context.insert(k.into(), v.into());
        }
        let tokens = serde_json::json!({
            "": {"token": token, "expirationTimestamp": "2026-12-04T18:00:00Z"}
        });
        context.insert(TOKENS_KEY.into(), tokens.to_string());
        request
    }

    #[test]
    fn a_kubelet_request_parses() {
        let parsed = parse_publish(&kubelet_request("tok"), "").unwrap();
        assert_eq!(parsed.pod.name, "web-0");
        assert_eq!(parsed.pod.service_account, "web");
        assert_eq!(parsed.token.token.expose(), "tok");
        assert!(parsed.token.expires.is_some());
        assert_eq!(parsed.fs_group, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        type Edit = fn(&mut csi::NodePublishVolumeRequest);
        let cases: Vec<(Edit, &str)> = vec![
            (|r| r.volume_id.clear(), "volume_id"),
            (|r| r.volume_id = "../../etc".into(), "volume_id"),
            (|r| r.target_path = "relative/path".into(), "target_path"),
            (
                |r| r.target_path = "/var/lib/../../etc".into(),
                "target_path",
            ),
            (|r| r.target_path = "/".into(), "target_path"),
            (|r| r.volume_capability = None, "volume_capability"),
            (
                |r| {
                    r.volume_capability.as_mut().unwrap().access_type =
                        Some(volume_capability::AccessType::Block(Default::default()))
                },
                "volume_capability",
            ),
            (|r| r.readonly = false, "readonly"),
            (
                |r| {
                    r.volume_context.remove(EPHEMERAL_KEY);
                },
                "volume_context[csi.storage.k8s.io/ephemeral]",
            ),
            (
                |r| {
                    r.volume_context.remove(POD_UID_KEY);
                },
                "volume_context[csi.storage.k8s.io/pod.uid]",
            ),
            (
                |r| {
                    r.volume_context
                        .insert(TOKENS_KEY.into(), "{not json".into());
                },
                "volume_context[csi.storage.k8s.io/serviceAccount.tokens]",
            ),
            (
                |r| {
                    r.volume_context
                        .insert(TOKENS_KEY.into(), r#"{"other":{"token":"t"}}"#.into());
                },
                "volume_context[csi.storage.k8s.io/serviceAccount.tokens]",
            ),
            (
                |r| {
                    r.volume_context.insert(FS_GROUP_KEY.into(), "wheel".into());
                },
                "volume_context[spiffe.csi.cert-manager.io/fs-group]",
            ),
        ];
        for (edit, field) in cases {
            let mut request = kubelet_request("secret-token");
            edit(&mut request);
            let err = parse_publish(&request, "").unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(!err.to_string().contains("secret-token"), "{err}");
        }
    }

    #[test]
    fn fs_group_comes_from_the_mount_group_first() {
        let mut request = kubelet_request("t");
        request
            .volume_context
            .insert(FS_GROUP_KEY.into(), "2000".into());
        assert_eq!(parse_publish(&request, "").unwrap().fs_group, Some(2000));
        if let Some(volume_capability::AccessType::Mount(mount)) =
            &mut request.volume_capability.as_mut().unwrap().access_type
        {
            mount.volume_mount_group = "3000".into();
        }
        assert_eq!(parse_publish(&request, "").unwrap().fs_group, Some(3000));
    }
}
