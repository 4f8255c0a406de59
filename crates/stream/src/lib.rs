//! The live-migration workload: a stream server that can hand its established TCP connections
//! to a new process in another namespace, and the wire format its clients speak.

pub mod protocol;
