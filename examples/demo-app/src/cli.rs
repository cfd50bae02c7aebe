//! Command-line parsing, kept apart from the process plumbing so every flag combination
//! is testable without starting a server.

use crate::app::Role;
use crate::client::{self, HttpClient};
use crate::discovery::Env;
use crate::get::{GetRequest, parse_header, parse_timeout};
use crate::productpage::ProductPage;
use crate::reviews::{Reviews, ReviewsVersion};
use crate::url::Url;

pub const USAGE: &str = "\
usage:
  demo-app ratings     [--port 9080] [--version v1]
  demo-app reviews     [--port 9080] [--version v1|v2] [--ratings-url http://ratings:9080]
  demo-app productpage [--port 9080] [--version v1] [--reviews-url http://reviews:9080]
  demo-app get URL [--header NAME:VALUE]... [--timeout 5s] [--include]

Servers listen on 0.0.0.0:PORT and stop on SIGTERM/SIGINT. Host names resolve from
NAME_SERVICE_HOST / NAME_SERVICE_PORT (kubelet's Service variables), not DNS.
The pod name is $HOSTNAME.
`get` exits 0 on 2xx, 1 on other statuses, 2 when no response arrived.
";

pub const DEFAULT_PORT: u16 = 9080;
pub const DEFAULT_RATINGS_URL: &str = "http://ratings:9080";
pub const DEFAULT_REVIEWS_URL: &str = "http://reviews:9080";

#[derive(Debug)]
pub enum Command {
    Serve {
        role: Role,
        port: u16,
        version: String,
    },
    Get(GetRequest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("help requested")]
    Help,
    #[error("no command given")]
    MissingCommand,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("{command} does not take {arg:?}")]
    UnexpectedArgument { command: String, arg: String },
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{flag}: {reason}")]
    BadValue { flag: String, reason: String },
    #[error("get needs a URL, like http://reviews:9080/reviews/0")]
    MissingUrl,
}

/// Parses everything after the program name; `env` is what the servers' clients and
/// `get` will resolve Service names with.
pub fn parse(args: impl IntoIterator<Item = String>, env: &Env) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let command = args.next().ok_or(UsageError::MissingCommand)?;
    let rest = Flags::split(args.collect())?;
    match command.as_str() {
        "help" | "--help" | "-h" => Err(UsageError::Help),
        "ratings" | "reviews" | "productpage" => serve(&command, rest, env),
        "get" => get(rest),
        _ => Err(UsageError::UnknownCommand(command)),
    }
}

fn serve(command: &str, flags: Flags, env: &Env) -> Result<Command, UsageError> {
    let mut port = DEFAULT_PORT;
    let mut version = "v1".to_string();
    let mut ratings = DEFAULT_RATINGS_URL.to_string();
    let mut reviews = DEFAULT_REVIEWS_URL.to_string();
    for (flag, value) in flags.pairs {
        match (command, flag.as_str()) {
            (_, "--port") => {
                port = value
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad(&flag, "expected a port number 1-65535"))?;
            }
            (_, "--version") if value.is_empty() => return Err(bad(&flag, "must not be empty")),
            (_, "--version") => version = value,
            ("reviews", "--ratings-url") => ratings = value,
            ("productpage", "--reviews-url") => reviews = value,
            _ => return Err(unexpected(command, &flag)),
        }
    }
    if flags.include {
        return Err(unexpected(command, "--include"));
    }
    if let Some(arg) = flags.positional.into_iter().next() {
        return Err(unexpected(command, &arg));
    }
    let client = HttpClient::new(env.clone(), client::DEFAULT_TIMEOUT);
    let url = |flag: &str, text: &str| Url::parse(text).map_err(|e| bad(flag, &e.to_string()));
    let role = match command {
        "ratings" => Role::Ratings,
        "reviews" => Role::Reviews(Reviews {
            version: version
                .parse::<ReviewsVersion>()
                .map_err(|e| bad("--version", &e.to_string()))?,
            ratings: url("--ratings-url", &ratings)?,
            client,
        }),
        _ => Role::ProductPage(ProductPage {
            reviews: url("--reviews-url", &reviews)?,
            client,
        }),
    };
    Ok(Command::Serve {
        role,
        port,
        version,
    })
}

fn get(flags: Flags) -> Result<Command, UsageError> {
    let mut positional = flags.positional.into_iter();
    let url = positional.next().ok_or(UsageError::MissingUrl)?;
    if let Some(extra) = positional.next() {
        return Err(unexpected("get", &extra));
    }
    let url = Url::parse(&url).map_err(|e| bad("URL", &e.to_string()))?;
    let mut request = GetRequest::new(url);
    request.include_headers = flags.include;
    for (flag, value) in flags.pairs {
        match flag.as_str() {
            "--header" => request
                .headers
                .push(parse_header(&value).map_err(|e| bad(&flag, &e))?),
            "--timeout" => request.timeout = parse_timeout(&value).map_err(|e| bad(&flag, &e))?,
            _ => return Err(unexpected("get", &flag)),
        }
    }
    Ok(Command::Get(request))
}

/// Arguments split into `--flag value` pairs (also `--flag=value`), the `--include`
/// switch and positionals. Short forms follow curl: `-H` and `-i`.
struct Flags {
    pairs: Vec<(String, String)>,
    include: bool,
    positional: Vec<String>,
}

impl Flags {
    fn split(args: Vec<String>) -> Result<Self, UsageError> {
        let mut flags = Flags {
            pairs: Vec::new(),
            include: false,
            positional: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--help" | "-h" => return Err(UsageError::Help),
                "--include" | "-i" => flags.include = true,
                _ if arg.starts_with('-') && arg.len() > 1 => {
                    let (flag, inline) = match arg.split_once('=') {
                        Some((f, v)) => (f.to_string(), Some(v.to_string())),
                        None => (arg.clone(), None),
                    };
                    let flag = if flag == "-H" {
                        "--header".into()
                    } else {
                        flag
                    };
                    let value = match inline {
                        Some(v) => v,
                        None => args
                            .next()
                            .ok_or_else(|| UsageError::MissingValue(flag.clone()))?,
                    };
                    flags.pairs.push((flag, value));
                }
                _ => flags.positional.push(arg),
            }
        }
        Ok(flags)
    }
}

fn bad(flag: &str, reason: &str) -> UsageError {
    UsageError::BadValue {
        flag: flag.to_string(),
        reason: reason.to_string(),
    }
}

fn unexpected(command: &str, arg: &str) -> UsageError {
    UsageError::UnexpectedArgument {
        command: command.to_string(),
        arg: arg.to_string(),
    }
}
