//! Game invitations between players in the lobby (pure, no I/O): who invited whom, the answer,
//! and the game an accepted invitation started. Stored in Redis with a TTL (see
//! [`crate::store::Store::create_invitation`]) and sent to both players on their user channel
//! of the [`LOBBY`] facility.

use protocol::Name;
use serde::{Deserialize, Serialize};

use crate::demo::game::GameId;

/// The facility of the lobby: its presence is recorded by wsserver (`--presence lobby`), and
/// invitations reach a player on their user channel of it.
pub const LOBBY: &str = "lobby";

/// The facility of site notices, broadcast to every page.
pub const NOTICES: &str = "notices";

pub fn lobby_facility() -> protocol::Facility {
    protocol::Facility::parse(LOBBY).expect("valid facility")
}

pub fn notices_facility() -> protocol::Facility {
    protocol::Facility::parse(NOTICES).expect("valid facility")
}

/// An invitation id: 32 lowercase hex characters, like a [`GameId`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InvitationId(String);

impl InvitationId {
    pub fn random() -> InvitationId {
        InvitationId(GameId::random().as_str().to_owned())
    }

    pub fn parse(text: &str) -> Option<InvitationId> {
        GameId::parse(text).map(|id| InvitationId(id.as_str().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InvitationId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        InvitationId::parse(&value).ok_or_else(|| format!("{value:?} is not an invitation id"))
    }
}

impl From<InvitationId> for String {
    fn from(id: InvitationId) -> String {
        id.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: InvitationId,
    pub from: Name,
    pub to: Name,
    pub status: InvitationStatus,
    /// The game an accepted invitation started.
    pub game: Option<GameId>,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// Why an answer was refused; the text is shown to the player.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("this invitation is for {0}, not for you")]
    NotYours(Name),
    #[error("this invitation was already {0}")]
    AlreadyAnswered(&'static str),
}

impl Invitation {
    pub fn new(from: Name, to: Name, now_ms: u64, ttl_ms: u64) -> Invitation {
        Invitation {
            id: InvitationId::random(),
            from,
            to,
            status: InvitationStatus::Pending,
            game: None,
            created_ms: now_ms,
            expires_ms: now_ms + ttl_ms,
        }
    }

    /// Checks that `user` may answer it now.
    pub fn check_answer(&self, user: &Name) -> Result<(), AnswerError> {
        if *user != self.to {
            return Err(AnswerError::NotYours(self.to.clone()));
        }
        match self.status {
            InvitationStatus::Pending => Ok(()),
            InvitationStatus::Accepted => Err(AnswerError::AlreadyAnswered("accepted")),
            InvitationStatus::Declined => Err(AnswerError::AlreadyAnswered("declined")),
        }
    }

    pub fn is_pending(&self) -> bool {
        self.status == InvitationStatus::Pending
    }

    /// The JSON the lobby renders from: the stored fields plus `url` (the game's page, once
    /// accepted) and `expires_in` (seconds left, so that client clocks do not matter).
    pub fn view(&self, now_ms: u64) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("invitations serialise");
        value["url"] = self.game.as_ref().map(GameId::url).into();
        value["expires_in"] = (self.expires_ms.saturating_sub(now_ms) / 1000).into();
        value
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("invitations serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answering() {
        let (ann, bob) = (Name::parse("ann").unwrap(), Name::parse("bob").unwrap());
        let mut inv = Invitation::new(ann.clone(), bob.clone(), 1_000, 60_000);
        assert_eq!(inv.check_answer(&ann), Err(AnswerError::NotYours(bob.clone())));
        assert_eq!(inv.check_answer(&bob), Ok(()));
        inv.status = InvitationStatus::Declined;
        assert_eq!(inv.check_answer(&bob), Err(AnswerError::AlreadyAnswered("declined")));
        assert_eq!(AnswerError::AlreadyAnswered("declined").to_string(), "this invitation was already declined");
        let view = inv.view(31_000);
        assert_eq!(view["status"], "declined");
        assert_eq!(view["expires_in"], 30);
        assert_eq!(view["url"], serde_json::Value::Null);
        let back: Invitation = serde_json::from_str(&inv.to_json()).unwrap();
        assert_eq!(back, inv);
        assert!(InvitationId::parse(inv.id.as_str()).is_some());
        assert!(InvitationId::parse("../x").is_none());
    }
}
