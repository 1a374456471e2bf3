//! The offline commands: `match`, `generate`, `check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use edeploy_hw::HardwareList;
use edeploy_spec::cmdb::Cmdb;
use edeploy_spec::conf::{ServerConf, DEFAULT_SECTION};
use edeploy_spec::config::{check_dir, ConfigDir, SelectError};
use edeploy_spec::explain::explain;
use edeploy_spec::{match_specs, Specs};
use serde_json::{json, Map, Value as Json};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["specs", "config"])))]
pub struct MatchArgs {
    /// One profile's specs file.
    #[arg(long, value_name = "FILE")]
    specs: Option<PathBuf>,
    /// A config directory (with `state`), or an edeploy.conf whose CONFIGDIR to use.
    #[arg(long, value_name = "DIR")]
    config: Option<PathBuf>,
    /// Section of edeploy.conf when --config names the file.
    #[arg(long, default_value = DEFAULT_SECTION)]
    section: String,
    /// The machine's hardware list: JSON (list of 4-string lists) or eDeploy's `.hw` literal form.
    #[arg(long, value_name = "FILE")]
    hw: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Show, for every spec line, the hardware line that satisfied it, or why none could.
    #[arg(long)]
    explain: bool,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A `.cmdb` file.
    file: PathBuf,
    /// Print a JSON array of objects instead of the eDeploy literal form.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The config directory.
    dir: PathBuf,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn load_hw(path: &Path) -> Result<HardwareList> {
    Ok(HardwareList::parse(
        &read(path)?,
        &path.display().to_string(),
    )?)
}

fn obj(pairs: &[(String, String)]) -> Json {
    Json::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

pub fn run_match(a: MatchArgs) -> Result<ExitCode> {
    let hw = load_hw(&a.hw)?;
    if let Some(specs_path) = &a.specs {
        let specs = Specs::load(specs_path)?;
        for w in specs.warnings() {
            eprintln!("warning: {w}");
        }
        let m = match_specs(&specs, &hw);
        let matched = m.is_some();
        if a.json {
            let (vars, pref) = m.as_ref().map_or((json!({}), json!({})), |m| {
                (obj(&m.vars), obj(&m.pref_vars))
            });
            let mut out = json!({"matched": matched, "vars": vars, "pref_vars": pref});
            if a.explain {
                out["explain"] = serde_json::to_value(explain(&specs, &hw))?;
            }
            println!("{out}");
        } else if a.explain {
            print!("{}", explain(&specs, &hw).to_text());
        } else {
            match &m {
                Some(m) => {
                    println!("{}: match", specs.file);
                    for (k, v) in &m.vars {
                        let mark = if m.pref_vars.iter().any(|(p, _)| p == k) {
                            "$$"
                        } else {
                            "$"
                        };
                        println!("  {mark}{k} = {v}");
                    }
                }
                None => println!("{}: no match (run with --explain to see why)", specs.file),
            }
        }
        return Ok(ExitCode::from(if matched { 0 } else { 1 }));
    }
    let config = a
        .config
        .as_ref()
        .expect("clap requires --specs or --config");
    let dir = if config.is_file() {
        ServerConf::load(config, &a.section)?.config_dir
    } else if config.is_dir() {
        config.clone()
    } else {
        bail!("{}: no such directory", config.display());
    };
    let cfg = ConfigDir::new(&dir);
    let result = cfg.select(&hw);
    let code = match &result {
        Ok(_) => 0,
        Err(e) if e.is_exhausted() || matches!(e, SelectError::NoMatch { .. }) => 1,
        Err(_) => 2,
    };
    let explanations = if a.explain {
        explain_all(&cfg, &hw)?
    } else {
        Vec::new()
    };
    if a.json {
        let mut out = match &result {
            Ok(s) => {
                let vars: Map<String, Json> = s
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                json!({"profile": s.profile, "vars": vars, "error": null})
            }
            Err(e) => json!({"profile": null, "vars": {}, "error": e.to_string()}),
        };
        if a.explain {
            out["explain"] = Json::Array(explanations.iter().map(|(_, e)| e.clone()).collect());
        }
        println!("{out}");
    } else {
        for (text, _) in &explanations {
            print!("{text}");
        }
        match &result {
            Ok(s) => {
                println!("profile: {}", s.profile);
                for (k, v) in &s.vars {
                    println!("  {k} = {v}");
                }
            }
            Err(e) => println!("no profile: {e}"),
        }
    }
    Ok(ExitCode::from(code))
}

/// Explanations for every profile of the state, in order (text and JSON forms).
fn explain_all(cfg: &ConfigDir, hw: &HardwareList) -> Result<Vec<(String, Json)>> {
    let state = cfg.load_state()?;
    let mut out = Vec::new();
    for (profile, count) in &state.entries {
        if !count.available() {
            let text = format!("{profile}: skipped, quota used up ({count})\n");
            out.push((
                text,
                json!({"profile": profile, "skipped": "quota used up"}),
            ));
            continue;
        }
        match cfg.load_specs(profile)? {
            None => out.push((
                format!("{profile}: skipped, no specs file\n"),
                json!({"profile": profile, "skipped": "no specs file"}),
            )),
            Some(specs) => {
                let e = explain(&specs, hw);
                let mut j = serde_json::to_value(&e)?;
                j["profile"] = json!(profile);
                let stop = e.matched;
                out.push((e.to_text(), j));
                if stop {
                    break;
                }
            }
        }
    }
    Ok(out)
}

pub fn run_generate(a: GenerateArgs) -> Result<ExitCode> {
    let cmdb = Cmdb::parse(&read(&a.file)?, &a.file.display().to_string())?;
    if a.json {
        let arr: Vec<Json> = cmdb.entries.iter().map(|e| e.to_json()).collect();
        println!("{}", Json::Array(arr));
    } else {
        print!("{}", cmdb.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_check(a: CheckArgs) -> Result<ExitCode> {
    if !a.dir.is_dir() {
        bail!("{}: not a directory", a.dir.display());
    }
    let r = check_dir(&a.dir);
    for e in &r.errors {
        println!("error: {e}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: {} files, {} errors, {} warnings",
        a.dir.display(),
        r.files,
        r.errors.len(),
        r.warnings.len()
    );
    Ok(ExitCode::from(if r.errors.is_empty() { 0 } else { 1 }))
}
