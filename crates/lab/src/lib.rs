//! switchboard-lab (being written)
