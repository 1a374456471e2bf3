//! Running the commands of a deploy run. Every command goes through here so that its output is
//! logged the way the original agent did (failing output always, successful output with
//! `--verbose`) and a failure carries the command line and its output.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("Command failed ({status}): {cmd}\n{output}")]
    Failed {
        cmd: String,
        status: String,
        output: String,
    },
    #[error("Cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
}

/// What a finished command said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub success: bool,
    /// e.g. `exit status: 3`.
    pub status: String,
    /// stdout then stderr.
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Runner {
    pub verbose: bool,
    /// Prepended to `PATH` (tests put their fake `yum` here); `None` keeps the agent's `PATH`.
    pub path: Option<String>,
    pub cwd: Option<PathBuf>,
}

impl Runner {
    fn command(&self, argv: &[String]) -> Command {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }

    /// Runs and reports, whatever the exit status (queries whose failure means "no").
    pub fn probe(&self, argv: &[String]) -> Result<Output, ExecError> {
        let line = argv.join(" ");
        tracing::info!("{line}");
        let out = self
            .command(argv)
            .output()
            .map_err(|source| ExecError::Spawn {
                cmd: line.clone(),
                source,
            })?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if self.verbose && !text.is_empty() {
            tracing::info!("{}", text.trim_end());
        } else {
            tracing::debug!("{}", text.trim_end());
        }
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            text,
        })
    }

    /// Runs; a non-zero exit is an error carrying the output (which is logged).
    pub fn run(&self, argv: &[String]) -> Result<Output, ExecError> {
        let out = self.probe(argv)?;
        if out.success {
            return Ok(out);
        }
        let cmd = argv.join(" ");
        tracing::error!("{cmd} failed:\n{}", out.text.trim_end());
        Err(ExecError::Failed {
            cmd,
            status: out.status,
            output: out.text,
        })
    }
}

/// `["a", "b"]` → argv.
pub fn argv<I, S>(words: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    words.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_output_and_failure() {
        let r = Runner::default();
        let out = r
            .run(&argv(["sh", "-c", "echo out; echo err >&2"]))
            .unwrap();
        assert_eq!(out.text, "out\nerr\n");
        let err = r.run(&argv(["sh", "-c", "echo boom; exit 3"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Command failed (exit status: 3): sh -c echo boom; exit 3\nboom\n"
        );
        assert!(!r.probe(&argv(["false"])).unwrap().success);
        assert!(matches!(
            r.run(&argv(["/nonexistent/x"])),
            Err(ExecError::Spawn { .. })
        ));
    }
}
