//! The four ws4redis audiences and small sets of them.

use std::fmt;

/// Who a channel addresses. The order of [`Audience::ALL`] is ws4redis' subscription order
/// (broadcast, groups, user, session), which is also the order of the replay on connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Audience {
    Broadcast,
    Group,
    User,
    Session,
}

impl Audience {
    pub const ALL: [Audience; 4] = [Audience::Broadcast, Audience::Group, Audience::User, Audience::Session];

    /// The word used in channel names and in query flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Broadcast => "broadcast",
            Audience::Group => "group",
            Audience::User => "user",
            Audience::Session => "session",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Audience::Broadcast => 1,
            Audience::Group => 2,
            Audience::User => 4,
            Audience::Session => 8,
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of audiences, stored as bits; iteration follows [`Audience::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AudienceSet(u8);

impl AudienceSet {
    pub const EMPTY: AudienceSet = AudienceSet(0);

    pub fn insert(&mut self, audience: Audience) {
        self.0 |= audience.bit();
    }

    pub fn remove(&mut self, audience: Audience) {
        self.0 &= !audience.bit();
    }

    pub fn contains(self, audience: Audience) -> bool {
        self.0 & audience.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Audience> {
        Audience::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Audience> for AudienceSet {
    fn from_iter<I: IntoIterator<Item = Audience>>(iter: I) -> Self {
        let mut set = AudienceSet::EMPTY;
        for a in iter {
            set.insert(a);
        }
        set
    }
}
