//! The approval conditions of a CertificateRequest: at most one `Approved` and one
//! `Denied`, each `True`, never both, and once written never removed or changed.

use nico_k8s_types::{Condition, ConditionType};

use crate::review::Problem;

const FIELD: &str = "status.conditions";

/// A decision condition: `Approved` or `Denied`.
fn decision(condition: &Condition) -> Option<ConditionType> {
    match condition.type_.as_str() {
        "Approved" => Some(ConditionType::Approved),
        "Denied" => Some(ConditionType::Denied),
        _ => None,
    }
}

fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// The same decision: type, status, reason and message (timestamps may be rewritten).
fn same(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_ && a.status == b.status && a.reason == b.reason && a.message == b.message
}

/// The problems with `new`'s decision conditions, given `old`'s (none on create).
pub(crate) fn check(old: &[Condition], new: &[Condition]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for type_ in [ConditionType::Approved, ConditionType::Denied] {
        let name = type_.as_str();
        let count = new.iter().filter(|c| c.type_ == name).count();
        if count > 1 {
            problems.push(Problem::new(
                FIELD,
                format!("{count} {name} conditions: at most one is allowed"),
            ));
        }
        for (i, condition) in new.iter().enumerate() {
            if condition.type_ == name && condition.status != "True" {
                problems.push(Problem::new(
                    format!("{FIELD}[{i}].status"),
                    format!("{name} may only be True, not {:?}", condition.status),
                ));
            }
        }
        if let Some(before) = find(old, type_) {
            match find(new, type_) {
                None => problems.push(Problem::new(
                    FIELD,
                    format!("the {name} condition may not be removed"),
                )),
                Some(after) if !same(before, after) => problems.push(Problem::new(
                    FIELD,
                    format!("the {name} condition may not be changed"),
                )),
                Some(_) => {}
            }
        }
    }
    if find(new, ConditionType::Approved).is_some() && find(new, ConditionType::Denied).is_some() {
        problems.push(Problem::new(
            FIELD,
            "a request may not be both Approved and Denied",
        ));
    }
    problems
}

/// The decision `new` adds over `old`, if any: what needs permission to approve.
pub(crate) fn added(old: &[Condition], new: &[Condition]) -> Option<ConditionType> {
    new.iter()
        .filter_map(decision)
        .find(|type_| find(old, *type_).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some("m".into()),
            ..Condition::default()
        }
    }

    #[test]
    fn every_condition_rule() {
        let approved = c("Approved", "True", "A");
        let denied = c("Denied", "True", "D");
        let ready = c("Ready", "False", "Pending");
        let mut retimed = approved.clone();
        retimed.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        // (old, new, expected problem messages)
        let cases: Vec<(Vec<Condition>, Vec<Condition>, Vec<&str>)> = vec![
            (vec![], vec![approved.clone()], vec![]),
            (vec![], vec![denied.clone(), ready.clone()], vec![]),
            (
                vec![approved.clone()],
                vec![retimed.clone(), ready.clone()],
                vec![],
            ),
            (
                vec![],
                vec![approved.clone(), approved.clone()],
                vec!["status.conditions: 2 Approved conditions: at most one is allowed"],
            ),
            (
                vec![],
                vec![c("Denied", "False", "D")],
                vec!["status.conditions[0].status: Denied may only be True, not \"False\""],
            ),
            (
                vec![],
                vec![c("Approved", "Unknown", "A")],
                vec!["status.conditions[0].status: Approved may only be True, not \"Unknown\""],
            ),
            (
                vec![],
                vec![approved.clone(), denied.clone()],
                vec!["status.conditions: a request may not be both Approved and Denied"],
            ),
            (
                vec![approved.clone()],
                vec![approved.clone(), denied.clone()],
                vec!["status.conditions: a request may not be both Approved and Denied"],
            ),
            (
                vec![approved.clone()],
                vec![ready.clone()],
                vec!["status.conditions: the Approved condition may not be removed"],
            ),
            (
                vec![denied.clone()],
                vec![c("Denied", "True", "Changed")],
                vec!["status.conditions: the Denied condition may not be changed"],
            ),
        ];
        for (old, new, expected) in cases {
            let found: Vec<String> = check(&old, &new).iter().map(ToString::to_string).collect();
            assert_eq!(found, expected, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn only_new_decisions_need_permission() {
        let approved = c("Approved", "True", "A");
        let ready = c("Ready", "True", "Issued");
        assert_eq!(
            added(&[], std::slice::from_ref(&approved)),
            Some(ConditionType::Approved)
        );
        assert_eq!(
            added(
                std::slice::from_ref(&approved),
                &[approved.clone(), ready.clone()]
            ),
            None
        );
        assert_eq!(added(&[], &[ready]), None);
        let denied = c("Denied", "True", "D");
        assert_eq!(added(&[], &[denied]), Some(ConditionType::Denied));
    }
}
