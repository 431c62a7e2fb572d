//! A stage project: a folder with `stagecraft.toml` (or, for Rust, just a
//! `Cargo.toml` with a `cdylib`), and what it says about how to build it.
//!
//! ```toml
//! [stage]
//! name = "thumbnail_py"   # the stage's name: the component is NAME.wasm
//! lang = "python"         # rust | python | js
//! entry = "app.py"        # python: the module; js: the ES module
//! world = "stage"         # stage, or http-stage for one that calls hosted services
//! engine = "spidermonkey" # js only: spidermonkey (default) or quickjs
//! ```

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file that makes a folder a stage project.
pub const MANIFEST: &str = "stagecraft.toml";

/// The language a stage is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Which JavaScript engine a JS stage is built into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsEngine {
    /// StarlingMonkey (SpiderMonkey) through componentize-js: the full
    /// language and Web APIs, about 12 MB.
    #[default]
    Spidermonkey,
    /// QuickJS through componentize-qjs: about 1.6 MB, builds in a second.
    Quickjs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    stage: StageSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageSection {
    name: String,
    lang: Lang,
    entry: Option<String>,
    #[serde(default = "default_world")]
    world: String,
    #[serde(default)]
    engine: JsEngine,
}

fn default_world() -> String {
    "stage".to_owned()
}

/// The worlds of `plugins/guest-wit` a Python or JS stage may target.
pub const WORLDS: &[&str] = &["stage", "http-stage"];

/// A stage project, read from its folder.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    pub lang: Lang,
    /// The entry file, relative to `dir` (`app.py`, `app.js`; unused for Rust).
    pub entry: String,
    pub world: String,
    pub engine: JsEngine,
}

impl Project {
    /// Reads `dir/stagecraft.toml`; a Rust crate without one is a project too.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
        // Absolute, because the build tools run inside the project folder
        // and are handed paths under it (`stagecraft build .` or `build p`).
        let dir = &std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let manifest = dir.join(MANIFEST);
        if !manifest.is_file() {
            if dir.join("Cargo.toml").is_file() {
                return Self::rust_crate(dir);
            }
            anyhow::bail!(
                "{} is not a stage project: it has no {MANIFEST} (start one with `stagecraft new NAME --lang rust|python|js`)",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        let parsed: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", manifest.display(), e.to_string().replace('\n', " ")))?;
        let stage = parsed.stage;
        check_name(&stage.name).with_context(|| format!("{}: name", manifest.display()))?;
        anyhow::ensure!(
            WORLDS.contains(&stage.world.as_str()),
            "{}: world {:?} is not one of {}",
            manifest.display(),
            stage.world,
            WORLDS.join(", ")
        );
        let entry = stage.entry.unwrap_or_else(|| match stage.lang {
            Lang::Python => "app.py".to_owned(),
            Lang::Js => "app.js".to_owned(),
            Lang::Rust => String::new(),
        });
        if stage.lang != Lang::Rust {
            anyhow::ensure!(
                dir.join(&entry).is_file(),
                "{}: the entry file {entry} is not in {}",
                manifest.display(),
                dir.display()
            );
        }
        if stage.lang == Lang::Python {
            anyhow::ensure!(
                entry.ends_with(".py") && !entry.contains('/'),
                "{}: a Python entry is a module file in the project folder (app.py), not {entry:?}",
                manifest.display()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            name: stage.name,
            lang: stage.lang,
            entry,
            world: stage.world,
            engine: stage.engine,
        })
    }

    fn rust_crate(dir: &Path) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct CargoToml {
            package: Option<Package>,
        }
        #[derive(Deserialize)]
        struct Package {
            name: String,
        }
        let path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let cargo: CargoToml = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let package = cargo.package.with_context(|| format!("{} has no [package]", path.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            name: package.name,
            lang: Lang::Rust,
            entry: String::new(),
            world: default_world(),
            engine: JsEngine::default(),
        })
    }

    /// Where `build` puts the component unless told otherwise.
    pub fn default_output(&self) -> PathBuf {
        self.dir.join("target").join(format!("{}.wasm", self.name))
    }

    /// Files whose change means a rebuild (`dev` watches these): everything
    /// in the folder but build output and hidden files.
    pub fn sources(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_sources(&self.dir, &mut files);
        files.sort();
        files
    }
}

fn collect_sources(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "__pycache__" || name == "node_modules" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_sources(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// A stage name for a new project: it names the component file, the Rust
/// crate and the Python module, so letters, digits and `_`, starting with a
/// lowercase letter.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{name:?} is not a stage name: use lowercase letters, digits and _, starting with a letter (at most 64)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(toml: &str, files: &[&str]) -> anyhow::Result<Project> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), toml).unwrap();
        for file in files {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        Project::open(dir.path())
    }

    #[test]
    fn a_python_project_defaults_its_entry_and_world() {
        let p = project("[stage]\nname = \"thumb\"\nlang = \"python\"\n", &["app.py"]).unwrap();
        assert_eq!((p.lang, p.entry.as_str(), p.world.as_str()), (Lang::Python, "app.py", "stage"));
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let missing = project("[stage]\nname = \"t\"\nlang = \"js\"\n", &[]).unwrap_err().to_string();
        assert!(missing.contains("entry file app.js"), "{missing}");
        let world = project("[stage]\nname = \"t\"\nlang = \"js\"\nworld = \"x\"\n", &["app.js"]).unwrap_err();
        assert!(world.to_string().contains("not one of stage, http-stage"), "{world}");
        let lang = project("[stage]\nname = \"t\"\nlang = \"cobol\"\n", &[]).unwrap_err().to_string();
        assert!(lang.contains("unknown variant"), "{lang}");
        let name = project("[stage]\nname = \"../x\"\nlang = \"js\"\n", &["app.js"]).unwrap_err();
        assert!(format!("{name:#}").contains("not a stage name"), "{name:#}");
    }
}
