//! ARCHITECTURE.md stays true to the code: every `src/` path it names exists, and every
//! module file of `src/` is named in it (by its path, or by its file name under a directory
//! it names). Test-only files (`tests.rs`, `testing.rs`) and the bench binary's own files
//! are left out of the second check.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `...` span of the document.
fn code_spans(doc: &str) -> Vec<&str> {
    doc.split('`').skip(1).step_by(2).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether a file (relative to the crate root, `/`-separated) is named by the spans.
fn is_named(file: &str, spans: &[&str]) -> bool {
    if spans.contains(&file) {
        return true;
    }
    let parts: Vec<&str> = file.split('/').collect();
    let name = parts[parts.len() - 1];
    // A directory that is named covers its mod.rs; a file under it is covered when its
    // name (or its path below a named directory) appears too.
    (1..parts.len()).any(|cut| {
        let dir = format!("{}/", parts[..cut].join("/"));
        let below = parts[cut..].join("/");
        spans.contains(&dir.as_str())
            && (name == "mod.rs" && cut == parts.len() - 1
                || spans.contains(&below.as_str())
                || spans.contains(&name))
    })
}

#[test]
fn every_path_the_architecture_names_exists() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<&str> = code_spans(&doc)
        .into_iter()
        .filter(|span| span.starts_with("src/") || span.starts_with("tests/"))
        .filter(|span| !root().join(span).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn every_module_of_src_is_in_the_architecture() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let spans = code_spans(&doc);
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut unnamed: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .filter(|f| !f.starts_with("src/bin/"))
        .filter(|f| !f.ends_with("/tests.rs") && !f.ends_with("/testing.rs"))
        .filter(|f| !is_named(f, &spans))
        .collect();
    unnamed.sort();
    assert!(
        unnamed.is_empty(),
        "modules missing from ARCHITECTURE.md: {unnamed:?}"
    );
}

#[test]
fn the_naming_rule_accepts_paths_and_names_under_named_directories_only() {
    let spans = [
        "src/lib.rs",
        "src/store/",
        "keys.rs",
        "src/flow/",
        "tree/graph.rs",
    ];
    assert!(is_named("src/lib.rs", &spans));
    assert!(is_named("src/store/mod.rs", &spans));
    assert!(is_named("src/store/keys.rs", &spans));
    assert!(is_named("src/flow/tree/graph.rs", &spans));
    assert!(!is_named("src/store/outbox.rs", &spans));
    assert!(!is_named("src/clock.rs", &spans));
    assert!(!is_named("src/flow/tree/read.rs", &spans));
}
