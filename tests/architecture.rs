//! The shape of the code, checked: which module may import which, no import circle
//! between files, and no context reaching into another's pages.
//!
//! Reads `src/` as text: every `use crate::…`/`use super::…` tree and every
//! `crate::…` path in code (test modules excluded) becomes an edge from the file
//! to the file that defines the item, seen through `mod.rs` re-exports (a facade
//! is not a dependency; the file behind it is). `cargo test --test architecture --
//! --nocapture` prints the graph between modules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A file module: `crate::quoting::pages` for src/quoting/pages.rs.
type Module = String;

struct Source {
    /// Each file's module path and its code, test modules and comments removed.
    files: BTreeMap<Module, String>,
    /// `pub use` re-exports of each module: name → the path it stands for.
    reexports: HashMap<Module, HashMap<String, Vec<String>>>,
    /// Macros exported at the crate root, by the module that defines them.
    macros: HashMap<String, Module>,
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    std::iter::once("crate".to_owned())
        .chain(parts)
        .collect::<Vec<_>>()
        .join("::")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The file's code without comments and without its `#[cfg(test)]` module.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") && !line.starts_with(' ') {
            break;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Expands a use tree (`a::{b, c::{d, e as f}}`) into its paths, with the name
/// each is known by.
fn expand(tree: &str) -> Vec<(Vec<String>, String)> {
    let tree: String = tree.split_whitespace().collect();
    let mut out = Vec::new();
    expand_into(&tree, Vec::new(), &mut out);
    out
}

fn expand_into(tree: &str, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').expect("a closing brace")];
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        let base: Vec<String> = prefix.into_iter().chain(head).collect();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            expand_into(part, base.clone(), out);
        }
    } else {
        let (path, alias) = match tree.split_once("as") {
            Some((path, alias))
                if path.ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    && !alias.is_empty()
                    && !tree.contains("::as") =>
            {
                (path, Some(alias))
            }
            _ => (tree, None),
        };
        let mut segments: Vec<String> = prefix;
        segments.extend(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        let name = alias
            .map(str::to_owned)
            .or_else(|| segments.last().cloned())
            .unwrap_or_default();
        if name == "self" {
            segments.pop();
            let name = segments.last().cloned().unwrap_or_default();
            out.push((segments, name));
        } else {
            out.push((segments, name));
        }
    }
}

/// The `use` statements of a file: (is `pub`, tree).
fn use_statements(code: &str) -> Vec<(bool, String)> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let lead = before[line_start..].trim();
        let is_statement = lead.is_empty() || lead == "pub" || lead.starts_with("pub(");
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if is_statement {
            found.push((lead.starts_with("pub"), after[..end].to_owned()));
        }
        rest = &after[end.min(after.len())..];
    }
    found
}

/// Absolute segments of `path` as written in `module`.
fn absolute(module: &str, path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.split("::").map(str::to_owned).collect();
    let mut segments = path.iter().peekable();
    match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            base = vec![segments.next()?.clone()];
        }
        Some("super") => {
            while segments.peek().is_some_and(|s| *s == "super") {
                segments.next();
                base.pop();
            }
        }
        Some("self") => {
            segments.next();
        }
        _ => return None,
    }
    Some(base.into_iter().chain(segments.cloned()).collect())
}

impl Source {
    fn read(src: &Path) -> Source {
        let mut paths = Vec::new();
        rust_files(src, &mut paths);
        let mut files = BTreeMap::new();
        let mut macros = HashMap::new();
        for path in paths.iter().filter(|p| !p.ends_with("main.rs")) {
            let module = module_of(src, path);
            let text = std::fs::read_to_string(path).expect("read a source file");
            let code = code_of(&text);
            for (i, line) in code.lines().enumerate() {
                if let Some(name) = line.trim().strip_prefix("macro_rules! ") {
                    let exported = code
                        .lines()
                        .nth(i.wrapping_sub(1))
                        .is_some_and(|l| l.contains("#[macro_export]"));
                    if exported {
                        macros.insert(
                            name.trim_end_matches(" {").trim().to_owned(),
                            module.clone(),
                        );
                    }
                }
            }
            files.insert(module, code);
        }
        let mut reexports: HashMap<Module, HashMap<String, Vec<String>>> = HashMap::new();
        for (module, code) in &files {
            for (public, tree) in use_statements(code) {
                if !public {
                    continue;
                }
                for (path, name) in expand(&tree) {
                    let path = match path.first().map(String::as_str) {
                        Some("crate" | "super" | "self") => absolute(module, &path),
                        // `pub use child::Item` in a mod.rs: relative to the module.
                        _ => Some(module.split("::").map(str::to_owned).chain(path).collect()),
                    };
                    if let Some(path) = path {
                        reexports
                            .entry(module.clone())
                            .or_default()
                            .insert(name, path);
                    }
                }
            }
        }
        Source {
            files,
            reexports,
            macros,
        }
    }

    /// The file that defines what `path` names, through re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<Module> {
        if path.len() == 2
            && let Some(module) = self.macros.get(&path[1])
        {
            return Some(module.clone());
        }
        let known = (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| self.files.contains_key(m))?;
        let consumed = known.split("::").count();
        if consumed < path.len()
            && depth < 8
            && let Some(target) = self
                .reexports
                .get(&known)
                .and_then(|r| r.get(&path[consumed]))
        {
            let mut next = target.clone();
            next.extend(path[consumed + 1..].iter().cloned());
            return self.resolve(&next, depth + 1).or(Some(known));
        }
        Some(known)
    }

    /// Which files each file depends on.
    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, code) in &self.files {
            let mut paths: Vec<Vec<String>> = Vec::new();
            for (public, tree) in use_statements(code) {
                if public
                    && self.reexports.contains_key(module)
                    && (module == "crate" || code.contains("pub mod") || code.contains("\nmod "))
                {
                    // A facade's re-exports are not its own dependencies.
                    continue;
                }
                for (path, _) in expand(&tree) {
                    paths.extend(absolute(module, &path));
                }
            }
            // Paths written out in code: `crate::quoting::domain::fold(…)`.
            for (at, _) in code.match_indices("crate::") {
                if code[..at].ends_with('$') || code[..at].ends_with("use ") {
                    continue;
                }
                let path: String = code[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                paths.push(
                    path.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            let targets = edges.entry(module.clone()).or_default();
            for path in paths {
                if let Some(target) = self.resolve(&path, 0)
                    && target != *module
                    && !module.starts_with(&format!("{target}::"))
                    && target != "crate"
                {
                    targets.insert(target);
                }
            }
        }
        edges
    }

    /// A context's modules that draw pages: they hold askama templates. (`web`
    /// draws the error page every context shares.)
    fn page_modules(&self) -> BTreeSet<Module> {
        self.files
            .iter()
            .filter(|(module, _)| CONTEXTS.contains(&context(module)))
            .filter(|(_, code)| code.contains("#[template("))
            .map(|(module, _)| module.clone())
            .collect()
    }
}

/// `crate::quoting::pages` → `quoting`.
fn context(module: &str) -> &str {
    module.split("::").nth(1).unwrap_or("crate")
}

fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's strongly connected components.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.index[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn source() -> Source {
    let src = std::env::var_os("QUOTELINE_ARCHITECTURE_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    Source::read(&src)
}

/// The bounded contexts: each owns its pages.
const CONTEXTS: [&str; 4] = ["identity", "quoting", "underwriting", "audit"];

/// What each top-level module may import. Everything not listed is refused.
const ALLOWED: [(&str, &[&str]); 19] = [
    ("kernel", &[]),
    ("db", &[]),
    ("server", &[]),
    ("eventstore", &["db"]),
    ("web", &["kernel", "eventstore", "quoting"]),
    ("identity", &["db", "eventstore", "kernel", "web", "state"]),
    (
        "quoting",
        &["db", "eventstore", "kernel", "web", "identity", "state"],
    ),
    (
        "underwriting",
        &[
            "db",
            "eventstore",
            "kernel",
            "web",
            "identity",
            "state",
            "quoting",
        ],
    ),
    (
        "audit",
        &[
            "db",
            "eventstore",
            "kernel",
            "web",
            "identity",
            "state",
            "quoting",
        ],
    ),
    (
        "state",
        &[
            "db",
            "eventstore",
            "identity",
            "quoting",
            "underwriting",
            "audit",
        ],
    ),
    (
        "demo",
        &[
            "db",
            "eventstore",
            "kernel",
            "identity",
            "quoting",
            "state",
            "app",
            "rebuild",
        ],
    ),
    (
        "app",
        &[
            "db",
            "eventstore",
            "kernel",
            "web",
            "identity",
            "quoting",
            "underwriting",
            "audit",
            "state",
            "telemetry",
        ],
    ),
    ("lock", &["db"]),
    ("rebuild", &["db", "eventstore", "lock", "state"]),
    ("archive", &["db", "eventstore", "lock", "quoting"]),
    ("publisher", &["db", "eventstore", "lock"]),
    ("telemetry", &["state", "web"]),
    ("replay", &["db", "eventstore", "state"]),
    ("crate", &["app", "state"]),
];

#[test]
fn no_file_is_part_of_an_import_circle() {
    let edges = source().edges();
    // The graph itself, for `-- --nocapture`.
    for (module, targets) in &edges {
        let name = |m: &str| m.trim_start_matches("crate::").to_owned();
        let targets: Vec<String> = targets.iter().map(|t| name(t)).collect();
        println!("{} -> {}", name(module), targets.join(", "));
    }
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "files that import each other, directly or through others: {found:#?}"
    );
}

#[test]
fn no_context_imports_another_contexts_pages() {
    let source = source();
    let pages = source.page_modules();
    let mut found = Vec::new();
    for (module, targets) in source.edges() {
        for target in targets.intersection(&pages) {
            if context(&module) != context(target) && context(&module) != "app" {
                found.push(format!("{module} imports the pages of {target}"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn each_layer_imports_only_what_is_below_it() {
    let allowed: HashMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut found = Vec::new();
    for (module, targets) in source().edges() {
        let from = context(&module);
        for target in &targets {
            let to = context(target);
            let permitted = allowed.get(from).is_some_and(|a| a.contains(&to));
            // Within quoting, the pure domain imports nothing of the web.
            let domain_reaches_out = module.starts_with("crate::quoting::domain")
                && !target.starts_with("crate::quoting::domain")
                && !["kernel", "eventstore"].contains(&to);
            if (from != to && !permitted) || domain_reaches_out {
                found.push(format!("{module} imports {target}"));
            }
        }
    }
    assert!(found.is_empty(), "imports against the layering: {found:#?}");
}
