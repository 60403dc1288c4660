//! The docs as a newcomer meets them, checked on the files: no component needed (`make check`
//! runs this). The README is a front door, every relative link and anchor resolves, the code
//! map in docs/ARCHITECTURE.md names every source file (and nothing that is gone), and the
//! commands of docs/getting-started.md are the ones the repository's scripts run.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pages people read: README, CONTRIBUTING, BENCHMARKS and docs/*.md.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "BENCHMARKS.md"]
        .iter()
        .map(|p| repo().join(p))
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of a page outside fenced code blocks and HTML comments, with their numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let (mut fenced, mut comment) = (false, false);
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if trimmed.starts_with("<!--") && !trimmed.contains("-->") {
            comment = true;
        }
        if !fenced && !comment && !trimmed.starts_with("<!--") {
            lines.push((i + 1, line));
        }
        if comment && line.contains("-->") {
            comment = false;
        }
    }
    lines
}

/// GitHub's anchor of a heading: lower case, only letters, digits, spaces, `-` and `_`, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| slug(l.trim_start_matches('#').replace('`', "").as_str()))
        .collect()
}

/// The targets of markdown links `](target)` on a line.
fn links(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &line[i + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = read(&repo().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines: keep it a front door (what it is, a picture, the two commands, where to go next) \
         and move the rest into docs/"
    );
    for page in [
        "docs/getting-started.md",
        "docs/user-guide.md",
        "docs/admin-guide.md",
        "docs/operations.md",
        "docs/ARCHITECTURE.md",
        "CONTRIBUTING.md",
        "BENCHMARKS.md",
    ] {
        assert!(
            readme.contains(&format!("]({page})")),
            "README.md should link to {page}"
        );
    }
}

#[test]
fn every_link_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        let name = page.strip_prefix(repo()).unwrap().display().to_string();
        for (n, line) in prose(&text) {
            for target in links(line) {
                if target.starts_with("http://")
                    || target.starts_with("https://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(path)
                };
                if !file.exists() {
                    broken.push(format!("{name}:{n}: {target}: there is no {}", file.display()));
                } else if !anchor.is_empty() && !anchors(&read(&file)).iter().any(|a| a == anchor) {
                    broken.push(format!(
                        "{name}:{n}: {target}: {path} has no heading whose anchor is #{anchor}"
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that lead nowhere:\n{}",
        broken.join("\n")
    );
}

/// Every folder and .rs file under src/ (not the embedded static files), as `src/...`.
fn source_paths(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.strip_prefix(repo()).unwrap().display().to_string();
        if path.is_dir() {
            if name == "src/web/static" {
                continue;
            }
            found.push(format!("{name}/"));
            source_paths(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(name);
        }
    }
}

#[test]
fn the_code_map_names_every_source_file_and_nothing_gone() {
    let map = read(&repo().join("docs/ARCHITECTURE.md"));
    let mut sources = Vec::new();
    source_paths(&repo().join("src"), &mut sources);
    sources.sort();
    let missing: Vec<&String> = sources
        .iter()
        .filter(|p| !map.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's code map should say what these are (as `path`): {missing:?}"
    );
    let mut gone = Vec::new();
    for (n, line) in prose(&map) {
        for (i, _) in line.match_indices("`src/") {
            let rest = &line[i + 1..];
            let path = &rest[..rest.find('`').unwrap_or(rest.len())];
            if path.chars().all(|c| c.is_alphanumeric() || "/_.-".contains(c)) && !repo().join(path).exists()
            {
                gone.push(format!("docs/ARCHITECTURE.md:{n}: {path}"));
            }
        }
    }
    assert!(
        gone.is_empty(),
        "the code map names paths that are gone:\n{}",
        gone.join("\n")
    );
}

#[test]
fn getting_started_commands_are_run_by_the_repository() {
    let page = read(&repo().join("docs/getting-started.md"));
    let lines: Vec<&str> = page.lines().collect();
    let mut problems = Vec::new();
    let mut blocks = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != "```sh" {
            continue;
        }
        blocks += 1;
        let marker = (0..i)
            .rev()
            .map(|j| lines[j].trim())
            .find(|l| !l.is_empty())
            .and_then(|l| l.strip_prefix("<!-- run by "))
            .and_then(|l| l.strip_suffix(" -->"));
        let Some(file) = marker else {
            problems.push(format!(
                "docs/getting-started.md:{}: put `<!-- run by FILE -->` before this block, naming the script that runs it",
                i + 1
            ));
            continue;
        };
        let Ok(script) = std::fs::read_to_string(repo().join(file)) else {
            problems.push(format!(
                "docs/getting-started.md:{}: {file} does not exist",
                i + 1
            ));
            continue;
        };
        for (k, command) in lines[i + 1..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .enumerate()
        {
            let command = command.split(" #").next().unwrap_or_default().trim();
            if command.is_empty() {
                continue;
            }
            let run = match command.strip_prefix("make ") {
                // A make target: the Makefile defines it.
                Some(target) if file == "Makefile" => script.lines().any(|l| {
                    l.split(':')
                        .next()
                        .is_some_and(|t| t.split_whitespace().any(|t| t == target))
                }),
                _ => script.contains(command),
            };
            if !run {
                problems.push(format!(
                    "docs/getting-started.md:{}: `{command}` is not in {file}: show what the repository runs",
                    i + 2 + k
                ));
            }
        }
    }
    assert!(blocks > 0, "docs/getting-started.md has no ```sh blocks");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
