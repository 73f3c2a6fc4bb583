//! The fleet's Lua scripts (`lua/*.lua`), compiled once per process.
//!
//! Each runs by SHA through [`redis::Script::invoke_async`], which sends `EVALSHA` and, on
//! `NOSCRIPT` (a restarted or flushed Redis), loads the script and sends it once more. Every
//! script touches the keys of one app only (one hash tag, one cluster slot). This module must
//! not decide what the scripts mean.

use std::sync::OnceLock;

use redis::Script;

pub(crate) struct Scripts {
    pub(crate) token_acquire: Script,
    pub(crate) token_publish: Script,
    pub(crate) token_release: Script,
    pub(crate) token_invalidate: Script,
    pub(crate) token_force: Script,
    pub(crate) rate: Script,
    pub(crate) pause: Script,
}

pub(crate) fn get() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        token_acquire: Script::new(include_str!("lua/token_acquire.lua")),
        token_publish: Script::new(include_str!("lua/token_publish.lua")),
        token_release: Script::new(include_str!("lua/token_release.lua")),
        token_invalidate: Script::new(include_str!("lua/token_invalidate.lua")),
        token_force: Script::new(include_str!("lua/token_force.lua")),
        rate: Script::new(include_str!("lua/rate.lua")),
        pause: Script::new(include_str!("lua/pause.lua")),
    })
}
