//! The metrics trial: both ztunnels count one connection's exact bytes.

use super::*;

/// ztunnel's metrics port, on every interface of its node.
const METRICS_PORT: u16 = 15020;
/// The metered exchange: the client sends this many bytes, the server answers with
/// [`RESPONSE_BYTES`], then both close.
const REQUEST_BYTES: usize = 3_000;
const RESPONSE_BYTES: usize = 70_001;
const METERED_PORT: u16 = 9090;

/// Node `node`'s ztunnel metrics page, fetched from inside the node (ztunnel runs in the
/// node's namespace and listens on `0.0.0.0:15020` there).
async fn scrape(cluster: &Cluster, node: usize) -> Result<String> {
    let lab_node = cluster.lab().node(node);
    let addr = SocketAddr::new(IpAddr::V4(lab_node.ip()), METRICS_PORT);
    let fetch = async {
        let mut s = lab_node.connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: ztunnel\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = timeout(IO_BOUND, fetch)
        .await
        .with_context(|| format!("no answer from {addr}/metrics within {IO_BOUND:?}"))?
        .with_context(|| format!("scraping node-{node}'s ztunnel at {addr}"))?;
    let (head, body) = out.split_once("\r\n\r\n").context("not an HTTP answer")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}/metrics answered {head}"
    );
    Ok(body.to_owned())
}

type Labels = std::collections::BTreeMap<String, String>;

/// The samples of `name` whose labels include every pair of `want`.
fn series(page: &str, name: &str, want: &[(&str, &str)]) -> Vec<(Labels, f64)> {
    page.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels: Labels = labels
                .split("\",")
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            let matches = want
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
            Some((labels, value.parse().ok()?)).filter(|_| matches)
        })
        .collect()
}

/// The one sample of `name` matching `want` (0 when there is none yet); more than one
/// is an error, as the label set must single the connection out.
fn sample(page: &str, name: &str, want: &[(&str, &str)]) -> Result<f64> {
    match series(page, name, want).as_slice() {
        [] => Ok(0.0),
        [(_, v)] => Ok(*v),
        many => bail!("{} series of {name} match {want:?}: {many:?}", many.len()),
    }
}

/// Answers [`REQUEST_BYTES`] with [`RESPONSE_BYTES`] on [`METERED_PORT`] inside the pod,
/// then waits for the client to close.
fn metered_server(pod: &Pod) -> Result<tokio::task::JoinHandle<()>> {
    let listener = pod.listen(METERED_PORT)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0; REQUEST_BYTES];
                if stream.read_exact(&mut request).await.is_err() {
                    return;
                }
                let response: Vec<u8> = (0..RESPONSE_BYTES).map(|i| (i % 251) as u8).collect();
                if stream.write_all(&response).await.is_err() {
                    return;
                }
                let _ = stream.shutdown().await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    }))
}

/// Waits until both ztunnels have the client and the server in their state and each
/// proxies its pod, as their own gauges say.
async fn ztunnels_ready(cluster: &Cluster) -> Result<bool> {
    until(PROPAGATION, || async {
        for node in 0..2 {
            let page = scrape(cluster, node).await?;
            let addresses = sample(
                &page,
                "ztunnel_xds_resources",
                &[("type_url", "type.googleapis.com/istio.workload.Address")],
            )?;
            let running = sample(&page, "ztunnel_pods", &[("state", "running")])?;
            if addresses < 2.0 || running < 1.0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

pub(super) async fn metrics_count_exact_bytes() -> Result<()> {
    let env = Env::start("metrics").await?;
    let client = env.pod("client")?;
    let server = env.pod("server")?;
    let _server = metered_server(&server)?;
    let addr = SocketAddr::new(IpAddr::V4(server.ip()), METERED_PORT);
    ensure!(
        ztunnels_ready(&env.cluster).await?,
        "the ztunnels' gauges never showed both workloads and their pods\n{}",
        env.logs()
    );

    // One connection, the first between these pods: its counts are the totals.
    let exchange = async {
        let mut stream = client.connect(addr).await?;
        let request: Vec<u8> = (0..REQUEST_BYTES).map(|i| (i % 241) as u8).collect();
        stream.write_all(&request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response.len())
    };
    let received = timeout(IO_BOUND, exchange)
        .await
        .context("the metered exchange did not finish")?
        .with_context(|| format!("the metered exchange failed\n{}", env.logs()))?;
    ensure!(
        received == RESPONSE_BYTES,
        "the client got {received} bytes"
    );

    let connection = |reporter| {
        [
            ("reporter", reporter),
            ("source_workload_namespace", "mesh"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/mesh/sa/client",
            ),
            ("destination_workload_namespace", "mesh"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/mesh/sa/server",
            ),
            ("request_protocol", "tcp"),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
        ]
    };
    let reporters = [(0, "source", "outbound"), (1, "destination", "inbound")];
    // Both sides write their close once the client and the server have both closed.
    let closed = until(PROPAGATION, || async {
        for (node, reporter, direction) in reporters {
            let page = scrape(&env.cluster, node).await?;
            let closed = sample(
                &page,
                "istio_tcp_connections_closed_total",
                &connection(reporter),
            )?;
            let active = sample(
                &page,
                "ztunnel_active_connections",
                &[("direction", direction)],
            )?;
            if closed < 1.0 || active != 0.0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    ensure!(
        closed,
        "the connection's close was not counted on both ztunnels\n{}",
        env.logs()
    );

    let mut label_sets = Vec::new();
    for (node, reporter, _) in reporters {
        let page = scrape(&env.cluster, node).await?;
        let want = connection(reporter);
        let count = |name: &str| sample(&page, name, &want);
        let seen = (
            count("istio_tcp_connections_opened_total")?,
            count("istio_tcp_connections_closed_total")?,
            count("istio_tcp_received_bytes_total")?,
            count("istio_tcp_sent_bytes_total")?,
        );
        let expected = (1.0, 1.0, REQUEST_BYTES as f64, RESPONSE_BYTES as f64);
        ensure!(
            seen == expected,
            "node-{node} ({reporter}): (opened, closed, received, sent) = {seen:?}, expected {expected:?}\n{page}"
        );
        let (mut labels, _) = series(&page, "istio_tcp_sent_bytes_total", &want)
            .pop()
            .context("no series")?;
        for (label, value) in [
            ("source_workload", "client"),
            ("source_canonical_service", "client"),
            ("destination_workload", "server"),
            ("destination_canonical_service", "server"),
            ("destination_service", "unknown"),
        ] {
            ensure!(
                labels.get(label).map(String::as_str) == Some(value),
                "node-{node}: {label} is {:?}, expected {value:?}: {labels:?}",
                labels.get(label)
            );
        }
        ensure!(labels["source_cluster"] != "unknown", "{labels:?}");
        labels.remove("reporter");
        label_sets.push(labels);
    }
    ensure!(
        label_sets[0] == label_sets[1],
        "both reporters label the connection alike, but for the reporter: {label_sets:#?}"
    );
    Ok(())
}
