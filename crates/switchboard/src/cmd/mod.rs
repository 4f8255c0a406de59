pub mod bench;
pub mod ctl;
pub mod demo;
pub mod lab;
pub mod run;
