//! The tree in ZooKeeper (node data = the properties as one JSON object, as zc.zk stores them).
//!
//! The agent is synchronous; this store owns a small tokio runtime whose worker keeps the session
//! alive (pings) while deploy scripts run. Every call rides through connection loss (ZooKeeper
//! restarting) until `op_deadline`, and through session expiry by opening a new session and
//! re-creating the ephemeral host node with its latest properties.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::{Store, StoreError};
use crate::tree::{join, split_parent, Node, Props};
use crate::treefmt::Change;

type Watch = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

pub struct ZkStore {
    rt: tokio::runtime::Runtime,
    addr: String,
    client: Option<zk::Client>,
    /// This agent's host node and its latest properties, re-created in every new session.
    registered: Option<(String, Props)>,
    /// `mzxid` of `/hosts` when last read: a watch armed later compares against it, so a change
    /// between the read and the arming is not lost.
    hosts_seen: Option<i64>,
    watch: Option<Watch>,
    locks: HashMap<String, zk::OwnedLockClient>,
    pub session_timeout: Duration,
    /// How long one call keeps retrying through connection loss and reconnects.
    pub op_deadline: Duration,
    /// Counts new sessions after the first (tests and logs watch it).
    pub reconnects: u32,
}

fn zk_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Zk(e.to_string())
}

fn props_of(data: &[u8]) -> Props {
    // Nodes written by other tools may hold anything: their data is not properties.
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

fn data_of(props: &Props) -> Vec<u8> {
    serde_json::to_vec(props).unwrap_or_default()
}

/// Everything but a definite answer from the server is worth another try: connection loss,
/// timeouts, "no response from connection" while the client reconnects, a session that ended.
fn retriable(e: &zk::Error) -> bool {
    !matches!(
        e,
        zk::Error::NoNode
            | zk::Error::NodeExists
            | zk::Error::BadVersion
            | zk::Error::NotEmpty
            | zk::Error::NoAuth
            | zk::Error::InvalidAcl
            | zk::Error::NoChildrenForEphemerals
            | zk::Error::BadArguments(_)
            | zk::Error::AuthFailed
            | zk::Error::QuotaExceeded
            | zk::Error::RuntimeInconsistent
    )
}

fn session_gone(e: &zk::Error) -> bool {
    matches!(e, zk::Error::SessionExpired | zk::Error::ClientClosed)
}

impl ZkStore {
    /// Connects lazily: the first call opens the session.
    pub fn new(addr: &str) -> Result<ZkStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| zk_err(format!("runtime: {e}")))?;
        Ok(ZkStore {
            rt,
            addr: addr.into(),
            client: None,
            registered: None,
            hosts_seen: None,
            watch: None,
            locks: HashMap::new(),
            session_timeout: Duration::from_secs(10),
            op_deadline: Duration::from_secs(60),
            reconnects: 0,
        })
    }

    /// The session's id, for tests that expire it.
    pub fn session(&mut self) -> Result<zk::SessionInfo, StoreError> {
        Ok(self.client()?.session().clone())
    }

    fn client(&mut self) -> Result<zk::Client, StoreError> {
        if let Some(c) = &self.client {
            if !c.state().is_terminated() {
                return Ok(c.clone());
            }
            tracing::warn!("ZooKeeper session {:?} ended", c.state());
            let _g = self.rt.enter();
            self.client = None;
            self.watch = None;
            // Locks died with the session; their guards must not outlive it.
            self.locks.clear();
        }
        let connector = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(Duration::from_secs(2));
        let client = self
            .rt
            .block_on(connector.connect(&self.addr))
            .map_err(|e| zk_err(format!("connect {}: {e}", self.addr)))?;
        if let Some((id, props)) = self.registered.clone() {
            self.reconnects += 1;
            tracing::warn!("new ZooKeeper session: registering /hosts/{id} again");
            self.rt.block_on(create_host(&client, &id, &props))?;
        }
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Runs `f` with a live client, retrying through connection loss and new sessions.
    fn call<T, F, Fut>(&mut self, f: F) -> Result<T, StoreError>
    where
        F: Fn(zk::Client) -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        let deadline = Instant::now() + self.op_deadline;
        loop {
            let client = match self.client() {
                Ok(c) => c,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!("{e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.rt.block_on(f(client.clone())) {
                Ok(v) => return Ok(v),
                Err(e) if retriable(&e) && Instant::now() < deadline => {
                    tracing::warn!("ZooKeeper: {e}; retrying");
                    if session_gone(&e) || client.state().is_terminated() {
                        let _g = self.rt.enter();
                        self.client = None;
                        self.watch = None;
                        self.locks.clear();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(zk_err(e)),
            }
        }
    }
}

const OPEN: zk::Acls<'static> = zk::Acls::anyone_all();

async fn ensure_path(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    if path == "/" {
        return Ok(());
    }
    let opts = zk::CreateMode::Persistent.with_acls(OPEN);
    match client.mkdir(path, &opts).await {
        Ok(()) | Err(zk::Error::NodeExists) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the ephemeral host node; an existing one is ours only if this session owns it (a
/// create retried after connection loss), else another agent runs.
async fn create_host(client: &zk::Client, id: &str, props: &Props) -> Result<(), StoreError> {
    let path = join("/hosts", id);
    ensure_path(client, "/hosts").await.map_err(zk_err)?;
    let opts = zk::CreateMode::Ephemeral.with_acls(OPEN);
    match client.create(&path, &data_of(props), &opts).await {
        Ok(_) => Ok(()),
        Err(zk::Error::NodeExists) => {
            let (_, stat) = client.get_data(&path).await.map_err(zk_err)?;
            if stat.ephemeral_owner == client.session_id().0 {
                client
                    .set_data(&path, &data_of(props), None)
                    .await
                    .map_err(zk_err)?;
                Ok(())
            } else {
                Err(StoreError::AlreadyRunning(path))
            }
        }
        Err(e) => Err(zk_err(e)),
    }
}

impl Store for ZkStore {
    fn load(&mut self) -> Result<Node, StoreError> {
        self.call(|c| async move {
            let mut root = Node::default();
            let mut level = vec!["/".to_string()];
            while !level.is_empty() {
                let mut next = Vec::new();
                // Batches keep each response under ZooKeeper's 1 MB packet limit.
                for chunk in level.chunks(256) {
                    let mut reader = c.new_multi_reader();
                    for path in chunk {
                        reader.add_get_data(path)?;
                        reader.add_get_children(path)?;
                    }
                    let results = reader.commit().await?;
                    for (path, pair) in chunk.iter().zip(results.chunks(2)) {
                        let [zk::MultiReadResult::Data { data, stat }, zk::MultiReadResult::Children { children }] =
                            pair
                        else {
                            continue; // deleted while we read
                        };
                        let node = root.ensure(path);
                        node.props = props_of(data);
                        node.ephemeral = stat.ephemeral_owner != 0;
                        for child in children {
                            let p = join(path, child);
                            if p != "/zookeeper" {
                                next.push(p);
                            }
                        }
                    }
                }
                level = next;
            }
            Ok(root)
        })
    }

    fn props(&mut self, path: &str) -> Result<Option<Props>, StoreError> {
        let got = self.call(|c| async move {
            match c.get_data(path).await {
                Ok((data, stat)) => Ok(Some((props_of(&data), stat.mzxid))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        if path == "/hosts" {
            self.hosts_seen = got.as_ref().map(|(_, z)| *z);
        }
        Ok(got.map(|(p, _)| p))
    }

    fn register(&mut self, id: &str, props: &Props) -> Result<(), StoreError> {
        let client = self.call(|c| async move { Ok(c) })?;
        self.rt.block_on(create_host(&client, id, props))?;
        self.registered = Some((id.into(), props.clone()));
        Ok(())
    }

    fn update(&mut self, path: &str, edit: &mut dyn FnMut(&mut Props)) -> Result<(), StoreError> {
        loop {
            let got = self.call(|c| async move {
                match c.get_data(path).await {
                    Ok((data, stat)) => Ok(Some((data, stat.version))),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            let Some((data, version)) = got else {
                // Our own node deleted by hand: register again rather than go unseen.
                if let Some((id, mine)) = self.registered.clone() {
                    if join("/hosts", &id) == path {
                        let mut props = mine;
                        edit(&mut props);
                        let client = self.client()?;
                        self.rt.block_on(create_host(&client, &id, &props))?;
                        self.registered = Some((id, props));
                        return Ok(());
                    }
                }
                return Err(StoreError::NoNode(path.into()));
            };
            let mut props = props_of(&data);
            edit(&mut props);
            if let Some((id, mine)) = &mut self.registered {
                if join("/hosts", id) == path {
                    *mine = props.clone();
                }
            }
            let new = data_of(&props);
            let written = self.call(|c| {
                let new = new.clone();
                async move {
                    match c.set_data(path, &new, Some(version)).await {
                        Ok(_) => Ok(true),
                        // Someone wrote in between: edit their version instead.
                        Err(zk::Error::BadVersion) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })?;
            if written {
                return Ok(());
            }
        }
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        for change in changes {
            match change {
                Change::Create { path, props } | Change::SetProps { path, props } => {
                    let data = data_of(props);
                    self.call(|c| {
                        let data = data.clone();
                        async move {
                            ensure_path(&c, split_parent(path).0).await?;
                            let opts = zk::CreateMode::Persistent.with_acls(OPEN);
                            match c.create(path, &data, &opts).await {
                                Ok(_) => Ok(()),
                                Err(zk::Error::NodeExists) => {
                                    c.set_data(path, &data, None).await.map(|_| ())
                                }
                                Err(e) => Err(e),
                            }
                        }
                    })?;
                }
                Change::Delete { path } => self.call(|c| async move {
                    match c.delete(path, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                        Err(e) => Err(e),
                    }
                })?,
                Change::Keep { .. } => {}
            }
        }
        Ok(())
    }

    fn lock(&mut self, app: &str) -> Result<(), StoreError> {
        let dir = format!("/agent-locks/{app}");
        let lock = self.call(|c| {
            let dir = dir.clone();
            async move {
                let prefix = zk::LockPrefix::new_curator(&dir, "lock-")?;
                let options = zk::LockOptions::new(OPEN)
                    .with_ancestor_options(zk::CreateMode::Persistent.with_acls(OPEN))?;
                let lock = c.lock(prefix, b"", options).await?;
                Ok(lock.into_owned())
            }
        })?;
        self.locks.insert(app.into(), lock);
        Ok(())
    }

    fn unlock(&mut self, app: &str) -> Result<(), StoreError> {
        let _g = self.rt.enter();
        self.locks.remove(app);
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        if self.watch.is_none() {
            let (stat, watcher) =
                self.call(|c| async move { c.check_and_watch_stat("/hosts").await })?;
            self.watch = Some(Box::pin(watcher.changed()));
            if stat.map(|s| s.mzxid) != self.hosts_seen {
                return Ok(true);
            }
        }
        let Some(watch) = self.watch.as_mut() else {
            return Ok(true);
        };
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, watch).await })
        {
            Ok(event) => {
                tracing::debug!("/hosts: {:?} {:?}", event.event_type, event.session_state);
                self.watch = None;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

impl Drop for ZkStore {
    fn drop(&mut self) {
        // Lock guards and the client clean up by spawning on the runtime: drop them inside it.
        let guard = self.rt.enter();
        self.locks.clear();
        self.watch = None;
        let Some(client) = self.client.take() else {
            return;
        };
        // Close the session now rather than leave the host node to the session timeout: a
        // `--run-once` agent run again right after must not find itself "already running".
        let mut state = client.state_watcher();
        drop(client);
        drop(guard);
        self.rt.block_on(async {
            let closed = async { while !state.changed().await.is_terminated() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
        });
    }
}
