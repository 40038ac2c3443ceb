//! `licagent test-mode start|stop|status`: everything unlocked for a few
//! hours (8 at most), for the lab.

use super::{block_on, client, print_json, CliError};
use crate::api::types::Status;
use crate::config::Config;

pub fn run(config: &Config, action: &str, json: bool) -> Result<(), CliError> {
    let c = client(config);
    let st: Status = match action {
        "start" => block_on(c.post("/v1/test-mode/start", Vec::new(), "application/json"))??,
        "stop" => block_on(c.post("/v1/test-mode/stop", Vec::new(), "application/json"))??,
        _ => block_on(c.get("/v1/status"))??,
    };
    if json {
        return print_json(&st);
    }
    match &st.test_mode {
        Some(t) => println!(
            "Test mode is on until {} ({} left): everything unlocked, no seat limits.",
            t.ends_at,
            humantime::format_duration(std::time::Duration::from_secs(t.left_secs.max(0) as u64))
        ),
        None => println!(
            "Test mode is off; the license state is {}.",
            crate::daemon::agent::state_word(st.state)
        ),
    }
    Ok(())
}
