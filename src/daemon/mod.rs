//! The daemon runtime: start-up, sd_notify, signals, reload.
