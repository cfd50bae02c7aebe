//! Trials of PeerAuthentication and L4 AuthorizationPolicy on the local mesh.

use super::*;

/// A namespace outside the mesh with one pod on node 0: its traffic reaches captured pods
/// in plaintext (on their ztunnel's 15006).
pub(super) const OUTSIDER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: legacy, labels: {app: outsider}}
spec: {nodeName: node-0, serviceAccountName: outsider, containers: []}
status: {podIP: 10.244.0.20}
";

/// STRICT mutual TLS for the whole `mesh` namespace.
const STRICT_MESH: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mesh}
spec: {mtls: {mode: STRICT}}
";

/// An ALLOW policy on the server for one principal of the `mesh` namespace.
fn allow_principal(service_account: &str) -> String {
    format!(
        "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-one, namespace: mesh}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/mesh/sa/{service_account}]}}}}]
"
    )
}

/// A namespace-wide ALLOW (no selector): only peers from the `mesh` namespace.
const ALLOW_MESH_NAMESPACE: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-only, namespace: mesh}
spec:
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [mesh]}}]
";

/// A dry-run DENY of the client and an AUDIT of everything reaching the server.
const DRY_RUN_AND_AUDIT: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-client-dry-run
  namespace: mesh
  annotations: {istio.io/dry-run: 'true'}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-server, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: AUDIT
  rules: [{}]
";

pub(super) async fn strict_mtls() -> Result<()> {
    let Echoing {
        mut env,
        client,
        addr,
        _server,
    } = Echoing::start("strict").await?;
    let outsider = env.add_outsider().await?;
    // PERMISSIVE (no PeerAuthentication): plaintext from outside the mesh is accepted.
    ensure!(
        becomes_allowed(&outsider, addr).await,
        "plaintext was refused before any PeerAuthentication\n{}",
        env.logs()
    );

    env.write("strict.yaml", STRICT_MESH)?;
    let reset = becomes_reset(&outsider, addr).await;
    ensure!(reset, "STRICT never reset plaintext\n{}", env.logs());
    assert_eventually!(
        env.cluster.ztunnel_log(1).lines().any(|l| l
            .contains("policy=istio-system/istio_converted_static_strict")
            && l.contains("src.addr=10.244.0.20")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not name the static STRICT policy for the refused plaintext"
    );
    // Mesh traffic is mutual TLS, so STRICT lets it through.
    echo(&client, addr)
        .await
        .with_context(|| format!("HBONE traffic under STRICT\n{}", env.logs()))?;

    env.remove("strict.yaml")?;
    ensure!(
        becomes_allowed(&outsider, addr).await,
        "plaintext still refused after the PeerAuthentication was removed\n{}",
        env.logs()
    );
    Ok(())
}

pub(super) async fn live_connection_cut_off() -> Result<()> {
    let Echoing {
        env,
        client,
        addr,
        _server,
    } = Echoing::start("cut-off").await?;
    // A long-lived connection, working before the policy changes.
    let stream = client.connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"before\n").await?;
    let echoed = timeout(IO_BOUND, lines.next_line()).await??;
    ensure!(
        echoed.as_deref() == Some("before"),
        "echo answered {echoed:?}"
    );

    env.write("deny.yaml", DENY_CLIENT)?;
    // The connection is closed by the server's ztunnel; the client sees its end (or an
    // error), never another echo.
    let ended = timeout(PROPAGATION, async {
        match lines.next_line().await {
            Ok(Some(line)) => bail!("the denied connection still echoed {line:?}"),
            Ok(None) | Err(_) => Ok(()),
        }
    })
    .await;
    match ended {
        Ok(result) => result?,
        Err(_) => bail!(
            "the live connection was not cut off within {PROPAGATION:?}\n{}",
            env.logs()
        ),
    }
    assert_eventually!(
        env.cluster.ztunnel_log(1).lines().any(|l| l
            .contains("live connection now denied by authorization policy")
            && l.contains("policy=mesh/deny-client")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not log the cut-off by mesh/deny-client"
    );
    // New connections are refused too; once the policy goes, they work again.
    ensure!(
        echo(&client, addr).await.is_err(),
        "a new connection was allowed"
    );
    env.remove("deny.yaml")?;
    ensure!(
        becomes_allowed(&client, addr).await,
        "traffic did not come back after the policy was removed\n{}",
        env.logs()
    );
    Ok(())
}

pub(super) async fn allow_policies() -> Result<()> {
    let Echoing {
        mut env,
        client,
        addr,
        _server,
    } = Echoing::start("allow").await?;
    // An ALLOW policy for someone else: the client matches none, so it is refused.
    env.write("allow.yaml", &allow_principal("nobody"))?;
    ensure!(
        becomes_refused(&client, addr).await,
        "an ALLOW policy for another principal let the client in\n{}",
        env.logs()
    );
    assert_eventually!(
        env.cluster
            .ztunnel_log(1)
            .lines()
            .any(|l| l.contains("matched none of the ALLOW policies")
                && l.contains("policy=mesh/allow-one")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not name the unmatched ALLOW policy"
    );
    // The same policy naming the client's principal allows it.
    env.write("allow.yaml", &allow_principal("client"))?;
    ensure!(
        becomes_allowed(&client, addr).await,
        "an ALLOW policy for the client's principal did not let it in\n{}",
        env.logs()
    );

    // Namespace-wide: every pod of `mesh` accepts peers from `mesh`, and nothing else
    // (plaintext from outside the mesh has no namespace).
    env.remove("allow.yaml")?;
    let outsider = env.add_outsider().await?;
    // Without policies plaintext is accepted (which also shows allow-one is gone).
    ensure!(
        becomes_allowed(&outsider, addr).await,
        "plaintext refused with no policy in force\n{}",
        env.logs()
    );
    env.write("mesh-only.yaml", ALLOW_MESH_NAMESPACE)?;
    let reset = becomes_reset(&outsider, addr).await;
    ensure!(
        reset,
        "the namespace-wide ALLOW did not refuse plaintext\n{}",
        env.logs()
    );
    ensure!(
        becomes_allowed(&client, addr).await,
        "the namespace-wide ALLOW refused a peer from its namespace\n{}",
        env.logs()
    );
    assert_eventually!(
        env.cluster
            .ztunnel_log(1)
            .lines()
            .any(|l| l.contains("policy=mesh/mesh-only") && l.contains("src.addr=10.244.0.20")),
        timeout = IO_BOUND,
        "node-1's ztunnel did not name mesh/mesh-only for the refused plaintext"
    );
    Ok(())
}

pub(super) async fn audit_and_dry_run() -> Result<()> {
    let Echoing {
        env,
        client,
        addr,
        _server,
    } = Echoing::start("audit").await?;
    env.write("observe.yaml", DRY_RUN_AND_AUDIT)?;
    // Nothing is enforced: wait until a connection is logged as audited (the policies
    // have arrived), and check it went through.
    let seen = |what: &'static str, policy: &'static str| {
        let env = &env;
        move || {
            env.cluster
                .ztunnel_log(1)
                .lines()
                .any(|l| l.contains(what) && l.contains(policy))
        }
    };
    let audited = seen(
        "connection audited by authorization policy",
        "policy=mesh/audit-server",
    );
    let would_deny = seen(
        "dry-run authorization policy would deny this connection",
        "policy=mesh/deny-client-dry-run",
    );
    let arrived = until(PROPAGATION, || async {
        echo(&client, addr)
            .await
            .with_context(|| format!("traffic under dry-run and AUDIT\n{}", env.logs()))?;
        Ok(audited() && would_deny())
    })
    .await;
    ensure!(
        matches!(arrived, Ok(true)),
        "no audited or dry-run line on node-1 ({arrived:?})\n{}",
        env.logs()
    );
    echo(&client, addr)
        .await
        .context("traffic after the policies arrived")?;
    Ok(())
}
