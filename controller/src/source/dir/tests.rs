use std::time::Duration;

use super::*;
use crate::manifest::parse_file;

fn print(n: u64) -> Fingerprint {
    Fingerprint {
        modified: None,
        len: n,
        inode: n,
    }
}

fn feed(state: &mut DirectoryState, file: &str, n: u64, text: &str) -> Vec<SourceEvent> {
    let path = PathBuf::from(file);
    let contents = parse_file(&path, text);
    state.update_file(path, Some((print(n), contents)));
    state.reconcile()
}

fn summary(events: &[SourceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            SourceEvent::Applied(p) => format!("applied {}", p.key),
            SourceEvent::Deleted(k) => format!("deleted {k}"),
            SourceEvent::Problems(p) => format!("problems {}", p.len()),
            SourceEvent::Synced => "synced".to_owned(),
        })
        .collect()
}

fn service(name: &str, port: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"
    )
}

#[test]
fn adds_updates_and_deletes_only_what_changed() {
    let mut s = DirectoryState::default();
    let both = format!("{}---\n{}", service("a", "80"), service("b", "80"));
    assert_eq!(
        summary(&feed(&mut s, "x.yaml", 1, &both)),
        ["applied Service default/a", "applied Service default/b"]
    );
    let changed = format!("{}---\n{}", service("a", "80"), service("b", "81"));
    assert_eq!(
        summary(&feed(&mut s, "x.yaml", 2, &changed)),
        ["applied Service default/b"]
    );
    assert_eq!(
        summary(&feed(&mut s, "x.yaml", 3, &service("a", "80"))),
        ["deleted Service default/b"]
    );
    s.update_file(PathBuf::from("x.yaml"), None);
    assert_eq!(summary(&s.reconcile()), ["deleted Service default/a"]);
}

#[test]
fn an_invalid_edit_keeps_the_last_good_version_in_force() {
    let mut s = DirectoryState::default();
    feed(&mut s, "x.yaml", 1, &service("a", "80"));
    let events = feed(&mut s, "x.yaml", 2, &service("a", "eighty"));
    assert_eq!(summary(&events), ["problems 1"], "no delete, no apply");
    let SourceEvent::Problems(p) = &events[0] else {
        unreachable!()
    };
    assert_eq!(p[0].field.as_deref(), Some("spec.ports[0].port"));
    assert_eq!(
        summary(&feed(&mut s, "x.yaml", 3, &service("a", "81"))),
        ["applied Service default/a", "problems 0"]
    );
}

#[test]
fn an_unreadable_file_keeps_everything_it_held() {
    let mut s = DirectoryState::default();
    let both = format!("{}---\n{}", service("a", "80"), service("b", "80"));
    feed(&mut s, "x.yaml", 1, &both);
    let events = feed(&mut s, "x.yaml", 2, "kind: [unclosed\n");
    assert_eq!(summary(&events), ["problems 1"]);
}

#[test]
fn a_new_invalid_object_is_never_applied() {
    let mut s = DirectoryState::default();
    assert_eq!(
        summary(&feed(&mut s, "x.yaml", 1, &service("a", "0"))),
        ["problems 1"]
    );
}

#[test]
fn a_duplicate_is_reported_and_the_first_file_wins() {
    let mut s = DirectoryState::default();
    feed(&mut s, "a.yaml", 1, &service("web", "80"));
    let events = feed(&mut s, "b.yaml", 1, &service("web", "81"));
    assert_eq!(summary(&events), ["problems 1"]);
    let SourceEvent::Problems(p) = &events[0] else {
        unreachable!()
    };
    assert_eq!(p[0].file, PathBuf::from("b.yaml"));
    assert!(
        p[0].message.contains("a.yaml (document 1) is used"),
        "{}",
        p[0]
    );
    // Removing the first definition hands the object to the second.
    s.update_file(PathBuf::from("a.yaml"), None);
    assert_eq!(
        summary(&s.reconcile()),
        ["applied Service default/web", "problems 0"]
    );
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("controller-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn next(rx: &mut mpsc::Receiver<SourceEvent>) -> Vec<String> {
    next_within(rx, Duration::from_secs(10)).await
}

#[tokio::test]
async fn watches_a_real_directory() {
    let tmp = TempDir::new("watch");
    std::fs::create_dir(tmp.0.join("sub")).unwrap();
    std::fs::write(tmp.0.join("sub/a.yaml"), service("a", "80")).unwrap();
    std::fs::write(tmp.0.join("notes.txt"), "not a manifest").unwrap();
    std::fs::write(tmp.0.join(".a.yaml.swp"), "editor junk").unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, shutdown) = watch::channel(false);
    let source = DirectorySource::new(&tmp.0).with_interval(Duration::from_millis(20));
    let task = tokio::spawn(source.run(tx, shutdown));
    assert_eq!(next(&mut rx).await, ["applied Service default/a", "synced"]);

    // Atomic replace, as editors and `kubectl`-style tools do.
    std::fs::write(tmp.0.join("b.tmp"), service("b", "80")).unwrap();
    std::fs::rename(tmp.0.join("b.tmp"), tmp.0.join("b.yml")).unwrap();
    assert_eq!(next(&mut rx).await, ["applied Service default/b"]);

    std::fs::remove_file(tmp.0.join("sub/a.yaml")).unwrap();
    assert_eq!(next(&mut rx).await, ["deleted Service default/a"]);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

/// The events of the next scan, which must come within `patience`.
async fn next_within(rx: &mut mpsc::Receiver<SourceEvent>, patience: Duration) -> Vec<String> {
    let first = tokio::time::timeout(patience, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {patience:?}"))
        .expect("the source is running");
    let mut events = vec![first];
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    summary(&events)
}

#[tokio::test]
async fn notifications_beat_the_rescan() {
    let tmp = TempDir::new("notify");
    std::fs::write(tmp.0.join("a.yaml"), service("a", "80")).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, shutdown) = watch::channel(false);
    // A rescan a minute away: whatever arrives sooner was noticed through notifications.
    let source = DirectorySource::new(&tmp.0).with_interval(Duration::from_secs(60));
    let task = tokio::spawn(source.run(tx, shutdown));
    let patience = Duration::from_secs(5);
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["applied Service default/a", "synced"]
    );

    // Renamed into place.
    std::fs::write(tmp.0.join("b.tmp"), service("b", "80")).unwrap();
    std::fs::rename(tmp.0.join("b.tmp"), tmp.0.join("b.yaml")).unwrap();
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["applied Service default/b"]
    );
    // Rewritten in place (truncate, write, close).
    std::fs::write(tmp.0.join("a.yaml"), service("a", "81")).unwrap();
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["applied Service default/a"]
    );
    // Rewritten in place by a slow writer: nothing is taken from the half-written file.
    let path = tmp.0.join("a.yaml");
    let text = service("a", "82");
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path).unwrap(); // truncates
        let (head, tail) = text.split_at(text.len() / 2);
        file.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        file.write_all(tail.as_bytes()).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["applied Service default/a"]
    );
    // A new directory, and a file in it.
    std::fs::create_dir(tmp.0.join("sub")).unwrap();
    std::fs::write(tmp.0.join("sub/c.yaml"), service("c", "80")).unwrap();
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["applied Service default/c"]
    );
    // A bad edit is still only a problem.
    std::fs::write(tmp.0.join("sub/c.yaml"), service("c", "eighty")).unwrap();
    assert_eq!(next_within(&mut rx, patience).await, ["problems 1"]);
    std::fs::remove_file(tmp.0.join("b.yaml")).unwrap();
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["deleted Service default/b"]
    );
    // Reading files (as every scan does) is no change: nothing more arrives.
    std::fs::read_to_string(tmp.0.join("a.yaml")).unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "unexpected {:?}",
        quiet.unwrap().map(|e| summary(&[e]))
    );

    stop.send(true).unwrap();
    tokio::time::timeout(patience, task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_directory_that_appears_later_is_found_by_rescanning() {
    let tmp = TempDir::new("late");
    let dir = tmp.0.join("manifests");
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, shutdown) = watch::channel(false);
    let source = DirectorySource::new(&dir).with_interval(Duration::from_millis(20));
    let task = tokio::spawn(source.run(tx, shutdown));
    let patience = Duration::from_secs(10);
    assert_eq!(next_within(&mut rx, patience).await, ["synced"]);

    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.tmp"), service("a", "80")).unwrap();
    std::fs::rename(dir.join("a.tmp"), dir.join("a.yaml")).unwrap();
    assert_eq!(
        next_within(&mut rx, patience).await,
        ["applied Service default/a"]
    );
    stop.send(true).unwrap();
    tokio::time::timeout(patience, task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}
