//! The ws4redis-compatible contract shared by wsserver and webserver.
//!
//! Pure data and parsing, no I/O: query flags, facilities, audiences, identity names, the Redis
//! channel and key names (built in [`keys`] only), session records and publish requests.

pub mod audience;
pub mod facility;
pub mod flags;
pub mod identity;
pub mod keys;
pub mod name;
pub mod presence;
pub mod publish;
pub mod session;

pub use audience::{Audience, AudienceSet};
pub use facility::{Facility, FacilityError};
pub use flags::Flags;
pub use identity::Identity;
pub use keys::{ChannelName, KeyPrefix};
pub use name::{Name, NameError, SessionKey};
pub use publish::{PublishError, PublishRequest};
pub use session::{SessionRecord, SESSION_COOKIE};
