//! `lab up DIR`: the local mesh in the foreground until Ctrl-C.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};

use super::session::Session;
use crate::cluster::plan::PodKey;
use crate::cluster::{CONTROLLER_ADMIN_PORT, CONTROLLER_PORT, Cluster, ClusterConfig, Reconciled};
use crate::{node_ip, pod_cidr};

/// How often the manifests are checked for pod changes (the controller watches them on
/// its own).
const RECONCILE_EVERY: Duration = Duration::from_millis(250);

pub async fn up(config: ClusterConfig, user_namespace: bool) -> Result<()> {
    if let Some(running) = Session::read_live(&config.work_dir)? {
        bail!(
            "a local mesh is already running (pid {}) with work directory {}: stop it with \
             Ctrl-C, or give this one another --work-dir",
            running.pid,
            config.work_dir.display()
        );
    }
    let shutdown = runtime::stop_on_signals().map_err(anyhow::Error::msg)?;
    println!(
        "starting the local mesh: {} nodes, manifests in {} ...",
        config.nodes,
        config.manifests.display()
    );
    let mut cluster = Cluster::start(config).await?;
    let work_dir = cluster.config().work_dir.clone();
    Session::of(&cluster, user_namespace)?.write(&work_dir)?;
    print!("{}", summary(&cluster));
    for problem in cluster.problems() {
        println!("problem: {problem}");
    }

    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        match cluster.reconcile().await {
            Ok(done) if done.is_empty() => {}
            Ok(done) => {
                print!("{}", changes(&cluster, &done));
                Session::of(&cluster, user_namespace)?.write(&work_dir)?;
            }
            Err(e) => println!("problem: {e:#}"),
        }
    }
    println!("stopping the local mesh ...");
    cluster.shutdown().await;
    let _ = std::fs::remove_file(Session::path(&work_dir));
    println!("stopped; logs are in {}", work_dir.display());
    Ok(())
}

fn pod_line(cluster: &Cluster, key: &PodKey) -> String {
    let Some((plan, _)) = cluster.pods().find(|(p, _)| &p.key == key) else {
        return format!("  {key}\n");
    };
    let command = plan
        .containers
        .iter()
        .map(|c| c.argv.join(" "))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "  {:<32} node-{}  {:<13} {:<9} {}\n",
        key.to_string(),
        plan.node,
        plan.ip,
        if plan.enrolled { "captured" } else { "plain" },
        command
    )
}

/// What is running and how to use it.
pub fn summary(cluster: &Cluster) -> String {
    let work = cluster.config().work_dir.display();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nlocal mesh is up\n\ncontroller  {}:{CONTROLLER_PORT} (xDS + CA, in node-0), admin 127.0.0.1:{CONTROLLER_ADMIN_PORT} inside node-0",
        node_ip(0)
    );
    for node in 0..cluster.config().nodes {
        let _ = writeln!(
            out,
            "node-{node}      {}  pods {}  node agent + ztunnel (pid {})",
            node_ip(node),
            pod_cidr(node),
            cluster
                .ztunnel_pid(node)
                .map_or("-".into(), |p| p.to_string())
        );
    }
    let _ = writeln!(out, "\npods:");
    let keys: Vec<PodKey> = cluster.pods().map(|(p, _)| p.key.clone()).collect();
    for key in &keys {
        out.push_str(&pod_line(cluster, key));
    }
    let client = keys
        .iter()
        .find(|k| k.name == "curl")
        .or(keys.first())
        .map_or("POD".to_string(), |k| k.name.clone());
    let _ = writeln!(
        out,
        "\nsend traffic (in another terminal):\n  \
         cargo run -q -p lab --bin lab -- exec {client} -- demo-app get http://productpage:9080/productpage\n  \
         cargo run -q -p lab --bin lab -- exec {client} -- demo-app get http://ratings:9080/ratings/0\n\n\
         edit the manifests in {} and the changes apply live (pods, services, policies).\n\
         logs: {work}/controller.log, {work}/node-N/ztunnel.log, {work}/pods/NAMESPACE.POD/\n\
         Ctrl-C stops everything.\n",
        cluster.config().manifests.display()
    );
    out
}

fn changes(cluster: &Cluster, done: &Reconciled) -> String {
    let mut out = String::new();
    for key in &done.added {
        out.push_str(&format!("pod started:{}", pod_line(cluster, key)));
    }
    for key in &done.removed {
        out.push_str(&format!("pod deleted:  {key}\n"));
    }
    for key in &done.relabelled {
        out.push_str(&format!("pod relabelled:{}", pod_line(cluster, key)));
    }
    for problem in &done.new_problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    out
}
