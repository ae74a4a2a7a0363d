//! The ws4redis-compatible contract shared by wsserver and webserver.
//!
//! Pure data and parsing, no I/O: query flags, facilities, audiences, identity names, the Redis
//! channel and key names (built in [`keys`] only), session records and publish requests, and
//! recovery's pieces: history settings, positions, the `recover` query value, the positioned
//! pub/sub payload and the JSON objects opted-in sockets receive.

pub mod audience;
pub mod cluster_slot;
pub mod facility;
pub mod flags;
pub mod history;
pub mod identity;
pub mod keys;
pub mod name;
pub mod position;
pub mod positioned;
pub mod presence;
pub mod publish;
pub mod recover;
pub mod recovery_frames;
pub mod session;

pub use audience::{Audience, AudienceSet};
pub use facility::{Facility, FacilityError};
pub use flags::Flags;
pub use history::{HistoryError, HistoryFacilities, HistorySettings};
pub use identity::Identity;
pub use keys::{ChannelName, KeyPrefix};
pub use name::{Name, NameError, SessionKey};
pub use position::{Epoch, Position};
pub use publish::{PublishError, PublishRequest};
pub use recover::Recover;
pub use recovery_frames::{ChannelAudience, GapReason, Status};
pub use session::{SessionRecord, SESSION_COOKIE};
