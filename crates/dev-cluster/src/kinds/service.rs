//! core/v1 Services: defaulting, cluster IP allocation from 10.0.0.0/24 (the recording
//! cluster's `--service-cluster-ip-range`), and the validation clients most often meet.
//!
//! Nothing routes traffic: a Service exists so that policies can check names against it,
//! and so that webhook configurations can name one (see `DevCluster::route_service`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::status::{ApiError, Cause, Details};
use crate::store::Inner;

use super::set_default;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
/// The service range: 10.0.0.0/24, network and broadcast addresses excluded.
const RANGE_BASE: [u8; 3] = [10, 0, 0];

fn spec_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.get_mut("spec").and_then(Value::as_object_mut)
}

fn service_type(obj: &Value) -> &str {
    obj.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// Defaults the writer is credited with: type, session affinity, traffic policy, and each
/// port's protocol and target port.
pub(super) fn default_fields(obj: &mut Value) {
    let Some(spec) = spec_mut(obj) else { return };
    set_default(spec, "type", "ClusterIP".into());
    set_default(spec, "sessionAffinity", "None".into());
    if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
        set_default(spec, "internalTrafficPolicy", "Cluster".into());
    }
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    for port in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
        set_default(port, "protocol", "TCP".into());
        if let Some(number) = port.get("port").cloned() {
            set_default(port, "targetPort", number);
        }
    }
}

/// What the service registry adds on create (credited to nobody): IP families and an
/// empty load-balancer status.
pub(super) fn admit_create(obj: &mut Value) {
    let external_name = service_type(obj) == "ExternalName";
    if let Some(spec) = spec_mut(obj)
        && !external_name
    {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", "SingleStack".into());
    }
    if let Value::Object(map) = obj {
        map.insert("status".into(), json!({"loadBalancer": {}}));
    }
}

/// Validation (422 causes).
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let kind = service_type(obj);
    if !TYPES.contains(&kind) {
        causes.push(Cause::not_supported("spec.type", kind, TYPES));
        return;
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        } else if !name.is_empty() && !names.insert(name) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}].name"),
                &format!("{name:?}"),
            ));
        }
        match port.get("port").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            other => causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &other.unwrap_or(0).to_string(),
                "must be between 1 and 65535, inclusive",
            )),
        }
    }
}

fn invalid_ip(name: &str, ip: &str, detail: &str) -> ApiError {
    let cause = Cause::invalid("spec.clusterIPs", &format!("[\"{ip}\"]"), detail);
    ApiError::invalid(
        "Service",
        name,
        Details::object(name, "", "Service"),
        vec![cause],
    )
}

/// Allocates the cluster IP of a new Service (or takes the one asked for, if free).
pub(crate) fn allocate(st: &Inner, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    if service_type(obj) == "ExternalName" {
        return Ok(());
    }
    let used: BTreeSet<String> = st
        .all("services")
        .filter_map(|(_, s)| s.pointer("/spec/clusterIP").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let asked = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned);
    let ip = match asked {
        Some(none) if none == "None" => none,
        Some(ip) => {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid_ip(name, &ip, "must be a valid IP address, (e.g. 10.9.8.7)")
            })?;
            let o = parsed.octets();
            if o[..3] != RANGE_BASE || o[3] == 0 || o[3] == 255 {
                return Err(invalid_ip(
                    name,
                    &ip,
                    "failed to allocate IP: the provided IP is not in the valid range",
                ));
            }
            if used.contains(&ip) {
                return Err(invalid_ip(
                    name,
                    &ip,
                    "failed to allocate IP: provided IP is already allocated",
                ));
            }
            ip
        }
        None => (1..=254u8)
            .map(|last| {
                Ipv4Addr::new(RANGE_BASE[0], RANGE_BASE[1], RANGE_BASE[2], last).to_string()
            })
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?,
    };
    if let Some(spec) = spec_mut(obj) {
        spec.insert("clusterIP".into(), ip.clone().into());
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, key};

    #[test]
    fn ports_are_defaulted_and_checked() {
        let mut svc = json!({"spec": {"ports": [{"port": 443}]}});
        default_fields(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 443);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        let cases = [
            (json!({"spec": {}}), vec!["spec.ports"]),
            (json!({"spec": {"clusterIP": "None"}}), vec![]),
            (json!({"spec": {"type": "ExternalName"}}), vec![]),
            (json!({"spec": {"type": "Magic"}}), vec!["spec.type"]),
            (
                json!({"spec": {"ports": [{"port": 0}, {"port": 80}]}}),
                vec![
                    "spec.ports[0].name",
                    "spec.ports[0].port",
                    "spec.ports[1].name",
                ],
            ),
            (
                json!({"spec": {"ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}}),
                vec!["spec.ports[1].name"],
            ),
        ];
        for (svc, want) in cases {
            let mut causes = Vec::new();
            validate(&svc, &mut causes);
            let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
            assert_eq!(fields, want, "{svc}");
        }
    }

    #[test]
    fn cluster_ips_are_unique_and_in_range() {
        let store = Store::new(10);
        let mut st = store.lock();
        let mut first = json!({"spec": {}});
        allocate(&st, &mut first, "a").expect("allocated");
        assert_eq!(first["spec"]["clusterIP"], "10.0.0.1");
        st.insert("services", key(Some("ns"), "a"), first);
        let mut second = json!({"spec": {}});
        allocate(&st, &mut second, "b").expect("allocated");
        assert_eq!(second["spec"]["clusterIPs"], json!(["10.0.0.2"]));
        for ip in ["10.0.0.1", "192.168.0.1", "not-an-ip"] {
            let mut taken = json!({"spec": {"clusterIP": ip}});
            let err = allocate(&st, &mut taken, "c").expect_err(ip);
            assert_eq!(err.code, 422, "{ip}");
        }
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        allocate(&st, &mut headless, "d").expect("headless");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }
}
