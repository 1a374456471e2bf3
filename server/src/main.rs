//! `edeploy-server`: the provisioning server's binary. Offline commands answer the questions an
//! operator asks of a config directory (does this machine match? what does this CMDB expand to? is
//! this directory valid?) with the same code the server runs. `serve` is the provisioning server;
//! with `GATEWAY_INTERFACE` set the binary is a CGI program whatever its arguments.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod image;
mod index;
mod offline;
mod serve;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "edeploy-server",
    version,
    about = "edeploy provisioning server and its offline tools",
    long_about = "edeploy provisioning server and its offline tools.\n\n\
        Reads eDeploy's config directories unchanged: `state`, `<profile>.specs`, `<profile>.cmdb`, \
        `<profile>.configure`, `edeploy.conf`.\n\n\
        Exit status of `match`: 0 matched, 1 no match, 2 error. Of `check`: 0 clean, 1 problems \
        found, 2 could not check."
)]
struct Cli {
    /// More logging (repeat for more); EDEPLOY_LOG=debug also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Match a hardware list against one specs file, or run the whole selection of a config
    /// directory (dry run: nothing is written).
    Match(offline::MatchArgs),
    /// Expand a CMDB file (a list, or `generate({...})`) and print the entries.
    Generate(offline::GenerateArgs),
    /// Parse every file of a config directory and report all problems at once.
    Check(offline::CheckArgs),
    /// Publish INSTALLDIR/<version>/<role>/ trees into STOREDIR (manifests, blobs, packs) and
    /// write the upgrade lists from METADATADIR, for `serve` or any static web server.
    Index(index::IndexArgs),
    /// Write the role image <role>-<version>.edeploy (tar + zstd, xattrs kept) of
    /// INSTALLDIR/VERSION/ROLE, by default into STOREDIR/images/ (served at /trees/images/).
    Image(image::ImageArgs),
    /// Run the provisioning server (embedded HTTP). With no --config, serves a copy of the
    /// repository's specs/ from ./var/edeploy on 127.0.0.1:8080.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    if std::env::var_os("GATEWAY_INTERFACE").is_some() {
        // A web server runs us as CGI (`cgi-bin/upload.py`): argv means nothing then. Logs go to
        // stderr, which the web server keeps in its error log.
        edeploy_logs::init("warn");
        return match edeploy_server::cgi::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edeploy-server: cgi: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let level = edeploy_logs::level(cli.verbose);
    let result = match cli.command {
        Command::Serve(a) => {
            // SIGPIPE stays ignored (Rust's default): a client hanging up must never kill the
            // server. A server says what it does by default, so at least `info`.
            edeploy_logs::init(if cli.verbose == 0 { "info" } else { level });
            serve::run(a)
        }
        offline_command => {
            edeploy_logs::init(level);
            // The offline commands are filters: `edeploy-server generate x.cmdb | head` must end
            // quietly.
            reset_sigpipe();
            match offline_command {
                Command::Match(a) => offline::run_match(a),
                Command::Generate(a) => offline::run_generate(a),
                Command::Check(a) => offline::run_check(a),
                Command::Index(a) => index::run(a),
                Command::Image(a) => image::run(a),
                Command::Serve(_) => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edeploy-server: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn reset_sigpipe() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
