//! CEL validation rules: parsed, checked, costed and trial-evaluated when a policy loads,
//! so that a rule that can never work is reported on the policy instead of denying requests
//! one by one; then evaluated once per requested value.
//!
//! A rule sees `self` (the value being judged, a string), `cr` (`name`, `namespace`,
//! `username`, `groups` of the request) and `services` (the names of the Services in the
//! request's namespace; a nico-identity addition, looked up only for policies that use it).
//! The CEL runtime cannot be interrupted, so every rule's worst-case cost is estimated from
//! its syntax tree when it loads, with lists bounded by [`MAX_LIST_ITEMS`], and a rule over
//! the limit is refused.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use kube_cel::KubeCelExt as _;
use kube_cel::cel::common::ast::{EntryExpr, Expr};
use kube_cel::cel::{self, ExecutionError, IdedExpr, Program, Value};

/// The most elements a list variable (`cr.groups`, `services`) may hold. A request whose
/// lists are longer is not evaluated, so cost estimates stay upper bounds.
pub const MAX_LIST_ITEMS: usize = 1024;

/// The default cost limit per rule: the per-expression limit Kubernetes uses for CEL.
pub const DEFAULT_COST_LIMIT: u64 = 1_000_000;

/// The longest rule accepted, in bytes.
pub const MAX_RULE_LEN: usize = 4096;

/// The deepest syntax tree accepted. Evaluation recurses over the tree on whatever thread
/// judges the request; real rules are a few levels deep.
const MAX_DEPTH: usize = 64;

/// The stack rules must be loaded on (see [`on_deep_stack`]): the parser recurses once per
/// operator of a chain like `1+1+...+1`, and a rule of [`MAX_RULE_LEN`] bytes must not
/// exhaust it.
const LOAD_STACK: usize = 64 * 1024 * 1024;

/// Runs `work` (which loads rules) on a thread whose stack suffices for any rule of
/// [`MAX_RULE_LEN`] bytes. Parsing, checking and dropping a rule recurse as deep as it
/// nests, which only the parser knows; rules that load are shallow enough for any thread.
pub(crate) fn on_deep_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel-load".to_owned())
            .stack_size(LOAD_STACK)
            .spawn_scoped(scope, work)
            .map_err(|e| format!("failed to start loading the rules: {e}"))?
            .join()
            .map_err(|_| "loading the rules failed unexpectedly".to_owned())
    })
}

/// The longest parser message repeated (the parser quotes the rule once per error).
const MAX_PARSE_MESSAGE: usize = 300;

/// Extra cost of a regular-expression function, which compiles its pattern per call.
const REGEX_CALL_COST: u64 = 100;

/// The variables a rule may name.
const VARIABLES: [&str; 3] = ["self", "cr", "services"];

/// The fields of `cr`.
const CR_FIELDS: [&str; 4] = ["name", "namespace", "username", "groups"];

thread_local! {
    /// The standard and Kubernetes CEL functions, built once per thread: building them
    /// costs tens of microseconds, more than evaluating a typical rule.
    static FUNCTIONS: cel::Context<'static> = cel::Context::default().with_all();
}

/// A loaded rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    source: String,
    message: Option<String>,
    program: Arc<Program>,
    cost: u64,
    uses_services: bool,
}

/// The per-request variables, built once and shared by every rule of every policy.
#[derive(Clone, Debug)]
pub(crate) struct Variables {
    cr: Value,
    services: Option<Value>,
}

/// What a rule is shown as while it loads, when a sample value is needed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample<'a> {
    /// A value of the kind the rule judges, e.g. a DNS name.
    pub(crate) value: &'a str,
}

impl Variables {
    /// The variables for one request. Fails when a list is longer than [`MAX_LIST_ITEMS`].
    pub(crate) fn new(
        name: &str,
        namespace: &str,
        username: &str,
        groups: &[String],
        services: Option<&[String]>,
    ) -> Result<Self, String> {
        if groups.len() > MAX_LIST_ITEMS {
            return Err(format!(
                "the requester has {} groups, more than the {MAX_LIST_ITEMS} a validation may see",
                groups.len()
            ));
        }
        if let Some(services) = services
            && services.len() > MAX_LIST_ITEMS
        {
            return Err(format!(
                "namespace {namespace} has {} Services, more than the {MAX_LIST_ITEMS} a \
                 validation may see",
                services.len()
            ));
        }
        let cr: HashMap<&str, Value> = HashMap::from([
            ("name", Value::from(name)),
            ("namespace", Value::from(namespace)),
            ("username", Value::from(username)),
            ("groups", Value::from(groups.to_vec())),
        ]);
        Ok(Self {
            cr: Value::from(cr),
            services: services.map(|s| Value::from(s.to_vec())),
        })
    }

    fn sample() -> Self {
        // invariant: one group and one service are within MAX_LIST_ITEMS.
        Self::new(
            "sample",
            "default",
            "system:serviceaccount:default:sample",
            &["system:authenticated".to_owned()],
            Some(&["sample".to_owned()]),
        )
        .expect("sample lists are short")
    }
}

impl Rule {
    /// Parses and checks `source`: every variable and function must exist, `cr` fields must
    /// be known, the estimated cost must stay within `cost_limit`, and a trial evaluation on
    /// `sample` must give a boolean. Call it inside [`on_deep_stack`].
    pub(crate) fn load(
        source: &str,
        message: Option<&str>,
        cost_limit: u64,
        sample: Sample<'_>,
    ) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("rule is empty".to_owned());
        }
        if let Some(message) = message
            && message.contains(['\n', '\r'])
        {
            return Err("message must be a single line".to_owned());
        }
        if message.is_none() && source.contains(['\n', '\r']) {
            return Err("a rule spanning several lines needs a message".to_owned());
        }
        if source.len() > MAX_RULE_LEN {
            return Err(format!(
                "rule is {} bytes long, more than the {MAX_RULE_LEN} allowed",
                source.len()
            ));
        }
        let program = Program::compile(source).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let shown: String = first.chars().take(MAX_PARSE_MESSAGE).collect();
            format!("does not parse: {shown}")
        })?;
        let mut check = Check::default();
        let cost = FUNCTIONS.with(|functions| check.walk(program.expression(), functions));
        if check.deepest > MAX_DEPTH {
            return Err(format!(
                "nests {} levels deep, more than the {MAX_DEPTH} allowed",
                check.deepest
            ));
        }
        if let Some(first) = check.errors.into_iter().next() {
            return Err(first);
        }
        if cost > cost_limit {
            return Err(format!(
                "estimated cost {cost} exceeds the limit {cost_limit} (lists count as \
                 {MAX_LIST_ITEMS} items; avoid nested macros over lists)"
            ));
        }
        let rule = Self {
            source: source.to_owned(),
            message: message.map(str::to_owned),
            program: Arc::new(program),
            cost,
            uses_services: check.uses_services,
        };
        match rule.execute(sample.value, &Variables::sample()) {
            Ok(Value::Bool(_)) => Ok(rule),
            Ok(other) => Err(format!(
                "must evaluate to a boolean, evaluated to a {}",
                other.type_of()
            )),
            // A missing variable, key or function is wrong whatever the request; other
            // errors (an index past the end of the sample) may depend on the value judged.
            Err(e @ (ExecutionError::UndeclaredReference(_) | ExecutionError::NoSuchKey(_))) => {
                Err(format!("fails on a trial evaluation: {e}"))
            }
            Err(_) => Ok(rule),
        }
    }

    /// Whether the rule reads `services`.
    pub(crate) fn uses_services(&self) -> bool {
        self.uses_services
    }

    /// The estimated worst-case cost.
    pub(crate) fn cost(&self) -> u64 {
        self.cost
    }

    /// Judges one value: `Ok(true)` passes; an error is described for the requester.
    pub(crate) fn passes(&self, value: &str, variables: &Variables) -> Result<bool, String> {
        if self.uses_services && variables.services.is_none() {
            return Err("the Services of the namespace were not looked up".to_owned());
        }
        match self.execute(value, variables) {
            Ok(Value::Bool(passed)) => Ok(passed),
            Ok(other) => Err(format!(
                "rule `{}` evaluated to a {}, not a boolean",
                self.source,
                other.type_of()
            )),
            Err(e) => Err(format!(
                "rule `{}` could not be evaluated: {e}",
                self.source
            )),
        }
    }

    /// What a failure is reported as: the author's message, or the rule itself.
    pub(crate) fn failure(&self) -> String {
        match &self.message {
            Some(message) => message.clone(),
            None => format!("failed rule: `{}`", self.source),
        }
    }

    fn execute(&self, value: &str, variables: &Variables) -> Result<Value, ExecutionError> {
        FUNCTIONS.with(|functions| {
            let mut ctx = functions.new_inner_scope();
            ctx.add_variable_from_value("self", value);
            ctx.add_variable_from_value("cr", variables.cr.clone());
            if let Some(services) = &variables.services {
                ctx.add_variable_from_value("services", services.clone());
            }
            self.program.execute(&ctx)
        })
    }
}

/// What walking a rule's syntax tree found.
#[derive(Default)]
struct Check {
    /// Names bound by enclosing macros (`s` in `services.exists(s, ...)`).
    bound: Vec<String>,
    errors: Vec<String>,
    uses_services: bool,
    /// The depth of the node being walked, and the deepest seen.
    depth: usize,
    deepest: usize,
}

impl Check {
    /// Checks `expr` and returns its estimated worst-case cost.
    fn walk(&mut self, expr: &IdedExpr, functions: &cel::Context<'_>) -> u64 {
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        let cost = self.walk_node(expr, functions);
        self.depth -= 1;
        cost
    }

    fn walk_node(&mut self, expr: &IdedExpr, functions: &cel::Context<'_>) -> u64 {
        match &expr.expr {
            Expr::Unspecified => {
                self.errors.push("contains an empty expression".to_owned());
                1
            }
            Expr::Literal(_) => 1,
            Expr::Ident(name) => {
                self.variable(name);
                1
            }
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && root == "cr"
                    && !self.is_bound("cr")
                    && !CR_FIELDS.contains(&select.field.as_str())
                {
                    self.errors.push(format!(
                        "cr has no field {:?}: expected {}",
                        select.field,
                        CR_FIELDS.join(", ")
                    ));
                }
                1 + self.walk(&select.operand, functions)
            }
            Expr::Call(call) => {
                let mut cost = 1;
                let operator = !call
                    .func_name
                    .starts_with(|c: char| c.is_ascii_alphabetic());
                let namespace = match call.target.as_deref().map(|t| &t.expr) {
                    Some(Expr::Ident(prefix))
                        if !self.is_bound(prefix) && !VARIABLES.contains(&prefix.as_str()) =>
                    {
                        Some(prefix.as_str())
                    }
                    _ => None,
                };
                if !operator {
                    let name = match namespace {
                        Some(prefix) => format!("{prefix}.{}", call.func_name),
                        None => call.func_name.clone(),
                    };
                    if !function_exists(functions, &name) {
                        self.errors.push(format!("unknown function {name:?}"));
                    }
                    if matches!(call.func_name.as_str(), "matches" | "find" | "findAll") {
                        cost += REGEX_CALL_COST;
                    }
                }
                // A qualified function's prefix (`sets` in `sets.contains`) is no variable.
                if let (Some(target), None) = (&call.target, namespace) {
                    cost += self.walk(target, functions);
                }
                cost + call
                    .args
                    .iter()
                    .map(|a| self.walk(a, functions))
                    .sum::<u64>()
            }
            Expr::Comprehension(comp) => {
                let mut cost = self.walk(&comp.iter_range, functions);
                cost += self.walk(&comp.accu_init, functions);
                let names: Vec<String> = [Some(&comp.iter_var), comp.iter_var2.as_ref()]
                    .into_iter()
                    .flatten()
                    .chain([&comp.accu_var])
                    .cloned()
                    .collect();
                let depth = self.bound.len();
                self.bound.extend(names);
                let body =
                    self.walk(&comp.loop_cond, functions) + self.walk(&comp.loop_step, functions);
                cost = cost.saturating_add((MAX_LIST_ITEMS as u64).saturating_mul(body));
                cost = cost.saturating_add(self.walk(&comp.result, functions));
                self.bound.truncate(depth);
                cost
            }
            Expr::List(list) => {
                1 + list
                    .elements
                    .iter()
                    .map(|e| self.walk(e, functions))
                    .sum::<u64>()
            }
            Expr::Map(map) => {
                let mut cost = 1;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        cost += self.walk(&entry.key, functions);
                        cost += self.walk(&entry.value, functions);
                    }
                }
                cost
            }
            Expr::Struct(structure) => {
                self.errors.push(format!(
                    "message construction {:?} is not supported",
                    structure.type_name
                ));
                1
            }
        }
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|b| b == name)
    }

    fn variable(&mut self, name: &str) {
        if self.is_bound(name) {
            return;
        }
        if name == "services" {
            self.uses_services = true;
        }
        if !VARIABLES.contains(&name) {
            self.errors.push(format!(
                "unknown variable {name:?}: expected {}",
                VARIABLES.join(", ")
            ));
        }
    }
}

/// Whether `name` (plain, or `prefix.name`) is a registered function. The `cel` crate does
/// not expose its registry, so the function is called with no arguments: only a missing
/// function answers "undeclared reference" to that.
fn function_exists(functions: &cel::Context<'_>, name: &str) -> bool {
    let plain = name.split('.').all(|part| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if !plain {
        return false;
    }
    let Ok(probe) = Program::compile(&format!("{name}()")) else {
        return false;
    };
    // A function that panics on missing arguments counts as unusable.
    match catch_unwind(AssertUnwindSafe(|| probe.execute(functions))) {
        Ok(Err(ExecutionError::UndeclaredReference(_))) | Err(_) => false,
        Ok(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: Sample<'static> = Sample {
        value: "web.demo.svc",
    };

    fn load(source: &str) -> Result<Rule, String> {
        on_deep_stack(|| Rule::load(source, None, DEFAULT_COST_LIMIT, DNS))?
    }

    fn vars(groups: &[&str], services: Option<&[&str]>) -> Variables {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let services: Option<Vec<String>> =
            services.map(|s| s.iter().map(|x| (*x).to_owned()).collect());
        Variables::new(
            "web-tls",
            "demo",
            "system:serviceaccount:demo:web",
            &groups,
            services.as_deref(),
        )
        .unwrap()
    }

    #[test]
    fn each_variable_is_available() {
        let v = vars(&["system:authenticated", "team-a"], Some(&["web", "db"]));
        let rows = [
            ("self == 'web.demo.svc'", "web.demo.svc", true),
            ("self == 'web.demo.svc'", "db.demo.svc", false),
            ("cr.name == 'web-tls'", "x", true),
            (
                "self.endsWith('.' + cr.namespace + '.svc')",
                "web.demo.svc",
                true,
            ),
            (
                "self.endsWith('.' + cr.namespace + '.svc')",
                "web.other.svc",
                false,
            ),
            (
                "cr.username.startsWith('system:serviceaccount:demo:')",
                "x",
                true,
            ),
            ("'team-a' in cr.groups", "x", true),
            ("'team-b' in cr.groups", "x", false),
            (
                "services.exists(s, self == s + '.' + cr.namespace + '.svc')",
                "db.demo.svc",
                true,
            ),
            (
                "services.exists(s, self == s + '.' + cr.namespace + '.svc')",
                "cache.demo.svc",
                false,
            ),
            ("self.split('.').size() == 3", "web.demo.svc", true),
            (
                "self.matches('^[a-z]+\\\\.demo\\\\.svc$')",
                "web.demo.svc",
                true,
            ),
            ("sets.contains(cr.groups, ['team-a'])", "x", true),
        ];
        for (source, value, expected) in rows {
            let rule = load(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(rule.passes(value, &v), Ok(expected), "{source} on {value}");
        }
    }

    #[test]
    fn rules_that_cannot_work_are_refused_when_they_load() {
        let rows = [
            ("", "rule is empty"),
            ("self ==", "does not parse"),
            ("nosuch(self)", "unknown function \"nosuch\""),
            ("self.nosuch()", "unknown function \"nosuch\""),
            ("nope.contains(self)", "unknown function \"nope.contains\""),
            // An unknown function in a branch a trial would not take is found too.
            ("true || bogus(self)", "unknown function \"bogus\""),
            ("request.name == 'x'", "unknown variable \"request\""),
            ("cr.labels == 'x'", "cr has no field \"labels\""),
            ("size(self)", "must evaluate to a boolean"),
            (
                "services.all(a, services.all(b, a + b != self))",
                "estimated cost",
            ),
            (
                "cr.groups.exists(g, services.exists(s, g == s))",
                "exceeds the limit 1000000",
            ),
        ];
        for (source, expected) in rows {
            let err = load(source)
                .err()
                .unwrap_or_else(|| panic!("{source} loaded"));
            assert!(err.contains(expected), "{source}: {err}");
        }
        let two_lines =
            on_deep_stack(|| Rule::load("self ==\n'x'", None, DEFAULT_COST_LIMIT, DNS)).unwrap();
        assert_eq!(
            two_lines.unwrap_err(),
            "a rule spanning several lines needs a message"
        );
        let bad_message =
            on_deep_stack(|| Rule::load("true", Some("a\nb"), DEFAULT_COST_LIMIT, DNS)).unwrap();
        assert_eq!(bad_message.unwrap_err(), "message must be a single line");
    }

    #[test]
    fn costs_grow_with_list_macros_and_the_limit_is_configurable() {
        let flat = load("self == 'x'").unwrap();
        let one_macro = load("services.exists(s, s == self)").unwrap();
        assert!(flat.cost() < 10, "{}", flat.cost());
        assert!(
            one_macro.cost() >= MAX_LIST_ITEMS as u64,
            "{}",
            one_macro.cost()
        );
        let costly = on_deep_stack(|| Rule::load("services.exists(s, s == self)", None, 100, DNS));
        assert!(costly.unwrap().is_err());
        assert!(one_macro.uses_services() && !flat.uses_services());
    }

    #[test]
    fn evaluation_failures_are_reported_not_passed() {
        let rule = load("self.split('.')[3] == 'x'").unwrap();
        let err = rule.passes("a.b", &vars(&[], Some(&[]))).unwrap_err();
        assert!(err.contains("could not be evaluated"), "{err}");
        let needs = load("self in services").unwrap();
        let err = needs.passes("web", &vars(&[], None)).unwrap_err();
        assert!(err.contains("not looked up"), "{err}");
        let many: Vec<String> = (0..=MAX_LIST_ITEMS).map(|i| format!("g{i}")).collect();
        let err = Variables::new("n", "ns", "u", &many, None).unwrap_err();
        assert!(err.contains("1025 groups"), "{err}");
    }

    #[test]
    fn deep_and_long_rules_are_refused_without_exhausting_the_stack() {
        let deep = [
            format!("1{} == 1", "+1".repeat((MAX_RULE_LEN - 10) / 2)),
            format!("self{} == 1", ".size()".repeat(580)),
            format!("{}true{}", "(".repeat(1000), ")".repeat(1000)),
        ];
        // As deep as any tokio worker's stack: loading must not depend on the caller's.
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                deep.iter()
                    .map(|source| (source[..12].to_owned(), load(source).map(|_| ())))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        for (start, result) in handle.join().unwrap() {
            let err = result.expect_err(&start);
            assert!(
                err.contains("levels deep") || err.contains("does not parse"),
                "{start}: {err}"
            );
            assert!(err.len() < 400, "{start}: a message of {} bytes", err.len());
        }
        let long = format!("self == '{}'", "x".repeat(MAX_RULE_LEN));
        assert!(
            load(&long)
                .unwrap_err()
                .contains("more than the 4096 allowed")
        );
        // The parser folds runs of negations, so these are shallow.
        assert!(load(&format!("{}true", "!".repeat(MAX_RULE_LEN - 4))).is_ok());
        assert!(load(&format!("{}1 == 1", "-".repeat(MAX_RULE_LEN - 10))).is_ok());
        // Ordinary nesting is fine.
        assert!(load("((self == 'a') || (self == 'b')) && !(self == 'c')").is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn loading_any_text_never_panics(
            source in "[a-z._()\\[\\]'\"0-9 +*/%!=<>&|?:,{}@-]{0,40}"
        ) {
            let _ = load(&source);
        }
    }

    #[test]
    fn the_failure_message_is_the_authors_or_the_rule() {
        let plain = load("self == 'x'").unwrap();
        assert_eq!(plain.failure(), "failed rule: `self == 'x'`");
        let told =
            on_deep_stack(|| Rule::load("self == 'x'", Some("must be x"), DEFAULT_COST_LIMIT, DNS))
                .unwrap()
                .unwrap();
        assert_eq!(told.failure(), "must be x");
    }
}
