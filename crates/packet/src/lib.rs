//! switchboard-packet (being written)
