//! The circle test: no module of the library imports a module that imports it back.
//!
//! Reads every `.rs` file of the library (`src/`, not the binaries' `main.rs` or `src/bin`),
//! collects the `crate::` and `super::` paths it names (in `use` lists, grouped or not, and
//! inline), and turns each into an edge between the two modules where the paths part:
//! `engine::conversation::turn` naming `crate::engine::supervisor::X` is the edge
//! `engine::conversation → engine::supervisor`, and `flow::tree::read` naming
//! `crate::messenger::inbound::Y` is `flow → messenger`. So every level is checked at
//! once: the top-level modules, the engine's actors, the files of `flow::tree`, and so on.
//! A circle is a set of modules that all reach each other through such edges.
//!
//! Two things are no circle, on purpose. A module and its own parent or child (a parent
//! declares and re-exports its children, and a child may use its parent's items: that is
//! how Rust modules nest). And test code (`#[cfg(test)]` items and the files they declare):
//! a test may reach anywhere. Limits, also on purpose: a path through a re-export counts
//! for the module that re-exports it, and only whole comment lines are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path without `crate`, e.g. `["engine", "supervisor"]`; the crate root is `[]`.
type Module = Vec<String>;
/// Edges between modules, each with one place that makes it (file and path), for the report.
type Graph = BTreeMap<Module, BTreeMap<Module, String>>;

/// The module a file under `src/` is: `engine/conversation/mod.rs` → `engine::conversation`.
fn module_of(file: &Path) -> Module {
    let mut module: Module = file
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
        module.pop();
    }
    module
}

/// The source without comment lines and `#[cfg(test)]` items, and the names of the
/// child modules declared as test-only (`#[cfg(test)] mod tests;`).
fn production_code(source: &str) -> (String, Vec<String>) {
    let (mut code, mut test_modules) = (String::new(), Vec::new());
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed != "#[cfg(test)]" {
            code.push_str(line);
            code.push('\n');
            continue;
        }
        // rustfmt ends an item on a line at the item's own indent: `mod x;`, `}` or `};`.
        let indent = line.len() - trimmed.len();
        for item_line in lines.by_ref() {
            let item = item_line.trim_start();
            if item.starts_with("#[") {
                continue;
            }
            let words: Vec<&str> = item.trim_end_matches(';').split_whitespace().collect();
            if let [.., "mod", name] = words[..] {
                if item.ends_with(';') {
                    test_modules.push(name.to_string());
                }
            }
            let at_indent = item_line.len() - item.len() == indent;
            if at_indent && (item.ends_with(';') || item.ends_with('}')) {
                break;
            }
        }
    }
    (code, test_modules)
}

/// Every `crate::…` and `super::…` path in `code`, groups expanded: `crate::{a, b::c}` gives
/// `crate::a` and `crate::b::c`.
fn paths_named(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let starts = code
        .match_indices("crate::")
        .chain(code.match_indices("super::"));
    for (start, _) in starts {
        // Part of a longer name or path (`mycrate::`, the second `super` of `super::super`).
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        use_tree(&mut &code[start..], Vec::new(), &mut paths);
    }
    paths
}

/// Reads one use tree at the front of `rest` (`a::b`, `a::{b, c::d}`, `a::*`, `a as b`),
/// pushing each full path it names onto `out`.
fn use_tree(rest: &mut &str, mut path: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        *rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            *rest = group;
            loop {
                use_tree(rest, path.clone(), out);
                *rest = rest.trim_start();
                match rest.strip_prefix(',') {
                    Some(after) => *rest = after,
                    None => break,
                }
            }
            *rest = rest.trim_start().strip_prefix('}').unwrap_or(rest);
            return;
        }
        let length = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if length == 0 {
            break;
        }
        path.push(rest[..length].to_string());
        *rest = &rest[length..];
        match rest.strip_prefix("::") {
            Some(after) => *rest = after,
            None => break,
        }
    }
    if let Some(renamed) = rest.trim_start().strip_prefix("as ") {
        let name = renamed.trim_start();
        let length = name.find(|c: char| !(c.is_alphanumeric() || c == '_'));
        *rest = &name[length.unwrap_or(name.len())..];
    }
    out.push(path);
}

/// `path` as seen from `module`, without `crate` and `super`; `None` if it climbs too far.
fn absolute(module: &Module, path: &[String]) -> Option<Vec<String>> {
    if path.first().is_some_and(|s| s == "crate") {
        return Some(path[1..].to_vec());
    }
    let climbs = path.iter().take_while(|s| *s == "super").count();
    let base = module.len().checked_sub(climbs)?;
    Some([&module[..base], &path[climbs..]].concat())
}

/// True for a directory module that only declares its children (`engine`): a namespace,
/// whose children are modules of the level above it.
fn is_namespace(code: &str) -> bool {
    code.lines()
        .map(|line| line.trim().trim_end_matches(';'))
        .filter(|line| !line.is_empty())
        .all(|line| {
            matches!(
                line.split_whitespace().collect::<Vec<_>>()[..],
                [.., "mod", _]
            )
        })
}

/// The edge a reference from `from` into `to` makes: the two children of their deepest
/// common ancestor that hold them (looking through namespaces). None when one holds the
/// other (parent and child).
fn edge(from: &Module, to: &Module, namespaces: &[Module]) -> Option<(Module, Module)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    let node = |module: &Module| {
        let mut depth = common + 1;
        while depth < module.len() && namespaces.contains(&module[..depth].to_vec()) {
            depth += 1;
        }
        module[..depth].to_vec()
    };
    Some((node(from), node(to)))
}

/// The module graph of `files` (path under `src/`, source text).
fn module_graph(files: &[(PathBuf, String)]) -> Graph {
    let mut test_only = Vec::new();
    let mut modules = BTreeMap::new();
    for (file, source) in files {
        let module = module_of(file);
        let (code, test_children) = production_code(source);
        test_only.extend(test_children.into_iter().map(|child| {
            let mut path = module.clone();
            path.push(child);
            path
        }));
        modules.insert(module, (file, code));
    }
    modules.retain(|module, _| !test_only.iter().any(|t| module.starts_with(t)));
    let namespaces: Vec<Module> = modules
        .iter()
        .filter(|(module, (_, code))| !module.is_empty() && is_namespace(code))
        .map(|(module, _)| module.clone())
        .collect();
    let known: BTreeSet<&Module> = modules.keys().collect();
    let mut graph = Graph::new();
    for (module, (file, code)) in &modules {
        for path in paths_named(code) {
            let Some(target) = absolute(module, &path) else {
                continue;
            };
            // The module that holds it: the longest known prefix (the rest is an item).
            let held_by = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|prefix| known.contains(prefix))
                .unwrap_or_default();
            if let Some((a, b)) = edge(module, &held_by, &namespaces) {
                let place = format!("{} names {}", file.display(), path.join("::"));
                graph.entry(a).or_default().entry(b).or_insert(place);
            }
        }
    }
    graph
}

/// The circles of `graph`: groups of two or more modules that all reach each other.
fn circles(graph: &Graph) -> Vec<Vec<Module>> {
    let reach = |from: &Module| {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from.clone()]);
        while let Some(module) = todo.pop() {
            for next in graph.get(&module).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&Module, BTreeSet<Module>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<Vec<Module>> = Vec::new();
    for (module, reachable) in &reached {
        let circle: Vec<Module> = reachable
            .iter()
            .filter(|other| {
                reached
                    .get(other)
                    .is_some_and(|back| back.contains(*module))
            })
            .cloned()
            .collect();
        if circle.len() > 1 && !found.contains(&circle) {
            found.push(circle);
        }
    }
    found
}

/// Each circle with its modules and the references that close it.
fn report(graph: &Graph, circles: &[Vec<Module>]) -> String {
    let mut text = String::new();
    for circle in circles {
        let names: Vec<String> = circle.iter().map(|m| m.join("::")).collect();
        text.push_str(&format!("circle: {}\n", names.join(" ↔ ")));
        for (from, edges) in graph.iter().filter(|(m, _)| circle.contains(m)) {
            for (to, place) in edges.iter().filter(|(m, _)| circle.contains(m)) {
                text.push_str(&format!(
                    "  {} → {}: {place}\n",
                    from.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    text
}

fn library_sources(dir: &Path, under: &Path, files: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("src/ is readable").path();
        let relative = path.strip_prefix(under).unwrap().to_path_buf();
        if path.is_dir() && relative != Path::new("bin") {
            library_sources(&path, under, files);
        } else if path.extension().is_some_and(|e| e == "rs") && relative != Path::new("main.rs") {
            let source = std::fs::read_to_string(&path).expect("source is UTF-8");
            files.push((relative, source));
        }
    }
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    library_sources(&src, &src, &mut files);
    assert!(files.len() > 40, "read the library: {} files", files.len());
    let graph = module_graph(&files);
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "import circles:\n{}",
        report(&graph, &found)
    );
}

/// A made-up library: `(path under src/, source)`.
fn made_up(files: &[(&str, &str)]) -> Graph {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(path, source)| (PathBuf::from(path), source.to_string()))
        .collect();
    module_graph(&files)
}

fn names(circles: &[Vec<Module>]) -> Vec<Vec<String>> {
    circles
        .iter()
        .map(|c| c.iter().map(|m| m.join("::")).collect())
        .collect()
}

#[test]
fn a_made_up_circle_through_a_grouped_use_is_found_with_its_modules() {
    let graph = made_up(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        (
            "b.rs",
            "use crate::{\n    c::Other,\n    a::{self, Back as B},\n};\n",
        ),
        ("c.rs", "pub struct Other;\n"),
    ]);
    assert_eq!(names(&circles(&graph)), vec![vec!["a", "b"]]);
    assert!(report(&graph, &circles(&graph)).contains("b → a: b.rs names crate::a"));
}

#[test]
fn a_circle_between_files_of_one_directory_is_found_through_super_and_inline_paths() {
    let graph = made_up(&[
        ("tree/mod.rs", "mod load;\nmod read;\n"),
        ("tree/load.rs", "fn f() { super::read::read_tree(); }\n"),
        ("tree/read.rs", "use super::super::tree::load::Problem;\n"),
        ("store/mod.rs", "fn g() -> crate::tree::Tree { todo!() }\n"),
    ]);
    assert_eq!(
        names(&circles(&graph)),
        vec![vec!["tree::load", "tree::read"]]
    );
}

#[test]
fn a_namespace_directory_is_looked_through_to_its_modules() {
    let namespace = "//! The engine.\n\npub(crate) mod app;\npub(crate) mod load;\n";
    let library = |webhook: &'static str| {
        made_up(&[
            ("engine/mod.rs", namespace),
            ("engine/app.rs", "use crate::webhook;\n"),
            ("engine/load.rs", "pub struct Load;\n"),
            ("webhook.rs", webhook),
        ])
    };
    assert!(circles(&library("use crate::engine::load::Load;\n")).is_empty());
    let graph = library("use crate::engine::app::start;\n");
    assert_eq!(
        names(&circles(&graph)),
        vec![vec!["engine::app", "webhook"]]
    );
}

#[test]
fn a_made_up_library_without_circles_passes() {
    let graph = made_up(&[
        ("a.rs", "use crate::b::X;\nuse crate::c::Y;\n"),
        ("b.rs", "use crate::c::Z;\n"),
        (
            "c.rs",
            "// use crate::a::Commented;\n/// [`crate::a::Doc`]\n",
        ),
        (
            "engine/mod.rs",
            "pub use supervisor::Supervisor;\npub(crate) mod supervisor;\n",
        ),
        (
            "engine/supervisor.rs",
            "use super::Parent;\nuse crate::engine::Parent2;\n",
        ),
    ]);
    assert!(circles(&graph).is_empty(), "{graph:?}");
    assert_eq!(
        graph[&vec!["a".to_string()]].len(),
        2,
        "a → b and a → c are read"
    );
}

#[test]
fn test_code_is_left_out_of_the_graph() {
    let graph = made_up(&[
        (
            "a.rs",
            "use crate::b::X;\n#[cfg(test)]\nmod tests {\n    use crate::b::Y;\n}\n",
        ),
        (
            "b.rs",
            "#[cfg(test)]\nmod testing;\n#[cfg(test)]\nfn helper() { crate::a::f(); }\n",
        ),
        ("b/testing.rs", "use crate::a::Helper;\n"),
    ]);
    assert!(circles(&graph).is_empty(), "{graph:?}");
    assert_eq!(graph.len(), 1, "only a → b is production code: {graph:?}");
}
