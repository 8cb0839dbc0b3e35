//! The generated CSI gRPC code, plus the one `Debug` it must not derive.

use std::fmt;

/// CSI v1 messages, services and clients generated from `proto/csi.proto`.
#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code: lints apply to the .proto and the generator, not to the output"
)]
pub mod csi {
    include!("generated/csi.v1.rs");
}

/// kubelet's plugin registration API, generated from `proto/registration.proto`.
#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code: lints apply to the .proto and the generator, not to the output"
)]
pub mod pluginregistration {
    include!("generated/pluginregistration.rs");
}

/// The volume context key under which kubelet passes the pod's service-account tokens.
pub(crate) const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

impl fmt::Debug for csi::NodePublishVolumeRequest {
    /// Shows everything that helps debugging and nothing that authenticates: secrets are
    /// counted, the token entry of the volume context is replaced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context: std::collections::BTreeMap<&str, &str> = self
            .volume_context
            .iter()
            .map(|(k, v)| {
                let v = if k == TOKENS_KEY {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("NodePublishVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("target_path", &self.target_path)
            .field("staging_target_path", &self.staging_target_path)
            .field("volume_capability", &self.volume_capability)
            .field("readonly", &self.readonly)
            .field("publish_context", &self.publish_context)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("volume_context", &context)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_tokens_and_secrets() {
        let mut request = csi::NodePublishVolumeRequest {
            volume_id: "csi-1".into(),
            ..Default::default()
        };
        request
            .volume_context
            .insert(TOKENS_KEY.into(), r#"{"":{"token":"eyJhbGci"}}"#.into());
        request
            .volume_context
            .insert("csi.storage.k8s.io/pod.name".into(), "web-0".into());
        request.secrets.insert("password".into(), "hunter2".into());
        let shown = format!("{request:?}");
        assert!(!shown.contains("eyJhbGci"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("web-0") && shown.contains("<1 redacted>"),
            "{shown}"
        );
    }
}
