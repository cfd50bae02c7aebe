use super::*;

fn any(payload: &str) -> Any {
    Any {
        type_url: "type.googleapis.com/test.T".into(),
        value: payload.as_bytes().to_vec(),
    }
}

const T: &str = "type.googleapis.com/test.T";

/// A snapshot of one type from (name, payload) pairs.
fn resources(pairs: &[(&str, &str)]) -> Arc<Resources> {
    let mut b = Snapshot::builder();
    for (name, payload) in pairs {
        b.insert(T, *name, any(payload));
    }
    b.build().resources(T)
}

/// The version a client holds after receiving `payload`.
fn v(payload: &str) -> Option<Version> {
    Some(content_version(&any(payload)))
}

/// What a client holds, from (name, version) pairs.
fn holding<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<Version>)>) -> Held {
    pairs.into_iter().map(|(n, v)| (Arc::from(n), v)).collect()
}

struct Case<'a> {
    name: &'a str,
    held: Vec<(&'a str, Option<Version>)>,
    snapshot: Vec<(&'a str, &'a str)>,
    scope: Scope<'a>,
    changed: Vec<&'a str>,
    removed: Vec<&'a str>,
}

#[test]
fn diff_table() {
    let ab: BTreeSet<String> = ["a".into(), "b".into()].into();
    let cases = [
        Case {
            name: "fresh wildcard client gets everything",
            held: vec![],
            snapshot: vec![("a", "1"), ("b", "1"), ("c", "1")],
            scope: Scope::All,
            changed: vec!["a", "b", "c"],
            removed: vec![],
        },
        Case {
            name: "in sync: nothing",
            held: vec![("a", v("1")), ("b", v("1"))],
            snapshot: vec![("a", "1"), ("b", "1")],
            scope: Scope::All,
            changed: vec![],
            removed: vec![],
        },
        Case {
            name: "one changed, one added, one removed",
            held: vec![("a", v("1")), ("b", v("1")), ("c", v("1"))],
            snapshot: vec![("a", "1"), ("b", "2"), ("d", "1")],
            scope: Scope::All,
            changed: vec!["b", "d"],
            removed: vec!["c"],
        },
        Case {
            name: "a version the server never issued is replaced",
            held: vec![("a", None)],
            snapshot: vec![("a", "1")],
            scope: Scope::All,
            changed: vec!["a"],
            removed: vec![],
        },
        Case {
            name: "explicit names ignore the rest of the snapshot",
            held: vec![("a", v("1"))],
            snapshot: vec![("a", "2"), ("b", "1"), ("c", "1")],
            scope: Scope::Names(&ab),
            changed: vec!["a", "b"],
            removed: vec![],
        },
        Case {
            name: "explicit name deleted",
            held: vec![("a", v("1")), ("b", v("1"))],
            snapshot: vec![("b", "1"), ("c", "1")],
            scope: Scope::Names(&ab),
            changed: vec![],
            removed: vec!["a"],
        },
        Case {
            name: "explicit name never existed and is not held: nothing to remove",
            held: vec![],
            snapshot: vec![("c", "1")],
            scope: Scope::Names(&ab),
            changed: vec![],
            removed: vec![],
        },
        Case {
            name: "empty snapshot removes everything held under wildcard",
            held: vec![("z", v("9")), ("a", v("1"))],
            snapshot: vec![],
            scope: Scope::All,
            changed: vec![],
            removed: vec!["a", "z"],
        },
    ];
    for case in cases {
        let held = holding(case.held.iter().copied());
        let d = diff(&held, &resources(&case.snapshot), case.scope);
        let changed: Vec<&str> = d.changed.iter().map(|(n, _)| &**n).collect();
        assert_eq!(changed, case.changed, "{}: changed", case.name);
        let removed: Vec<&str> = d.removed.iter().map(|n| &**n).collect();
        assert_eq!(removed, case.removed, "{}: removed", case.name);
        assert_eq!(d.is_empty(), changed.is_empty() && d.removed.is_empty());
        for (name, entry) in &d.changed {
            let payload = case.snapshot.iter().find(|(n, _)| *n == &**name).unwrap().1;
            assert_eq!(
                entry.to_any(),
                any(payload),
                "{}: payload of {name}",
                case.name
            );
            assert_eq!(
                Some(entry.version),
                v(payload),
                "{}: version of {name}",
                case.name
            );
        }
    }
}

#[test]
fn versions_are_content_hashes() {
    let v1 = content_version(&any("x"));
    let text = v1.to_string();
    assert_eq!(text.len(), 16);
    assert!(text.chars().all(|c| c.is_ascii_hexdigit()), "{text}");
    assert_eq!(Version::parse(&text), Some(v1), "what is sent reads back");
    for other in [
        "",
        "xyz",
        "0123456789abcdeg",
        "0123456789abcdef0",
        "+123456789abcdef",
    ] {
        assert_eq!(Version::parse(other), None, "{other:?}");
    }
    assert_eq!(v1, content_version(&any("x")), "same content, same version");
    assert_ne!(v1, content_version(&any("y")));
    let other_type = Any {
        type_url: "type.googleapis.com/test.U".into(),
        value: b"x".to_vec(),
    };
    assert_ne!(v1, content_version(&other_type), "the type URL is hashed");
}

#[test]
fn snapshots_with_equal_content_have_equal_versions() {
    let build = |pairs: &[(&str, &str)]| {
        let mut b = Snapshot::builder();
        for (n, p) in pairs {
            b.insert(T, *n, any(p));
        }
        b.build()
    };
    let one = build(&[("a", "1"), ("b", "2")]);
    assert_eq!(one.version(), build(&[("b", "2"), ("a", "1")]).version());
    assert_ne!(one.version(), build(&[("a", "1"), ("b", "3")]).version());
    assert_ne!(one.version(), build(&[("a", "1")]).version());
    assert!(one.get("type.googleapis.com/absent").is_none());
    assert!(one.resources("type.googleapis.com/absent").is_empty());
}

#[test]
fn later_insert_of_a_name_wins() {
    let mut b = Snapshot::builder();
    b.insert(T, "a", any("old")).insert(T, "a", any("new"));
    let s = b.build();
    assert_eq!(s.get(T).unwrap().len(), 1);
    assert_eq!(s.get(T).unwrap().get("a").unwrap().to_any(), any("new"));
}

#[test]
fn unchanged_entries_and_types_are_shared_with_the_previous_snapshot() {
    const U: &str = "type.googleapis.com/test.U";
    let mut b = Snapshot::builder();
    b.insert(T, "a", any("1")).insert(T, "b", any("1"));
    b.insert(U, "u", any("1"));
    let first = Arc::new(b.build());

    let mut b = SnapshotBuilder::from_previous(first.clone());
    b.insert(T, "a", any("1")).insert(T, "b", any("2"));
    b.insert(U, "u", any("1"));
    let second = b.build();

    let (t1, t2) = (first.get(T).unwrap(), second.get(T).unwrap());
    assert!(!Arc::ptr_eq(t1, t2), "type T changed");
    assert!(Arc::ptr_eq(t1.get("a").unwrap(), t2.get("a").unwrap()));
    assert!(!Arc::ptr_eq(t1.get("b").unwrap(), t2.get("b").unwrap()));
    assert!(
        Arc::ptr_eq(first.get(U).unwrap(), second.get(U).unwrap()),
        "an unchanged type keeps its map"
    );
    assert_ne!(first.version(), second.version());
}

#[test]
fn diff_since_the_last_snapshot_equals_a_full_diff() {
    let last_pairs = [("a", "1"), ("b", "1"), ("c", "1"), ("e", "1")];
    let mut b = Snapshot::builder();
    for (name, payload) in last_pairs {
        b.insert(T, name, any(payload));
    }
    let last = Arc::new(b.build());
    // b changes, c goes, d arrives, e is rewritten with the same content (a new
    // allocation but the same version), a stays.
    let mut b = SnapshotBuilder::from_previous(last.clone());
    b.insert(T, "a", any("1"))
        .insert(T, "b", any("2"))
        .insert(T, "d", any("1"));
    b.insert_entry(T, "e", Arc::new(Entry::new(any("1"))));
    let current = b.build();
    let (last, current) = (last.resources(T), current.resources(T));
    let ab: BTreeSet<String> = ["a".into(), "b".into(), "c".into()].into();
    for scope in [Scope::All, Scope::Names(&ab)] {
        // What the client holds after the last diff: last's versions within the scope.
        let held = holding(
            last.iter()
                .filter(|(n, _)| match scope {
                    Scope::All => true,
                    Scope::Names(names) => names.contains(*n),
                })
                .map(|(n, e)| (n, Some(e.version))),
        );
        let full = diff(&held, &current, scope);
        let since = diff_since(&held, &last, &current, scope);
        assert_eq!(since, full, "{scope:?}");
        assert!(!since.is_empty());
    }
}
