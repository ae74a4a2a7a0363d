//! The Redis Cluster slot of a key or channel name: CRC16 (XMODEM) of its hash tag, modulo
//! 16384, exactly as Redis computes `CLUSTER KEYSLOT` (and the slot of a shard channel).

use crate::keys::cluster_hash_tag;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The slot Redis Cluster assigns `key` (the text between the first `{` and the next `}` when
/// that is not empty, else the whole key).
pub fn cluster_slot(key: &str) -> u16 {
    crc16(cluster_hash_tag(key).as_bytes()) % SLOTS
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        assert_eq!(crc16(b"123456789"), 0x31C3, "the CRC16/XMODEM check value");
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_cluster_keyslot() {
        // Answers of `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(cluster_slot("foo"), 12182);
        assert_eq!(cluster_slot("bar"), 5061);
        assert_eq!(cluster_slot("hello"), 866);
        assert_eq!(cluster_slot("123456789"), 12739);
        assert_eq!(cluster_slot("{user1000}.following"), cluster_slot("{user1000}.followers"));
        assert_eq!(cluster_slot("{user1000}.following"), cluster_slot("user1000"));
        assert_eq!(cluster_slot("{user1000}.following"), 3443);
        assert_eq!(cluster_slot("foo{}{bar}"), 8363, "an empty tag hashes the whole key");
        assert_eq!(cluster_slot("foo{{bar}}zap"), 4015);
        assert_eq!(cluster_slot("{bar"), 4015);
        assert!(cluster_slot("\u{fffd}x") < SLOTS);
    }
}
