//! switchboard-tables (being written)
