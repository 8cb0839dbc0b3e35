//! Turning kubelet's NodePublishVolume request into checked facts about the pod and volume.
//!
//! Everything in the request is untrusted input: each problem becomes an `InvalidArgument`
//! naming the field, and nothing here touches the disk or the network.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use jiff::Timestamp;
use nico_csr::KeyAlgorithm;
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
/// Volume attribute choosing the key algorithm, within the configured allow-list.
pub(crate) const KEY_ALGORITHM_KEY: &str = "identity.nico.io/key-algorithm";

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
    /// The pod's token; absent only when the driver requests as itself.
    pub(crate) token: Option<PodToken>,
    pub(crate) fs_group: Option<u32>,
    pub(crate) key_algorithm: KeyAlgorithm,
}

/// What request parsing needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestRules<'a> {
    pub(crate) token_audience: &'a str,
    pub(crate) token_required: bool,
    pub(crate) target_roots: &'a [PathBuf],
    pub(crate) default_key_algorithm: KeyAlgorithm,
    pub(crate) allowed_key_algorithms: &'a [KeyAlgorithm],
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

/// Longest piece of a request repeated in a refusal: refusals travel to kubelet and into the
/// pod's events, and a target path may be as long as the request.
const SHOWN: usize = 256;

/// `text` cut to [`SHOWN`] characters, marked with `...` when cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
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

/// Checks a target path: absolute, normal components only, strictly inside one of `roots`,
/// and reached without following a symlink below the root (a symlink planted there could
/// otherwise send writes or mounts anywhere on the node).
pub(crate) fn check_target_path(
    target_path: &str,
    roots: &[PathBuf],
) -> Result<PathBuf, InvalidRequest> {
    if target_path.is_empty() {
        return Err(invalid("target_path", "required"));
    }
    let path = Path::new(target_path);
    let normal = path.is_absolute()
        && !target_path.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal || path.components().count() < 2 {
        return Err(invalid(
            "target_path",
            "must be an absolute path without '.' or '..' components",
        ));
    }
    let Some(root) = roots
        .iter()
        .find(|root| path.starts_with(root) && path != root.as_path())
    else {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(invalid(
            "target_path",
            format!(
                "{} is outside the allowed roots [{}]",
                clip(target_path),
                roots.join(", ")
            ),
        ));
    };
    let mut walked = root.clone();
    // invariant: `path` starts with `root`, checked just above.
    let below = path.strip_prefix(root).unwrap_or(path);
    for component in below.components() {
        walked.push(component);
        match std::fs::symlink_metadata(&walked) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(invalid(
                    "target_path",
                    format!(
                        "{} is a symlink: refusing to follow it",
                        clip(&walked.display().to_string())
                    ),
                ));
            }
            Ok(_) => {}
            // Everything below a missing component is created by the driver.
            Err(_) => break,
        }
    }
    // Rebuilt from its components: `//`, `/./` and a trailing `/` dropped, as the kernel
    // spells mount points, which `/proc/self/mountinfo` is searched for by text.
    Ok(path.components().collect())
}

/// Checks a NodePublishVolume request and extracts the pod's facts and token.
pub(crate) fn parse_publish(
    request: &csi::NodePublishVolumeRequest,
    rules: RequestRules<'_>,
) -> Result<PublishRequest, InvalidRequest> {
    check_volume_id(&request.volume_id)?;
    let target_path = check_target_path(&request.target_path, rules.target_roots)?;
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
    let token = match parse_token(context, rules.token_audience) {
        Ok(token) => Some(token),
        Err(error) if rules.token_required => return Err(error),
        Err(_) => None,
    };
    let fs_group = parse_fs_group(&mount.volume_mount_group, context)?;
    let key_algorithm = match context.get(KEY_ALGORITHM_KEY) {
        None => rules.default_key_algorithm,
        Some(name) => {
            let field = || format!("volume_context[{KEY_ALGORITHM_KEY}]");
            let allowed: Vec<&str> = rules
                .allowed_key_algorithms
                .iter()
                .map(|a| a.as_str())
                .collect();
            let algorithm = name
                .parse::<KeyAlgorithm>()
                .map_err(|e| invalid(field(), clip(&e.to_string())))?;
            if !rules.allowed_key_algorithms.contains(&algorithm) {
                return Err(invalid(
                    field(),
                    format!(
                        "{} is not allowed on this node: expected one of {}",
                        clip(name),
                        allowed.join(", ")
                    ),
                ));
            }
            algorithm
        }
    };
    Ok(PublishRequest {
        volume_id: request.volume_id.clone(),
        target_path,
        pod,
        token,
        fs_group,
        key_algorithm,
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
        value.parse::<u32>().map_err(|_| {
            invalid(
                field,
                format!("{:?} is not a numeric group id", clip(value)),
            )
        })
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

    pub(crate) const ROOTS: &[&str] = &["/var/lib/kubelet/pods"];

    pub(crate) fn rules(roots: &[PathBuf]) -> RequestRules<'_> {
        RequestRules {
            token_audience: "",
            token_required: true,
            target_roots: roots,
            default_key_algorithm: KeyAlgorithm::EcdsaP256,
            allowed_key_algorithms: &[KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519],
        }
    }

    fn parse(request: &csi::NodePublishVolumeRequest) -> Result<PublishRequest, InvalidRequest> {
        let roots: Vec<PathBuf> = ROOTS.iter().map(PathBuf::from).collect();
        parse_publish(request, rules(&roots))
    }

    #[test]
    fn a_kubelet_request_parses() {
        let parsed = parse(&kubelet_request("tok")).unwrap();
        assert_eq!(parsed.pod.name, "web-0");
        assert_eq!(parsed.pod.service_account, "web");
        let token = parsed.token.unwrap();
        assert_eq!(token.token.expose(), "tok");
        assert!(token.expires.is_some());
        assert_eq!(parsed.fs_group, None);
        assert_eq!(parsed.key_algorithm, KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn a_volume_may_choose_an_allowed_key_algorithm_only() {
        let mut request = kubelet_request("t");
        request
            .volume_context
            .insert(KEY_ALGORITHM_KEY.into(), "ed25519".into());
        assert_eq!(
            parse(&request).unwrap().key_algorithm,
            KeyAlgorithm::Ed25519
        );
        request
            .volume_context
            .insert(KEY_ALGORITHM_KEY.into(), "rsa-4096".into());
        let err = parse(&request).unwrap_err();
        assert!(err.reason.contains("not allowed on this node"), "{err}");
    }

    #[test]
    fn targets_outside_the_roots_or_through_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pods");
        std::fs::create_dir_all(root.join("uid-1/volumes")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("uid-2")).unwrap();
        let roots = vec![root.clone()];
        let inside = root.join("uid-1/volumes/x/mount");
        assert_eq!(
            check_target_path(inside.to_str().unwrap(), &roots).unwrap(),
            inside
        );
        for bad in [
            "/etc/passwd".to_owned(),
            root.display().to_string(),
            format!("{}/uid-2/volumes/x/mount", root.display()),
            format!("{}-sibling/x", root.display()),
        ] {
            let err = check_target_path(&bad, &roots).unwrap_err();
            assert_eq!(err.field, "target_path", "{bad}: {err}");
        }
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
            (
                |r| r.target_path = "/tmp/elsewhere/mount".into(),
                "target_path",
            ),
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
            let err = parse(&request).unwrap_err();
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
        assert_eq!(parse(&request).unwrap().fs_group, Some(2000));
        if let Some(volume_capability::AccessType::Mount(mount)) =
            &mut request.volume_capability.as_mut().unwrap().access_type
        {
            mount.volume_mount_group = "3000".into();
        }
        assert_eq!(parse(&request).unwrap().fs_group, Some(3000));
    }
}

#[cfg(test)]
mod fuzz;
