//! Subscriptions: each worker's table (topic → subscribed connection slots, and each
//! connection's topics so that closing it unsubscribes everything), and the server-wide
//! [`Registry`] of how many subscribers each topic has on each worker, which publishers on any
//! thread read to reach only the workers that have some.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, PoisonError, RwLock};

use bidir_protocol::Message;

/// A publish for the other nodes (`Shared::forward`).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Forward<'a> {
    /// A WebSocket message, for subscribers of the engine's topic.
    Message(Message<'a>),
    /// An rpc event's data, one JSON value (`json`) or one MessagePack value, encoded by each
    /// node for its subscribers.
    Rpc { json: bool, data: &'a [u8] },
}

/// Subscribers of topics per worker, for publishers on any thread.
///
/// A topic is listed while some worker has a subscriber. The lock is taken for writing only
/// when a topic gains its first subscriber on a worker or loses its last one there; other
/// subscribes and unsubscribes move an atomic count, and a publish takes the read lock for one
/// lookup.
#[derive(Debug)]
pub(crate) struct Registry {
    topics: RwLock<HashMap<Arc<str>, Arc<Counts>>>,
    workers: usize,
    /// Told when a topic is listed (`true`) or unlisted, in that order: the bridge to other
    /// nodes, which subscribes to the topics this node has subscribers of.
    watch: Option<Sender<(Arc<str>, bool)>>,
}

/// Subscribers of one topic, per worker.
#[derive(Debug)]
pub(crate) struct Counts(Box<[AtomicU32]>);

impl Counts {
    /// The subscribers on every worker.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn total(&self) -> usize {
        self.workers().map(|(_, n)| n).sum()
    }

    /// `(worker, subscribers)` for every worker with subscribers.
    pub(crate) fn workers(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.0.iter().enumerate().filter_map(|(worker, count)| {
            let count = count.load(Ordering::Acquire) as usize;
            (count > 0).then_some((worker, count))
        })
    }
}

impl Registry {
    pub(crate) fn new(workers: usize, watch: Option<Sender<(Arc<str>, bool)>>) -> Self {
        Self { topics: RwLock::default(), workers, watch }
    }

    /// The counts of topic `name`, if some worker has subscribers.
    pub(crate) fn counts(&self, name: &str) -> Option<Arc<Counts>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics.get(name).cloned()
    }

    /// Counts a subscriber of `name` on `worker` ahead of the worker, for a subscribe from
    /// another thread: a publish made after it then wakes that worker, whose mailbox applies
    /// the subscribe first. The worker takes the reservation over
    /// ([`Topics::subscribe_reserved`]) or gives it back ([`Registry::release`]).
    pub(crate) fn reserve(&self, name: &Arc<str>, worker: usize) -> Arc<Counts> {
        self.join(name, worker)
    }

    /// Gives back a reservation the worker did not use (the connection was gone).
    pub(crate) fn release(&self, name: &str, worker: usize, counts: &Counts) {
        self.leave(name, worker, counts);
    }

    /// `worker`'s first subscriber of `name`.
    fn join(&self, name: &Arc<str>, worker: usize) -> Arc<Counts> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let counts = topics.entry(Arc::clone(name)).or_insert_with(|| {
            if let Some(watch) = &self.watch {
                let _ = watch.send((Arc::clone(name), true));
            }
            Arc::new(Counts((0..self.workers).map(|_| AtomicU32::new(0)).collect()))
        });
        counts.0[worker].fetch_add(1, Ordering::Release);
        Arc::clone(counts)
    }

    /// `worker`'s last subscriber of `name` left: the topic is unlisted once no worker has one.
    fn leave(&self, name: &str, worker: usize, counts: &Counts) {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        counts.0[worker].fetch_sub(1, Ordering::Release);
        if counts.workers().next().is_none()
            && let Some((name, _)) = topics.remove_entry(name)
            && let Some(watch) = &self.watch
        {
            let _ = watch.send((name, false));
        }
    }
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    members: HashSet<u32>,
    /// This topic's entry in the registry.
    counts: Arc<Counts>,
}

/// The topics one connection joined on its worker (topic ids), so that closing it leaves them
/// all.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Vec<u32>);

/// Topics are interned per worker; ids are reused once a topic has no member.
#[derive(Debug)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    topics: slab::Slab<Topic>,
    registry: Arc<Registry>,
    /// This worker's index in the registry's counts.
    worker: usize,
}

impl Topics {
    pub(crate) fn new(registry: Arc<Registry>, worker: usize) -> Self {
        Self { by_name: HashMap::new(), topics: slab::Slab::new(), registry, worker }
    }

    /// Adds connection `slot` to topic `name`; a no-op if it is a member already.
    pub(crate) fn subscribe(&mut self, name: &str, slot: u32, subs: &mut Subscriptions) {
        self.join(name, slot, subs, None);
    }

    /// [`Topics::subscribe`] with the subscriber counted already ([`Registry::reserve`]); the
    /// reservation is given back if the connection is a member already.
    pub(crate) fn subscribe_reserved(
        &mut self,
        name: &str,
        slot: u32,
        subs: &mut Subscriptions,
        reserved: Arc<Counts>,
    ) {
        self.join(name, slot, subs, Some(reserved));
    }

    fn join(
        &mut self,
        name: &str,
        slot: u32,
        subs: &mut Subscriptions,
        reserved: Option<Arc<Counts>>,
    ) {
        let Some(&id) = self.by_name.get(name) else {
            let name: Arc<str> = Arc::from(name);
            let counts = reserved.unwrap_or_else(|| self.registry.join(&name, self.worker));
            let members = HashSet::from([slot]);
            let id = self.topics.insert(Topic { name: Arc::clone(&name), members, counts });
            self.by_name.insert(name, id as u32);
            subs.0.push(id as u32);
            return;
        };
        // The topic has members here, so its registry entry is the reservation's, and it
        // stays listed whatever the counts below do.
        let topic = &mut self.topics[id as usize];
        let count = &topic.counts.0[self.worker];
        if topic.members.insert(slot) {
            if reserved.is_none() {
                count.fetch_add(1, Ordering::Release);
            }
            subs.0.push(id);
        } else if reserved.is_some() {
            count.fetch_sub(1, Ordering::Release);
        }
    }

    /// Removes connection `slot` from topic `name`; returns whether it was a member.
    pub(crate) fn unsubscribe(&mut self, name: &str, slot: u32, subs: &mut Subscriptions) -> bool {
        let Some(&id) = self.by_name.get(name) else { return false };
        let Some(at) = subs.0.iter().position(|&t| t == id) else { return false };
        subs.0.swap_remove(at);
        self.leave(id, slot);
        true
    }

    pub(crate) fn is_subscribed(&self, name: &str, subs: &Subscriptions) -> bool {
        self.by_name.get(name).is_some_and(|id| subs.0.contains(id))
    }

    /// Removes connection `slot` from every topic it joined.
    pub(crate) fn unsubscribe_all(&mut self, slot: u32, subs: &mut Subscriptions) {
        for id in std::mem::take(&mut subs.0) {
            self.leave(id, slot);
        }
    }

    fn leave(&mut self, id: u32, slot: u32) {
        let topic = &mut self.topics[id as usize];
        topic.members.remove(&slot);
        if topic.members.is_empty() {
            let topic = self.topics.remove(id as usize);
            self.by_name.remove(&topic.name);
            self.registry.leave(&topic.name, self.worker, &topic.counts);
        } else {
            topic.counts.0[self.worker].fetch_sub(1, Ordering::Release);
        }
    }

    /// The slots subscribed to `name`.
    pub(crate) fn members(&self, name: &str) -> impl Iterator<Item = usize> + '_ {
        self.by_name
            .get(name)
            .into_iter()
            .flat_map(|&id| self.topics[id as usize].members.iter().map(|&s| s as usize))
    }

    pub(crate) fn count(&self, name: &str) -> usize {
        self.by_name.get(name).map_or(0, |&id| self.topics[id as usize].members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(registry: &Registry, name: &str) -> Vec<(usize, usize)> {
        registry.counts(name).map(|c| c.workers().collect()).unwrap_or_default()
    }

    #[test]
    fn the_registry_counts_subscribers_per_worker_and_unlists_empty_topics() {
        let registry = Arc::new(Registry::new(2, None));
        let mut w0 = Topics::new(Arc::clone(&registry), 0);
        let mut w1 = Topics::new(Arc::clone(&registry), 1);
        let (mut a, mut b, mut c) = Default::default();
        w0.subscribe("t", 1, &mut a);
        w1.subscribe("t", 2, &mut b);
        w1.subscribe("t", 3, &mut c);
        w1.subscribe("t", 3, &mut c);
        assert_eq!(counts(&registry, "t"), [(0, 1), (1, 2)]);
        w1.unsubscribe_all(2, &mut b);
        assert_eq!(counts(&registry, "t"), [(0, 1), (1, 1)]);
        assert!(w1.unsubscribe("t", 3, &mut c));
        assert_eq!(counts(&registry, "t"), [(0, 1)]);
        w0.unsubscribe_all(1, &mut a);
        assert!(registry.counts("t").is_none(), "a topic nobody has is unlisted");
    }

    #[test]
    fn a_reservation_is_taken_over_or_given_back() {
        let registry = Arc::new(Registry::new(2, None));
        let mut w1 = Topics::new(Arc::clone(&registry), 1);
        let name: Arc<str> = Arc::from("t");
        // Reserved before the worker applies it: publishers see the worker at once.
        let reserved = registry.reserve(&name, 1);
        assert_eq!(counts(&registry, "t"), [(1, 1)]);
        let mut subs = Subscriptions::default();
        w1.subscribe_reserved("t", 7, &mut subs, reserved);
        assert_eq!(counts(&registry, "t"), [(1, 1)], "taken over, not counted twice");
        // A second reservation for a member: given back by the worker.
        let again = registry.reserve(&name, 1);
        w1.subscribe_reserved("t", 7, &mut subs, again);
        assert_eq!(counts(&registry, "t"), [(1, 1)]);
        // One for a connection that is gone: released.
        let gone = registry.reserve(&Arc::from("u"), 0);
        registry.release("u", 0, &gone);
        assert!(registry.counts("u").is_none());
        assert!(w1.unsubscribe("t", 7, &mut subs));
        assert!(registry.counts("t").is_none());
    }
}
