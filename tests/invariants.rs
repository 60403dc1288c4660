//! The architecture invariants of docs/ARCHITECTURE.md, checked on the source text: no real
//! component needed (`make check` runs this). A failure names the file and line to change.

use std::path::{Path, PathBuf};

const ROLES: [&str; 4] = ["agent", "scheduler", "web", "bastion"];

/// Modules that decide without doing: a snapshot in, what to do out. Every file of `src/api`
/// is one too.
const PURE: [&str; 13] = [
    "src/api/access.rs",
    "src/agent/plan.rs",
    "src/agent/decide.rs",
    "src/agent/diff.rs",
    "src/bastion/access.rs",
    "src/bastion/throttle.rs",
    "src/scheduler/placement.rs",
    "src/scheduler/lifecycle.rs",
    "src/scheduler/plan.rs",
    "src/scheduler/moving.rs",
    "src/scheduler/budget.rs",
    "src/scheduler/queue.rs",
    "src/scheduler/usage.rs",
];

/// What a pure module may not use: I/O, async, clients of the API server or of Docker.
const IMPURE: [&str; 12] = [
    "async fn",
    ".await",
    "tokio::",
    "std::fs",
    "std::net",
    "std::process",
    "reqwest",
    "kube::Api",
    "kube::Client",
    "Api<",
    "bollard::Docker",
    "russh::client",
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The lines of `file` before its `#[cfg(test)] mod tests` (tests may do what code may not),
/// with their numbers, comments dropped.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let mut lines = Vec::new();
    for (i, line) in all.iter().enumerate() {
        let next = all.get(i + 1).map(|l| l.trim_start()).unwrap_or_default();
        if line.trim_start().starts_with("#[cfg(test)]") && next.starts_with("mod tests") {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        if !code.trim().is_empty() {
            lines.push((i + 1, code.to_string()));
        }
    }
    lines
}

/// Every line of the files under `dir` (or of the file `dir`) that contains one of `needles`,
/// as `path:line: text`.
fn find(files: &[PathBuf], needles: &[String]) -> Vec<String> {
    let root = src().parent().unwrap().to_path_buf();
    let mut found = Vec::new();
    for file in files {
        for (n, line) in code_lines(file) {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                let path = file.strip_prefix(&root).unwrap_or(file).display().to_string();
                found.push(format!("{path}:{n}: {}", line.trim()));
            }
        }
    }
    found
}

fn role_paths(role: &str) -> Vec<String> {
    vec![
        format!("crate::{role}::"),
        format!("crate::{role};"),
        format!("crate::{role}}}"),
        format!("crate::{{{role}"),
        format!("compute_server::{role}"),
    ]
}

#[test]
fn roles_never_import_each_other() {
    let mut found = Vec::new();
    for role in ROLES {
        let files = rust_files(&src().join(role));
        assert!(!files.is_empty(), "src/{role}/ has no Rust files");
        for other in ROLES.iter().filter(|r| **r != role) {
            found.extend(find(&files, &role_paths(other)));
        }
        // `super::super::` would reach another role through the crate root.
        found.extend(find(&files, &["super::super::".to_string()]));
    }
    assert!(
        found.is_empty(),
        "Architecture Invariant: roles never import each other (what two roles share goes to src/api \
         or src/runtime):\n{}",
        found.join("\n")
    );
}

#[test]
fn shared_modules_import_no_role() {
    let mut files = rust_files(&src().join("api"));
    files.extend(rust_files(&src().join("runtime")));
    for file in [
        "kube_client.rs",
        "ssh_ca.rs",
        "storage.rs",
        "telemetry.rs",
        "crd.rs",
        "lib.rs",
    ] {
        files.push(src().join(file));
    }
    let needles: Vec<String> = ROLES.iter().flat_map(|r| role_paths(r)).collect();
    let found = find(&files, &needles);
    assert!(
        found.is_empty(),
        "Architecture Invariant: src/api, src/runtime and the crate's shared modules import no role:\n{}",
        found.join("\n")
    );
}

#[test]
fn docker_is_spoken_only_in_the_agent() {
    let files: Vec<PathBuf> = rust_files(&src())
        .into_iter()
        .filter(|f| !f.starts_with(src().join("agent")))
        .collect();
    let found = find(&files, &["bollard".to_string()]);
    assert!(
        found.is_empty(),
        "Architecture Invariant: bollard (Docker) is used only in src/agent; its errors stay there too:\n{}",
        found.join("\n")
    );
}

#[test]
fn decisions_are_pure() {
    let mut files: Vec<PathBuf> = PURE.iter().map(|f| src().parent().unwrap().join(f)).collect();
    for file in &files {
        assert!(
            file.is_file(),
            "{} is listed as a pure module in tests/invariants.rs but does not exist: update the list \
             (and docs/ARCHITECTURE.md)",
            file.display()
        );
    }
    files.extend(rust_files(&src().join("api")));
    let needles: Vec<String> = IMPURE.iter().map(|s| s.to_string()).collect();
    let found = find(&files, &needles);
    assert!(
        found.is_empty(),
        "Architecture Invariant: decisions are pure (no I/O, no async, no API or Docker client); \
         do it in the role's writer and pass the result in:\n{}",
        found.join("\n")
    );
}

/// The public functions' signatures (over as many lines as they take), as `path:line: text`.
fn public_signatures(files: &[PathBuf]) -> Vec<String> {
    let root = src().parent().unwrap().to_path_buf();
    let mut found = Vec::new();
    for file in files {
        let lines = code_lines(file);
        for (i, (n, line)) in lines.iter().enumerate() {
            let start = line.trim_start();
            if !(start.starts_with("pub ") || start.starts_with("pub(")) || !line.contains("fn ") {
                continue;
            }
            let mut signature = String::new();
            for (_, part) in &lines[i..] {
                signature.push_str(part.trim());
                signature.push(' ');
                if part.contains('{') || part.trim_end().ends_with(';') {
                    break;
                }
            }
            let path = file.strip_prefix(&root).unwrap_or(file).display().to_string();
            found.push(format!("{path}:{n}: {}", signature.trim()));
        }
    }
    found
}

/// The error type of a signature's returned `Result<T, E>` (`None` when it returns no such
/// Result): `E` at the top level of the brackets.
fn error_type(signature: &str) -> Option<String> {
    let returned = &signature[signature.find("->")?..];
    let inside = &returned[returned.find("Result<")? + "Result<".len()..];
    let (mut depth, mut last_comma, mut end) = (0, None, None);
    for (i, c) in inside.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' if depth == 0 => {
                end = Some(i);
                break;
            }
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => last_comma = Some(i),
            _ => {}
        }
    }
    Some(inside[last_comma? + 1..end?].trim().to_string())
}

#[test]
fn no_string_errors_at_module_boundaries() {
    // A public function's error says what went wrong in a type of its own, with its source.
    let found: Vec<String> = public_signatures(&rust_files(&src()))
        .into_iter()
        .filter(|signature| error_type(signature).is_some_and(|e| e == "String" || e == "&str"))
        .collect();
    assert!(
        found.is_empty(),
        "Architecture Invariant: no Result<_, String> at module boundaries (pub fns); give the error a type:\n{}",
        found.join("\n")
    );
}
