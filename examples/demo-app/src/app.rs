//! The process: flags, logging, runtime, signals. `main.rs` only calls [`main`], so the
//! lab can re-execute its own binary as a demo pod and tests can run the same roles
//! in-process through [`serve`].

use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info};

use crate::cli::{self, Command, USAGE, UsageError};
use crate::discovery::Env;
use crate::get;
use crate::http;
use crate::pod::PodInfo;
use crate::productpage::ProductPage;
use crate::ratings::Ratings;
use crate::reviews::Reviews;

/// Which part of the demo a pod plays.
#[derive(Debug, Clone)]
pub enum Role {
    Ratings,
    Reviews(Reviews),
    ProductPage(ProductPage),
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Ratings => "ratings",
            Role::Reviews(_) => "reviews",
            Role::ProductPage(_) => "productpage",
        }
    }
}

/// Serves `role` as `pod` on `listener` until `shutdown` resolves, then drains
/// (bounded by [`http::DRAIN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    pod: PodInfo,
    role: Role,
    shutdown: impl Future<Output = ()>,
) {
    match role {
        Role::Ratings => http::serve(listener, pod, Arc::new(Ratings), shutdown).await,
        Role::Reviews(r) => http::serve(listener, pod, Arc::new(r), shutdown).await,
        Role::ProductPage(p) => http::serve(listener, pod, Arc::new(p), shutdown).await,
    }
}

/// Runs `demo-app ARGS...` (without the program name) and returns the exit status.
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let env = Env::process();
    let command = match cli::parse(args, &env) {
        Ok(c) => c,
        Err(UsageError::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo-app: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One thread is plenty for a demo pod, and the lab runs dozens of them on two cores.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-app: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Get(request) => {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr();
            let code = runtime.block_on(get::run(&request, env, &mut out, &mut err));
            let _ = out.flush();
            ExitCode::from(code)
        }
        Command::Serve {
            role,
            port,
            version,
        } => {
            let _ = runtime::init_logging(None, false);
            let pod = PodInfo::from_env(version, &env);
            match runtime.block_on(run_server(role, port, pod)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run_server(role: Role, port: u16, pod: PodInfo) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let stop = runtime::stop_on_signals()?;
    info!(role = role.name(), pod = %pod.name, version = %pod.version, %addr, "listening");
    serve(listener, pod, role, runtime::stopped(stop)).await;
    Ok(())
}
