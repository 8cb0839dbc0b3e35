//! Fuzz targets: NodePublishVolume requests through the request checks, never a panic.
//! Whatever is accepted has a volume id that is one plain path component and a target path
//! inside a configured root, spelled the way the kernel reports mount points, without `..`
//! or NUL and reached without a symlink below the root; the requests and their refusals
//! never repeat a token, and refusals stay short.
//!
//! Corpus: `tests/corpus/node_publish/`, one request per file as `field=value` lines
//! (`context.<key>=` for the volume context; `{root}` and `{root2}` stand for the two target
//! roots of a scratch directory that also holds symlinks into, out of and between pod
//! directories). `fuzz_node_publish` mutates whole requests; `fuzz_node_publish_paths`
//! builds target paths and volume ids from hostile pieces. `cargo xtask fuzz --target
//! csi-node` runs these for longer.

#[path = "../../../../tests/support/fuzzing.rs"]
mod fuzzing;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::*;
use crate::proto::csi::volume_capability::{AccessMode, AccessType, MountVolume};

/// The longest refusal: it travels to kubelet and into the pod's events.
const MAX_MESSAGE_LEN: usize = 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/node_publish")
}

/// Two target roots in a scratch directory, with symlinks planted below the first: `uid-2`
/// to `/etc`, `uid-3` to its sibling `uid-1`, `uid-4/volumes` out of the root, and
/// `uid-5/.../mount` (the last component) out of the root.
struct Fixture {
    _dir: tempfile::TempDir,
    roots: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (root, second) = (base.join("pods"), base.join("pods2"));
        let csi = "volumes/kubernetes.io~csi/spiffe";
        for made in [
            root.join("uid-1").join(csi),
            root.join("uid-4"),
            root.join("uid-5").join(csi),
            second.clone(),
            base.join("outside").join(csi),
            base.join("pods-sibling/uid-1"),
        ] {
            std::fs::create_dir_all(made).unwrap();
        }
        symlink("/etc", root.join("uid-2")).unwrap();
        symlink("uid-1", root.join("uid-3")).unwrap();
        symlink(base.join("outside/volumes"), root.join("uid-4/volumes")).unwrap();
        symlink(
            base.join("outside"),
            root.join("uid-5").join(csi).join("mount"),
        )
        .unwrap();
        Self {
            _dir: dir,
            roots: vec![root, second],
        }
    }

    fn rules(&self) -> RequestRules<'_> {
        tests::rules(&self.roots)
    }

    /// A request from the corpus's `field=value` text; unknown lines are ignored.
    fn request(&self, text: &str) -> csi::NodePublishVolumeRequest {
        let (root, second) = (self.roots[0].display(), self.roots[1].display());
        let mut request = csi::NodePublishVolumeRequest::default();
        let mut access = Some(AccessType::Mount(MountVolume::default()));
        let mut mount_group = String::new();
        for line in text.split('\n') {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value
                .replace("{root2}", &second.to_string())
                .replace("{root}", &root.to_string());
            match key {
                "volume_id" => request.volume_id = value,
                "target_path" => request.target_path = value,
                "readonly" => request.readonly = value == "true",
                "capability" => {
                    access = match value.as_str() {
                        "block" => Some(AccessType::Block(Default::default())),
                        "none" => None,
                        _ => Some(AccessType::Mount(MountVolume::default())),
                    };
                }
                "mount_group" => mount_group = value,
                _ => {
                    if let Some(context_key) = key.strip_prefix("context.") {
                        request.volume_context.insert(context_key.to_owned(), value);
                    }
                }
            }
        }
        if let Some(AccessType::Mount(mount)) = &mut access {
            mount.volume_mount_group = mount_group;
        }
        request.volume_capability = Some(csi::VolumeCapability {
            access_type: access,
            access_mode: Some(AccessMode { mode: 1 }),
        });
        request
    }
}

/// The corpus's tokens are all this value, so pieces of it survive mutation.
const CORPUS_TOKEN: &str = "secret-token-value";

/// The tokens a request carries, as far as they can be found: the `token` values of a JSON
/// map, and any ten-character piece of the corpus's token in text that is not JSON. None
/// may be repeated.
fn tokens(request: &csi::NodePublishVolumeRequest) -> Vec<String> {
    let Some(raw) = request.volume_context.get(TOKENS_KEY) else {
        return Vec::new();
    };
    let parsed: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
    let mut found: Vec<String> = parsed
        .as_object()
        .into_iter()
        .flat_map(|map| map.values())
        .filter_map(|entry| entry["token"].as_str().map(str::to_owned))
        .filter(|token| token.len() >= 8)
        .collect();
    for start in 0..=CORPUS_TOKEN.len() - 10 {
        let piece = &CORPUS_TOKEN[start..start + 10];
        if raw.contains(piece) {
            found.push(piece.to_owned());
        }
    }
    // Text that is also in another field (a mutation may splice a token into a path) may be
    // repeated as that field.
    let mut elsewhere = format!("{}\n{}", request.volume_id, request.target_path);
    for (key, value) in &request.volume_context {
        if key != TOKENS_KEY {
            elsewhere.push('\n');
            elsewhere.push_str(value);
        }
    }
    found.retain(|token| !elsewhere.contains(token.as_str()));
    found
}

/// The volume id rule restated: one plain path component of at most 128 characters of
/// `[A-Za-z0-9._-]`, not starting with a dot (so never `.` or `..`).
fn safe_volume_id(id: &str) -> bool {
    let mut components = Path::new(id).components();
    let single = matches!(components.next(), Some(Component::Normal(name)) if name == id)
        && components.next().is_none();
    single
        && !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The target path rules restated on the text kubelet sent and on the disk.
fn check_target(sent: &str, accepted: &Path, roots: &[PathBuf]) -> Result<(), TestCaseError> {
    prop_assert!(!sent.contains('\0'), "accepted a NUL");
    prop_assert!(sent.starts_with('/'), "accepted a relative path");
    let segments: Vec<&str> = sent.split('/').filter(|s| !s.is_empty()).collect();
    prop_assert!(!segments.contains(&".."), "accepted a '..' segment");
    let normal: Vec<&str> = segments.into_iter().filter(|s| *s != ".").collect();
    let spelled = format!("/{}", normal.join("/"));
    prop_assert_eq!(
        accepted.to_str(),
        Some(spelled.as_str()),
        "the accepted path is not spelled as the kernel reports mount points"
    );
    let root = roots.iter().find(|root| {
        let root: Vec<&str> = root
            .to_str()
            .unwrap()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        normal.len() > root.len() && normal[..root.len()] == root[..]
    });
    let root = root.ok_or_else(|| TestCaseError::fail(format!("{spelled} is in no root")))?;
    // Below the root, nothing that exists is a symlink, and the deepest existing directory
    // resolves inside the root.
    let mut walked = root.clone();
    let depth = root.components().count();
    for segment in &normal[depth - 1..] {
        walked.push(segment);
        match std::fs::symlink_metadata(&walked) {
            Ok(meta) => prop_assert!(
                !meta.file_type().is_symlink(),
                "accepted a path through the symlink {}",
                walked.display()
            ),
            Err(_) => break,
        }
    }
    if let Ok(real) = walked.parent().unwrap_or(root).canonicalize() {
        prop_assert!(
            real.starts_with(root),
            "{} resolves outside",
            walked.display()
        );
    }
    Ok(())
}

fn check(fixture: &Fixture, request: &csi::NodePublishVolumeRequest) -> Result<(), TestCaseError> {
    let secrets = tokens(request);
    match parse_publish(request, fixture.rules()) {
        Ok(accepted) => {
            prop_assert!(
                safe_volume_id(&accepted.volume_id),
                "{:?}",
                accepted.volume_id
            );
            prop_assert_eq!(&accepted.volume_id, &request.volume_id);
            check_target(&request.target_path, &accepted.target_path, &fixture.roots)?;
            let debug = format!("{accepted:?}");
            for token in &secrets {
                prop_assert!(
                    !debug.contains(token.as_str()),
                    "a token in the Debug of a request"
                );
            }
        }
        Err(refusal) => {
            let message = refusal.to_string();
            prop_assert!(!refusal.field.is_empty());
            prop_assert!(
                message.len() <= MAX_MESSAGE_LEN,
                "a {}-byte refusal: {}...",
                message.len(),
                message.chars().take(160).collect::<String>()
            );
            for token in &secrets {
                prop_assert!(!message.contains(token.as_str()), "a token in {message:?}");
            }
        }
    }
    Ok(())
}

/// Runs `strategy` through `test` with a fresh fixture, the cases of a fuzz run.
fn run<S: Strategy>(
    default_cases: u32,
    strategy: S,
    test: impl Fn(&Fixture, S::Value) -> Result<(), TestCaseError>,
) {
    let fixture = Fixture::new();
    let mut config = fuzzing::config(default_cases);
    // Inputs that failed belong in the corpus; this runner knows no source file anyway.
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&strategy, |value| test(&fixture, value)) {
        panic!("{failure}");
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let fixture = Fixture::new();
    let mut failures = Vec::new();
    for (name, bytes) in fuzzing::corpus(&corpus_dir()) {
        let request = fixture.request(&String::from_utf8_lossy(&bytes));
        if let Err(failure) = check(&fixture, &request) {
            failures.push(format!("{name}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The corpus's kubelet request is accepted, so the properties above are exercised.
    let kubelet = std::fs::read_to_string(corpus_dir().join("kubelet-publish")).unwrap();
    parse_publish(&fixture.request(&kubelet), fixture.rules()).unwrap();
}

/// Found by this target: a target path with `//`, `/./` or a trailing `/` was accepted and
/// kept as sent, but mounts are found by comparing it with `/proc/self/mountinfo`, where the
/// kernel writes the plain spelling: a retried publish would stack a second bind mount and
/// unpublish would find nothing to unmount, leaving the key's tmpfs bound into the pod.
#[test]
fn regression_a_target_path_is_kept_as_the_kernel_spells_it() {
    let fixture = Fixture::new();
    let root = &fixture.roots[0];
    let plain = root.join("uid-1/volumes/kubernetes.io~csi/spiffe/mount");
    for sent in [
        format!(
            "{}/uid-1/./volumes/kubernetes.io~csi/spiffe/mount",
            root.display()
        ),
        format!(
            "{}//uid-1/volumes//kubernetes.io~csi/spiffe/mount/",
            root.display()
        ),
        format!(
            "{}/uid-1/volumes/kubernetes.io~csi/spiffe/mount/.",
            root.display()
        ),
    ] {
        let accepted = check_target_path(&sent, &fixture.roots).unwrap();
        assert_eq!(accepted, plain, "{sent}");
        assert_eq!(accepted.to_str(), plain.to_str(), "{sent}");
    }
}

/// Found by this target (the key algorithm in a `cargo xtask fuzz` run): a refused target
/// path, group id or key algorithm was repeated whole in the refusal that kubelet turns into
/// a pod event, however long.
#[test]
fn regression_refusals_do_not_repeat_long_input() {
    let fixture = Fixture::new();
    let long = format!("/elsewhere/{}", "d".repeat(10_000));
    let err = check_target_path(&long, &fixture.roots).unwrap_err();
    assert!(err.reason.starts_with("/elsewhere/ddd"), "{err}");
    assert!(err.reason.ends_with(']') && err.reason.len() < 600, "{err}");
    let mut request =
        fixture.request(&std::fs::read_to_string(corpus_dir().join("kubelet-publish")).unwrap());
    request
        .volume_context
        .insert(FS_GROUP_KEY.into(), "g".repeat(10_000));
    let err = parse_publish(&request, fixture.rules()).unwrap_err();
    assert!(err.to_string().len() < 400, "{err}");
    request.volume_context.remove(FS_GROUP_KEY);
    request
        .volume_context
        .insert(KEY_ALGORITHM_KEY.into(), "k".repeat(10_000));
    let err = parse_publish(&request, fixture.rules()).unwrap_err();
    assert!(err.to_string().len() < 400, "{err}");
}

#[test]
fn fuzz_node_publish() {
    let strategy = fuzzing::text_inputs(fuzzing::seeds(&corpus_dir()), 1024);
    run(1000, strategy, |fixture, text| {
        check(fixture, &fixture.request(&text))
    });
}

/// A piece of a target path: the fixture's directories and symlinks, and hostile pieces.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "uid-1", "uid-2", "uid-3", "uid-4", "uid-5", "volumes", "kubernetes.io~csi",
            "spiffe", "mount", "pods", "pods2", "pods-sibling", "outside",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(vec!["..", ".", "", "x\0y", "~", "é", " ", "\\"])
            .prop_map(str::to_owned),
        1 => (1usize..300).prop_map(|len| "d".repeat(len)),
    ]
}

/// A volume id: kubelet's shape, or hostile.
fn volume_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "csi-[0-9a-f]{8,64}",
        1 => prop::sample::select(vec![
            "", ".", "..", "../x", "a/b", "/abs", "x\0", ".hidden", "csi-é", "a b", "a..b",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z.\\-_/]{0,140}",
        1 => (120usize..140).prop_map(|len| "v".repeat(len)),
    ]
}

#[test]
fn fuzz_node_publish_paths() {
    let strategy = (
        volume_id(),
        prop::sample::select(vec!["{root}", "{root2}", "{root}-sibling", "", "/", "/etc"]),
        prop::collection::vec(segment(), 0..9),
        any::<bool>(),
    );
    run(
        1000,
        strategy,
        |fixture, (id, start, segments, trailing)| {
            let kubelet = std::fs::read_to_string(corpus_dir().join("kubelet-publish")).unwrap();
            let mut path = format!("{start}/{}", segments.join("/"));
            if trailing {
                path.push('/');
            }
            let text = kubelet
                .lines()
                .map(|line| match line.split_once('=') {
                    Some(("volume_id", _)) => format!("volume_id={id}"),
                    Some(("target_path", _)) => format!("target_path={path}"),
                    _ => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            check(fixture, &fixture.request(&text))
        },
    );
}
