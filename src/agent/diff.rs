//! Which paths of a container's root file system a snapshot copies, from Docker's list of what
//! changed since the image (`GET /containers/{id}/changes`). Pure: plain values in and out.

/// How a path changed, as Docker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Modified,
    Added,
    Deleted,
}

impl From<bollard::models::ChangeType> for Change {
    fn from(kind: bollard::models::ChangeType) -> Change {
        match kind {
            bollard::models::ChangeType::_0 => Change::Modified,
            bollard::models::ChangeType::_1 => Change::Added,
            bollard::models::ChangeType::_2 => Change::Deleted,
        }
    }
}

/// What a snapshot copies of the root file system.
#[derive(Debug, Default, PartialEq)]
pub struct Selection {
    /// Paths to copy whole (a directory with all it holds), none inside another.
    pub copy: Vec<String>,
    /// Paths of the image that were removed (a restore starts from the image, so they come back).
    pub removed: Vec<String>,
}

/// Paths that are never copied: the kernel's and Docker's own (made anew in every container),
/// and what does not outlive a restart anyway.
pub const NEVER: [&str; 10] = [
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/tmp",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/sbin/docker-init",
];

/// Whether `path` is `root` or inside it.
fn within(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

/// Whether `path` (absolute) is never copied: inside `skip` or [`NEVER`].
pub fn skipped(path: &str, skip: &[&str]) -> bool {
    skip.iter().chain(NEVER.iter()).any(|root| within(path, root))
}

/// The fewest paths that copy every added and modified file once: an added directory is copied
/// whole; a modified directory only through the changes inside it (Docker lists each); nothing
/// inside `skip` (the data volume, copied on its own) or [`NEVER`].
pub fn select(changes: &[(String, Change)], skip: &[&str]) -> Selection {
    let kept: Vec<&(String, Change)> = changes
        .iter()
        .filter(|(path, _)| path.starts_with('/'))
        .filter(|(path, _)| !skipped(path, skip))
        .collect();
    let has_inside = |dir: &str| {
        kept.iter()
            .any(|(other, _)| other.len() > dir.len() && within(other, dir))
    };
    let inside_added = |path: &str| {
        kept.iter()
            .any(|(other, kind)| *kind == Change::Added && other.len() < path.len() && within(path, other))
    };
    let inside_deleted = |path: &str| {
        kept.iter()
            .any(|(other, kind)| *kind == Change::Deleted && other.len() < path.len() && within(path, other))
    };
    let mut selection = Selection::default();
    for (path, kind) in &kept {
        match kind {
            Change::Added if !inside_added(path) => selection.copy.push(path.clone()),
            Change::Modified if !inside_added(path) && !has_inside(path) => selection.copy.push(path.clone()),
            Change::Deleted if !inside_deleted(path) => selection.removed.push(path.clone()),
            _ => {}
        }
    }
    selection.copy.sort();
    selection.copy.dedup();
    selection.removed.sort();
    selection
}

/// The path an entry of Docker's archive of `copied` (entries named from its last component,
/// as `tar -C parent`) has in the root file system, relative to `/`, or None for one that would
/// leave it (`..`, an absolute name).
pub fn rooted(copied: &str, entry: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::path::{Component, Path};
    if entry
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let parent = Path::new(copied).parent()?.strip_prefix("/").ok()?;
    Some(parent.join(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Change::*;

    fn changes(list: &[(&str, Change)]) -> Vec<(String, Change)> {
        list.iter().map(|(p, k)| (p.to_string(), *k)).collect()
    }

    #[test]
    fn an_installed_package_is_copied_by_its_new_directories_and_changed_files() {
        let seen = changes(&[
            ("/usr", Modified),
            ("/usr/local", Modified),
            ("/usr/local/bin", Modified),
            ("/usr/local/bin/tool", Added),
            ("/usr/share", Modified),
            ("/usr/share/tool", Added),
            ("/usr/share/tool/data", Added),
            ("/usr/share/tool/data/a.txt", Added),
            ("/etc", Modified),
            ("/etc/passwd", Modified),
            ("/etc/motd", Deleted),
            ("/var/cache/old", Deleted),
            ("/var/cache/old/x", Deleted),
        ]);
        assert_eq!(
            select(&seen, &["/home"]),
            Selection {
                copy: vec![
                    "/etc/passwd".into(),
                    "/usr/local/bin/tool".into(),
                    "/usr/share/tool".into()
                ],
                removed: vec!["/etc/motd".into(), "/var/cache/old".into()],
            }
        );
    }

    #[test]
    fn the_data_volume_and_the_kernels_files_are_never_copied() {
        let seen = changes(&[
            ("/home", Modified),
            ("/home/alice/notes.txt", Added),
            ("/homework", Added),
            ("/tmp/x", Added),
            ("/etc/hosts", Modified),
            ("/etc/hostname", Modified),
            ("/root/.ash_history", Added),
            ("/dev/console", Added),
            ("/sbin", Added),
            ("/sbin/docker-init", Added),
        ]);
        let selection = select(&seen, &["/home/"]);
        assert_eq!(selection.copy, vec!["/homework", "/root/.ash_history", "/sbin"]);
        // What an added directory holds is copied but for what is never copied.
        assert!(skipped("/sbin/docker-init", &["/home"]));
        assert!(skipped("/home/alice", &["/home"]));
        assert!(!skipped("/sbin/init", &["/home"]));
        assert!(selection.removed.is_empty());
    }

    #[test]
    fn a_modified_file_alone_is_copied() {
        let seen = changes(&[("/root", Modified)]);
        assert_eq!(select(&seen, &["/home"]).copy, vec!["/root"]);
    }

    #[test]
    fn archive_entries_land_beside_the_copied_path_and_never_outside_the_root() {
        use std::path::Path;
        assert_eq!(
            rooted("/usr/share/tool", Path::new("tool/data/a.txt")).unwrap(),
            Path::new("usr/share/tool/data/a.txt")
        );
        assert_eq!(rooted("/root", Path::new("root")).unwrap(), Path::new("root"));
        assert_eq!(rooted("/etc/x", Path::new("../../boot")), None);
        assert_eq!(rooted("/etc/x", Path::new("/etc/shadow")), None);
    }
}
