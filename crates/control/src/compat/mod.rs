//! Endpoints compatible with other controllers' REST APIs, so their scripts work unchanged.

pub mod c4bmv2;
pub mod p4cf;
