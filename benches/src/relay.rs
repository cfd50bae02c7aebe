//! The node benchmark's floor: a plain TCP relay process. Two of them stand where the
//! ztunnels stand (one listening inside the client pod, one inside the server pod), so the
//! `relay` configuration has the same processes and hops as the mesh path with none of the
//! mesh's work: no capture rules, no TLS, no HTTP/2, no policy, no logs. What it adds over
//! `direct` is what any pair of user-space proxies costs on this machine.
//!
//! A relay is this benchmark binary re-executed with [`RELAY_ENV`] set to
//! `LISTEN_PORT>TARGET_ADDR`; it runs one current-thread runtime, as ztunnel does by
//! default, and copies with the same pump ztunnel uses for plain TCP.

use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};
use lab::{LabProcess, Namespace};
use tokio::net::{TcpListener, TcpStream};

/// Set (to `LISTEN_PORT>TARGET_ADDR`) when this binary runs as a relay.
pub const RELAY_ENV: &str = "BENCH_TCP_RELAY";

/// Runs the relay if this process was started as one.
pub fn dispatch() -> Option<ExitCode> {
    let spec = std::env::var(RELAY_ENV).ok()?;
    Some(match run(&spec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp relay {spec}: {e:#}");
            ExitCode::FAILURE
        }
    })
}

/// Starts a relay inside `ns` that listens on `port` (all addresses) and forwards each
/// connection to `target`. It runs until its handle is dropped.
pub fn spawn(ns: &Namespace, port: u16, target: SocketAddr) -> Result<LabProcess> {
    let mut command = Command::new(std::env::current_exe().context("locating this binary")?);
    command
        .env(RELAY_ENV, format!("{port}>{target}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    ns.spawn(command)
        .with_context(|| format!("starting a TCP relay in {}", ns.name()))
}

fn parse(spec: &str) -> Result<(u16, SocketAddr)> {
    let (port, target) = spec
        .split_once('>')
        .context("expected LISTEN_PORT>TARGET_ADDR")?;
    let port = port.parse().with_context(|| format!("port {port:?}"))?;
    let target = target
        .parse()
        .with_context(|| format!("address {target:?}"))?;
    Ok((port, target))
}

fn run(spec: &str) -> Result<()> {
    let (port, target) = parse(spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .with_context(|| format!("listening on port {port}"))?;
        loop {
            let (down, _) = listener.accept().await.context("accept")?;
            tokio::spawn(async move {
                if let Err(e) = relay(down, target).await {
                    eprintln!("tcp relay -> {target}: {e:#}");
                }
            });
        }
    })
}

async fn relay(mut down: TcpStream, target: SocketAddr) -> Result<()> {
    down.set_nodelay(true)?;
    let mut up = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    up.set_nodelay(true)?;
    hbone::copy_bidirectional(&mut down, &mut up).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_the_port_and_the_target() {
        let (port, target) = parse("15001>10.1.1.2:15008").unwrap();
        assert_eq!(port, 15001);
        assert_eq!(target, "10.1.1.2:15008".parse().unwrap());
        assert!(parse("15001").is_err());
        assert!(parse("x>10.1.1.2:1").is_err());
        assert!(parse("1>nowhere").is_err());
    }
}
