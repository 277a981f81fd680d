//! The registry of proxies, what the HTTP API drives: create, update and delete
//! proxies, and add, update and remove their toxics.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::proxy::{Proxy, ProxyConfig, ProxyInfo, ProxyUpdate};
use crate::toxic::{Toxic, ToxicUpdate};
use crate::{Error, Result};

/// Every proxy by name; cheap to clone (all clones share the proxies).
///
/// Call [`Chaos::shutdown`] when done: proxies keep running after the last clone
/// is dropped.
#[derive(Clone, Debug, Default)]
pub struct Chaos {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    proxies: BTreeMap<String, Proxy>,
    /// Last toxic revision handed out.
    revision: u64,
}

impl Registry {
    fn proxy(&self, name: &str) -> Result<&Proxy> {
        self.proxies
            .get(name)
            .ok_or_else(|| Error::NoSuchProxy(name.to_owned()))
    }

    fn proxy_mut(&mut self, name: &str) -> Result<&mut Proxy> {
        self.proxies
            .get_mut(name)
            .ok_or_else(|| Error::NoSuchProxy(name.to_owned()))
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }
}

impl Chaos {
    /// No proxies yet.
    pub fn new() -> Self {
        Chaos::default()
    }

    /// Creates a proxy, listening at once if enabled; `listen` in the answer is the
    /// address actually bound.
    pub async fn create(&self, config: ProxyConfig) -> Result<ProxyInfo> {
        let mut registry = self.inner.lock().await;
        if registry.proxies.contains_key(&config.name) {
            return Err(Error::ProxyExists(config.name));
        }
        let proxy = Proxy::create(config)?;
        let info = proxy.info();
        registry.proxies.insert(proxy.name().to_owned(), proxy);
        Ok(info)
    }

    /// Every proxy, by name.
    pub async fn list(&self) -> Vec<ProxyInfo> {
        let registry = self.inner.lock().await;
        registry.proxies.values().map(Proxy::info).collect()
    }

    /// The proxy called `name`.
    pub async fn get(&self, name: &str) -> Result<ProxyInfo> {
        Ok(self.inner.lock().await.proxy(name)?.info())
    }

    /// Changes a proxy: `enabled: false` stops listening and cuts its connections,
    /// a new listen address or upstream restarts it.
    pub async fn update(&self, name: &str, update: ProxyUpdate) -> Result<ProxyInfo> {
        let mut registry = self.inner.lock().await;
        let proxy = registry.proxy_mut(name)?;
        proxy.update(update).await?;
        Ok(proxy.info())
    }

    /// Stops and removes a proxy, cutting its connections.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let mut registry = self.inner.lock().await;
        let mut proxy = registry
            .proxies
            .remove(name)
            .ok_or_else(|| Error::NoSuchProxy(name.to_owned()))?;
        proxy.stop().await;
        Ok(())
    }

    /// Adds a toxic to a proxy; its live connections are affected at once.
    pub async fn add_toxic(&self, proxy: &str, toxic: Toxic) -> Result<Toxic> {
        let mut registry = self.inner.lock().await;
        let revision = registry.next_revision();
        registry.proxy(proxy)?.add_toxic(toxic, revision)
    }

    /// A proxy's toxic by name.
    pub async fn toxic(&self, proxy: &str, toxic: &str) -> Result<Toxic> {
        self.inner.lock().await.proxy(proxy)?.toxic(toxic)
    }

    /// Changes a toxic's toxicity or attributes; connections draw and time it afresh.
    pub async fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        update: ToxicUpdate,
    ) -> Result<Toxic> {
        let mut registry = self.inner.lock().await;
        let revision = registry.next_revision();
        let proxy = registry.proxy(proxy)?;
        let updated = proxy.toxic(toxic)?.updated(&update)?;
        proxy.replace_toxic(updated, revision)
    }

    /// Removes a toxic; held data is released at once.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<()> {
        self.inner.lock().await.proxy(proxy)?.remove_toxic(toxic)
    }

    /// A proxy's toxics, in the order they were added.
    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>> {
        Ok(self.inner.lock().await.proxy(proxy)?.toxics())
    }

    /// Removes every toxic and enables every proxy; reports the first proxy that
    /// could not listen again (the others are still enabled).
    pub async fn reset(&self) -> Result<()> {
        let mut registry = self.inner.lock().await;
        let mut first_error = None;
        for proxy in registry.proxies.values_mut() {
            proxy.clear_toxics();
            if let Err(error) = proxy.start() {
                tracing::warn!(%error, "reset could not enable a proxy");
                if first_error.is_none() {
                    first_error = Some(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// How many connections a proxy is carrying now.
    pub async fn connections(&self, proxy: &str) -> Result<usize> {
        Ok(self.inner.lock().await.proxy(proxy)?.connections())
    }

    /// Stops every proxy, cuts every connection, and forgets them all.
    pub async fn shutdown(&self) {
        let mut registry = self.inner.lock().await;
        let proxies = std::mem::take(&mut registry.proxies);
        for (_, mut proxy) in proxies {
            proxy.stop().await;
        }
    }
}
