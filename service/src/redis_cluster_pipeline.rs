//! Pipelines on a Redis Cluster. redis-rs' cluster connection sends a pipeline to one node and
//! refuses one whose commands name keys of different slots, while Crier's pipelines (a login's
//! session record and the user's session index, a publish to several channels, a presence
//! refresh of several facilities) do. A non-transaction pipeline is therefore split by slot and
//! each part sent in turn (in the order of each slot's first command), its answers put back in
//! the original order. Transactions go through unchanged: they must be single-slot anyway.

use redis::aio::ConnectionLike;
use redis::{Arg, Cmd, Pipeline, RedisResult, Value};

/// The slot of the first key `cmd` names, or `None` for a keyless command (PING, SCRIPT …),
/// which is sent on its own.
pub fn command_slot(cmd: &Cmd) -> Option<u16> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if keys == 0 {
                return None;
            }
            args.get(3)?
        }
        b"PING" | b"SCRIPT" | b"INFO" | b"CLUSTER" | b"CLIENT" | b"CONFIG" | b"FLUSHALL" | b"FLUSHDB" => {
            return None;
        }
        _ => args.get(1)?,
    };
    Some(protocol::cluster_slot::cluster_slot(&String::from_utf8_lossy(key)))
}

/// Groups the indexes of `commands` by slot, each group in command order, the groups in the order
/// of their first command; keyless commands form groups of their own.
pub fn groups(slots: &[Option<u16>]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Option<u16>, Vec<usize>)> = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        match slot.and_then(|s| groups.iter_mut().find(|(g, _)| *g == Some(s))) {
            Some((_, members)) => members.push(i),
            None => groups.push((*slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Runs all of `pipeline` (a non-transaction) on `conn`, one part per slot.
pub async fn run_split<C: ConnectionLike + Send>(conn: &mut C, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let slots: Vec<Option<u16>> = commands.iter().map(|c| command_slot(c)).collect();
    let parts = groups(&slots);
    if parts.len() <= 1 {
        return conn.req_packed_commands(pipeline, 0, commands.len()).await;
    }
    let mut answers: Vec<Option<Value>> = vec![None; commands.len()];
    for part in parts {
        let mut sub = redis::pipe();
        for &i in &part {
            sub.add_command(commands[i].clone());
        }
        let values = conn.req_packed_commands(&sub, 0, part.len()).await?;
        if values.len() != part.len() {
            return Err(std::io::Error::other(format!("{} answers to {} commands", values.len(), part.len())).into());
        }
        for (i, value) in part.into_iter().zip(values) {
            answers[i] = Some(value);
        }
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or(Value::Nil)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::cluster_slot::cluster_slot;

    #[test]
    fn the_first_key_decides_and_scripts_name_theirs_after_numkeys() {
        assert_eq!(command_slot(redis::cmd("SET").arg("foo").arg("v")), Some(12182));
        assert_eq!(command_slot(redis::cmd("SPUBLISH").arg("bar").arg("m")), Some(5061));
        assert_eq!(command_slot(redis::cmd("EVALSHA").arg("abc").arg(2).arg("hello").arg("x")), Some(866));
        assert_eq!(command_slot(redis::cmd("EVAL").arg("return 1").arg(0).arg("a")), None);
        assert_eq!(command_slot(&redis::cmd("PING")), None);
        assert_eq!(command_slot(redis::cmd("SCRIPT").arg("LOAD").arg("x")), None);
    }

    #[test]
    fn commands_are_grouped_by_slot_in_first_seen_order() {
        let (a, b) = (Some(cluster_slot("a")), Some(cluster_slot("b")));
        assert_eq!(groups(&[a, b, a, None, b, None]), [vec![0, 2], vec![1, 4], vec![3], vec![5]]);
        assert_eq!(groups(&[a, a]), [vec![0, 1]]);
        assert!(groups(&[]).is_empty());
    }
}
