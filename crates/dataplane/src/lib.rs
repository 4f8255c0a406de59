//! switchboard-dataplane (being written)
