//! Access rules, in the spirit of ws4redis' WS4REDIS_ALLOWED_CHANNELS: which query flags an
//! anonymous and an authenticated client may use. A refused flag answers 403 before the upgrade.

use hyper::StatusCode;
use protocol::flags::Flag;
use protocol::{Flags, Identity};

use crate::handshake::Refused;
use crate::metrics::Refusal;

/// The allowed flags of each kind of client.
#[derive(Debug, Clone)]
pub struct AccessRules {
    pub anonymous: Flags,
    pub authenticated: Flags,
}

impl AccessRules {
    /// Parses the comma-separated flag lists of the configuration.
    pub fn parse(anonymous: &[String], authenticated: &[String]) -> Result<AccessRules, String> {
        Ok(AccessRules { anonymous: parse_list(anonymous)?, authenticated: parse_list(authenticated)? })
    }

    /// Refuses the first requested flag the client may not use.
    pub fn check(&self, requested: Flags, identity: &Identity) -> Result<(), Refused> {
        let (allowed, who) = if identity.is_authenticated() {
            (self.authenticated, "authenticated")
        } else {
            (self.anonymous, "anonymous")
        };
        for flag in requested.iter() {
            if allowed.iter().all(|a| a != flag) {
                return Err(Refused::new(
                    StatusCode::FORBIDDEN,
                    Refusal::Forbidden,
                    format!("{} is not allowed for {who} clients", flag.name()),
                ));
            }
        }
        Ok(())
    }
}

fn parse_list(items: &[String]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        if item == "*" || item == "all" {
            for f in all_flags() {
                flags.insert(f);
            }
            continue;
        }
        let flag = Flag::parse(item)
            .ok_or_else(|| format!("{item:?} is not a flag (like subscribe-user, publish-broadcast, echo)"))?;
        flags.insert(flag);
    }
    Ok(flags)
}

fn all_flags() -> impl Iterator<Item = Flag> {
    protocol::Audience::ALL.into_iter().flat_map(|a| [Flag::Subscribe(a), Flag::Publish(a)]).chain([Flag::Echo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Name;

    #[test]
    fn anonymous_publish_refused_by_default_rules() {
        let rules = AccessRules::parse(
            &["subscribe-broadcast".into(), "subscribe-session".into(), "echo".into()],
            &["*".into()],
        )
        .unwrap();
        let anon = Identity::anonymous(None);
        let user = Identity { user: Some(Name::parse("ann").unwrap()), ..Identity::default() };
        let publish = Flags::from_query("subscribe-broadcast&publish-broadcast");
        let err = rules.check(publish, &anon).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.reason.contains("publish-broadcast"), "{}", err.reason);
        assert!(rules.check(publish, &user).is_ok());
        assert!(rules.check(Flags::from_query("subscribe-broadcast&echo"), &anon).is_ok());
        assert!(AccessRules::parse(&["subscribe-everything".into()], &[]).is_err());
    }
}
