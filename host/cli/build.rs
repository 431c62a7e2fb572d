//! Embeds what `stagecraft new` and `stagecraft build` write into a stage
//! project: the guest WIT (`plugins/guest-wit`), the Python and JavaScript
//! SDKs and their templates, and the Rust template. The file lists are read
//! here, so a file added to an SDK is embedded without touching the code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (name in the embedded tree, folder in the repository).
const TREES: &[(&str, &str)] = &[
    ("wit", "plugins/guest-wit"),
    ("python-sdk", "plugins/python-sdk"),
    ("js-sdk", "plugins/js-sdk"),
    ("rust-template", "examples/plugin-template"),
];

/// Folders never embedded: tests, caches, build output.
const SKIP: &[&str] = &["tests", "__pycache__", "node_modules", "target", ".stagecraft"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let repo = manifest.join("../..");
    let mut files = Vec::new();
    for (name, dir) in TREES {
        let root = repo.join(dir);
        println!("cargo:rerun-if-changed={}", root.display());
        collect(&root, &root, name, &mut files);
    }
    files.sort();
    let mut out = String::from("/// Files embedded by build.rs: (path in the embedded tree, contents).\n");
    out.push_str("pub const FILES: &[(&str, &[u8])] = &[\n");
    for (key, path) in &files {
        // The folders are watched too (an added file); this covers link targets.
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(out, "    ({key:?}, include_bytes!({:?})),", path.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded.rs");
    std::fs::write(dest, out).expect("writing embedded.rs");
}

fn collect(root: &Path, dir: &Path, name: &str, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if SKIP.contains(&file_name.as_str()) || file_name.starts_with('.') {
            continue;
        }
        // Follows links: deps/stage.wit in the guest WIT is a link to wit/stage.wit.
        let Ok(canonical) = path.canonicalize() else { continue };
        if canonical.is_dir() {
            collect(root, &path, name, files);
        } else {
            let rel = path.strip_prefix(root).expect("under its root").to_string_lossy().replace('\\', "/");
            files.push((format!("{name}/{rel}"), canonical));
        }
    }
}
