//! switchboard-control (being written)
