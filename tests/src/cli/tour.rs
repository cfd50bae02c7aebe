//! `lab tour`: a scripted walk through the local mesh on a copy of `examples/bookinfo`.
//! Exits 0 only if every step holds: traffic flows through the whole chain, it is
//! mutual TLS between the enrolled pods (nothing readable on the wire, identities on
//! both ends), policy edits take effect and are undone, and the waypoint in front of
//! reviews applies a canary split, a fault and an L7 policy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cluster::{Cluster, ClusterConfig};
use crate::eventually::{until, wait_for};

const NS: &str = "bookinfo";
const CLIENT: &str = "curl";
const PAGE: &str = "http://productpage:9080/productpage";
const RATINGS: &str = "http://ratings:9080/ratings/0";
const EXEC_BOUND: Duration = Duration::from_secs(15);
/// How long a policy edit may take to reach the proxies.
const PROPAGATION: Duration = Duration::from_secs(10);
/// How long the proxies' access lines may take to appear (they are written in batches).
const LOGGED: Duration = Duration::from_secs(5);
/// Text only the apps' responses carry: it must never cross the wire readable.
const SECRETS: [&str; 2] = ["The Comedy of Errors", "Reviewer1"];

const RATINGS_POLICY: &str = "\
# Written by `lab tour`: only reviews may call ratings.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-from-reviews-only, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/bookinfo/sa/bookinfo-reviews]}}]
";

/// The bookinfo example shipped with the repository.
pub fn bookinfo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo")
}

pub async fn tour(work_dir: &Path) -> Result<()> {
    let manifests = work_dir.join("manifests");
    let _ = std::fs::remove_dir_all(work_dir);
    copy_dir(&bookinfo(), &manifests)?;
    step("start the local mesh on a copy of examples/bookinfo");
    let started = Instant::now();
    let cluster = Cluster::start(ClusterConfig::new(&manifests, work_dir.join("cluster"))).await?;
    let problems = cluster.problems();
    ensure!(
        problems.is_empty(),
        "the example has problems: {problems:?}"
    );
    ok(&format!(
        "controller, 2 node agents, 2 ztunnels and {} pods up in {:.1?}",
        cluster.pods().count(),
        started.elapsed()
    ));
    let result = walk(&cluster, &manifests).await;
    cluster.shutdown().await;
    result
}

async fn walk(cluster: &Cluster, manifests: &Path) -> Result<()> {
    step("traffic flows: curl -> productpage -> reviews (v1 and v2) -> ratings");
    let capture = cluster.lab().capture()?;
    let mut versions = BTreeSet::new();
    for _ in 0..20 {
        let summary = page(cluster).await?;
        println!("      {summary}");
        versions.insert(if summary.contains("reviews-v2") {
            "v2"
        } else {
            "v1"
        });
        if versions.len() == 2 {
            break;
        }
    }
    ensure!(
        versions.len() == 2,
        "only reviews {versions:?} ever answered"
    );
    ok("both versions of reviews answered through the reviews service");

    step("it is mutual TLS between the enrolled pods");
    let frames = capture.stop()?;
    let tunnels = frames
        .tcp_flows()
        .iter()
        .filter(|f| f.dst.port() == 15008)
        .count();
    ensure!(
        tunnels > 0,
        "no HBONE (port 15008) traffic crossed the wire"
    );
    for secret in SECRETS {
        ensure!(
            !frames.contains_bytes(secret.as_bytes()),
            "{secret:?} crossed the wire in the clear"
        );
    }
    ok(&format!(
        "{} frames between the nodes, {tunnels} flows to port 15008, none with {SECRETS:?} readable",
        frames.len()
    ));
    // productpage -> reviews goes through the waypoint, which keeps its upstream
    // connections open: reviews' ztunnel has not logged them closed yet, so that hop is
    // checked in the waypoint's own log.
    for (src, dst) in [("curl", "productpage"), ("bookinfo-reviews", "ratings")] {
        let src = format!("src.identity=spiffe://cluster.local/ns/{NS}/sa/{src}");
        let logged = wait_for(LOGGED, || {
            cluster.ztunnel_logged(|l| l.contains("inbound connection closed") && l.contains(&src))
        })
        .await;
        ensure!(logged, "no ztunnel logged a tunnel from {src} (to {dst})");
        println!("      {dst} received {src}");
    }
    let productpage =
        format!("src_identity=\"spiffe://cluster.local/ns/{NS}/sa/bookinfo-productpage\"");
    let to_reviews = "dst_service=\"reviews.bookinfo.svc.cluster.local\"";
    let logged = wait_for(LOGGED, || {
        waypoint_log(cluster)
            .lines()
            .any(|l| l.contains(&productpage) && l.contains(to_reviews))
    })
    .await;
    ensure!(
        logged,
        "the waypoint logged no request from productpage to reviews"
    );
    println!("      reviews' waypoint received {productpage}");
    ok("every hop arrived over HBONE with the caller's SPIFFE identity");

    step(
        "policy: allow only reviews to call ratings (AuthorizationPolicy, written to the manifests)",
    );
    ensure!(
        fetch(cluster, RATINGS).await?.success(),
        "curl could not reach ratings before any policy"
    );
    let policy = manifests.join("ratings-policy.yaml");
    let written = Instant::now();
    std::fs::write(&policy, RATINGS_POLICY)?;
    let denied = until(PROPAGATION, move || async move {
        Ok(!fetch(cluster, RATINGS).await?.success())
    })
    .await?;
    ensure!(
        denied,
        "curl could still call ratings {PROPAGATION:?} after the policy"
    );
    let elapsed = written.elapsed();
    let why = "policy=bookinfo/ratings-from-reviews-only";
    let logged =
        cluster.ztunnel_logged(|l| l.contains("denied by authorization policy") && l.contains(why));
    ensure!(
        logged,
        "curl -> ratings failed, but no ztunnel logged a denial by {why}"
    );
    ok(&format!(
        "curl -> ratings is refused by ratings' ztunnel ({elapsed:.1?} after the edit)"
    ));
    // reviews-v1 does not call ratings: ask until reviews-v2 answers.
    let mut through_ratings = None;
    for _ in 0..11 {
        let summary = page(cluster).await?;
        ensure!(
            !summary.contains("ratings(error"),
            "reviews lost ratings too: {summary}"
        );
        if summary.contains("ratings(") {
            through_ratings = Some(summary);
            break;
        }
    }
    let summary = through_ratings.context("reviews-v2 never showed ratings under the policy")?;
    ok(&format!("reviews -> ratings still works: {summary}"));

    step("remove the policy");
    std::fs::remove_file(&policy)?;
    let allowed = until(PROPAGATION, move || async move {
        Ok(fetch(cluster, RATINGS).await?.success())
    })
    .await?;
    ensure!(
        allowed,
        "curl still could not call ratings after the policy was removed"
    );
    ok("curl -> ratings works again");
    l7(cluster, manifests).await?;
    println!("\ntour passed");
    Ok(())
}

const CANARY: &str = "\
# Written by `lab tour`: 90% of reviews traffic to v1, 10% to v2; a tester gets a fault.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: tester}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
";

const L7_POLICY: &str = "\
# Written by `lab tour`: the waypoint refuses reviews of product 13.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-product-13, namespace: bookinfo}
spec:
  targetRefs: [{kind: Service, group: \"\", name: reviews}]
  action: DENY
  rules:
  - to: [{operation: {paths: [/reviews/13]}}]
";

const REVIEWS: &str = "http://reviews:9080/reviews/0";

/// The waypoint's steps: a canary split, a fault and an L7 policy, all in reviews'
/// waypoint.
async fn l7(cluster: &Cluster, manifests: &Path) -> Result<()> {
    step("canary: 90% of reviews traffic to v1, 10% to v2 (VirtualService in the waypoint)");
    let canary = manifests.join("reviews-canary.yaml");
    std::fs::write(&canary, CANARY)?;
    let applied = until(PROPAGATION, move || async move {
        let out = fetch_with(cluster, REVIEWS, &["--header", "end-user:tester"]).await?;
        Ok(out.stdout.starts_with("HTTP/1.1 503"))
    })
    .await?;
    ensure!(applied, "the VirtualService never reached the waypoint");
    let mut v2 = 0;
    const SAMPLES: usize = 200;
    for _ in 0..SAMPLES {
        let out = fetch(cluster, REVIEWS).await?;
        ensure!(
            out.success(),
            "reviews failed under the canary: {}{}",
            out.stdout,
            out.stderr
        );
        if out.stdout.contains("\"version\":\"v2\"") {
            v2 += 1;
        }
    }
    // Binomial(200, 0.1): mean 20, standard deviation 4.2.
    ensure!(
        (5..=40).contains(&v2),
        "v2 answered {v2} of {SAMPLES} (expected about 20)"
    );
    ok(&format!(
        "v2 answered {v2} of {SAMPLES} requests, v1 the rest"
    ));

    step("fault: requests from end-user tester are aborted with 503 by the waypoint");
    let out = fetch_with(cluster, REVIEWS, &["--header", "end-user:tester"]).await?;
    ensure!(
        out.stdout.starts_with("HTTP/1.1 503") && out.stdout.contains("fault filter abort"),
        "the tester got {:?}",
        out.stdout
    );
    ensure!(
        fetch(cluster, REVIEWS).await?.success(),
        "everyone else should still get reviews"
    );
    ok("end-user: tester gets 503 fault filter abort; everyone else gets reviews");

    step(
        "L7 policy: the waypoint denies GET /reviews/13 (AuthorizationPolicy on the reviews Service)",
    );
    let policy = manifests.join("reviews-policy.yaml");
    std::fs::write(&policy, L7_POLICY)?;
    let denied = until(PROPAGATION, move || async move {
        let out = fetch(cluster, "http://reviews:9080/reviews/13").await?;
        Ok(out.stdout.starts_with("HTTP/1.1 403"))
    })
    .await?;
    ensure!(denied, "/reviews/13 was never denied");
    let out = fetch(cluster, "http://reviews:9080/reviews/13").await?;
    ensure!(
        out.stdout.contains("RBAC: access denied"),
        "403 without the RBAC body: {:?}",
        out.stdout
    );
    ensure!(
        fetch(cluster, REVIEWS).await?.success(),
        "/reviews/0 should still be allowed"
    );
    ok("/reviews/13 gets 403 RBAC: access denied, /reviews/0 still works");

    step("remove the waypoint's config");
    std::fs::remove_file(&policy)?;
    std::fs::remove_file(&canary)?;
    let restored = until(PROPAGATION, move || async move {
        Ok(fetch(cluster, "http://reviews:9080/reviews/13")
            .await?
            .success())
    })
    .await?;
    ensure!(
        restored,
        "/reviews/13 still denied after the policy was removed"
    );
    ok("reviews answers every request again");
    Ok(())
}

fn waypoint_log(cluster: &Cluster) -> String {
    let log = cluster
        .config()
        .work_dir
        .join("pods")
        .join(format!("{NS}.waypoint-0"))
        .join("istio-proxy.log");
    std::fs::read_to_string(log).unwrap_or_default()
}

/// One productpage request from curl; its one-line summary of the hops.
async fn page(cluster: &Cluster) -> Result<String> {
    let out = fetch(cluster, PAGE).await?;
    if !out.success() {
        bail!(
            "curl -> productpage failed ({}):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    // `demo-app get` prints the status line, then the body.
    let body = out.stdout.split_once('\n').map_or("", |(_, body)| body);
    let body: serde_json::Value = serde_json::from_str(body.trim())
        .with_context(|| format!("productpage answered {:?}", out.stdout))?;
    Ok(body["summary"].as_str().unwrap_or_default().to_owned())
}

async fn fetch(cluster: &Cluster, url: &str) -> Result<crate::cluster::ExecOutput> {
    fetch_with(cluster, url, &[]).await
}

/// `demo-app get URL` in curl with `extra` arguments (e.g. `--header NAME:VALUE`).
async fn fetch_with(
    cluster: &Cluster,
    url: &str,
    extra: &[&str],
) -> Result<crate::cluster::ExecOutput> {
    let mut argv = vec!["demo-app", "get", url, "--timeout", "3s"];
    argv.extend_from_slice(extra);
    cluster.exec(NS, CLIENT, &argv, EXEC_BOUND).await
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn ok(what: &str) {
    println!("  ok {what}");
}

/// Copies a directory tree (the manifests a tour or test may then edit).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
