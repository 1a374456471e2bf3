//! The one request pipeline behind both front ends (embedded HTTP and CGI): DESIGN §1 step 4.
//!
//! parse multipart → validate → lock → save `.hw` → pxemngr → failure report | select → render
//! → commit state + CMDB (journaled, see `store`) → unlock. Everything here is synchronous file
//! work: the embedded server runs it on tokio's blocking pool.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edeploy_fsutil::{atomic_write, Lock};
use edeploy_hw::HardwareList;
use edeploy_spec::cmdb::{Cmdb, CmdbError};
use edeploy_spec::conf::{ConfError, ServerConf, DEFAULT_SECTION};
use edeploy_spec::config::{safe_name, select_with, ConfigDir, SelectError};
use edeploy_spec::state::{State, StateError};
use edeploy_spec::Specs;

use crate::metrics::Metrics;
use crate::multipart::{self, Part};
use crate::nodes::Nodes;
use crate::{script, store};

/// Default cap on a request body.
pub const DEFAULT_MAX_UPLOAD: usize = 4 * 1024 * 1024;
/// Longest name accepted from the network (section, sysname, log file name, session).
pub const MAX_NAME: usize = 128;

/// A request as both front ends see it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// One line saying why, for error statuses (sent as the `X-Edeploy-Error` header too).
    pub reason: Option<String>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            reason: None,
            content_type,
            body: body.into(),
        }
    }

    fn script(body: String) -> Response {
        Self::ok("text/x-shellscript", body)
    }
}

/// Why a request was refused, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadRequest(String),
    #[error("upload of {0} bytes is larger than the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("{0}")]
    NoMatch(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl UploadError {
    pub fn status(&self) -> u16 {
        match self {
            UploadError::BadRequest(_) => 400,
            UploadError::NoMatch(_) | UploadError::NotFound(_) => 404,
            UploadError::Exhausted(_) => 409,
            UploadError::TooLarge(..) => 413,
            UploadError::Internal(_) => 500,
        }
    }

    /// The `reason` label of `edeploy_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            UploadError::BadRequest(_) => "bad_request",
            UploadError::TooLarge(..) => "too_large",
            UploadError::NoMatch(_) => "no_match",
            UploadError::Exhausted(_) => "exhausted",
            UploadError::NotFound(_) => "not_found",
            UploadError::Internal(_) => "internal",
        }
    }

    pub fn to_response(&self) -> Response {
        let reason = one_line(&self.to_string());
        Response {
            status: self.status(),
            body: script::failure(&reason).into_bytes(),
            reason: Some(reason),
            content_type: "text/x-shellscript",
        }
    }
}

fn bad(msg: impl Into<String>) -> UploadError {
    UploadError::BadRequest(msg.into())
}

fn internal(msg: impl std::fmt::Display) -> UploadError {
    UploadError::Internal(msg.to_string())
}

/// A name that came from the network and becomes part of a path: no `/`, no `..`, no NUL, no
/// control character, bounded length.
/// An error as one bounded line (it becomes a header value and a shell `echo`).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

pub fn check_name(what: &str, name: &str) -> Result<(), UploadError> {
    if safe_name(name) && name.len() <= MAX_NAME && !name.contains("..") && !name.contains('\\') {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid {what} name {:?}",
            name.chars().take(MAX_NAME + 1).collect::<String>()
        )))
    }
}

/// The fields of an upload form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pub section: Option<String>,
    pub file: Option<Part>,
    pub failure: Option<String>,
    pub session: Option<String>,
}

fn text_field(p: Part) -> Result<String, UploadError> {
    let s = String::from_utf8(p.data).map_err(|_| bad(format!("field {} is not UTF-8", p.name)))?;
    Ok(s.trim().to_string())
}

/// Parses and validates the multipart body (the part of the pipeline the fuzz target drives).
pub fn parse_form(content_type: &str, body: &[u8], max: usize) -> Result<Form, UploadError> {
    if body.len() > max {
        return Err(UploadError::TooLarge(body.len(), max));
    }
    let parts = multipart::parse(content_type, body).map_err(|e| bad(e.to_string()))?;
    let mut form = Form::default();
    for p in parts {
        match p.name.as_str() {
            "section" => form.section = Some(text_field(p)?),
            "failure" => form.failure = Some(text_field(p)?),
            "session" => form.session = Some(text_field(p)?),
            "file" => form.file = Some(p),
            _ => {} // eDeploy ignored unknown fields; so do we
        }
    }
    if let Some(s) = &form.section {
        check_name("section", s)?;
    }
    if let Some(s) = &form.session {
        check_name("session", s)?;
    }
    if let Some(f) = &form.failure {
        check_name("profile", f)?;
    }
    if let Some(Part {
        filename: Some(f), ..
    }) = &form.file
    {
        if f.ends_with(".log.gz") {
            check_name("log file", f)?;
        }
    }
    Ok(form)
}

/// The hardware list of an upload and the machine's name.
pub fn parse_hw(file: &Part) -> Result<(HardwareList, String), UploadError> {
    let text = std::str::from_utf8(&file.data).map_err(|_| bad("hardware list is not UTF-8"))?;
    let name = file.filename.as_deref().unwrap_or("upload");
    let hw = HardwareList::parse(text, name).map_err(|e| bad(format!("bad hardware list: {e}")))?;
    if hw.is_empty() {
        return Err(bad("empty hardware list"));
    }
    let sysname = edeploy_hw::sysname(&hw)
        .ok_or_else(|| bad("hardware list has no network serial nor product: cannot name it"))?;
    check_name("system", &sysname)?;
    Ok((hw, sysname))
}

/// Parsed specs, re-read only when the file changes (size or mtime). Shared (`Arc`): a machine is
/// tried against up to every profile, and copying each profile's compiled specs cost more than
/// matching them.
#[derive(Default)]
struct SpecsCache {
    map: Mutex<HashMap<PathBuf, Stamped<Arc<Specs>>>>,
}

/// A parsed file with the modification time and size it was parsed at.
type Stamped<T> = (SystemTime, u64, T);

impl SpecsCache {
    fn load(&self, path: &Path) -> Result<Option<Arc<Specs>>, edeploy_spec::SpecError> {
        let Ok(meta) = fs::metadata(path) else {
            return Ok(None);
        };
        let stamp = (meta.modified().unwrap_or(UNIX_EPOCH), meta.len());
        if let Some((t, l, s)) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
            if (*t, *l) == stamp {
                return Ok(Some(s.clone()));
            }
        }
        let specs = Arc::new(Specs::load(path)?);
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp.0, stamp.1, specs.clone()));
        Ok(Some(specs))
    }
}

/// The parsed state, keyed by the file's exact text. Parsing the state (a literal list, one entry
/// per profile) cost more than the whole match of a batch; reading the file is cheap. Keyed by
/// content, not by mtime: a quota is what must never be read stale (another server or a CGI
/// process may write the file within one timestamp tick, with the same size), and equal bytes
/// always parse to the same state.
#[derive(Default)]
struct StateCache {
    map: Mutex<HashMap<PathBuf, (String, State)>>,
}

impl StateCache {
    fn load(&self, path: &Path) -> Result<State, StateError> {
        let file = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|e| StateError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, st)) = map.get(path) {
            if *t == text {
                return Ok(st.clone());
            }
        }
        let st = State::parse(&text, &file)?;
        map.insert(path.to_path_buf(), (text, st.clone()));
        Ok(st)
    }
}

/// Parsed CMDBs. A CMDB of thousands of entries costs more to parse than a match; the server
/// wrote most versions itself, so it keeps what it wrote, keyed by the file's mtime and size (an
/// operator's edit changes them and is read again).
#[derive(Default)]
struct CmdbCache {
    map: Mutex<HashMap<PathBuf, (SystemTime, u64, Cmdb)>>,
}

impl CmdbCache {
    fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
        let m = fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    fn load(&self, path: &Path) -> Result<Option<Cmdb>, CmdbError> {
        if let Some(stamp) = Self::stamp(path) {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((t, l, c)) = map.get(path) {
                if (*t, *l) == stamp {
                    return Ok(Some(c.clone()));
                }
            }
        }
        let c = Cmdb::load(path)?;
        if let (Some(c), Some((t, l))) = (&c, Self::stamp(path)) {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), (t, l, c.clone()));
        }
        Ok(c)
    }

    /// Remembers the CMDB just written to `path`.
    fn wrote(&self, path: &Path, cmdb: &Cmdb) {
        if let Some((t, l)) = Self::stamp(path) {
            let mut c = cmdb.clone();
            c.generated_from = None; // what the file now holds: the expanded list
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), (t, l, c));
        }
    }
}

/// One machine waiting for its profile.
struct Job {
    conf: ServerConf,
    hw: HardwareList,
    sysname: String,
    /// The `.hw` text, rendered before queueing: work done in parallel, outside the lock.
    hw_text: Vec<u8>,
}

type JobResult = Result<(String, String), UploadError>;

#[derive(Default)]
struct BatchState {
    pending: Vec<(u64, Job)>,
    done: HashMap<u64, JobResult>,
    leader: bool,
    next: u64,
}

/// The group-commit queue (see [`Server::select`]).
#[derive(Default)]
struct Batcher {
    state: Mutex<BatchState>,
    cv: Condvar,
}

/// The server: where edeploy.conf is, limits, and what it has seen.
pub struct Server {
    pub conf_path: PathBuf,
    pub max_upload: usize,
    pub metrics: Metrics,
    pub nodes: Nodes,
    specs: SpecsCache,
    cmdbs: CmdbCache,
    states: StateCache,
    /// Parsed edeploy.conf sections, with the text they were parsed from (see [`Server::conf`]).
    confs: Mutex<HashMap<String, (String, ServerConf)>>,
    batch: Batcher,
}

impl Server {
    pub fn new(conf_path: impl Into<PathBuf>) -> Server {
        let conf_path = conf_path.into();
        Server {
            // Absolute, so every path derived from it (and written in a journal) is too.
            conf_path: std::path::absolute(&conf_path).unwrap_or(conf_path),
            max_upload: DEFAULT_MAX_UPLOAD,
            metrics: Metrics::default(),
            nodes: Nodes::default(),
            specs: SpecsCache::default(),
            cmdbs: CmdbCache::default(),
            states: StateCache::default(),
            confs: Mutex::default(),
            batch: Batcher::default(),
        }
    }

    /// At start: under the lock, finish a commit a crash interrupted and remove the temp files it
    /// left (every write happens under the lock, so any temp file seen while holding it is stale).
    pub fn recover(&self, section: &str) -> Result<(), UploadError> {
        let conf = self.conf(Some(section))?;
        let _lock = Self::lock(&conf)?;
        store::clean_temps(&conf.config_dir);
        store::clean_temps(&conf.hw_dir);
        Ok(())
    }

    /// Routes a request. `serve_stats` is false under CGI (one process per request has no history).
    pub fn handle(&self, req: Request<'_>, serve_stats: bool) -> Response {
        let path = req.path.split('?').next().unwrap_or("");
        match (req.method, path) {
            ("POST", "/cgi-bin/upload.py" | "/upload") => self.timed(|s| s.upload(req)),
            ("POST", "/cgi-bin/upload-health.py" | "/upload-health") => {
                self.timed(|s| s.health(req))
            }
            ("POST", "/report") => self.report(req),
            ("GET", "/metrics") if serve_stats => {
                Response::ok("text/plain; version=0.0.4", self.metrics.render())
            }
            ("GET", "/nodes") if serve_stats => {
                Response::ok("application/json", self.nodes.to_json())
            }
            ("GET" | "HEAD", "/" | "/cgi-bin/upload.py" | "/upload") => Response::ok(
                "text/plain",
                "edeploy-server: POST a multipart upload (section, file[, failure]) to /upload or \
                 /cgi-bin/upload.py; health checks to /upload-health; boot reports (urlencoded \
                 sysname, event[, detail]) to /report; GET /metrics, /nodes, /trees/…, \
                 /metadata/FROM/ROLE/TO/NAME\n",
            ),
            (_, _) => {
                UploadError::NotFound(format!("no route {} {}", req.method, path)).to_response()
            }
        }
    }

    fn timed(&self, f: impl FnOnce(&Self) -> Result<Response, UploadError>) -> Response {
        let t0 = Instant::now();
        self.metrics.upload();
        let r = match f(self) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.failure(e.label());
                tracing::info!(status = e.status(), reason = %e, "upload refused");
                e.to_response()
            }
        };
        self.metrics.latency(t0.elapsed());
        r
    }

    /// The section's settings. edeploy.conf is read on every request (an edit applies to the next
    /// upload, no restart) but parsed again only when its text changed: the INI parse was a tenth
    /// of an upload's instructions. The result depends only on the path, the text and the
    /// section, so equal text gives the same settings.
    fn conf(&self, section: Option<&str>) -> Result<ServerConf, UploadError> {
        let section = section.unwrap_or(DEFAULT_SECTION);
        let err = |e| match e {
            ConfError::NoSection { .. } => bad(format!("unknown section {section:?}")),
            e => internal(e),
        };
        let text = fs::read_to_string(&self.conf_path).map_err(|e| {
            internal(ConfError::Io {
                file: self.conf_path.display().to_string(),
                message: e.to_string(),
            })
        })?;
        let mut cache = self.confs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, c)) = cache.get(section) {
            if *t == text {
                return Ok(c.clone());
            }
        }
        let file = self.conf_path.display().to_string();
        // As ServerConf::load does.
        let base = self
            .conf_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let ini = edeploy_spec::conf::Ini::parse(&text, &file).map_err(err)?;
        let conf = ServerConf::from_ini(&ini, section, &base).map_err(err)?;
        cache.insert(section.to_string(), (text, conf.clone()));
        Ok(conf)
    }

    /// Upload of a hardware list (match), a failure report, or an installation log.
    pub fn upload(&self, req: Request<'_>) -> Result<Response, UploadError> {
        let form = parse_form(req.content_type, req.body, self.max_upload)?;
        let conf = self.conf(form.section.as_deref())?;
        if let Some(file) = &form.file {
            if let Some(name) = file.filename.as_deref().filter(|f| f.ends_with(".log.gz")) {
                return self.save_log(&conf, name, &file.data);
            }
        }
        if let Some(profile) = &form.failure {
            let hw = form.file.as_ref().map(parse_hw).transpose()?;
            return self.failure_report(&conf, profile, hw);
        }
        let file = form.file.as_ref().ok_or_else(|| bad("no `file` field"))?;
        let (hw, sysname) = parse_hw(file)?;
        self.nodes.record(&sysname, "upload", "");
        let r = self.select(conf, hw, sysname.clone());
        match &r {
            Ok((profile, _)) => {
                self.metrics.matched(profile);
                self.nodes.record(&sysname, "match", profile.clone());
                tracing::info!(sysname, profile, "matched");
            }
            Err(e) => self.nodes.record(&sysname, "refused", e.to_string()),
        }
        r.map(|(_, s)| Response::script(s))
    }

    fn lock(conf: &ServerConf) -> Result<Lock, UploadError> {
        if let Some(d) = conf.lock_file.parent() {
            let _ = fs::create_dir_all(d);
        }
        let lock = Lock::acquire(&conf.lock_file)
            .map_err(|e| internal(format!("lock {}: {e}", conf.lock_file.display())))?;
        store::recover(&conf.config_dir).map_err(|e| internal(format!("journal: {e}")))?;
        Ok(lock)
    }

    fn save_hw(conf: &ServerConf, hw: &HardwareList, sysname: &str) -> Result<(), UploadError> {
        fs::create_dir_all(&conf.hw_dir)
            .and_then(|()| {
                atomic_write(
                    &conf.hw_dir.join(format!("{sysname}.hw")),
                    hw.to_edeploy().as_bytes(),
                )
            })
            .map_err(|e| internal(format!("saving {sysname}.hw: {e}")))
    }

    fn pxemngr(conf: &ServerConf, hw: &HardwareList, sysname: &str) -> Result<(), UploadError> {
        if !conf.use_pxemngr {
            return Ok(());
        }
        let macs = hw
            .lines()
            .iter()
            .filter(|l| l.category() == "network" && l.key() == "serial")
            .map(|l| l.value().to_string());
        let st = Command::new("pxemngr")
            .arg("addsystem")
            .arg(sysname)
            .args(macs)
            .status()
            .map_err(|e| internal(format!("pxemngr: {e}")))?;
        if !st.success() {
            return Err(internal(format!("pxemngr addsystem {sysname}: {st}")));
        }
        Ok(())
    }

    /// Selects a profile for one machine and commits; returns the profile and the configure script.
    ///
    /// Group commit: the disk flushes, not the matching, bound how many machines per second the
    /// server takes. Requests arriving while a batch is being committed queue up; the first of
    /// them becomes the next leader and runs the whole queue under one lock and one commit, then
    /// hands each follower its own result. Each machine still sees exactly the sequential outcome
    /// (state and CMDB evolve in memory, in arrival order, before the single write).
    fn select(&self, conf: ServerConf, hw: HardwareList, sysname: String) -> JobResult {
        let hw_text = hw.to_edeploy().into_bytes();
        let job = Job {
            conf,
            hw,
            sysname,
            hw_text,
        };
        let b = &self.batch;
        let mut g = b.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = g.next;
        g.next += 1;
        g.pending.push((id, job));
        loop {
            if let Some(r) = g.done.remove(&id) {
                return r;
            }
            if g.leader {
                g = b.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.leader = true;
            let jobs = std::mem::take(&mut g.pending);
            drop(g);
            let ids: Vec<u64> = jobs.iter().map(|(i, _)| *i).collect();
            let results =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_batch(jobs)))
                    .unwrap_or_else(|_| {
                        ids.iter()
                            .map(|i| (*i, Err(internal("the selection panicked"))))
                            .collect()
                    });
            g = b.state.lock().unwrap_or_else(|e| e.into_inner());
            g.done.extend(results);
            g.leader = false;
            b.cv.notify_all();
        }
    }

    fn run_batch(&self, jobs: Vec<(u64, Job)>) -> Vec<(u64, JobResult)> {
        // Sections may name different config dirs: one group (lock + commit) per dir.
        let mut groups: Vec<Vec<(u64, Job)>> = Vec::new();
        for j in jobs {
            let key = (&j.1.conf.config_dir, &j.1.conf.lock_file);
            match groups
                .iter_mut()
                .find(|g| (&g[0].1.conf.config_dir, &g[0].1.conf.lock_file) == key)
            {
                Some(g) => g.push(j),
                None => groups.push(vec![j]),
            }
        }
        groups.into_iter().flat_map(|g| self.run_group(g)).collect()
    }

    fn run_group(&self, jobs: Vec<(u64, Job)>) -> Vec<(u64, JobResult)> {
        let all = |e: UploadError| jobs.iter().map(|(i, _)| (*i, Err(e.clone()))).collect();
        let conf = jobs[0].1.conf.clone();
        let _lock = match Self::lock(&conf) {
            Ok(l) => l,
            Err(e) => return all(e),
        };
        // The hardware is recorded even when no profile takes it (as eDeploy did): it is what the
        // operator writes specs from. State and CMDB change only on a match.
        let mut hw_files = Vec::with_capacity(jobs.len());
        let mut hw_dirs: Vec<&Path> = Vec::new();
        for (_, j) in &jobs {
            // Once per directory and batch (sections of one config dir may name different HWDIRs).
            if !hw_dirs.contains(&j.conf.hw_dir.as_path()) {
                if let Err(e) = fs::create_dir_all(&j.conf.hw_dir) {
                    return all(internal(format!("{}: {e}", j.conf.hw_dir.display())));
                }
                hw_dirs.push(&j.conf.hw_dir);
            }
            hw_files.push((
                j.conf.hw_dir.join(format!("{}.hw", j.sysname)),
                j.hw_text.clone(),
            ));
        }
        // The hardware files go to disk with the batch's commit, in the same waits.
        let dir = ConfigDir::new(&conf.config_dir);
        let mut state = match self.states.load(&dir.state_path()) {
            Ok(s) => s,
            Err(e) => {
                let _ = store::commit(&conf.config_dir, &[], &hw_files);
                return all(internal(e));
            }
        };
        let first_state = state.clone();
        let mut cmdbs: HashMap<String, Option<Cmdb>> = HashMap::new();
        let mut dirty: Vec<String> = Vec::new();
        let mut configures: HashMap<String, String> = HashMap::new();
        // Specs checked for changes once per batch, not once per machine (a stat per profile).
        let mut specs: HashMap<String, Option<Arc<Specs>>> = HashMap::new();
        let mut results = Vec::with_capacity(jobs.len());
        for (id, j) in &jobs {
            let r = Self::pxemngr(&j.conf, &j.hw, &j.sysname).and_then(|()| {
                let sel = select_with(
                    &state,
                    &j.hw,
                    |p| match specs.get(p) {
                        Some(sp) => Ok(sp.clone()),
                        None => {
                            let sp = self.specs.load(&dir.profile_path(p, "specs"))?;
                            specs.insert(p.to_string(), sp.clone());
                            Ok(sp)
                        }
                    },
                    |p| match cmdbs.get(p) {
                        Some(c) => Ok(c.clone()),
                        None => {
                            let c = self.cmdbs.load(&dir.profile_path(p, "cmdb"))?;
                            cmdbs.insert(p.to_string(), c.clone());
                            Ok(c)
                        }
                    },
                    &dir.dir.display().to_string(),
                )
                .map_err(|e| match e {
                    SelectError::NoMatch { .. } => UploadError::NoMatch(e.to_string()),
                    e if e.is_exhausted() => UploadError::Exhausted(e.to_string()),
                    e => internal(e),
                })?;
                let configure = match configures.get(&sel.profile) {
                    Some(c) => c.clone(),
                    None => {
                        let path = dir.profile_path(&sel.profile, "configure");
                        let c = fs::read_to_string(&path)
                            .map_err(|e| internal(format!("{}: {e}", path.display())))?;
                        configures.insert(sel.profile.clone(), c.clone());
                        c
                    }
                };
                let mut extra = Vec::new();
                if let Some(u) = &j.conf.pxemngr_url {
                    extra.push(("PXEMNGR_URL", u.as_str()));
                }
                if let Some(u) = &j.conf.metadata_url {
                    extra.push(("METADATA_URL", u.as_str()));
                }
                let text = script::render(&sel.profile, &sel.vars, &extra, &configure);
                state = sel.state;
                if let Some(c) = sel.cmdb {
                    if !dirty.contains(&sel.profile) {
                        dirty.push(sel.profile.clone());
                    }
                    cmdbs.insert(sel.profile.clone(), Some(c));
                }
                Ok((sel.profile, text))
            });
            results.push((*id, r));
        }
        let mut files = Vec::new();
        for p in &dirty {
            let Some(Some(c)) = cmdbs.get(p) else {
                continue;
            };
            if let Some(orig) = &c.generated_from {
                let orig_path = dir.profile_path(p, "cmdb.orig");
                if !orig_path.exists() {
                    files.push((orig_path, orig.clone().into_bytes()));
                }
            }
            files.push((dir.profile_path(p, "cmdb"), c.to_text().into_bytes()));
        }
        if state != first_state {
            files.push((dir.state_path(), state.to_text().into_bytes()));
        }
        if let Err(e) = store::commit(&conf.config_dir, &files, &hw_files) {
            let e = internal(format!("commit: {e}"));
            for (_, r) in &mut results {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
            return results;
        }
        for p in &dirty {
            if let Some(Some(c)) = cmdbs.get(p) {
                self.cmdbs.wrote(&dir.profile_path(p, "cmdb"), c);
            }
        }
        results
    }

    /// `failure=<profile>`: the machine failed to install; give its quota unit back. Never matches.
    fn failure_report(
        &self,
        conf: &ServerConf,
        profile: &str,
        hw: Option<(HardwareList, String)>,
    ) -> Result<Response, UploadError> {
        let _lock = Self::lock(conf)?;
        if let Some((hw, sysname)) = &hw {
            Self::save_hw(conf, hw, sysname)?;
        }
        let dir = ConfigDir::new(&conf.config_dir);
        let mut state = self.states.load(&dir.state_path()).map_err(internal)?;
        let given = state.give_back(profile);
        if given {
            store::commit(
                &conf.config_dir,
                &[(dir.state_path(), state.to_text().into_bytes())],
                &[],
            )
            .map_err(|e| internal(format!("commit: {e}")))?;
        }
        let what = if given {
            "quota given back"
        } else {
            "quota unchanged"
        };
        self.metrics.failure_report(profile);
        let sysname = hw.as_ref().map_or("unknown", |(_, s)| s.as_str());
        self.nodes
            .record(sysname, "failure", format!("{profile}: {what}"));
        tracing::warn!(sysname, profile, given, "failure reported");
        Ok(Response::script(format!(
            "#!/bin/sh\necho {} >&2\n",
            script::sh_quote(&format!(
                "edeploy: failure of profile {profile} recorded: {what}"
            ))
        )))
    }

    fn save_log(
        &self,
        conf: &ServerConf,
        name: &str,
        data: &[u8],
    ) -> Result<Response, UploadError> {
        check_name("log file", name)?;
        let _lock = Self::lock(conf)?;
        let path = store::save_log(&conf.log_dir, name, data)
            .map_err(|e| internal(format!("saving log {name}: {e}")))?;
        self.metrics.log_upload();
        let sysname = name.trim_end_matches(".log.gz");
        self.nodes.record(sysname, "log", name.to_string());
        tracing::info!(path = %path.display(), "log saved");
        Ok(Response::ok("text/plain", format!("log {name} saved\n")))
    }

    /// `POST /report` (see `report.rs`): recorded in the node time line and counted. No lock
    /// and no file: a report changes no provisioning state.
    pub fn report(&self, req: Request<'_>) -> Response {
        match crate::report::parse(req.content_type, req.body) {
            Ok(r) => {
                self.metrics.report(&r.event);
                let detail = match &r.detail {
                    Some(d) => format!("{}: {d}", r.event),
                    None => r.event.clone(),
                };
                tracing::info!(sysname = %r.sysname, event = %r.event, "report");
                self.nodes.record(&r.sysname, "report", detail);
                Response::ok("text/plain", "ok\n")
            }
            Err(e) => {
                self.metrics.failure(e.label());
                let reason = one_line(&e.to_string());
                // Plain text, not the sh failure script: the caller is a boot service using
                // curl, not an initrd running the body.
                Response {
                    status: e.status(),
                    body: format!("{reason}\n").into_bytes(),
                    reason: Some(reason),
                    content_type: "text/plain",
                }
            }
        }
    }

    /// A health-check upload: the hardware list saved under HEALTHDIR/<session>/<sysname>.hw.
    pub fn health(&self, req: Request<'_>) -> Result<Response, UploadError> {
        let form = parse_form(req.content_type, req.body, self.max_upload)?;
        let conf = self.conf(form.section.as_deref())?;
        let file = form.file.as_ref().ok_or_else(|| bad("no `file` field"))?;
        let (hw, sysname) = parse_hw(file)?;
        let session = form.session.unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            store::session_stamp(now)
        });
        let dir = conf.health_dir.join(&session);
        let _lock = Self::lock(&conf)?;
        fs::create_dir_all(&dir)
            .and_then(|()| {
                atomic_write(
                    &dir.join(format!("{sysname}.hw")),
                    hw.to_edeploy().as_bytes(),
                )
            })
            .map_err(|e| internal(format!("saving health of {sysname}: {e}")))?;
        self.metrics.health_upload();
        self.nodes.record(&sysname, "health", session.clone());
        Ok(Response::ok(
            "text/plain",
            format!("health of {sysname} saved in session {session}\n"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::multipart::encode;

    const CT: &str = "multipart/form-data; boundary=XBOUNDARYX";

    fn post(s: &Server, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Response {
        let body = encode("XBOUNDARYX", fields);
        s.handle(
            Request {
                method: "POST",
                path,
                content_type: CT,
                body: &body,
            },
            true,
        )
    }

    fn machine(s: &Server, product: &str, mac: &str) -> Response {
        let hw = fixture::hw_json(product, mac);
        post(s, "/upload", &[("file", Some("hw.json"), hw.as_bytes())])
    }

    fn body(r: &Response) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn match_renders_and_persists() {
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::scenario_config(d.path()).unwrap());
        let r = machine(&s, "vm", "52:54:00:00:00:01");
        assert_eq!(r.status, 200, "{}", body(&r));
        let b = body(&r);
        assert!(
            b.starts_with("#!/bin/sh\n# EDEPLOY_PROFILE=vm\nset -e\n"),
            "{b}"
        );
        assert!(b.contains("\nhostname='vm1'\n") && b.contains("\nip='10.0.0.1'\n"));
        assert!(b.contains("\nMETADATA_URL='http://meta.example/metadata/'\n"));
        assert!(b.ends_with("set_role base 1.0 \"/dev/$disk\"\n"));
        let main = d.path().join("main");
        let cmdb = fs::read_to_string(main.join("vm.cmdb")).unwrap();
        assert!(cmdb.contains("'used': 1"), "{cmdb}");
        assert!(fs::read_to_string(main.join("vm.cmdb.orig"))
            .unwrap()
            .starts_with("generate("));
        let hw = fs::read_to_string(d.path().join("hw/vm-52-54-00-00-00-01.hw")).unwrap();
        assert!(HardwareList::parse(&hw, "x").is_ok());
        assert!(!main.join(store::JOURNAL).exists());
    }

    #[test]
    fn edits_of_state_and_conf_apply_to_the_next_upload() {
        // Both are cached parsed; an operator's edit must still be seen at once.
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::scenario_config(d.path()).unwrap());
        let r = machine(&s, "vm", "52:54:00:00:00:21");
        assert_eq!(r.status, 200, "{}", body(&r));
        let state = d.path().join("main/state");
        // Same length as before: only the content tells the edit apart.
        let old = fs::read_to_string(&state).unwrap();
        let new = old.replace("('vm', '*')", "('vm', '0')");
        assert_eq!(old.len(), new.len());
        fs::write(&state, &new).unwrap();
        assert_eq!(machine(&s, "vm", "52:54:00:00:00:22").status, 404);
        assert_eq!(fs::read_to_string(&state).unwrap(), new);
        let conf = d.path().join("edeploy.conf");
        let text = fs::read_to_string(&conf).unwrap();
        fs::write(&conf, text.replace("meta.example", "other.example")).unwrap();
        fs::write(&state, &old).unwrap();
        let r = machine(&s, "vm", "52:54:00:00:00:22");
        assert!(body(&r).contains("\nMETADATA_URL='http://other.example/metadata/'\n"));
    }

    #[test]
    fn refusals_write_no_state() {
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::scenario_config(d.path()).unwrap());
        let main = d.path().join("main");
        let before = fs::read_to_string(main.join("state")).unwrap();
        let r = machine(&s, "nothing", "52:54:00:00:00:02");
        assert_eq!(r.status, 404);
        assert!(r.reason.as_deref().unwrap().contains("unable to match"));
        assert!(body(&r).contains("exit 1"));
        // Unknown $$mac: the CMDB has no entry for it.
        assert_eq!(machine(&s, "known", "52:54:00:00:0b:01").status, 409);
        assert_eq!(fs::read_to_string(main.join("state")).unwrap(), before);
        assert!(!main.join("known.cmdb.orig").exists());
        let r = post(&s, "/upload", &[("file", Some("hw.json"), b"[[1,2")]);
        assert_eq!(r.status, 400);
        let r = post(&s, "/upload", &[("section", None, b"../etc")]);
        assert_eq!(r.status, 400);
        let mut small = Server::new(s.conf_path.clone());
        small.max_upload = 10;
        assert_eq!(machine(&small, "vm", "52:54:00:00:00:03").status, 413);
    }

    #[test]
    fn deep_nesting_is_refused_on_a_small_stack() {
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::scenario_config(d.path()).unwrap());
        let deep = "[".repeat(DEFAULT_MAX_UPLOAD - 1024);
        // tokio's blocking threads have 2 MiB stacks: the parsers must not recurse per byte.
        let status = std::thread::scope(|sc| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn_scoped(sc, || {
                    post(&s, "/upload", &[("file", Some("hw.json"), deep.as_bytes())]).status
                })
                .unwrap()
                .join()
                .unwrap()
        });
        assert_eq!(status, 400);
    }

    #[test]
    fn failure_report_gives_back_and_never_matches() {
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::scenario_config(d.path()).unwrap());
        let state = d.path().join("main/state");
        assert!(body(&machine(&s, "small", "52:54:00:00:00:04")).contains("PROFILE=small"));
        assert!(fs::read_to_string(&state).unwrap().contains("('small', 0)"));
        let hw = fixture::hw_json("small", "52:54:00:00:00:04");
        let r = post(
            &s,
            "/upload",
            &[
                ("failure", None, b"small"),
                ("file", Some("hw.json"), hw.as_bytes()),
            ],
        );
        assert_eq!(r.status, 200);
        assert!(!body(&r).contains("EDEPLOY_PROFILE"));
        assert!(fs::read_to_string(&state).unwrap().contains("('small', 1)"));
        let r = post(&s, "/upload", &[("failure", None, b"vm")]);
        assert!(body(&r).contains("quota unchanged"));
    }

    #[test]
    fn concurrent_uploads_get_distinct_entries() {
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::pool_config(d.path(), 10, None).unwrap());
        let statuses: Vec<(u16, String)> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..24)
                .map(|i| {
                    let s = &s;
                    sc.spawn(move || {
                        let r = machine(s, "vm", &fixture::mac(i));
                        (r.status, body(&r))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut hosts: Vec<&str> = statuses
            .iter()
            .filter(|(st, _)| *st == 200)
            .map(|(_, b)| {
                b.split("hostname='")
                    .nth(1)
                    .unwrap()
                    .split('\'')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(hosts.len(), 10);
        assert_eq!(statuses.iter().filter(|(st, _)| *st == 409).count(), 14);
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 10);
        let cmdb = edeploy_spec::cmdb::Cmdb::load(&d.path().join("pool.cmdb"))
            .unwrap()
            .unwrap();
        assert_eq!(
            cmdb.entries
                .iter()
                .filter(|e| e.get("used").is_some())
                .count(),
            10
        );
    }
}
