//! `gantry remote URL …`: control a Moonraker, OctoPrint or PrusaLink printer from the command
//! line — probe, status, G-code, upload, print, pause, resume, cancel, files, history, webcams,
//! and OctoPrint's application-key request. A thin adapter over `gantry_core::remote`.
//!
//! Credentials come from `--api-key` / `--user` + `--password`, or from the environment
//! (`GANTRY_API_KEY`, `GANTRY_PASSWORD`) so they stay out of shell history and `ps`. They are
//! never printed.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use gantry_core::model::{BackendKind, PrinterBackend, PrinterEvent};
use gantry_core::remote::{self, Credentials, RemoteOptions, Secret, Url};

/// Arguments of `gantry remote`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The printer's address: a URL (`http://octopi.local`) or HOST[:PORT].
    pub url: String,
    /// An API key (Moonraker, an OctoPrint application key, PrusaLink); also GANTRY_API_KEY.
    #[arg(long, env = "GANTRY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A user to log in as (Moonraker's JWT login; PrusaLink's `maker`).
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// The user's password; also GANTRY_PASSWORD.
    #[arg(long, env = "GANTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Which API it is; without it, Gantry probes.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Seconds to wait for any one answer.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: RemoteCommand,
}

/// The API kinds a user can name.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Moonraker.
    Moonraker,
    /// OctoPrint.
    Octoprint,
    /// PrusaLink.
    Prusalink,
}

/// `gantry remote URL` subcommands.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Say which printer API answers at the address, or why none does.
    Probe,
    /// The printer's state, job, temperatures and position.
    Status,
    /// Run G-code (one or more lines) and print the printer's answers.
    Gcode {
        /// The G-code, such as "G28" or "M104 S200".
        script: String,
    },
    /// Upload a G-code file (to the G-code root).
    Upload {
        /// The local file.
        file: PathBuf,
        /// The name on the printer (default: the file's name).
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
        /// Start printing it after the upload.
        #[arg(long)]
        print: bool,
    },
    /// Print a file: a local file is uploaded and started; otherwise FILE is a path on the
    /// printer.
    Print {
        /// A local G-code file, or a file already on the printer.
        file: String,
    },
    /// Pause the running job.
    Pause,
    /// Resume the paused job.
    Resume,
    /// Cancel the job.
    Cancel,
    /// Stop the printer at once (M112).
    EmergencyStop,
    /// List the G-code files on the printer.
    Files,
    /// The last jobs (Moonraker).
    History {
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The printer's cameras.
    Webcams,
    /// OctoPrint: connect it to its printer (serial port).
    Connect {
        /// The port (default: OctoPrint's AUTO).
        #[arg(long)]
        port: Option<String>,
        /// The baud rate.
        #[arg(long)]
        baudrate: Option<u32>,
    },
    /// OctoPrint: ask for an application key; approve the request in OctoPrint's web page.
    RequestKey {
        /// The OctoPrint user the key is for (default: whoever approves).
        #[arg(long = "for-user")]
        for_user: Option<String>,
        /// Seconds to wait for the approval.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
}

impl RemoteArgs {
    fn credentials(&self) -> Credentials {
        match (&self.api_key, &self.user, &self.password) {
            (Some(key), _, _) if !key.is_empty() => Credentials::api_key(key.clone()),
            (_, Some(user), Some(password)) => Credentials::Login {
                username: user.clone(),
                password: Secret::new(password.clone()),
            },
            (_, None, Some(password)) if matches!(self.kind, Some(KindArg::Prusalink)) => {
                remote::prusalink::credentials(password)
            }
            _ => Credentials::None,
        }
    }

    fn options(&self) -> RemoteOptions {
        RemoteOptions {
            connect_timeout: Duration::from_secs(self.timeout.clamp(1, 60)),
            request_timeout: Duration::from_secs(self.timeout.max(1)),
            client_name: "Gantry CLI".into(),
            ..RemoteOptions::default()
        }
    }
}

fn out(text: impl std::fmt::Display) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{text}").context("cannot write to standard output")
}

/// Runs `gantry remote`.
///
/// # Errors
/// Every failure with what happened: unreachable, timeout, TLS, credentials, the printer's
/// refusal.
pub fn run(args: &RemoteArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &RemoteArgs) -> anyhow::Result<()> {
    let url = remote::parse_address(&args.url)?;
    let credentials = args.credentials();
    let options = args.options();

    if let RemoteCommand::RequestKey { for_user, wait } = &args.command {
        let key = remote::octoprint::request_app_key(
            url,
            "Gantry",
            for_user.as_deref(),
            &options,
            Duration::from_secs(*wait),
            |p| {
                let remote::octoprint::AppKeyProgress::AwaitingApproval { auth_dialog } = p;
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "waiting for approval in OctoPrint (a dialog there, or {auth_dialog})"
                    );
                }
            },
        )
        .await?;
        // The one place a key is printed: the user asked for it.
        return out(key.expose());
    }

    let kind = match args.kind {
        Some(KindArg::Moonraker) => BackendKind::Moonraker,
        Some(KindArg::Octoprint) => BackendKind::OctoPrint,
        Some(KindArg::Prusalink) => BackendKind::PrusaLink,
        None => {
            let report = remote::probe(&url, &credentials, &options).await;
            if matches!(args.command, RemoteCommand::Probe) {
                return if args.json {
                    out(serde_json::to_string(&report)?)
                } else {
                    out(&report.message)?;
                    if report.kind.is_none() {
                        bail!("no printer API at {url}");
                    }
                    Ok(())
                };
            }
            match report.kind {
                Some(_) if report.needs_credentials => bail!("{}", report.message),
                Some(kind) => kind,
                None => bail!("{}", report.message),
            }
        }
    };
    if matches!(args.command, RemoteCommand::Probe) {
        return out(format!("{kind} (as given with --kind)"));
    }

    let backend = remote::connect(kind, url.clone(), credentials.clone(), options.clone()).await?;
    let result = command(args, kind, &url, credentials, options, &backend).await;
    drop(backend);
    result
}

async fn command(
    args: &RemoteArgs,
    kind: BackendKind,
    url: &Url,
    credentials: Credentials,
    options: RemoteOptions,
    backend: &Arc<dyn PrinterBackend>,
) -> anyhow::Result<()> {
    match &args.command {
        RemoteCommand::Probe | RemoteCommand::RequestKey { .. } => Ok(()),
        RemoteCommand::Status => {
            let info = backend.info().await?;
            let status = backend.status();
            if args.json {
                out(serde_json::json!({
                    "info": info, "summary": status.summary(), "status": status,
                }))
            } else {
                out(format!(
                    "{} at {url} ({})",
                    info.server_version,
                    info.firmware.as_deref().unwrap_or("firmware unknown")
                ))?;
                out(status.summary())
            }
        }
        RemoteCommand::Gcode { script } => {
            let (_, mut events) = backend.subscribe();
            let result = backend.gcode_script(script).await;
            // Answers arrive as notifications; give the last ones a moment (OctoPrint pushes its
            // log about twice a second, after the command returned).
            let linger = if kind == BackendKind::OctoPrint {
                1200
            } else {
                300
            };
            let drain = tokio::time::sleep(Duration::from_millis(linger));
            tokio::pin!(drain);
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(PrinterEvent::GcodeResponse { line }) => out(line)?,
                        Ok(_) => {}
                        Err(_) => break,
                    },
                    () = &mut drain => break,
                }
            }
            result?;
            Ok(())
        }
        RemoteCommand::Upload { file, name, print } => {
            let entry = upload(backend, file, name.as_deref(), *print).await?;
            out(format!(
                "uploaded {} ({} bytes){}",
                entry.path,
                entry.size,
                if *print { ", printing" } else { "" }
            ))
        }
        RemoteCommand::Print { file } => {
            let local = PathBuf::from(file);
            if local.is_file() {
                let entry = upload(backend, &local, None, true).await?;
                out(format!("uploaded {} and started printing it", entry.path))
            } else {
                backend.print_start(file).await?;
                out(format!("printing {file}"))
            }
        }
        RemoteCommand::Pause => {
            backend.print_pause().await?;
            out("paused")
        }
        RemoteCommand::Resume => {
            backend.print_resume().await?;
            out("resumed")
        }
        RemoteCommand::Cancel => {
            backend.print_cancel().await?;
            out("cancelled")
        }
        RemoteCommand::EmergencyStop => {
            backend.emergency_stop().await?;
            out("emergency stop sent")
        }
        RemoteCommand::Files => {
            let files = backend.files_list().await?;
            if args.json {
                return out(serde_json::to_string(&files)?);
            }
            for f in &files {
                out(format!("{:>10}  {}", f.size, f.path))?;
            }
            Ok(())
        }
        RemoteCommand::History { limit } => {
            let jobs = backend.history(*limit).await?;
            if args.json {
                return out(serde_json::to_string(&jobs)?);
            }
            for j in &jobs {
                out(format!(
                    "{:<10} {:<10} {:>8.0} s  {}",
                    j.job_id, j.status, j.print_duration, j.filename
                ))?;
            }
            Ok(())
        }
        RemoteCommand::Webcams => {
            let cams = backend.webcams().await?;
            if args.json {
                return out(serde_json::to_string(&cams)?);
            }
            for c in &cams {
                out(format!("{:<16} {:<22} {}", c.name, c.service, c.stream_url))?;
            }
            Ok(())
        }
        RemoteCommand::Connect { port, baudrate } => {
            if kind != BackendKind::OctoPrint {
                bail!("`connect` is for OctoPrint; {kind} connects to its printer by itself");
            }
            let op =
                remote::octoprint::OctoPrint::connect(url.clone(), credentials, options).await?;
            op.connect_printer(port.as_deref(), *baudrate).await?;
            op.shutdown().await;
            out("connected")
        }
    }
}

async fn upload(
    backend: &Arc<dyn PrinterBackend>,
    file: &std::path::Path,
    name: Option<&str>,
    print: bool,
) -> anyhow::Result<gantry_core::model::FileEntry> {
    let data = tokio::fs::read(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let name = match name {
        Some(n) => n.to_owned(),
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", file.display()))?
            .to_owned(),
    };
    Ok(backend.file_upload(&name, data, print).await?)
}
