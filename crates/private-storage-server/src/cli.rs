//! The `private-storage` command line.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use std::sync::Arc;

use private_storage::{ObjectKey, Storage, Upload};

use crate::config::{DeliveryName, StorageConfig};
use crate::db::ScanState;
use crate::domain::{Actor, Domain, Error, QuotaValue, ShareRequest, TheirFiles, role};
use crate::http::api::rfc3339;
use crate::{AppState, Backend, Config, Loader};

/// A private file server: people log in, upload, and download what the rules allow.
#[derive(Debug, Parser)]
#[command(name = "private-storage", version, about)]
pub struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Any setting as KEY=VALUE (flags beat the environment, which beats the file).
    #[arg(short = 's', long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The data folder (SQLite database, media, generated keys).
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// sqlite://… or postgres://…
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// A local folder or s3://bucket/prefix.
    #[arg(long, global = true)]
    storage: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        /// Address to listen on.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Applies database migrations (also done at start).
    Migrate,
    /// Checks that the database and the storage are reachable and sane.
    Check,
    /// Shows the effective configuration, or the nginx snippet that matches it.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manages users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Uploads a file, through the same checks as the web upload.
    Put {
        /// The file.
        file: PathBuf,
        /// Whose file it is (default: the only user, if there is one).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Uploads a file to a running server through tus, resuming an interrupted earlier run.
    Push {
        /// The file.
        file: PathBuf,
        /// The server's URL, e.g. http://127.0.0.1:8000.
        #[arg(long)]
        server: String,
        /// An API token (`token create`).
        #[arg(long, env = "PRIVATE_STORAGE_TOKEN", hide_env_values = true)]
        token: String,
        /// Bytes per request (smaller behind a proxy that caps request bodies).
        #[arg(long, default_value = "8MiB")]
        chunk_size: String,
        /// Where upload URLs are remembered between runs (default: under $XDG_STATE_HOME).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Downloads a file by id or key.
    Get {
        /// A file id, or its storage key.
        target: String,
        /// Where to write it.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Lists files.
    Ls {
        /// Only this user's files.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Deletes a file by id.
    Rm {
        /// The file id.
        id: String,
    },
    /// Prints a share link for a file (`share ID --expires 1h`), lists a file's live links
    /// (`share list ID`), or revokes one by its URL, token or id (`share revoke LINK`).
    Share(ShareArgs),
    /// Copies every file of the configured storage to another one (local folder ↔ S3),
    /// verifying each by SHA-256 of its content; re-running resumes. Switch `storage` (and
    /// `encryption`) over afterwards.
    CopyStorage {
        /// The target: a folder (must exist) or s3://bucket/prefix (with the `[s3]` settings).
        to: String,
        /// Encrypt the copies under `encryption_keys` (from a store kept as uploaded).
        #[arg(long, conflicts_with = "decrypt")]
        encrypt: bool,
        /// Store the copies as uploaded (from an encrypted store).
        #[arg(long)]
        decrypt: bool,
    },
    /// Encryption at rest: generate a key, see which keys wrap the stored files, rotate.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Virus scanning (`scan = "clamav"`): how many files are in each state, or scan the
    /// files waiting now.
    #[command(subcommand)]
    Scan(ScanCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Prints every audit event since a time, oldest first, one JSON object per line.
    Export {
        /// A time (`2026-12-01`, `2026-12-01T10:00:00Z`) or a duration ago (`24h`, `7d`).
        #[arg(long)]
        since: String,
        /// `jsonl`.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
enum ScanCommand {
    /// How many files are unscanned, pending, clean, infected, removed or refused.
    Status,
    /// Scans every pending file now (a running server does this by itself) and says how many
    /// got a verdict; fails while clamd is down.
    Run,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Prints a new key-encryption key, `ID=base64`, to put first in `encryption_keys`.
    Generate {
        /// Its id (up to 31 letters, digits, '.', '_', '-'), e.g. the month: 2026-12.
        id: String,
    },
    /// How many stored files each key-encryption key wraps.
    Status,
    /// Rewraps every stored file's data key under the newest key (content untouched), so
    /// that older keys can be removed from `encryption_keys` afterwards. Safe beside a running
    /// server; re-running finishes an interrupted rotation.
    Rotate,
}

#[derive(Debug, Args)]
struct ShareArgs {
    /// A file id (or key); or `list` or `revoke`.
    target: String,
    /// With `list`: a file id (none: every live link; columns: id, expires, issued by, bound
    /// to, downloads[/limit], password, file). With `revoke`: the link's URL, token or id.
    link: Option<String>,
    /// How long the link lives (default: `share_default_lifetime`).
    #[arg(long)]
    expires: Option<String>,
    /// Bind the link to this user (it then also needs their login).
    #[arg(long)]
    user: Option<String>,
    /// Download instead of displaying.
    #[arg(long)]
    attachment: bool,
    /// Ask for a password, read from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// How many downloads it allows (default: `share_default_max_downloads`).
    #[arg(long)]
    max_downloads: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the effective configuration with its sources, secrets redacted.
    Check,
    /// Prints the nginx configuration for the configured delivery.
    Nginx,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates a user (prompts for the password unless --password-stdin).
    Add {
        /// The user name.
        name: String,
        /// Sees every file.
        #[arg(long)]
        staff: bool,
        /// Staff, and passes `allow_superuser`.
        #[arg(long)]
        superuser: bool,
        /// Reads the password from standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists users.
    List,
    /// Sets a user's password (and ends their sessions).
    Passwd {
        /// The user name.
        name: String,
        /// Reads the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lets the identity provider's subject sign in as this existing user (single sign-on:
    /// a sign-in whose name is a local account's is refused until an operator links them).
    Link {
        /// The user name.
        name: String,
        /// The provider's id of the person (the ID token's `sub`).
        #[arg(long)]
        subject: String,
    },
    /// Shows a user's usage and quota, or sets it: `user quota ada 10GiB`, `--files 1000`;
    /// `none` for no limit, `default` for the configured one (`quota_bytes`, `quota_files`).
    Quota {
        /// The user name.
        name: String,
        /// Bytes (`10GiB`, `500MB`), `none` or `default`.
        bytes: Option<String>,
        /// A number of files, `none` or `default`.
        #[arg(long)]
        files: Option<String>,
    },
    /// Deletes a user with their sessions and tokens. Refused while they own files, unless
    /// told what becomes of them.
    Rm {
        /// The user name.
        name: String,
        /// Delete their files too: records, share links and bytes.
        #[arg(long, conflicts_with = "transfer_to")]
        delete_files: bool,
        /// Give their files to this user.
        #[arg(long, value_name = "NAME")]
        transfer_to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates an API token for a user and prints it (once: only its hash is kept).
    Create {
        /// The user name.
        user: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Revokes a user's token by label, or all of them.
    Revoke {
        /// The user name.
        user: String,
        /// The token's label (default: every token of the user).
        #[arg(long)]
        name: Option<String>,
    },
}

/// What a command that failed says: the message on stderr, and the exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

type CliResult = Result<(), Failure>;

/// The one mapping of a domain error to the command line: its message, and exit code 1.
impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = match &e {
            // The cause matters to an operator (the server would log it): say it.
            Error::Unavailable(cause) => format!("{e} ({cause})"),
            Error::Internal(cause) => format!("{e} ({cause})"),
            other => other.message(),
        };
        Self { message, code: 1 }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, code: 1 }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<crate::StartError> for Failure {
    fn from(e: crate::StartError) -> Self {
        e.to_string().into()
    }
}

/// Parses the command line and runs it; the process's exit code.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Push { file, server, token, chunk_size, state } = cli.command {
        // A client of a server somewhere: no configuration, database or storage of its own.
        return exit(push(file, server, token, &chunk_size, state));
    }
    if let Command::Keys(KeysCommand::Generate { id }) = &cli.command {
        // Needs no configuration: it is how the first key for `encryption = on` is made.
        return exit(
            private_storage::Keyring::generate_entry(id)
                .map(|entry| println!("{entry}"))
                .map_err(|e| e.to_string().into()),
        );
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    crate::logging::init(config.log_json, matches!(cli.command, Command::Serve { .. }));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    exit(runtime.block_on(execute(cli.command, config)))
}

fn exit(result: CliResult) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            std::process::ExitCode::from(failure.code)
        }
    }
}

fn push(file: PathBuf, server: String, token: String, chunk_size: &str, state: Option<PathBuf>) -> CliResult {
    let chunk = crate::config::parse_size(chunk_size)
        .filter(|&c| c > 0)
        .ok_or_else(|| format!("--chunk-size {chunk_size}: expected a size such as 8MiB"))?;
    let push =
        crate::push::Push { file, server, token, chunk, state: state.unwrap_or_else(crate::push::default_state) };
    private_storage::install_tls_provider();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let location = runtime.block_on(crate::push::push(&push))?;
    match location {
        Some(location) => println!("uploaded {} as {location}", push.file.display()),
        None => println!("uploaded {} (it was complete already: see `ls`)", push.file.display()),
    }
    Ok(())
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut flags = Vec::new();
    for pair in &cli.set {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("--set {pair}: expected KEY=VALUE"))?;
        flags.push((k.trim().to_owned(), v.to_owned()));
    }
    for (key, value) in [("data_dir", &cli.data_dir), ("database_url", &cli.database_url), ("storage", &cli.storage)] {
        if let Some(v) = value {
            flags.push((key.to_owned(), v.clone()));
        }
    }
    if let Command::Serve { bind: Some(bind) } = &cli.command {
        flags.push(("bind".to_owned(), bind.clone()));
    }
    let mut loader = Loader::new();
    if let Some(path) = &cli.config {
        loader = loader.file(path).map_err(|e| e.to_string())?;
    }
    loader.env(std::env::vars()).and_then(|l| l.flags(&flags)).and_then(Loader::build).map_err(|e| e.to_string())
}

async fn execute(command: Command, config: Config) -> CliResult {
    if let Command::Config(ConfigCommand::Check) = command {
        print!("{}", config.describe());
        return Ok(());
    }
    if let Command::Config(ConfigCommand::Nginx) = command {
        return nginx(&config);
    }

    let state = AppState::build(config).await?;
    let result = run_command(&state, command).await;
    // What the command did is in the audit trail before the process ends.
    state.domain.audit().flush().await;
    result
}

async fn run_command(state: &AppState, command: Command) -> CliResult {
    let state = state.clone();
    let domain = &state.domain;
    match command {
        Command::Serve { .. } => serve(state).await,
        Command::Migrate => {
            println!("migrations applied; the database is up to date");
            Ok(())
        }
        Command::Check => check(&state).await,
        Command::Config(_) | Command::Push { .. } | Command::Keys(KeysCommand::Generate { .. }) => {
            unreachable!("handled before the state is built")
        }
        Command::User(command) => user(&state, command).await,
        Command::Token(command) => token(domain, command).await,
        Command::Put { file, owner } => put(domain, file, owner).await,
        Command::Get { target, output } => get(domain, &target, &output).await,
        Command::Ls { owner } => ls(domain, owner).await,
        Command::Rm { id } => {
            let file = domain.delete(&Actor::Operator, &id).await?;
            println!("deleted {} ({})", file.id, file.name);
            Ok(())
        }
        Command::Share(args) => share(&state, args).await,
        Command::CopyStorage { to, encrypt, decrypt } => copy_storage(&state, &to, encrypt, decrypt).await,
        Command::Keys(command) => keys(domain, command).await,
        Command::Scan(command) => scan(domain, command).await,
        Command::Audit(AuditCommand::Export { since, format }) => audit_export(domain, &since, &format).await,
    }
}

async fn audit_export(domain: &Domain, since: &str, format: &str) -> CliResult {
    if format != "jsonl" {
        return Err(format!("--format {format}: the one format is jsonl").into());
    }
    let since = match private_storage::parse_duration(since) {
        Some(ago) => {
            (chrono::Utc::now() - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?).timestamp_micros()
        }
        None => crate::http::audit::parse_time(since).ok_or_else(|| {
            format!("--since {since}: a time (2026-12-01, 2026-12-01T10:00:00Z) or a duration ago (24h)")
        })?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    domain
        .export_audit(since, |row| {
            serde_json::to_writer(&mut out, &crate::http::audit::event_json(row))?;
            out.write_all(b"\n")
        })
        .await?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(())
}

async fn scan(domain: &Domain, command: ScanCommand) -> CliResult {
    if let ScanCommand::Run = command {
        let mut scanned = 0;
        loop {
            let n = domain.scan_waiting().await?;
            scanned += n;
            if n == 0 {
                break;
            }
        }
        println!("scanned {scanned} file(s)");
    }
    let counts = domain.scan_counts().await?;
    for (state, n) in &counts {
        println!("{}\t{n}", state.as_str());
    }
    match counts.iter().find(|(state, _)| *state == ScanState::Pending) {
        Some((_, n)) if matches!(command, ScanCommand::Run) => {
            Err(format!("{n} file(s) still pending: is clamd running at clamd_address?").into())
        }
        _ => Ok(()),
    }
}

async fn serve(state: AppState) -> CliResult {
    let bind = state.config.bind;
    let listener =
        tokio::net::TcpListener::bind(bind).await.map_err(|e| format!("cannot listen on {bind}: {e} (set `bind`)"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let has_users = state.domain.has_users().await?;
    println!("private-storage listening on http://{addr}/");
    match &state.config.storage {
        StorageConfig::Local(path) => {
            println!("  files:    {} (private; served only through the access rules)", path.display())
        }
        StorageConfig::S3 { url, .. } => println!("  files:    {url}"),
    }
    println!("  database: {}", crate::config::redact_url(&state.config.database_url));
    if !has_users {
        println!("No users yet. Create the first one with:\n  private-storage user add admin --superuser");
    }
    crate::serve(state, listener, crate::server::shutdown_signal()).await.map_err(|e| e.to_string().into())
}

async fn check(state: &AppState) -> CliResult {
    state.db.ping().await.map_err(|e| format!("database: {e}"))?;
    println!("database: ok ({})", if state.db.is_postgres() { "PostgreSQL" } else { "SQLite" });
    let storage = Backend::open(&state.config.storage)?.check().await.map_err(|e| format!("storage: {e}"))?;
    println!("storage: ok ({storage})");
    state.domain.ready().await?;
    println!("ready");
    Ok(())
}

fn nginx(config: &Config) -> CliResult {
    let location = match (&config.storage, config.delivery) {
        (StorageConfig::Local(path), DeliveryName::Nginx) => {
            let root = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            private_storage::nginx_internal_location(&config.internal_url, &root, 16)
        }
        (StorageConfig::S3 { settings, .. }, DeliveryName::Nginx) => {
            let endpoint = settings
                .get(&private_storage::S3Setting::Endpoint)
                .cloned()
                .unwrap_or_else(|| "https://s3.amazonaws.com".to_owned());
            private_storage::nginx_s3_location(&config.internal_url, &endpoint)
        }
        _ => return Err("set delivery = \"nginx\" first (the snippet is for X-Accel-Redirect)".into()),
    };
    println!(
        "# nginx in front of private-storage (delivery = nginx). Inside your `server {{ … }}`:\nlocation / {{\n    proxy_pass http://{bind};\n    proxy_set_header Host $host;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    client_max_body_size 0;  # the server enforces max_file_size itself\n    proxy_request_buffering off;\n}}\n{location}",
        bind = config.bind
    );
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<String, Failure> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf).map_err(|e| e.to_string())?;
        return Ok(buf.trim_end_matches(['\n', '\r']).to_owned());
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
    if first != again {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

async fn user(state: &AppState, command: UserCommand) -> CliResult {
    let domain = &state.domain;
    match command {
        UserCommand::Add { name, staff, superuser, password_stdin } => {
            domain.check_new_user(&name).await?;
            let password = read_password(password_stdin)?;
            let user = domain.add_user(&name, &password, staff, superuser).await?;
            println!("created {} {name}; log in at http://{}/login", role(&user), state.config.bind);
        }
        UserCommand::List => {
            for u in domain.users().await? {
                println!("{}\t{}\t{}", u.username, role(&u), rfc3339(u.created));
            }
        }
        UserCommand::Passwd { name, password_stdin } => {
            let password = read_password(password_stdin)?;
            domain.set_password(&name, &password).await?;
            println!("password of {name} changed; their sessions ended");
        }
        UserCommand::Link { name, subject } => {
            domain.link_user(&name, &subject).await?;
            println!("{name} now signs in through the identity provider as subject {subject}");
        }
        UserCommand::Quota { name, bytes, files } => {
            let report = if bytes.is_none() && files.is_none() {
                domain.usage_by_name(&Actor::Operator, &name).await?
            } else {
                let bytes = bytes.map(|b| QuotaValue::parse(&b, true)).transpose()?;
                let files = files.map(|f| QuotaValue::parse(&f, false)).transpose()?;
                domain.set_quota(&Actor::Operator, &name, bytes, files).await?
            };
            let size = |n: i64| private_storage::human_size(n.max(0) as u64);
            let quota = report.quota_bytes.map_or("no quota".to_owned(), |q| format!("quota {}", size(q)));
            let files = report.quota_files.map_or(String::new(), |q| format!(" of {q}"));
            println!(
                "{name}: {} used ({quota}), {} file(s){files}, {} held by uploads in progress",
                size(report.used_bytes),
                report.used_files,
                size(report.reserved_bytes)
            );
        }
        UserCommand::Rm { name, delete_files, transfer_to } => {
            let files = match (delete_files, transfer_to) {
                (true, _) => TheirFiles::Delete,
                (false, Some(to)) => TheirFiles::TransferTo(to),
                (false, None) => TheirFiles::Refuse,
            };
            let moved = domain.remove_user(&name, &files).await?;
            match files {
                TheirFiles::Delete => println!("deleted {name} and their {moved} file(s)"),
                TheirFiles::TransferTo(to) => println!("deleted {name}; their {moved} file(s) now belong to {to}"),
                _ => println!("deleted {name}"),
            }
        }
    }
    Ok(())
}

async fn token(domain: &Domain, command: TokenCommand) -> CliResult {
    match command {
        TokenCommand::Create { user, name } => {
            let (user, token) = domain.create_token(&user, &name).await?;
            eprintln!(
                "API token {name} for {} (shown once; send it as `Authorization: Bearer <token>`):",
                user.username
            );
            println!("{token}");
        }
        TokenCommand::Revoke { user, name } => {
            let (user, n) = domain.revoke_tokens(&user, name.as_deref()).await?;
            println!("revoked {n} token(s) of {}", user.username);
        }
    }
    Ok(())
}

/// A progress bar for transfers over 8 MiB on a terminal; hidden otherwise.
fn progress(len: u64) -> indicatif::ProgressBar {
    if len < 8 << 20 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn put(domain: &Domain, path: PathBuf, owner: Option<String>) -> CliResult {
    let owner = match owner {
        Some(name) => domain.user_named(&name).await?,
        None => domain.only_user().await?,
    };
    let file = tokio::fs::File::open(&path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().await.map_err(|e| e.to_string())?.len();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or("not a file name")?;
    let bar = progress(len);
    let shown = bar.clone();
    let stream = tokio_util_stream(file).map(move |chunk| {
        if let Ok(c) = &chunk {
            shown.inc(c.len() as u64);
        }
        chunk
    });
    let upload = Upload::new(name, stream.boxed()).content_length(len);
    let row = domain.upload(&Actor::Operator, &owner.id, Some(len), async { Ok(upload) }).await;
    bar.finish_and_clear();
    let row = row?;
    println!("{}\t{}\t{}\t{}", row.id, row.size, row.content_type, row.name);
    if row.scan == ScanState::Pending {
        // No server may be running to scan it: scan it here, now.
        let state = domain.scan_now(&row.id).await?;
        let detail = match domain.file(&Actor::Operator, &row.id).await {
            Ok(file) => file.scan_detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(),
            Err(_) => String::new(),
        };
        match state {
            ScanState::Pending => eprintln!("pending: clamd did not answer; a running server scans it when it does"),
            ScanState::Clean | ScanState::Unscanned => eprintln!("scan: {}{detail}", state.as_str()),
            held => return Err(format!("scan: {}{detail}: the file is not served", held.as_str()).into()),
        }
    }
    Ok(())
}

/// A file as a stream of 256 KiB chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = private_storage::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => {
                Some((Err(private_storage::Error::BadUpload { message: format!("cannot read the file: {e}") }), None))
            }
        }
    })
}

async fn get(domain: &Domain, target: &str, output: &std::path::Path) -> CliResult {
    let (file, got) = domain.read(&Actor::Operator, target).await?;
    let bar = progress(got.meta.size);
    // Written next to the target and renamed into place: no half-written output file.
    let partial =
        output.with_file_name(format!(".{}.part", output.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    let mut out = std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut body = got.into_stream();
    let written = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            out.write_all(&chunk).map_err(|e| e.to_string())?;
            bar.inc(chunk.len() as u64);
        }
        out.sync_all().map_err(|e| e.to_string())
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    std::fs::rename(&partial, output).map_err(|e| e.to_string())?;
    println!("{} ({} bytes) -> {}", file.name, file.size, output.display());
    Ok(())
}

/// Prints every file as it is read, 500 at a time from where the last batch ended (flat cost
/// per batch, constant memory, at a million files too).
async fn ls(domain: &Domain, owner: Option<String>) -> CliResult {
    use std::io::Write;
    let mut after: Option<(i64, String)> = None;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let files = domain.list_after(owner.as_deref(), after.as_ref().map(|(c, id)| (*c, id.as_str())), 500).await?;
        let written = files.iter().try_for_each(|f| {
            let (file, owner) = (&f.file, &f.owner);
            let created = rfc3339(file.created);
            writeln!(out, "{}\t{owner}\t{}\t{}\t{created}\t{}", file.id, file.size, file.content_type, file.name)
        });
        match written.and_then(|()| out.flush()) {
            // `ls | head`: the reader has what it wanted.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.map_err(|e| e.to_string())?,
        }
        match files.last() {
            Some(last) if files.len() == 500 => after = Some((last.file.created, last.file.id.clone())),
            _ => return Ok(()),
        }
    }
}

async fn keys(domain: &Domain, command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Generate { .. } => unreachable!("handled before the state is built"),
        KeysCommand::Status => {
            let status = domain.key_status().await?;
            println!(
                "{} stored file(s); keys configured, newest first: {}",
                status.files,
                status.configured.join(", ")
            );
            for id in &status.configured {
                println!("  {id}: wraps {} file(s)", status.by_key.get(id).copied().unwrap_or(0));
            }
            for (id, n) in status.by_key.iter().filter(|(id, _)| !status.configured.contains(id)) {
                println!("  {id}: wraps {n} file(s) — NOT CONFIGURED: those files cannot be read");
            }
            if !status.not_encrypted.is_empty() {
                let first: Vec<_> = status.not_encrypted.iter().take(5).map(ObjectKey::as_str).collect();
                println!("  not encrypted: {} object(s), e.g. {}", status.not_encrypted.len(), first.join(", "));
            }
        }
        KeysCommand::Rotate => {
            let rotation = domain.rotate_keys(|_| {}).await?;
            println!(
                "rewrapped {} file(s) under the newest key, {} already were, {} deleted meanwhile",
                rotation.rewrapped, rotation.unchanged, rotation.gone
            );
            if !rotation.failed.is_empty() {
                for (key, why) in &rotation.failed {
                    eprintln!("  {key}: {why}");
                }
                return Err(format!("{} file(s) could not be rewrapped", rotation.failed.len()).into());
            }
        }
    }
    Ok(())
}

async fn copy_storage(state: &AppState, to: &str, encrypt: bool, decrypt: bool) -> CliResult {
    // The target is opened like the configured storage; an S3 target takes the `[s3]` settings.
    let target = if to.starts_with("s3://") {
        let settings = match &state.config.storage {
            StorageConfig::S3 { settings, .. } => settings.clone(),
            StorageConfig::Local(_) => Default::default(),
        };
        StorageConfig::S3 { url: to.to_owned(), settings }
    } else {
        StorageConfig::Local(to.into())
    };
    let target = Backend::open(&target)?;
    let target: Arc<dyn Storage> =
        match (encrypt || (state.config.encryption && !decrypt), &state.config.encryption_keys) {
            (true, Some(keys)) => target.encrypted(keys.clone())?,
            (true, None) => return Err("--encrypt needs encryption_keys (or encryption_keys_file)".into()),
            (false, _) => target.shared(),
        };
    let (_, total) = state.domain.list(&Actor::Operator, 1, 0).await?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = state
        .domain
        .copy_storage(&*target, |p| {
            bar.inc(1);
            bar.set_message(p.key.to_string());
        })
        .await?;
    bar.finish_and_clear();
    println!(
        "copied {} file(s) ({} bytes), {} already in place; all verified",
        report.copied, report.bytes, report.skipped
    );
    Ok(())
}

async fn share(state: &AppState, args: ShareArgs) -> CliResult {
    match args.target.as_str() {
        "revoke" => {
            let link = args.link.ok_or("share revoke LINK (its URL, token or id)")?;
            let revoked = state.domain.revoke(&Actor::Operator, &link).await?;
            println!("revoked link {}", revoked.link_id);
            return Ok(());
        }
        "list" => {
            // One file's live links, or every live link.
            let file = match &args.link {
                Some(file) => Some(state.domain.file_by_id_or_key(&Actor::Operator, file).await?.id),
                None => None,
            };
            for owned in state.domain.links_of(&Actor::Operator, file.as_deref(), false).await? {
                let link = &owned.link;
                let downloads = match link.max_downloads {
                    Some(max) => format!("{}/{max}", link.downloads),
                    None => link.downloads.to_string(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{downloads}\t{}\t{}",
                    link.link_id,
                    rfc3339(link.expires),
                    link.issued_by.as_deref().unwrap_or("-"),
                    link.bound_to.as_deref().unwrap_or("-"),
                    if link.password_hash.is_some() { "password" } else { "-" },
                    owned.file_name
                );
            }
            return Ok(());
        }
        _ => {}
    }
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
        Some(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        None
    };
    let request = ShareRequest {
        expires: args.expires,
        attachment: args.attachment,
        user: args.user,
        password,
        max_downloads: args.max_downloads,
    };
    let (file, link) = state.domain.share(&Actor::Operator, &args.target, &request).await?;
    let base = state.config.public_url.clone().unwrap_or_else(|| format!("http://{}", state.config.bind));
    eprintln!("link {} to {} until {}", link.row.link_id, file.name, rfc3339(link.row.expires));
    println!("{}{}", base.trim_end_matches('/'), link.path);
    Ok(())
}
