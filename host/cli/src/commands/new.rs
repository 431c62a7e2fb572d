//! `stagecraft new NAME --lang rust|python|js`: writes a stage project that
//! builds as it is, from the templates embedded in this binary.

use crate::author::{embedded, project, toolchain, Lang};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct NewArgs {
    /// The stage's name: lowercase letters, digits and `_`.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// For JavaScript: build into QuickJS (1.6 MB) instead of SpiderMonkey (12 MB).
    #[arg(long)]
    quickjs: bool,
    /// Where to create the project (default: ./NAME); must be empty or new.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    project::check_name(&args.name)?;
    anyhow::ensure!(!args.quickjs || args.lang == Lang::Js, "--quickjs is for --lang js");
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        let empty = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.next().is_none();
        anyhow::ensure!(empty, "{} already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let written = match args.lang {
        Lang::Python => write_template("python-sdk/template", &dir, &args.name, None),
        Lang::Js => write_template("js-sdk/template", &dir, &args.name, args.quickjs.then_some("quickjs")),
        Lang::Rust => write_rust(&dir, &args.name),
    };
    // Nothing half-written is left behind.
    let written = written.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })?;
    std::fs::write(dir.join(".gitignore"), "target/\n.stagecraft/\n")?;
    println!("created {} ({:?} stage {}): {}", dir.display(), args.lang, args.name, written.join(", "));
    println!("build it:  stagecraft build {}", dir.display());
    println!("live loop: stagecraft dev {}   (rebuilds on change and swaps it into a local server)", dir.display());
    Ok(())
}

/// Writes a Python or JS template with `{{name}}` filled in.
fn write_template(prefix: &str, dir: &Path, name: &str, engine: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    for (rel, data) in embedded::tree(prefix) {
        let text = std::str::from_utf8(data).with_context(|| format!("template file {rel} is not UTF-8"))?;
        let mut text = text.replace("{{name}}", name);
        if rel == project::MANIFEST {
            if let Some(engine) = engine {
                text = set_engine(&text, engine);
            }
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(rel.to_owned());
    }
    anyhow::ensure!(!written.is_empty(), "this binary embeds no {prefix} (a build problem)");
    Ok(written)
}

/// The manifest with `engine = "..."` set (replaced or added to `[stage]`).
fn set_engine(manifest: &str, engine: &str) -> String {
    let line = format!("engine = \"{engine}\"");
    if manifest.lines().any(|l| l.trim_start().starts_with("engine")) {
        manifest
            .lines()
            .map(|l| if l.trim_start().starts_with("engine") { line.clone() } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    } else {
        manifest.replacen("[stage]\n", &format!("[stage]\n{line}\n"), 1)
    }
}

/// The Rust template (`examples/plugin-template`) renamed, its SDK
/// dependency pointing at the stagecraft checkout this binary comes from.
///
/// Inside a Cargo workspace (`plugins/stages/NAME` of the checkout, where
/// `scripts/build-plugins` bundles it) it is a member of that workspace: no
/// `[workspace]` table, profile or lock file of its own, which would stop
/// the whole workspace from building, and the SDK by a relative path.
fn write_rust(dir: &Path, name: &str) -> anyhow::Result<Vec<String>> {
    let sdk = toolchain::source_tree().map(|root| root.join("plugins/sdk")).filter(|p| p.is_dir()).context(
        "a Rust stage builds against the SDK in a stagecraft checkout (plugins/sdk); run the stagecraft built there",
    )?;
    let dir = &std::path::absolute(dir)?;
    let workspace = enclosing_workspace(dir);
    // Relative where the stage lives in the checkout (it moves with it).
    let in_checkout = sdk.parent().and_then(Path::parent).is_some_and(|root| dir.starts_with(root));
    let sdk_path = if workspace.is_some() && in_checkout { relative_path(dir, &sdk) } else { sdk };
    let cargo = embedded::text("rust-template/Cargo.toml")?;
    let cargo: String = cargo
        .lines()
        // The template's own how-to-copy comment does not apply to the copy.
        .skip_while(|l| l.starts_with('#'))
        // The standalone tail: `[workspace]` and the release profile.
        .take_while(|l| workspace.is_none() || !l.starts_with("# Standalone"))
        .map(|l| {
            if l.starts_with("name = ") {
                format!("name = \"{name}\"")
            } else if l.starts_with("stagecraft-sdk = ") {
                format!("stagecraft-sdk = {{ path = {:?} }}", sdk_path.display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("Cargo.toml"), cargo.trim_end().to_owned() + "\n")?;
    let mut written = vec!["Cargo.toml".to_owned()];
    if workspace.is_none() {
        // The template's lock file: the same dependency versions as the
        // bundled stages, so a build inside the checkout reuses their crates.
        let lock =
            embedded::text("rust-template/Cargo.lock")?.replace("name = \"brighten\"", &format!("name = \"{name}\""));
        std::fs::write(dir.join("Cargo.lock"), lock)?;
        written.push("Cargo.lock".into());
    }
    let lib = embedded::text("rust-template/src/lib.rs")?.replace("\"brighten\"", &format!("{name:?}"));
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    std::fs::write(dir.join(project::MANIFEST), format!("[stage]\nname = \"{name}\"\nlang = \"rust\"\n"))?;
    written.extend(["src/lib.rs".into(), project::MANIFEST.into()]);
    if let Some(root) = workspace {
        println!("member of the Cargo workspace at {} (add it to its members if their globs miss it)", root.display());
    }
    Ok(written)
}

/// The folder above `dir` whose Cargo.toml has a `[workspace]` table.
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .find(|a| {
            std::fs::read_to_string(a.join("Cargo.toml")).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_owned)
}

/// `to` as seen from `from` (both absolute): `../../sdk`.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
    let up = from.components().count() - common;
    std::iter::repeat_n(std::path::Component::ParentDir.as_os_str(), up)
        .chain(to.components().skip(common).map(|c| c.as_os_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        assert_eq!(
            relative_path(Path::new("/r/plugins/stages/x"), Path::new("/r/plugins/sdk")),
            Path::new("../../sdk")
        );
        assert_eq!(relative_path(Path::new("/a/b"), Path::new("/a/b/c")), Path::new("c"));
    }

    #[test]
    fn the_engine_line_is_set_or_added() {
        assert_eq!(set_engine("[stage]\nname = \"a\"\n", "quickjs"), "[stage]\nengine = \"quickjs\"\nname = \"a\"\n");
        assert_eq!(set_engine("[stage]\nengine = \"spidermonkey\"\n", "quickjs"), "[stage]\nengine = \"quickjs\"\n");
    }
}
