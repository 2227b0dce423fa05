//! Control-plane protocol shared by `ccod` and `ccoctl`.
//!
//! Every wire fact lives here once: the message types, the two version numbers, the frame
//! size limit, the framing itself and the rule that places the socket. Frames are single
//! lines of JSON terminated by `\n`. Each request carries [`PROTOCOL_VERSION`] and an id,
//! and the daemon responds to each one, a malformed one included, with a [`Response`].
//!
//! This crate depends on neither actix nor anything else of the daemon, so `ccoctl` builds
//! without the server stack.

pub mod calendar;
mod env_hint;
mod framing;
mod messages;
mod socket;

pub use env_hint::env_source_hint;
pub use framing::{decode_request, encode_frame, FrameError, LineFramer};
pub use messages::*;
pub use socket::{default_socket_path, socket_path_from_env, SOCKET_ENV, SOCKET_FILE_NAME};

/// Version of the wire format. Bumped only when an older peer could not read the new frames.
pub const PROTOCOL_VERSION: u32 = 1;

/// Version of the crates that built this peer, sent for diagnostics only.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest frame, newline included, that either side accepts. Larger frames are rejected
/// before they are buffered whole.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
