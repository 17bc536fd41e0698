//! Walks a plan's selections, minus its excludes, in catalog path order.
//!
//! The selections form a tree of path components from `/`. Ancestors of a selection (for
//! `/srv/data`: `/srv`) are reported too, so a restore can rebuild them with their metadata,
//! but only the selected subtrees are entered. Each directory's names are sorted as bytes,
//! and a directory's subtree is reported right after it: exactly [`abri_store::path_cmp`]
//! order, so the walk merges with the previous catalog in one pass.
//!
//! Objects that vanish or cannot be read are reported as warnings and skipped. Kernel
//! pseudo file systems (proc, sysfs, ...) are recorded as directories but never entered.
//! Memory: one sorted name list per directory on the current path.
//!
//! On Windows the root `/` stands for the machine's volumes: its names are drive letters
//! (`C`), a selection `/` means every fixed volume, and names are the WTF-8 form of their
//! UTF-16 (see `platform::winpath`). The platform functions hide that difference.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use crate::exclude::Excludes;
use crate::platform;

/// What the walk reports, in order.
#[derive(Debug)]
pub enum WalkEvent {
    /// An object to back up.
    Item(WalkItem),
    /// Something skipped, for the job log.
    Warning(String),
}

/// One object found by the walk.
#[derive(Debug)]
pub struct WalkItem {
    /// Absolute path on this machine.
    pub abs: PathBuf,
    /// Catalog path: `abs` relative to `/`.
    pub rel: Vec<u8>,
    /// `lstat` of `abs`.
    pub meta: Metadata,
}

#[derive(Debug, Clone, Default)]
struct SelectionNode {
    full: bool,
    children: BTreeMap<Vec<u8>, SelectionNode>,
}

#[derive(Debug)]
enum Scope {
    /// Everything below.
    Full,
    /// Only these names, each with its own sub-selection.
    Partial(BTreeMap<Vec<u8>, SelectionNode>),
}

#[derive(Debug)]
struct Frame {
    abs: PathBuf,
    rel: Vec<u8>,
    dev: u64,
    names: Vec<Vec<u8>>,
    next: usize,
    scope: Scope,
}

/// The walk, as an iterator of [`WalkEvent`]s.
pub struct Walk {
    excludes: Excludes,
    stack: Vec<Frame>,
    pending: Option<(PathBuf, Vec<u8>, u64, Scope)>,
    start_warnings: Vec<String>,
    /// Where to read top-level names from instead of below the root (a volume snapshot).
    mounts: BTreeMap<Vec<u8>, PathBuf>,
}

impl Walk {
    /// A walk from `/` of `selections` (absolute paths) minus `excludes`.
    pub fn new(selections: &[String], excludes: Excludes) -> Self {
        Self::with_root(Path::new("/"), selections, excludes)
    }

    /// A walk of `selections` interpreted below `root` instead of `/` (catalog paths stay
    /// relative to `root`). Tests use it to back up a temporary tree.
    pub fn with_root(root: &Path, selections: &[String], excludes: Excludes) -> Self {
        let root = platform::walk_root(root);
        let mut tree = SelectionNode::default();
        let mut start_warnings = Vec::new();
        for sel in selections {
            let components = match platform::selection_components(&root, sel) {
                Ok(c) => c,
                Err(warning) => {
                    start_warnings.push(warning);
                    continue;
                }
            };
            let mut node = &mut tree;
            for c in components {
                node = node.children.entry(c).or_default();
            }
            node.full = true;
        }
        let mut walk = Walk {
            excludes,
            stack: Vec::new(),
            pending: None,
            start_warnings,
            mounts: BTreeMap::new(),
        };
        let dev = match platform::root_device(&root) {
            Ok(d) => d,
            Err(e) => {
                walk.start_warnings
                    .push(format!("cannot read {}: {e}", root.display()));
                return walk;
            }
        };
        let scope = if tree.full {
            Scope::Full
        } else {
            Scope::Partial(tree.children)
        };
        walk.pending = Some((root, Vec::new(), dev, scope));
        walk
    }

    /// Reads the top-level name `name` from `path` instead of below the root: a backup
    /// walks a volume's snapshot in place of the live volume this way.
    pub fn mount(mut self, name: Vec<u8>, path: PathBuf) -> Self {
        self.mounts.insert(name, path);
        self
    }

    /// Lists and pushes a directory to enter; a failure becomes a warning.
    fn enter(&mut self, abs: PathBuf, rel: Vec<u8>, dev: u64, scope: Scope) -> Option<String> {
        let names = match &scope {
            Scope::Partial(children) => children.keys().cloned().collect(),
            Scope::Full => match platform::list_dir(&abs) {
                Ok(mut names) => {
                    names.sort();
                    names
                }
                Err(e) => {
                    return Some(format!(
                        "cannot list {}: {e}; its contents are skipped",
                        abs.display()
                    ));
                }
            },
        };
        self.stack.push(Frame {
            abs,
            rel,
            dev,
            names,
            next: 0,
            scope,
        });
        None
    }
}

impl Iterator for Walk {
    type Item = WalkEvent;

    fn next(&mut self) -> Option<WalkEvent> {
        if let Some(w) = self.start_warnings.pop() {
            return Some(WalkEvent::Warning(w));
        }
        if let Some((abs, rel, dev, scope)) = self.pending.take()
            && let Some(w) = self.enter(abs, rel, dev, scope)
        {
            return Some(WalkEvent::Warning(w));
        }
        loop {
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.get(frame.next).cloned() else {
                self.stack.pop();
                continue;
            };
            frame.next += 1;
            let abs = match self.mounts.get(&name) {
                Some(mounted) if frame.rel.is_empty() => mounted.clone(),
                _ => platform::child_path(&frame.abs, &name),
            };
            let mut rel = frame.rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            if self
                .excludes
                .is_excluded(&platform::exclusion_key(&abs, &rel))
            {
                continue;
            }
            let child_scope = match &frame.scope {
                Scope::Full => Some(Scope::Full),
                Scope::Partial(children) => children.get(&name).map(|n| {
                    if n.full {
                        Scope::Full
                    } else {
                        Scope::Partial(n.children.clone())
                    }
                }),
            };
            let parent_dev = frame.dev;
            let meta = match std::fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let what = if matches!(frame.scope, Scope::Partial(_)) {
                        "the selected path does not exist"
                    } else {
                        "vanished during the backup"
                    };
                    return Some(WalkEvent::Warning(format!("{}: {what}", abs.display())));
                }
                Err(e) => {
                    return Some(WalkEvent::Warning(format!(
                        "cannot read {}: {e}; skipped",
                        abs.display()
                    )));
                }
            };
            if meta.is_dir() {
                let dev = platform::device_of(&meta);
                let pseudo = dev != parent_dev && platform::is_pseudo_fs(&abs);
                if let Some(scope) = child_scope
                    && !pseudo
                {
                    self.pending = Some((abs.clone(), rel.clone(), dev, scope));
                }
            } else if matches!(child_scope, Some(Scope::Partial(_))) {
                return Some(WalkEvent::Warning(format!(
                    "{} is not a directory: the selections below it are skipped",
                    abs.display()
                )));
            }
            return Some(WalkEvent::Item(WalkItem { abs, rel, meta }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(walk: Walk) -> (Vec<String>, Vec<String>) {
        let mut items = vec![];
        let mut warnings = vec![];
        for e in walk {
            match e {
                WalkEvent::Item(i) => items.push(String::from_utf8(i.rel).unwrap()),
                WalkEvent::Warning(w) => warnings.push(w),
            }
        }
        (items, warnings)
    }

    #[test]
    fn walks_selections_with_ancestors_in_catalog_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "srv/data/a/x",
            "srv/data/a.txt",
            "srv/other/y",
            "home/ann/.cache/c",
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"1").unwrap();
        }
        fs::write(root.join("home/ann/notes"), b"n").unwrap();
        // Linux matches the absolute path, Windows the path below the walk's root.
        #[cfg(unix)]
        let excludes = Excludes::new(&[format!("{}/home/*/.cache", root.display())]);
        #[cfg(windows)]
        let excludes = Excludes::for_windows(&[r"home\*\.cache"]);
        let walk = Walk::with_root(
            root,
            &["/srv/data".into(), "/home".into(), "/missing".into()],
            excludes,
        );
        let (items, warnings) = paths(walk);
        assert_eq!(
            items,
            [
                "home",
                "home/ann",
                "home/ann/notes",
                "srv",
                "srv/data",
                "srv/data/a",
                "srv/data/a/x",
                "srv/data/a.txt"
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("does not exist"));
        let mut sorted = items.clone();
        sorted.sort_by(|a, b| abri_store::path_cmp(a.as_bytes(), b.as_bytes()));
        assert_eq!(sorted, items);
    }

    #[test]
    fn root_selection_walks_everything_and_nested_selections_merge() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/c"), b"").unwrap();
        let (items, _) = paths(Walk::with_root(
            root,
            &["/".into(), "/a/b".into()],
            Excludes::default(),
        ));
        assert_eq!(items, ["a", "a/b", "a/b/c"]);
    }
}
