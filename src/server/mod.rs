//! Sockets: the public listener (TLS or, when asked for, plaintext), the admin listener, and
//! graceful shutdown.

pub mod listener;
pub mod preface;
