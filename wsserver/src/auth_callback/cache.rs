//! The auth callback's answer cache: bounded, each answer kept for the cache TTL, and when full
//! the least recently used answer goes first. A flood of requests with fresh random cookies
//! therefore pushes out only other flood entries while a steady client's answer, used again and
//! again, stays.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Answers keyed by `K`, at most `capacity` of them.
pub struct AnswerCache<K, V> {
    capacity: usize,
    ttl: Duration,
    /// The answer, when it was fetched, and the stamp of its latest use.
    entries: HashMap<K, (Instant, V, u64)>,
    /// Uses in order, oldest first; a use whose stamp no longer matches its entry is stale.
    uses: VecDeque<(K, u64)>,
    next_stamp: u64,
}

impl<K: Clone + Eq + Hash, V: Clone> AnswerCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        AnswerCache { capacity: capacity.max(1), ttl, entries: HashMap::new(), uses: VecDeque::new(), next_stamp: 0 }
    }

    /// Answers cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The answer for `key` if it is younger than the TTL; marks it used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let stamp = self.stamp();
        let (at, answer, used) = self.entries.get_mut(key)?;
        if at.elapsed() >= self.ttl {
            return None;
        }
        *used = stamp;
        let answer = answer.clone();
        self.uses.push_back((key.clone(), stamp));
        self.compact();
        Some(answer)
    }

    /// Stores `answer` for `key`, evicting expired answers and then the least recently used
    /// ones to stay within the capacity.
    pub fn insert(&mut self, key: K, answer: V) {
        let stamp = self.stamp();
        self.entries.insert(key.clone(), (Instant::now(), answer, stamp));
        self.uses.push_back((key, stamp));
        if self.entries.len() > self.capacity {
            let ttl = self.ttl;
            self.entries.retain(|_, (at, _, _)| at.elapsed() < ttl);
        }
        while self.entries.len() > self.capacity {
            let Some((oldest, stamp)) = self.uses.pop_front() else { break };
            if self.entries.get(&oldest).is_some_and(|(_, _, used)| *used == stamp) {
                self.entries.remove(&oldest);
            }
        }
        self.compact();
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    /// Drops stale uses once they outnumber the entries, so the queue stays within twice the
    /// capacity.
    fn compact(&mut self) {
        if self.uses.len() > 2 * self.capacity.max(self.entries.len()) {
            let entries = &self.entries;
            self.uses.retain(|(key, stamp)| entries.get(key).is_some_and(|(_, _, used)| used == stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn size_stays_bounded_under_a_flood() {
        let mut cache = AnswerCache::new(100, HOUR);
        for i in 0..10_000 {
            cache.insert(format!("random-{i}"), i);
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        assert!(cache.uses.len() <= 200, "{}", cache.uses.len());
        // The newest stay, the oldest went first.
        assert_eq!(cache.get(&"random-9999".to_owned()), Some(9999));
        assert_eq!(cache.get(&"random-9900".to_owned()), Some(9900));
        assert_eq!(cache.get(&"random-9899".to_owned()), None);
    }

    #[test]
    fn a_steady_client_keeps_its_answer_through_a_flood_of_random_cookies() {
        let mut cache = AnswerCache::new(100, HOUR);
        cache.insert("steady".to_owned(), 0);
        for i in 0..10_000 {
            cache.insert(format!("random-{i}"), i);
            // The steady client reconnects now and then (every 50 flood requests here).
            if i % 50 == 0 {
                assert_eq!(cache.get(&"steady".to_owned()), Some(0), "evicted after {i} flood entries");
            }
        }
        assert_eq!(cache.get(&"steady".to_owned()), Some(0));
        assert_eq!(cache.len(), 100);
    }

    #[test]
    fn answers_older_than_the_ttl_are_not_used() {
        let mut cache = AnswerCache::new(2, Duration::ZERO);
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), None);
        // When the cache is full, expired answers go first (here: all of them).
        cache.insert("b", 2);
        cache.insert("c", 3);
        assert_eq!(cache.len(), 0);
    }
}
