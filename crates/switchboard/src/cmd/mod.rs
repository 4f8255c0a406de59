pub mod bench;
pub mod ctl;
pub mod demo;
pub mod demo_migration;
pub mod lab;
pub mod migrate;
pub mod plot;
pub mod run;
