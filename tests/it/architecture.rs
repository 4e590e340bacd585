//! The invariants of ARCHITECTURE.md that a machine can check, on the
//! source itself: each failure names the file and the line.
//!
//! - only `src/storage/` knows sled;
//! - only `src/http/` knows hyper and rustls;
//! - handlers (`src/api/`) never reach into storage (no records, no tables):
//!   they go through the module that owns the data;
//! - keys are built only in `src/storage/`: no `\0`- or `\n`-joined strings
//!   elsewhere (typed composite keys in `storage::codec` and `storage::keys`).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The code of a line, without its `//` comment (string contents kept).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    match line.find(" // ") {
        Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
        _ => line,
    }
}

/// Lines of the files under `src/` that `checked` selects (by their path
/// from the repository root) whose code matches `forbidden`, as
/// "file:line: code".
fn offending_lines(checked: impl Fn(&str) -> bool, forbidden: impl Fn(&str) -> bool) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in rust_files(&root.join("src")) {
        let relative = file.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
        if !checked(&relative) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source file");
        // Unit tests may build whatever they check against.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            if forbidden(code_of(line)) {
                found.push(format!("{relative}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    found
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

/// Whether `code` names the crate `name` (as a path or an import).
fn names_crate(code: &str, name: &str) -> bool {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .any(|token| token == name || token.starts_with(&format!("{name}::")))
}

#[test]
fn only_storage_knows_sled() {
    let outside_storage = |path: &str| !path.starts_with("src/storage/");
    assert_none("sled outside src/storage/", offending_lines(outside_storage, |code| names_crate(code, "sled")));
}

#[test]
fn only_http_knows_hyper_and_rustls() {
    let http_crates = ["hyper", "hyper_util", "rustls", "tokio_rustls", "rustls_pki_types", "rustls_native_certs"];
    assert_none(
        "hyper or rustls outside src/http/",
        offending_lines(
            |path| !path.starts_with("src/http/"),
            |code| http_crates.iter().any(|name| names_crate(code, name)),
        ),
    );
}

#[test]
fn handlers_do_not_reach_into_storage() {
    let found = offending_lines(
        |path| path.starts_with("src/api/"),
        |code| code.contains("storage::") || code.contains(".tables.") || code.contains("records::"),
    );
    assert_none("storage used from the API handlers (src/api/)", found);
}

#[test]
fn keys_are_built_only_in_storage() {
    // A NUL or a newline inside a string literal or a char, used to join or
    // split key parts, in the modules that own tables or handle requests
    // (configuration, the command line and the fuzz bodies own no key).
    let joins = |code: &str| code.contains("\\0") || code.contains("'\\n'") || code.contains("\\n{");
    let key_owners = ["src/rooms/", "src/users/", "src/e2ee/", "src/push/", "src/media/", "src/sync/", "src/api/"];
    let checked = |path: &str| key_owners.iter().any(|owner| path.starts_with(owner));
    assert_none("hand-built keys outside src/storage/", offending_lines(checked, joins));
}

#[test]
fn event_types_are_named_by_their_constants() {
    // `"m.room.…"` as a value (not a JSON object key) outside `events::kinds`.
    let literal_type = |code: &str| {
        code.match_indices("\"m.room.").any(|(at, _)| {
            let rest = &code[at + 1..];
            let Some(close) = rest.find('"') else { return false };
            // A whole string that is an event type (not a message mentioning one), not a key.
            !rest[..close].contains(char::is_whitespace) && !rest[close + 1..].starts_with(':')
        })
    };
    let checked = |path: &str| path != "src/events/kinds.rs" && path != "src/fuzz_targets.rs";
    assert_none("event types spelled out instead of events::kinds", offending_lines(checked, literal_type));
}
