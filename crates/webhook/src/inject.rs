//! Pod injection: a pod labelled `identity.nico.io/inject: "true"` gets the identity CSI
//! volume and, in each container and init container, a read-only mount of it.
//!
//! What is already there is kept: a volume of the identity driver (under any name) is used
//! instead of adding one, and a container that already mounts that volume, or mounts
//! anything at the mount path, is left as it is. Injecting an injected pod changes
//! nothing. A volume of another kind under the injected volume's name is a conflict the
//! pod's author must resolve, and is refused.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::{Value, json};

use crate::config::{INJECT_LABEL, Injection};
use crate::review::{Problem, Verdict};

/// The mutating webhook.
pub(crate) fn review(request: &AdmissionRequest<DynamicObject>, injection: &Injection) -> Verdict {
    let Some(object) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return Verdict::Allow;
    };
    let requested = object
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(INJECT_LABEL))
        .is_some_and(|value| value == "true");
    if !requested {
        return Verdict::Allow;
    }
    let Ok(pod) = serde_json::to_value(object) else {
        return Verdict::Invalid(vec![Problem::new("spec", "the pod could not be read")]);
    };
    match inject(&pod, injection) {
        Ok(injected) => Verdict::Patch(json_patch::diff(&pod, &injected)),
        Err(problem) => Verdict::Invalid(vec![problem]),
    }
}

/// The pod with the identity volume and its mounts.
pub(crate) fn inject(pod: &Value, injection: &Injection) -> Result<Value, Problem> {
    let mut pod = pod.clone();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(Problem::new("spec", "a pod needs a spec"));
    };
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| Problem::new("spec.volumes", "must be a list"))?;
    let driver_of = |volume: &Value| {
        volume
            .pointer("/csi/driver")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let existing = volumes
        .iter()
        .find(|v| driver_of(v).as_deref() == Some(injection.driver_name.as_str()))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .map(str::to_owned);
    let volume_name = match existing {
        Some(name) => name,
        None => {
            let taken = volumes
                .iter()
                .any(|v| v.get("name").and_then(Value::as_str) == Some(&injection.volume_name));
            if taken {
                return Err(Problem::new(
                    "spec.volumes",
                    format!(
                        "a volume named {:?} exists and is not a {} CSI volume: rename it, or \
                         remove the {INJECT_LABEL} label and mount the identity volume yourself",
                        injection.volume_name, injection.driver_name
                    ),
                ));
            }
            volumes.push(json!({
                "name": injection.volume_name,
                "csi": {"driver": injection.driver_name, "readOnly": true},
            }));
            injection.volume_name.clone()
        }
    };
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container
                .entry("volumeMounts")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or_else(|| {
                    Problem::new(format!("spec.{list}.volumeMounts"), "must be a list")
                })?;
            let present = mounts.iter().any(|m| {
                m.get("name").and_then(Value::as_str) == Some(&volume_name)
                    || m.get("mountPath").and_then(Value::as_str) == Some(&injection.mount_path)
            });
            if !present {
                mounts.push(json!({
                    "name": volume_name,
                    "mountPath": injection.mount_path,
                    "readOnly": true,
                }));
            }
        }
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::admission;

    fn injection() -> Injection {
        Injection::default()
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-0", "labels": {INJECT_LABEL: "true"}},
               "spec": spec})
    }

    fn container(name: &str) -> Value {
        json!({"name": name, "image": "registry.k8s.io/pause:3.10"})
    }

    #[test]
    fn injection_output_matches_the_snapshots_and_is_idempotent() {
        let cases = [
            ("plain", pod(json!({"containers": [container("app")]}))),
            (
                "sidecars_and_init_containers",
                pod(json!({
                    "initContainers": [container("setup")],
                    "containers": [container("app"), container("proxy")],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                })),
            ),
            (
                "already_mounted_elsewhere",
                pod(json!({
                    "containers": [
                        {"name": "app", "image": "x",
                         "volumeMounts": [{"name": "certs",
                                           "mountPath": "/var/run/secrets/spiffe.io"}]},
                        {"name": "other", "image": "x"}
                    ],
                    "volumes": [{"name": "certs", "secret": {"secretName": "s"}}],
                })),
            ),
            (
                "existing_identity_volume_under_another_name",
                pod(json!({
                    "containers": [container("app")],
                    "volumes": [{"name": "id",
                                 "csi": {"driver": "spiffe.csi.cert-manager.io",
                                         "readOnly": true}}],
                })),
            ),
        ];
        for (name, pod) in cases {
            let injected = inject(&pod, &injection()).unwrap();
            insta::assert_json_snapshot!(name, injected["spec"]);
            let again = inject(&injected, &injection()).unwrap();
            assert_eq!(again, injected, "{name}: injecting twice changes nothing");
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &json_patch::diff(&pod, &injected)).unwrap();
            assert_eq!(
                patched, injected,
                "{name}: the patch produces the injected pod"
            );
        }
    }

    #[test]
    fn conflicts_and_unlabelled_pods() {
        let clash = pod(json!({"containers": [container("app")],
                               "volumes": [{"name": "spiffe", "emptyDir": {}}]}));
        let err = inject(&clash, &injection()).unwrap_err();
        assert_eq!(err.field, "spec.volumes");
        assert!(err.message.contains("\"spiffe\" exists"), "{}", err.message);

        let review = |pod: Value| {
            admission(json!({
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "web-0", "namespace": "demo", "object": pod,
            }))
        };
        let mut unlabelled = pod(json!({"containers": [container("app")]}));
        unlabelled["metadata"]["labels"][INJECT_LABEL] = "false".into();
        assert_eq!(
            super::review(&review(unlabelled), &injection()),
            Verdict::Allow
        );
        let labelled = pod(json!({"containers": [container("app")]}));
        match super::review(&review(labelled), &injection()) {
            Verdict::Patch(patch) => assert_eq!(patch.0.len(), 2, "{patch:?}"),
            other => panic!("expected a patch, got {other:?}"),
        }
        assert!(matches!(
            super::review(&review(clash), &injection()),
            Verdict::Invalid(_)
        ));
    }
}
