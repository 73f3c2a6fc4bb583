//! The documentation is kept true by tests where it can be checked mechanically: every link
//! between the Markdown files points at a file and a heading that exist, and every
//! configuration variable the code reads is in the README's table. (The send decision table
//! in docs/sending.md is checked against the code by `wxpush-roles`' own unit test.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown file of the project's own (not target/, not .git/).
fn markdown_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    dirs.push(path);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to
/// `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a Markdown text outside its fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut in_code = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            return false;
        }
        !in_code
    })
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        if let Some(h) = line.strip_prefix('#') {
            let h = h.trim_start_matches('#');
            let base = slug(h);
            let mut s = base.clone();
            let mut n = 0;
            while seen.contains(&s) {
                n += 1;
                s = format!("{base}-{n}");
            }
            seen.insert(s);
        }
    }
    seen
}

/// `(target, anchor)` of every inline link `](...)` outside code blocks.
fn links(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            match target.split_once('#') {
                Some((file, anchor)) => out.push((file.to_owned(), Some(anchor.to_owned()))),
                None => out.push((target.to_owned(), None)),
            }
        }
    }
    out
}

#[test]
fn every_link_between_the_documents_points_at_something_that_exists() {
    let mut broken = Vec::new();
    let files = markdown_files();
    assert!(files.len() >= 8, "found {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let dir = file.parent().unwrap_or(Path::new("."));
        for (target, anchor) in links(&text) {
            let to = if target.is_empty() {
                file.clone()
            } else {
                dir.join(&target)
            };
            let shown = file
                .strip_prefix(root())
                .unwrap_or(file)
                .display()
                .to_string();
            if !to.exists() {
                broken.push(format!("{shown}: {target} does not exist"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if to.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let there = std::fs::read_to_string(&to).expect("readable");
            if !anchors(&there).contains(&anchor) {
                broken.push(format!("{shown}: {target}#{anchor} has no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_configuration_variable_is_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let missing: Vec<_> = wxpush_domain::config::ENV_VARS
        .iter()
        .filter(|v| !readme.contains(&format!("| `{v}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's configuration table: {missing:?}"
    );
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug(" The decision table (`crates/roles/src/send/decide.rs`)"),
        "the-decision-table-cratesrolessrcsenddeciders"
    );
    assert_eq!(slug("Poison"), "poison");
    assert_eq!(
        slug("Where an app's access token comes from: `token_source`"),
        "where-an-apps-access-token-comes-from-token_source"
    );
}
