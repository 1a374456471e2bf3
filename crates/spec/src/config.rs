//! A whole config directory (eDeploy's CONFIGDIR): `state`, and per profile `<p>.specs`,
//! `<p>.cmdb`, `<p>.configure`. Profile selection is computed here without writing anything:
//! the caller persists [`Selection`] under its lock.

use std::path::{Path, PathBuf};

use edeploy_hw::HardwareList;
use edeploy_literal::Value;

use crate::cmdb::{Cmdb, CmdbError};
use crate::matcher::{match_indexed, HwIndex, Match};
use crate::specs::{SpecError, Specs};
use crate::state::{State, StateError};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Cmdb(#[from] CmdbError),
    /// Some profiles had quota left and none matched.
    #[error("unable to match requirements on the available profiles in {dir}: {}", tried.join(", "))]
    NoMatch { dir: String, tried: Vec<String> },
    /// Every profile's quota is used up.
    #[error("no more profile available in {dir}: every quota is used")]
    Exhausted { dir: String },
    #[error("profile name `{0}` in state is not a safe file name")]
    BadProfileName(String),
}

impl SelectError {
    /// A quota or a CMDB ran out (as opposed to: nothing matched, or a broken file).
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            SelectError::Exhausted { .. }
                | SelectError::Cmdb(CmdbError::Full { .. } | CmdbError::NoEntryMatched { .. })
        )
    }
}

/// The outcome of a successful selection: what to answer and what to persist.
#[derive(Debug, Clone)]
pub struct Selection {
    pub profile: String,
    pub matched: Match,
    /// Variables for the configure script: the hardware variables merged into the CMDB entry.
    pub vars: Vec<(String, Value)>,
    /// The state with this profile's count taken.
    pub state: State,
    /// The updated CMDB, if the profile has one.
    pub cmdb: Option<Cmdb>,
    /// The profiles tried before this one, in order.
    pub tried: Vec<String>,
}

/// A config directory.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    pub dir: PathBuf,
}

/// Profile names come from the state file and name files: keep them to safe file names.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !name.chars().any(char::is_control)
}

impl ConfigDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigDir { dir: dir.into() }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn profile_path(&self, profile: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{profile}.{ext}"))
    }

    pub fn load_state(&self) -> Result<State, StateError> {
        State::load(&self.state_path())
    }

    /// A profile's specs; `Ok(None)` when it has no specs file (it then never matches).
    pub fn load_specs(&self, profile: &str) -> Result<Option<Specs>, SpecError> {
        let p = self.profile_path(profile, "specs");
        if !p.exists() {
            return Ok(None);
        }
        Specs::load(&p).map(Some)
    }

    pub fn load_cmdb(&self, profile: &str) -> Result<Option<Cmdb>, CmdbError> {
        Cmdb::load(&self.profile_path(profile, "cmdb"))
    }

    /// Selects the profile for a machine, as eDeploy did: profiles in state order, skipping those
    /// with no quota left; the first whose specs match takes one unit of quota and a CMDB entry.
    /// A matched profile whose CMDB has no entry left is an error (nothing is taken); it does not
    /// fall through to the next profile.
    pub fn select(&self, hw: &HardwareList) -> Result<Selection, SelectError> {
        let state = self.load_state()?;
        select_with(
            &state,
            hw,
            |p| self.load_specs(p),
            |p| self.load_cmdb(p),
            &self.dir.display().to_string(),
        )
    }
}

/// The selection over already-loaded state, with loaders for the per-profile files (so that the
/// server can cache them and tests can feed them from memory). The specs loader may hand out
/// shared specs (`Arc<Specs>`): a server's cache then costs no copy of every profile tried.
pub fn select_with<S: std::borrow::Borrow<Specs>>(
    state: &State,
    hw: &HardwareList,
    mut specs_of: impl FnMut(&str) -> Result<Option<S>, SpecError>,
    mut cmdb_of: impl FnMut(&str) -> Result<Option<Cmdb>, CmdbError>,
    dir: &str,
) -> Result<Selection, SelectError> {
    let index = HwIndex::new(hw);
    let mut tried = Vec::new();
    for (profile, count) in &state.entries {
        if !count.available() {
            continue;
        }
        if !safe_name(profile) {
            return Err(SelectError::BadProfileName(profile.clone()));
        }
        let Some(specs) = specs_of(profile)? else {
            tracing::warn!(profile, "no specs file: the profile never matches");
            tried.push(profile.clone());
            continue;
        };
        let Some(matched) = match_indexed(specs.borrow(), &index) else {
            tried.push(profile.clone());
            continue;
        };
        let mut new_state = state.clone();
        new_state.decrement(profile);
        let mut cmdb = cmdb_of(profile)?;
        let vars = match &mut cmdb {
            Some(c) => {
                let i = c.select(&matched.vars, &matched.pref_vars)?;
                c.entries
                    .get(i)
                    .expect("select returns an entry's index")
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_else(|| k.to_string()), v.clone()))
                    .collect()
            }
            None => matched
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), Value::Str(v.into())))
                .collect(),
        };
        return Ok(Selection {
            profile: profile.clone(),
            matched,
            vars,
            state: new_state,
            cmdb,
            tried,
        });
    }
    if tried.is_empty() {
        Err(SelectError::Exhausted {
            dir: dir.to_string(),
        })
    } else {
        Err(SelectError::NoMatch {
            dir: dir.to_string(),
            tried,
        })
    }
}

/// What `check` found in a config directory.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Files parsed.
    pub files: usize,
}

/// Parses every file of a config directory and reports all problems at once.
pub fn check_dir(dir: &Path) -> CheckReport {
    let mut r = CheckReport::default();
    let cfg = ConfigDir::new(dir);
    let mut profiles: Vec<String> = Vec::new();
    match cfg.load_state() {
        Ok(s) => {
            r.files += 1;
            for (p, _) in &s.entries {
                if !safe_name(p) {
                    r.errors.push(format!(
                        "{}: profile name `{p}` is not a safe file name",
                        s.file
                    ));
                } else if !profiles.contains(p) {
                    profiles.push(p.clone());
                }
            }
        }
        Err(e) => r.errors.push(e.to_string()),
    }
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let stem = name
                        .strip_suffix(".specs")
                        .or_else(|| name.strip_suffix(".cmdb"))?;
                    Some(stem.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    others.dedup();
    for p in &others {
        if !profiles.contains(p) {
            r.warnings.push(format!(
                "{}: profile `{p}` has files but is not in state",
                dir.display()
            ));
        }
    }
    let state_profiles = profiles.clone();
    for p in others {
        if !profiles.contains(&p) {
            profiles.push(p);
        }
    }
    for p in &profiles {
        let specs_path = cfg.profile_path(p, "specs");
        if specs_path.exists() {
            r.files += 1;
            match Specs::load(&specs_path) {
                Ok(s) => r.warnings.extend(s.warnings()),
                Err(e) => r.errors.push(e.to_string()),
            }
        } else if state_profiles.contains(p) {
            r.warnings.push(format!(
                "{}: missing: profile `{p}` never matches",
                specs_path.display()
            ));
        }
        match cfg.load_cmdb(p) {
            Ok(Some(_)) => r.files += 1,
            Ok(None) => {}
            Err(e) => {
                r.files += 1;
                r.errors.push(e.to_string())
            }
        }
        let configure = cfg.profile_path(p, "configure");
        if state_profiles.contains(p) && !configure.exists() {
            r.warnings.push(format!(
                "{}: missing: a match would send no configure script",
                configure.display()
            ));
        }
    }
    let conf = dir.join("edeploy.conf");
    if conf.exists() {
        r.files += 1;
        match std::fs::read_to_string(&conf) {
            Ok(text) => {
                if let Err(e) = crate::conf::Ini::parse(&text, &conf.display().to_string()) {
                    r.errors.push(e.to_string());
                }
            }
            Err(e) => r.errors.push(format!("{}: {e}", conf.display())),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hw(lines: &[[&str; 4]]) -> HardwareList {
        HardwareList::from_rows(lines)
    }

    struct Dir {
        specs: HashMap<&'static str, &'static str>,
        cmdb: HashMap<&'static str, &'static str>,
    }

    impl Dir {
        fn select(&self, state: &State, h: &HardwareList) -> Result<Selection, SelectError> {
            select_with(
                state,
                h,
                |p| self.specs.get(p).map(|t| Specs::parse(t, p)).transpose(),
                |p| self.cmdb.get(p).map(|t| Cmdb::parse(t, p)).transpose(),
                "cfg",
            )
        }
    }

    fn machine(mac: &str, vendor: &str) -> HardwareList {
        hw(&[
            ["system", "product", "vendor", vendor],
            ["network", "eth0", "serial", mac],
        ])
    }

    fn dir() -> Dir {
        Dir {
            specs: HashMap::from([
                ("hp", "[('system', 'product', 'vendor', 'HP'), ('network', '$eth', 'serial', '$mac')]"),
                ("vm", "[('system', 'product', 'vendor', 'QEMU'), ('network', '$eth', 'serial', '$mac')]"),
                ("any", "[('network', '$eth', 'serial', '$$mac')]"),
            ]),
            cmdb: HashMap::from([
                ("vm", "generate({'ip': '10.0.0.1-2'})"),
                ("any", "[{'mac': 'm9', 'ip': '10.9.9.9'}]"),
            ]),
        }
    }

    #[test]
    fn priority_quota_and_cmdb() {
        let d = dir();
        let state = State::parse("[('hp', 1), ('vm', '*'), ('any', 5)]", "state").unwrap();
        let s = d.select(&state, &machine("m1", "QEMU")).unwrap();
        assert_eq!(s.profile, "vm");
        assert_eq!(s.tried, ["hp"]);
        assert_eq!(s.state, state, "'*' is not decremented");
        let vars: Vec<String> = s.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(vars, ["ip='10.0.0.1'", "eth='eth0'", "mac='m1'", "used=1"]);
        let s = d.select(&state, &machine("m2", "HP")).unwrap();
        assert_eq!(s.profile, "hp");
        assert_eq!(s.state.count("hp"), Some(crate::state::Count::Left(0)));
        // hp exhausted: an HP machine now falls to `any` (with $$mac: must be in its CMDB).
        let e = d.select(&s.state, &machine("m3", "HP")).unwrap_err();
        assert!(
            matches!(e, SelectError::Cmdb(CmdbError::NoEntryMatched { .. })),
            "{e}"
        );
        assert!(e.is_exhausted());
        let s2 = d.select(&s.state, &machine("m9", "HP")).unwrap();
        assert_eq!(s2.profile, "any");
        assert_eq!(s2.state.count("any"), Some(crate::state::Count::Left(4)));
    }

    #[test]
    fn no_match_and_exhausted() {
        let d = dir();
        let state = State::parse("[('hp', 1), ('vm', 0)]", "state").unwrap();
        let e = d.select(&state, &machine("m1", "Dell")).unwrap_err();
        assert!(
            matches!(&e, SelectError::NoMatch { tried, .. } if tried == &["hp"]),
            "{e}"
        );
        assert!(!e.is_exhausted());
        let state = State::parse("[('hp', 0), ('vm', 0)]", "state").unwrap();
        assert!(matches!(
            d.select(&state, &machine("m1", "QEMU")),
            Err(SelectError::Exhausted { .. })
        ));
    }

    #[test]
    fn full_cmdb_stops_the_selection() {
        let d = dir();
        let state = State::parse("[('vm', '*'), ('any', '*')]", "state").unwrap();
        let mut s = d.select(&state, &machine("m1", "QEMU")).unwrap();
        let mut cmdb = s.cmdb.take().unwrap();
        let mut d2 = dir();
        let text: &'static str = Box::leak(cmdb.to_text().into_boxed_str());
        d2.cmdb.insert("vm", text);
        let s = d2.select(&state, &machine("m2", "QEMU")).unwrap();
        cmdb = s.cmdb.unwrap();
        d2.cmdb
            .insert("vm", Box::leak(cmdb.to_text().into_boxed_str()));
        let e = d2.select(&state, &machine("m3", "QEMU")).unwrap_err();
        assert!(
            matches!(e, SelectError::Cmdb(CmdbError::Full { count: 2, .. })),
            "{e}"
        );
        // The first machine re-installing still gets its entry.
        let again = d2.select(&state, &machine("m1", "QEMU")).unwrap();
        assert_eq!(again.vars[0].1, Value::Str("10.0.0.1".into()));
    }

    #[test]
    fn hostile_profile_names_are_refused() {
        let d = dir();
        let state = State::parse("[('../../etc/passwd', 1)]", "state").unwrap();
        assert!(matches!(
            d.select(&state, &machine("m", "x")),
            Err(SelectError::BadProfileName(_))
        ));
    }
}
