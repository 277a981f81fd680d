//! The layout of docs/ARCHITECTURE.md, checked: every crate depends only on the
//! crates below it, the end-to-end suites depend on library crates only, and no
//! module of any crate imports (through `crate::…` or `super::…` paths, directly or
//! through others) a module that imports it back.
//!
//! The module graph is read from the source text, not from the compiler: a path
//! names the longest module it starts with, and a name the crate root re-exports
//! (`pub use module::Name`) names that module. Comments and each file's trailing
//! `#[cfg(test)] mod tests` are left out: tests may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each crate's layer: a crate may depend only on crates of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("pki", 0),
    ("wire", 0),
    ("chaos", 1),
    ("http", 0),
    ("node", 1),
    ("agent", 1),
    ("lab", 2),
    ("tentacle", 2),
    ("report", 3),
    ("fleet", 4),
    ("scenario", 5),
    ("bench", 6),
    ("cli", 7),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The `octopoll-*` crates a manifest's `[dependencies]` table names.
fn octopoll_dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies {
            if let Some(name) = line.strip_prefix("octopoll-") {
                let end = name
                    .find(|c: char| !c.is_ascii_alphanumeric())
                    .unwrap_or(name.len());
                found.push(name[..end].to_string());
            }
        }
    }
    found
}

fn layer(name: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .unwrap_or_else(|| panic!("crates/{name} has no layer in tests/architecture.rs LAYERS"))
        .1
}

#[test]
fn every_crate_depends_only_on_crates_below_it() {
    let crates = std::fs::read_dir(workspace().join("crates")).expect("crates/ lists");
    let mut checked = 0;
    for entry in crates {
        let dir = entry.expect("a directory entry").path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("a Cargo.toml");
        for dependency in octopoll_dependencies(&manifest) {
            assert!(
                layer(&dependency) < layer(&name),
                "crates/{name} depends on octopoll-{dependency}, which is not below it (docs/ARCHITECTURE.md)"
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked,
        LAYERS.len(),
        "every crate has a layer, every layer a crate"
    );
}

#[test]
fn the_end_to_end_suites_depend_on_library_crates_only() {
    let manifest = std::fs::read_to_string(workspace().join("tests/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("octopoll-cli"),
        "tests/ depends on the binary's crate"
    );
    let fuzz = std::fs::read_to_string(workspace().join("fuzz/Cargo.toml")).unwrap();
    assert!(
        !fuzz.contains("octopoll-cli"),
        "fuzz/ depends on the binary's crate"
    );
}

/// A crate's modules, by path (`""` is the root), with their source text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("a source directory lists") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = relative
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                out.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The code a module imports from: comments and the trailing test module left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` and `super::…` path in `code`, `use` groups spread out, as
/// paths from the crate root (`super` resolved against `module`).
fn paths(module: &str, code: &str) -> Vec<String> {
    fn parent(module: &str) -> &str {
        module.rsplit_once("::").map_or("", |(parent, _)| parent)
    }
    let mut found = Vec::new();
    for prefix in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let preceded = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut base = if prefix == "crate::" {
                ""
            } else {
                parent(module)
            };
            while prefix == "super::" && rest.starts_with("super::") {
                rest = &rest["super::".len()..];
                base = parent(base);
            }
            let join = |path: &str| match base {
                "" => path.to_string(),
                base => format!("{base}::{path}"),
            };
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let item = item.trim().split([' ', '{']).next().unwrap_or("");
                    if !item.is_empty() {
                        found.push(join(item.trim_end_matches(':')));
                    }
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let path = rest[..end].trim_end_matches(':');
                if path == "*" || path.is_empty() {
                    found.push(base.to_string());
                } else {
                    found.push(join(path));
                }
            }
        }
    }
    found
}

/// Which module each module imports from.
fn module_graph(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    // Names the root re-exports: `pub use module::{A, B}` / `pub use module::A`.
    let mut reexported = BTreeMap::new();
    for line in code(modules.get("").map_or("", String::as_str)).lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ") {
            if let Some((module, names)) = rest.split_once("::") {
                for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                    if !name.is_empty() {
                        reexported.insert(name.to_string(), module.to_string());
                    }
                }
            }
        }
    }
    let resolve = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|candidate| modules.contains_key(candidate))
            .or_else(|| reexported.get(segments[0]).cloned())
    };
    modules
        .iter()
        .map(|(module, text)| {
            let imports = paths(module, &code(text))
                .iter()
                .filter_map(|path| resolve(path))
                .filter(|target| target != module && !target.is_empty())
                .collect();
            (module.clone(), imports)
        })
        .collect()
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, v: &'g str) {
        let n = state.index.len();
        state.index.insert(v, n);
        state.low.insert(v, n);
        state.stack.push(v);
        for w in state.graph.get(v).into_iter().flatten() {
            if !state.index.contains_key(w.as_str()) {
                visit(state, w);
                let low = state.low[v].min(state.low[w.as_str()]);
                state.low.insert(v, low);
            } else if state.stack.contains(&w.as_str()) {
                let low = state.low[v].min(state.index[w.as_str()]);
                state.low.insert(v, low);
            }
        }
        if state.low[v] == state.index[v] {
            let mut component = Vec::new();
            while let Some(w) = state.stack.pop() {
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_module_of_any_crate_imports_itself_through_others() {
    let mut found = Vec::new();
    let mut read = 0;
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let modules = modules(&dir.join("src"));
        read += modules.len();
        for cycle in cycles(&module_graph(&modules)) {
            found.push(format!("{}: {}", dir.display(), cycle.join(" → ")));
        }
    }
    assert!(read > 100, "read only {read} modules");
    assert!(
        found.is_empty(),
        "module import cycles:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_a_cycle_through_a_group_a_super_path_and_a_reexport() {
    let modules: BTreeMap<String, String> = [
        ("", "pub mod a;\npub mod b;\npub use b::Thing;\n"),
        ("a", "use crate::{b::helper, Other};\n"),
        (
            "b",
            "// use crate::a; (a comment: no import)\npub struct Thing;\n",
        ),
        ("b::inner", "use super::super::c::x;\n"),
        (
            "c",
            "fn f() -> crate::Thing { todo!() }\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
        ),
    ]
    .into_iter()
    .map(|(m, t)| (m.to_string(), t.to_string()))
    .collect();
    let graph = module_graph(&modules);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(graph["b::inner"], BTreeSet::from(["c".to_string()]));
    assert_eq!(
        graph["c"],
        BTreeSet::from(["b".to_string()]),
        "via the re-export; tests left out"
    );
    assert!(cycles(&graph).is_empty());

    let mut with_cycle = modules;
    with_cycle.insert(
        "b".into(),
        "pub struct Thing;\nuse crate::b::inner::x;\n".into(),
    );
    let found = cycles(&module_graph(&with_cycle));
    assert_eq!(
        found,
        vec![vec!["b".to_string(), "b::inner".into(), "c".into()]]
    );
}
