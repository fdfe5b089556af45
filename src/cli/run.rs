//! `sendgate run [--config PATH]`: the worker (SPEC §8).

use super::load_config;
use std::path::{Path, PathBuf};

pub fn run(config: Option<&Path>) -> i32 {
    let chosen: Option<PathBuf> = config
        .map(Path::to_path_buf)
        .or_else(|| Some(PathBuf::from(crate::config::DEFAULT_CONFIG_FILE)).filter(|p| p.exists()));
    match load_config(config) {
        Ok(c) => crate::daemon::run(c, chosen),
        Err(code) => code,
    }
}
