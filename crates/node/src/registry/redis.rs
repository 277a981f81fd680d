//! The registry shared through Redis, for nodes in separate processes (or
//! containers), as Octopus HA nodes share their SQL database.
//!
//! Keys, under `octopoll:<namespace>:`:
//! * `machines`: a hash, thumbprint → the machine as JSON;
//! * `names`: a hash, name → thumbprint (names are unique);
//! * `endpoints`: a hash, endpoint URI (`poll://…/`, `https://…/`) → thumbprint
//!   (a subscription belongs to one machine);
//! * `next-id`: the counter behind `Machines-<n>`;
//! * `events`: the pub/sub channel every change is announced on.
//!
//! Registering and deregistering are Lua scripts, so two nodes registering at
//! once cannot both take a name. Each process keeps a local copy: loaded at
//! connect, kept current by the channel, reloaded whole after the channel drops,
//! and asked of Redis directly on a miss (`fetch`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use octopoll_pki::Thumbprint;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::Deserialize;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use super::cache::{same_or_conflict, Machines};
use super::{Conflict, Machine, NewMachine, RegisterError, Registered, StoreError};
use crate::redis_link::{manager_config, redacted, Channel};

/// Registers atomically; answers `{created, json}`, `{exists, json}`,
/// `{name, thumbprint}` or `{endpoint, holder's name}`. The machine JSON comes
/// with `"id":""` first; the script puts the new id there.
const REGISTER: &str = r#"
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {'exists', existing} end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner then return {'name', owner} end
local holder = redis.call('HGET', KEYS[5], ARGV[4])
if holder then
  local machine = redis.call('HGET', KEYS[1], holder)
  if machine then return {'endpoint', cjson.decode(machine)['name']} end
  return {'endpoint', holder}
end
local id = redis.call('INCR', KEYS[3])
local text = '{"id":"Machines-' .. id .. '"' .. string.sub(ARGV[3], 9)
redis.call('HSET', KEYS[1], ARGV[1], text)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[1])
redis.call('PUBLISH', KEYS[4], '{"registered":' .. text .. '}')
return {'created', text}
"#;

/// Deregisters atomically; answers the removed machine's JSON, or nil.
const DEREGISTER: &str = r#"
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
local machine = cjson.decode(existing)
redis.call('HDEL', KEYS[2], machine['name'])
if redis.call('HGET', KEYS[5], machine['endpoint']) == ARGV[1] then
  redis.call('HDEL', KEYS[5], machine['endpoint'])
end
redis.call('PUBLISH', KEYS[4], '{"deregistered":"' .. ARGV[1] .. '"}')
return existing
"#;

/// How often a lookup is asked again when removals keep landing during it.
const FETCH_ATTEMPTS: usize = 3;

/// How long the follower waits before reconnecting after the channel dropped.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// One change, as announced on the channel.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Event {
    Registered(Machine),
    Deregistered(String),
}

#[derive(Clone, Debug)]
struct Keys {
    machines: String,
    names: String,
    next_id: String,
    events: String,
    endpoints: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        let key = |name: &str| format!("octopoll:{namespace}:{name}");
        Self {
            machines: key("machines"),
            names: key("names"),
            next_id: key("next-id"),
            events: key("events"),
            endpoints: key("endpoints"),
        }
    }
}

/// A connection to the shared store, and the task that keeps the local copy current.
#[derive(Debug)]
pub(super) struct RedisStore {
    link: Arc<Link>,
    /// Stops the follower when the last registry clone goes.
    _follower: DropGuard,
}

/// What the store and its follower share.
#[derive(Debug)]
pub(super) struct Link {
    url: String,
    keys: Keys,
    connection: ConnectionManager,
    machines: Machines,
    /// Reloads that found Redis empty while this process knew machines.
    emptied: AtomicU64,
    /// Times the change channel was lost (closed, or silent past a ping).
    channel_losses: AtomicU64,
}

impl std::ops::Deref for RedisStore {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.link
    }
}

impl RedisStore {
    /// Connects, subscribes to the changes, loads every machine into `machines`,
    /// and follows the changes from then on.
    pub(super) async fn connect(
        url: &str,
        namespace: &str,
        machines: Machines,
    ) -> Result<Self, StoreError> {
        let shown = redacted(url);
        let error = redis_error(&shown);
        let client = redis::Client::open(url).map_err(&error)?;
        let connection = ConnectionManager::new_with_config(client.clone(), manager_config())
            .await
            .map_err(&error)?;
        let link = Arc::new(Link {
            url: shown.clone(),
            keys: Keys::new(namespace),
            connection,
            machines,
            emptied: Default::default(),
            channel_losses: Default::default(),
        });
        // Subscribed before loading, so no change falls between the two.
        let channel = Channel::subscribe(&client, &link.keys.events)
            .await
            .map_err(&error)?;
        link.reload().await?;
        let stop = CancellationToken::new();
        let follower = Follower {
            client,
            link: link.clone(),
        };
        tokio::spawn(follower.run(channel, stop.clone()));
        info!(
            url = %shown,
            namespace,
            machines = link.machines.len(),
            "machine registry shared through Redis"
        );
        Ok(Self {
            link,
            _follower: stop.drop_guard(),
        })
    }

    /// Deletes every key of `namespace` at `url`: a cluster that is gone for good.
    pub(super) async fn forget(url: &str, namespace: &str) -> Result<(), StoreError> {
        let shown = redacted(url);
        let error = redis_error(&shown);
        let client = redis::Client::open(url).map_err(&error)?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(&error)?;
        let keys = Keys::new(namespace);
        redis::cmd("DEL")
            .arg(&keys.machines)
            .arg(&keys.names)
            .arg(&keys.next_id)
            .arg(&keys.endpoints)
            .query_async::<()>(&mut connection)
            .await
            .map_err(&error)
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) async fn register(&self, new: NewMachine) -> Result<Registered, RegisterError> {
        let before = self.machines.removals();
        // `{"id":""` first: the script puts the new id there.
        let body = serde_json::to_string(&new.clone().with_id(String::new()))
            .map_err(|e| self.malformed(e.to_string()))?;
        debug_assert!(body.starts_with(r#"{"id":"""#));
        let answer: Vec<String> = Script::new(REGISTER)
            .key(&self.keys.machines)
            .key(&self.keys.names)
            .key(&self.keys.next_id)
            .key(&self.keys.events)
            .key(&self.keys.endpoints)
            .arg(new.thumbprint.to_string())
            .arg(&new.name)
            .arg(body)
            .arg(new.endpoint.to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(redis_error(&self.url))?;
        match answer.as_slice() {
            [kind, text] if kind == "created" => {
                let machine = self.parse(text)?;
                // Ours at once (the announcement may come a moment later), unless
                // a deregistration overtook this answer.
                self.machines.insert_read(machine.clone(), before);
                Ok(Registered::Created(machine))
            }
            [kind, text] if kind == "exists" => {
                let existing = self.parse(text)?;
                same_or_conflict(&existing, &new)?;
                self.machines.insert_read(existing.clone(), before);
                Ok(Registered::Unchanged(existing))
            }
            [kind, _] if kind == "name" => Err(Conflict::Name { name: new.name }.into()),
            [kind, holder] if kind == "endpoint" => Err(Conflict::Endpoint {
                endpoint: new.endpoint.to_string(),
                existing: holder.clone(),
            }
            .into()),
            other => Err(self
                .malformed(format!("register answered {other:?}"))
                .into()),
        }
    }

    pub(super) async fn deregister(
        &self,
        thumbprint: &Thumbprint,
    ) -> Result<Option<Machine>, StoreError> {
        let removed: Option<String> = Script::new(DEREGISTER)
            .key(&self.keys.machines)
            .key(&self.keys.names)
            .key(&self.keys.next_id)
            .key(&self.keys.events)
            .key(&self.keys.endpoints)
            .arg(thumbprint.to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(redis_error(&self.url))?;
        self.machines.remove(thumbprint);
        removed.map(|text| self.parse(&text)).transpose()
    }

    /// Looks `thumbprint` up in Redis itself, and keeps what it finds. A removal
    /// that lands while Redis is being asked means the answer may be stale: it is
    /// asked again (and the answer not kept if that keeps happening).
    pub(super) async fn fetch(
        &self,
        thumbprint: &Thumbprint,
    ) -> Result<Option<Machine>, StoreError> {
        let mut machine = None;
        for _ in 0..FETCH_ATTEMPTS {
            let before = self.machines.removals();
            let text: Option<String> = self
                .connection
                .clone()
                .hget(&self.keys.machines, thumbprint.to_string())
                .await
                .map_err(redis_error(&self.url))?;
            machine = text.map(|text| self.parse(&text)).transpose()?;
            match &machine {
                None => return Ok(None),
                Some(found) if self.machines.insert_read(found.clone(), before) => break,
                Some(_) => continue,
            }
        }
        Ok(machine)
    }
}

impl Link {
    /// Replaces the local copy with every machine in Redis.
    async fn reload(&self) -> Result<(), StoreError> {
        let all: Vec<(String, String)> = self
            .connection
            .clone()
            .hgetall(&self.keys.machines)
            .await
            .map_err(redis_error(&self.url))?;
        let machines = all
            .iter()
            .map(|(_, text)| self.parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let known = self.machines.len();
        if machines.is_empty() && known > 0 {
            // A Redis that came back without its data (restarted without
            // persistence, or flushed): every agent is distrusted until it
            // registers again. Said loudly, and counted for `GET /api/node`.
            self.emptied.fetch_add(1, Ordering::Relaxed);
            error!(
                url = %self.url,
                known,
                "the machine registry in Redis is empty, but this node knew {known} machines: Redis lost its data (restarted without persistence, or flushed); every agent is refused until it registers again"
            );
        }
        self.machines.replace_all(machines);
        Ok(())
    }

    /// How many reloads found Redis empty while this process knew machines.
    pub(super) fn emptied(&self) -> u64 {
        self.emptied.load(Ordering::Relaxed)
    }

    /// How many times the change channel was lost (closed, or silent past a ping)
    /// and followed again.
    pub(super) fn channel_losses(&self) -> u64 {
        self.channel_losses.load(Ordering::Relaxed)
    }

    fn apply(&self, payload: &str) {
        match serde_json::from_str::<Event>(payload) {
            Ok(Event::Registered(machine)) => self.machines.insert(machine),
            Ok(Event::Deregistered(thumbprint)) => match thumbprint.parse() {
                Ok(thumbprint) => {
                    self.machines.remove(&thumbprint);
                }
                Err(error) => warn!(%error, "registry event names a malformed thumbprint"),
            },
            Err(error) => warn!(%error, payload, "malformed registry event ignored"),
        }
    }

    fn parse(&self, text: &str) -> Result<Machine, StoreError> {
        serde_json::from_str(text).map_err(|e| self.malformed(format!("{e}: {text}")))
    }

    fn malformed(&self, reason: String) -> StoreError {
        StoreError::Malformed {
            url: self.url.clone(),
            reason,
        }
    }
}

fn redis_error(url: &str) -> impl Fn(redis::RedisError) -> StoreError + '_ {
    move |source| StoreError::Redis {
        url: url.to_owned(),
        source,
    }
}

/// Applies the announced changes to the local copy until stopped; after the
/// channel is lost (closed, or silent past a ping), subscribes again and reloads
/// everything (changes may have been missed in between).
struct Follower {
    client: redis::Client,
    link: Arc<Link>,
}

impl Follower {
    async fn run(self, mut channel: Channel, stop: CancellationToken) {
        loop {
            let lost = loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    message = channel.next() => message,
                };
                match message.map(|message| message.get_payload::<String>()) {
                    Ok(Ok(payload)) => self.link.apply(&payload),
                    Ok(Err(error)) => warn!(%error, "unreadable registry event ignored"),
                    Err(lost) => break lost,
                }
            };
            self.link.channel_losses.fetch_add(1, Ordering::Relaxed);
            warn!(
                url = %self.link.url,
                link = lost.as_str(),
                "lost the registry's change channel; subscribing again, then reloading every machine"
            );
            channel = loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                }
                match Channel::subscribe(&self.client, &self.link.keys.events).await {
                    Ok(channel) => match self.link.reload().await {
                        Ok(()) => break channel,
                        Err(error) => debug!(%error, "reloading the registry failed"),
                    },
                    Err(error) => debug!(%error, "subscribing to the registry failed"),
                }
            };
            info!(url = %self.link.url, machines = self.link.machines.len(), "registry followed again");
        }
    }
}
