//! The files build.rs embedded (guest WIT, Python and JS SDKs and their
//! templates, the Rust template), and writing a subtree of them to disk.

use anyhow::Context;
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The embedded files under `prefix/` (keys without the prefix).
pub fn tree(prefix: &str) -> impl Iterator<Item = (&'static str, &'static [u8])> + '_ {
    FILES.iter().filter_map(move |(key, data)| key.strip_prefix(prefix)?.strip_prefix('/').map(|rel| (rel, *data)))
}

/// Writes the files under `prefix/` into `dest`, keeping their layout; a
/// file already there with the same contents is left alone, so tools that
/// watch mtimes see no change.
pub fn write_tree(prefix: &str, dest: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for (rel, data) in tree(prefix) {
        let path = dest.join(rel);
        if std::fs::read(&path).is_ok_and(|old| old == data) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    anyhow::ensure!(tree(prefix).next().is_some(), "this binary embeds no '{prefix}' files (a build problem)");
    Ok(written)
}

/// One embedded text file.
pub fn text(key: &str) -> anyhow::Result<&'static str> {
    let (_, data) = FILES
        .iter()
        .find(|(k, _)| *k == key)
        .with_context(|| format!("this binary embeds no {key} (a build problem)"))?;
    std::str::from_utf8(data).with_context(|| format!("embedded {key} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_wit_and_the_stage_contract_are_embedded() {
        let world = text("wit/world.wit").unwrap();
        assert!(world.contains("world http-stage"));
        // The link to wit/stage.wit is embedded as the file it points at.
        assert!(text("wit/deps/stage.wit").unwrap().contains("package stagecraft:stage@0.1.0"));
        assert!(tree("wit").any(|(rel, _)| rel == "deps/http.wit"));
    }
}
