//! Which master owns each Redis Cluster slot, as `CLUSTER SHARDS` last described it: the
//! sharded subscriber asks it where each channel's `SSUBSCRIBE` goes.

use std::collections::HashSet;

use protocol::cluster_slot::{cluster_slot, SLOTS};
use service::redis_cluster::Shard;
use service::redis_sentinel::HostPort;

/// Slot → master. Slots whose shard has no healthy master (a failover under way) or that no
/// shard claims have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    masters: Vec<HostPort>,
    /// Index into `masters` per slot; `u16::MAX` for none.
    owners: Vec<u16>,
}

const NONE: u16 = u16::MAX;

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap { masters: Vec::new(), owners: vec![NONE; usize::from(SLOTS)] }
    }
}

impl SlotMap {
    pub fn from_shards(shards: &[Shard]) -> SlotMap {
        let mut map = SlotMap::default();
        for shard in shards {
            let Some(master) = &shard.master else { continue };
            let index = match map.masters.iter().position(|m| m == master) {
                Some(i) => i,
                None => {
                    map.masters.push(master.clone());
                    map.masters.len() - 1
                }
            } as u16;
            for &(start, end) in &shard.slots {
                for slot in start..=end.min(SLOTS - 1) {
                    map.owners[usize::from(slot)] = index;
                }
            }
        }
        map
    }

    /// The master owning `channel`'s slot, if it has one now.
    pub fn master_of(&self, channel: &str) -> Option<&HostPort> {
        match self.owners[usize::from(cluster_slot(channel))] {
            NONE => None,
            i => self.masters.get(usize::from(i)),
        }
    }

    /// Every master owning at least one slot.
    pub fn masters(&self) -> HashSet<HostPort> {
        let used: HashSet<u16> = self.owners.iter().copied().filter(|&i| i != NONE).collect();
        used.into_iter().filter_map(|i| self.masters.get(usize::from(i)).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_go_to_the_master_of_their_slot() {
        let a = HostPort::new("127.0.0.1", 7000);
        let b = HostPort::new("127.0.0.1", 7001);
        let shards = vec![
            Shard { slots: vec![(0, 8191)], master: Some(a.clone()), nodes: vec![a.clone()] },
            Shard { slots: vec![(8192, 12000)], master: Some(b.clone()), nodes: vec![b.clone()] },
            Shard { slots: vec![(12001, 16383)], master: None, nodes: Vec::new() },
        ];
        let map = SlotMap::from_shards(&shards);
        // CLUSTER KEYSLOT: hello 866, bar 5061, foo 12182, {user1000}.following 3443.
        assert_eq!(map.master_of("hello"), Some(&a));
        assert_eq!(map.master_of("bar"), Some(&a));
        assert_eq!(map.master_of("foo"), None, "its shard has no master now");
        assert_eq!(map.master_of("{bar}anything"), Some(&a), "hash tags decide");
        assert_eq!(map.masters(), HashSet::from([a, b]));
        assert_eq!(SlotMap::default().master_of("hello"), None);
    }
}
