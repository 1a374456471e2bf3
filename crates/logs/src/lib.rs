//! Logging set-up shared by the edeploy binaries (`edeploy`, `edeploy-server`): `tracing` events
//! to stderr, the level from the number of `-v` flags unless `EDEPLOY_LOG` (a tracing filter such
//! as `debug` or `edeploy_server=trace`) says otherwise.

/// The level `-v` given `verbose` times asks for: warnings only by default.
pub fn level(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the stderr subscriber with `default` as the filter when `EDEPLOY_LOG` is unset or
/// invalid. Once per process (a second call panics, as `tracing` does).
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDEPLOY_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs captured by a web server or a test stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_v_more_detail() {
        let levels: Vec<&str> = (0..5).map(level).collect();
        assert_eq!(levels, ["warn", "info", "debug", "trace", "trace"]);
    }
}
