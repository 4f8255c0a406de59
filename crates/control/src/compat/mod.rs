//! Endpoints compatible with other controllers' REST APIs, so their scripts work unchanged.

pub mod p4cf;
