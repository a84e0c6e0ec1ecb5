//! A worker's subscription table: topic → subscribed connection slots, and each connection's
//! topics so that closing it unsubscribes everything.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    members: HashSet<u32>,
}

/// The topics one connection joined on its worker (topic ids), so that closing it leaves them
/// all.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Vec<u32>);

/// Topics are interned per worker; ids are reused once a topic has no member.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    topics: slab::Slab<Topic>,
}

impl Topics {
    /// Adds connection `slot` to topic `name`; a no-op if it is a member already.
    pub(crate) fn subscribe(&mut self, name: &str, slot: u32, subs: &mut Subscriptions) {
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let name: Arc<str> = Arc::from(name);
                let id =
                    self.topics.insert(Topic { name: Arc::clone(&name), members: HashSet::new() })
                        as u32;
                self.by_name.insert(name, id);
                id
            }
        };
        if self.topics[id as usize].members.insert(slot) {
            subs.0.push(id);
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
