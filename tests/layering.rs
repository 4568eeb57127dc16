//! The library's modules import one way: each top-level module of `src/` may use only modules of
//! its own layer or of the layers below it (the table in the README's "Layout" section), and the
//! imports between modules form no circle. Read from the source text: every `crate::NAME` path
//! outside comments, `crate::{…}` groups, and names the crate root re-exports (resolved to the
//! module they come from).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. Keep in step with the README's "Layout" section.
const LAYERS: &[&[&str]] = &[
    &["units"],
    &["error"],
    &["tensor", "rng", "validate", "linalg", "npy", "images"],
    &["ir"],
    &["onnx", "analysis"],
    &["gpu"],
    &["layer"],
    &["backend"],
    &["exec"],
    &["prune"],
    &["bench", "demo", "synthetic"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
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

/// The code of a file without its comments (line comments and doc comments; block comments are
/// not used in this crate).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every first path segment after `crate::` in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `subprune::crate::` does not occur; skip `$crate::` in macros.
        if i > 0 && code.as_bytes()[i - 1] == b'$' {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if item_start && depth == 0 && (c.is_alphanumeric() || c == '_') {
                    out.push(ident_at(&group[k..]).to_string());
                    item_start = false;
                }
            }
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out
}

/// Names the crate root re-exports (`pub use MODULE::…{A, B}` in lib.rs), by the module they
/// come from.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code(lib);
    for stmt in code.split(';') {
        let Some(path) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path).to_string();
        let names = match path.find('{') {
            Some(open) => path[open + 1..path.rfind('}').unwrap()].to_string(),
            None => path.rsplit("::").next().unwrap().to_string(),
        };
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap().trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

#[test]
fn modules_import_only_their_own_layer_and_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "bin" {
            continue; // the root only declares and re-exports; the binary is a client
        }
        if layer_of(&module).is_none() {
            problems.push(format!(
                "src/{module}: a top-level module missing from LAYERS (and the README)"
            ));
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for name in crate_paths(&code(&text)) {
            let target = if layer_of(&name).is_some() {
                name.clone()
            } else if let Some(m) = reexports.get(&name) {
                m.clone()
            } else {
                problems.push(format!(
                    "{}: crate::{name} is neither a module nor a root re-export",
                    rel.display()
                ));
                continue;
            };
            if target == module {
                continue;
            }
            if layer_of(&target) > layer_of(&module) {
                problems.push(format!(
                    "{}: {module} (layer {}) uses crate::{name} of {target} (layer {}), a layer above",
                    rel.display(),
                    layer_of(&module).unwrap(),
                    layer_of(&target).unwrap()
                ));
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    // Circles within one layer (across layers the order above already rules them out).
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if let Some(i) = stack.iter().position(|s| s == m) {
            problems.push(format!("import circle: {} -> {m}", stack[i..].join(" -> ")));
            return;
        }
        if !done.insert(m.to_string()) {
            return;
        }
        stack.push(m.to_string());
        for t in edges.get(m).into_iter().flatten() {
            visit(t, edges, stack, done, problems);
        }
        stack.pop();
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_grouped_paths_reexports_and_ignores_comments() {
    let text = "use crate::{error::Result, ir::{Graph, Node}, tensor};\n\
                // crate::prune in a comment\n\
                let x = crate::Budget::Keep(1); /// crate::exec in a doc\n";
    let paths = crate_paths(&code(text));
    assert_eq!(paths, ["error", "ir", "tensor", "Budget"]);
    let map = root_reexports("pub use layer::{select, Budget};\npub use error::{Error, Result};\n");
    assert_eq!(map.get("Budget").map(String::as_str), Some("layer"));
    assert_eq!(map.get("Result").map(String::as_str), Some("error"));
}

#[test]
fn no_source_file_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("src/onnx/proto.rs")) // generated
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 800).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "one idea per file: {long:?}");
}
