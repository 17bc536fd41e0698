//! Exclusion rules of a file plan.
//!
//! A rule is an absolute path or glob (`/home/*/.cache`, `/var/tmp`) matched component by
//! component against a path and each of its ancestors, so excluding a directory excludes
//! its subtree (and the walk never enters it). A rule without a `/` (`*.tmp`, `.cache`)
//! matches a name at any depth. In a component, `*` matches any run of bytes, `?` one byte;
//! `**` as a whole component matches any number of components. A trailing `/` is ignored.
//!
//! One plan serves Linux and Windows machines: patterns written the Windows way
//! (`C:\Windows`, `*:\pagefile.sys`) are skipped by [`Excludes::new`] (Linux), and
//! [`Excludes::for_windows`] skips the Unix ones (starting with `/`), reads the Windows ones
//! as `/C/Windows`, `/*/pagefile.sys` (see `platform::winpath`), and ignores case, as
//! Windows does.

use crate::platform::winpath;

/// Compiled exclusion rules.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    rules: Vec<Rule>,
    /// Match without regard to case (Windows).
    fold_case: bool,
}

#[derive(Debug, Clone)]
enum Rule {
    /// Components of an anchored pattern.
    Anchored(Vec<Vec<u8>>),
    /// A single-component pattern matched against every name.
    Name(Vec<u8>),
}

impl Excludes {
    /// Compiles the patterns of a plan for a Unix machine; empty ones and Windows ones are
    /// ignored.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let unix: Vec<&str> = patterns
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| !winpath::is_windows_pattern(p))
            .collect();
        Self::compile(&unix, false)
    }

    /// Compiles the patterns of a plan for a Windows machine, matched against `/C/Users/...`
    /// without regard to case; Unix patterns (starting with `/`) are ignored.
    pub fn for_windows<S: AsRef<str>>(patterns: &[S]) -> Self {
        let windows: Vec<String> = patterns
            .iter()
            .filter_map(|p| winpath::exclude_pattern(p.as_ref()))
            .map(|p| p.to_lowercase())
            .collect();
        Self::compile(&windows, true)
    }

    /// The patterns as this machine's agent reads them.
    pub fn for_this_system<S: AsRef<str>>(patterns: &[S]) -> Self {
        if cfg!(windows) {
            Self::for_windows(patterns)
        } else {
            Self::new(patterns)
        }
    }

    fn compile<S: AsRef<str>>(patterns: &[S], fold_case: bool) -> Self {
        let mut rules = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                // "/" alone (trimmed to nothing) would exclude everything: ignore it.
                continue;
            }
            if p.contains('/') {
                let parts = p
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(|c| c.as_bytes().to_vec())
                    .collect::<Vec<_>>();
                if !parts.is_empty() {
                    rules.push(Rule::Anchored(parts));
                }
            } else {
                rules.push(Rule::Name(p.as_bytes().to_vec()));
            }
        }
        Excludes { rules, fold_case }
    }

    /// True when the absolute path `path` (bytes, `/`-separated) is excluded, itself or as
    /// part of an excluded ancestor.
    pub fn is_excluded(&self, path: &[u8]) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let folded;
        let path = if self.fold_case {
            folded = String::from_utf8_lossy(path).to_lowercase().into_bytes();
            &folded[..]
        } else {
            path
        };
        let components: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        self.rules.iter().any(|rule| match rule {
            Rule::Name(p) => components.iter().any(|c| glob_component(p, c)),
            Rule::Anchored(parts) => {
                (1..=components.len()).any(|n| glob_components(parts, &components[..n]))
            }
        })
    }

    /// True when no rule is set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn glob_components(pattern: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first.as_slice() == b"**" => {
            (0..=path.len()).any(|skip| glob_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((c, path_rest)) => glob_component(first, c) && glob_components(rest, path_rest),
            None => false,
        },
    }
}

/// `*` and `?` matching of one component, iterative with backtracking to the last `*`.
fn glob_component(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(patterns: &[&str], path: &str) -> bool {
        Excludes::new(patterns).is_excluded(path.as_bytes())
    }

    #[test]
    fn prefixes_exclude_their_subtree_only() {
        let rules = ["/proc", "/var/tmp/"];
        assert!(ex(&rules, "/proc"));
        assert!(ex(&rules, "/proc/1/status"));
        assert!(!ex(&rules, "/processes"));
        assert!(!ex(&rules, "/srv/proc"));
        assert!(ex(&rules, "/var/tmp/x"));
        assert!(!ex(&rules, "/var/tmpfoo"));
        assert!(!ex(&rules, "/var"));
    }

    #[test]
    fn globs_match_one_component() {
        let rules = ["/home/*/.cache"];
        assert!(ex(&rules, "/home/ann/.cache"));
        assert!(ex(&rules, "/home/ann/.cache/thumbnails/x.png"));
        assert!(!ex(&rules, "/home/ann/work/.cache"));
        assert!(!ex(&rules, "/home/.cache"));
        assert!(!ex(&rules, "/home/ann/.cachet"));
        assert!(ex(&["/srv/*.log"], "/srv/a.log"));
        assert!(!ex(&["/srv/*.log"], "/srv/a.log.gz"));
        assert!(ex(&["/srv/a?c"], "/srv/abc"));
        assert!(!ex(&["/srv/a?c"], "/srv/ac"));
        assert!(ex(&["/srv/*a*b*"], "/srv/xxaxxbxx"));
        assert!(!ex(&["/srv/*a*b*"], "/srv/xxbxxaxx"));
    }

    #[test]
    fn names_and_double_stars_match_at_any_depth() {
        assert!(ex(&["*.tmp"], "/home/ann/x.tmp"));
        assert!(ex(
            &["node_modules"],
            "/srv/app/node_modules/left-pad/index.js"
        ));
        assert!(!ex(&["*.tmp"], "/home/ann/x.tmpl"));
        assert!(ex(&["/srv/**/cache"], "/srv/a/b/cache/x"));
        assert!(ex(&["/srv/**/cache"], "/srv/cache"));
        assert!(!ex(&["/srv/**/cache"], "/opt/cache"));
    }

    #[test]
    fn each_system_applies_its_own_patterns() {
        let rules = [
            "/proc",
            r"C:\Windows",
            r"*:\pagefile.sys",
            r"*:\Users\*\AppData\Local\Temp",
            "Thumbs.db",
        ];
        let linux = Excludes::new(&rules);
        assert!(linux.is_excluded(b"/proc/1"));
        assert!(linux.is_excluded(b"/srv/Thumbs.db"));
        assert!(!linux.is_excluded(br"/srv/C:\Windows"));
        let win = Excludes::for_windows(&rules);
        assert!(!win.is_excluded(b"/proc"));
        assert!(win.is_excluded(b"/C/Windows"));
        assert!(win.is_excluded(b"/C/WINDOWS/System32/x.dll"));
        assert!(!win.is_excluded(b"/D/Windows"));
        assert!(win.is_excluded(b"/D/pagefile.sys"));
        assert!(!win.is_excluded(b"/D/data/pagefile.sys"));
        assert!(win.is_excluded(b"/C/Users/ann/AppData/Local/Temp/x.tmp"));
        assert!(!win.is_excluded(b"/C/Users/ann/AppData/Local/Tempo"));
        assert!(win.is_excluded("/E/Été/thumbs.DB".as_bytes()));
    }

    #[test]
    fn the_default_plan_serves_both_systems() {
        let plan = abri_proto::plan::default_file_plan().settings.excludes;
        let linux = Excludes::new(&plan);
        assert!(linux.is_excluded(b"/proc/1/status"));
        assert!(linux.is_excluded(b"/home/ann/.cache/x"));
        assert!(!linux.is_excluded(b"/home/ann/notes.txt"));
        assert!(!linux.is_excluded(b"/srv/pagefile.sys"));
        let windows = Excludes::for_windows(&plan);
        for path in [
            "/C/Windows/System32/kernel32.dll",
            "/C/pagefile.sys",
            "/D/hiberfil.sys",
            "/C/swapfile.sys",
            "/E/System Volume Information/x",
            "/C/Users/Ann/AppData/Local/Temp/setup.log",
            "/C/Users/Ann/AppData/Local/Google/Chrome/User Data/Default/Cache/data_1",
            "/C/Users/Ann/AppData/Local/Mozilla/Firefox/Profiles/x.default/cache2/e",
        ] {
            assert!(windows.is_excluded(path.as_bytes()), "{path}");
        }
        for path in [
            "/C/Users/Ann/Documents/report.docx",
            "/D/Windows/notes.txt",
            "/C/Users/Ann/AppData/Roaming/app.ini",
            "/C/proc",
            "/C/data/pagefile.sys",
        ] {
            assert!(!windows.is_excluded(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn empty_and_root_rules_exclude_nothing() {
        assert!(!ex(&["", "  ", "/"], "/etc/passwd"));
        assert!(Excludes::new(&["/"]).is_empty());
    }
}
