//! Sockets: the public listener (TLS or, when asked for, plaintext) with its connection caps,
//! the admin listener, and graceful shutdown.

mod io;
pub mod listener;
pub mod preface;
mod slots;
