//! Sockets: the public listener (TLS or, when asked for, plaintext) with its connection caps and
//! idle timeouts, the admin listener (plaintext or TLS), and graceful shutdown.

mod activity;
mod io;
pub mod listener;
pub mod preface;
mod slots;
