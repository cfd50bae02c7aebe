//! The local mesh as a user runs it: `lab tour`, and `lab up` + `lab exec` + a live
//! manifest edit + Ctrl-C, through the real `lab` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const TRIAL_BOUND: Duration = Duration::from_secs(180);
const STEP_BOUND: Duration = Duration::from_secs(30);
const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn main() -> ExitCode {
    lab::trial::mesh_main("local_mesh", || {
        vec![
            lab::trial::trial("the_tour_passes", TRIAL_BOUND, tour),
            lab::trial::trial(
                "up_serves_exec_applies_edits_and_stops_on_ctrl_c",
                TRIAL_BOUND,
                up_exec_ctrl_c,
            ),
        ]
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("local-mesh-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn tour() -> Result<()> {
    let work = scratch("tour");
    lab::cli::tour::tour(&work).await?;
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

/// `lab up` in the background, its stdout lines on a channel.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(manifests: &Path, work: &Path) -> Result<Up> {
        let mut child = Command::new(LAB)
            .arg("up")
            .arg(manifests)
            .arg("--work-dir")
            .arg(work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting lab up")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Up {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line containing `text`.
    async fn expect(&mut self, text: &str) -> Result<String> {
        let deadline = Instant::now() + STEP_BOUND;
        while Instant::now() < deadline {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line.clone());
                if line.contains(text) {
                    return Ok(line);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "lab up never printed {text:?}; it printed:\n{}",
            self.seen.join("\n")
        )
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exec(work: &Path, pod: &str, argv: &[&str]) -> Result<std::process::Output> {
    Command::new(LAB)
        .args(["exec", "--work-dir"])
        .arg(work)
        .arg(pod)
        .arg("--")
        .args(argv)
        .output()
        .context("running lab exec")
}

async fn up_exec_ctrl_c() -> Result<()> {
    let root = scratch("up");
    let manifests = root.join("manifests");
    let work = root.join("work");
    lab::cli::tour::copy_dir(&lab::cli::tour::bookinfo(), &manifests)?;
    let mut up = Up::start(&manifests, &work)?;
    up.expect("local mesh is up").await?;
    up.expect("Ctrl-C stops everything").await?;
    let summary = up.seen.join("\n");
    for pod in [
        "productpage-v1",
        "reviews-v1",
        "reviews-v2",
        "ratings-v1",
        "curl",
    ] {
        ensure!(
            summary.contains(&format!("bookinfo/{pod}")),
            "{pod} missing:\n{summary}"
        );
    }

    let page = exec(
        &work,
        "curl",
        &["demo-app", "get", "http://productpage:9080/productpage"],
    )?;
    let stdout = String::from_utf8_lossy(&page.stdout);
    ensure!(
        page.status.success() && stdout.starts_with("HTTP/1.1 200") && stdout.contains("reviews-v"),
        "lab exec curl -> productpage: {:?}\n{stdout}{}",
        page.status,
        String::from_utf8_lossy(&page.stderr)
    );
    for wrong in [&["bogus"][..], &["exec", "curl"], &["up", "--nodes", "0"]] {
        let status = Command::new(LAB).args(wrong).output()?.status;
        ensure!(
            status.code() == Some(2),
            "lab {wrong:?} exited {status}, not 2 (usage)"
        );
    }
    let unknown = exec(&work, "nope", &["true"])?;
    ensure!(
        !unknown.status.success(),
        "exec into a missing pod succeeded"
    );
    ensure!(
        String::from_utf8_lossy(&unknown.stderr).contains("bookinfo/curl"),
        "the error should list the pods"
    );

    // A pod added to the directory starts, and is reachable through its service.
    std::fs::write(
        manifests.join("ratings-v2.yaml"),
        "
apiVersion: v1
kind: Pod
metadata: {name: ratings-v2, namespace: bookinfo, labels: {app: ratings, version: v2}}
spec:
  nodeName: node-0
  serviceAccountName: bookinfo-ratings
  containers: [{name: ratings, image: demo-app, command: [demo-app, ratings, --version, v2]}]
status: {podIP: 10.244.0.12}
",
    )?;
    up.expect("pod started:  bookinfo/ratings-v2").await?;
    let deadline = Instant::now() + STEP_BOUND;
    loop {
        let out = exec(
            &work,
            "curl",
            &["demo-app", "get", "http://ratings:9080/ratings/0"],
        )?;
        if String::from_utf8_lossy(&out.stdout).contains("\"pod\":\"ratings-v2\"") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "ratings-v2 never answered through the service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A container whose command does not exist is reported; its pod still runs.
    std::fs::write(
        manifests.join("typo.yaml"),
        "
apiVersion: v1
kind: Pod
metadata: {name: typo, namespace: bookinfo}
spec:
  nodeName: node-1
  containers: [{name: app, image: x, command: [no-such-command-7f3a]}]
status: {podIP: 10.244.1.40}
",
    )?;
    up.expect("pod started:  bookinfo/typo").await?;
    up.expect("container app ([\"no-such-command-7f3a\"]) did not start")
        .await?;
    // A broken manifest is reported and changes nothing.
    std::fs::write(manifests.join("broken.yaml"), "kind: [")?;
    up.expect("problem:").await?;

    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGINT)?;
    up.expect("stopped;").await?;
    let deadline = Instant::now() + STEP_BOUND;
    let status = loop {
        if let Some(status) = up.child.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "lab up did not exit after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(status.success(), "lab up exited with {status}");
    ensure!(
        !work.join("session.json").exists(),
        "the session file was left behind"
    );
    let after = exec(&work, "curl", &["true"])?;
    ensure!(
        String::from_utf8_lossy(&after.stderr).contains("no local mesh is running"),
        "exec after shutdown: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
