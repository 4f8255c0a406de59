//! switchboard-xdp (being written)
