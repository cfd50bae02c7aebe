//! Which pods the mesh captures: a pure function of a pod and its namespace.
//!
//! Follows Istio's ambient rules (`PodRedirectionEnabled` upstream, and
//! <https://istio.io/latest/docs/ambient/usage/add-workloads/>: "You can apply this
//! label to a namespace or to an individual pod"):
//! - `istio.io/dataplane-mode=ambient` on the namespace **or on the pod** selects it;
//! - `istio.io/dataplane-mode=none` on the pod opts it out, whatever the namespace says;
//! - `hostNetwork` pods share the node's namespace and are never captured.
//!
//! A selected pod is *pending* until it has an IP and a network namespace.

use std::fmt;
use std::path::Path;

use crate::source::{Namespace, Pod};

/// The label that enrolls namespaces and pods, and opts pods out.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Its enrolling value.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// Its opting-out value (meaningful on pods).
pub const DATAPLANE_MODE_NONE: &str = "none";

/// The verdict for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment<'a> {
    /// Capture it: its namespace is at `netns`.
    Enrolled { netns: &'a Path },
    /// Selected, but not ready to be captured yet.
    Pending(Pending),
    /// Not part of the mesh.
    NotEnrolled(NotEnrolled),
}

/// What a selected pod still lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    NoIp,
    NoNetns,
}

/// Why a pod is outside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEnrolled {
    HostNetwork,
    /// The pod carries `istio.io/dataplane-mode=none`.
    OptedOut,
    /// Neither the pod nor its namespace carries `istio.io/dataplane-mode=ambient`.
    NotSelected,
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoIp => "waiting for the pod's IP",
            Self::NoNetns => "waiting for the pod's network namespace",
        })
    }
}

impl fmt::Display for NotEnrolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HostNetwork => "hostNetwork pod",
            Self::OptedOut => "pod labelled istio.io/dataplane-mode=none",
            Self::NotSelected => {
                "neither pod nor namespace labelled istio.io/dataplane-mode=ambient"
            }
        })
    }
}

/// Decides whether `pod` is captured. `namespace` is `None` when the pod's namespace is
/// unknown (not listed, or already deleted): then only a pod label can select it.
pub fn enrollment<'a>(namespace: Option<&Namespace>, pod: &'a Pod) -> Enrollment<'a> {
    let mode = |labels: &crate::source::Labels| labels.get(DATAPLANE_MODE_LABEL).cloned();
    let pod_mode = mode(&pod.labels);
    if pod.host_network {
        return Enrollment::NotEnrolled(NotEnrolled::HostNetwork);
    }
    if pod_mode.as_deref() == Some(DATAPLANE_MODE_NONE) {
        return Enrollment::NotEnrolled(NotEnrolled::OptedOut);
    }
    let selected = pod_mode.as_deref() == Some(DATAPLANE_MODE_AMBIENT)
        || namespace.and_then(|ns| mode(&ns.labels)).as_deref() == Some(DATAPLANE_MODE_AMBIENT);
    if !selected {
        return Enrollment::NotEnrolled(NotEnrolled::NotSelected);
    }
    if pod.ip.is_none() {
        return Enrollment::Pending(Pending::NoIp);
    }
    match &pod.netns {
        Some(netns) => Enrollment::Enrolled { netns },
        None => Enrollment::Pending(Pending::NoNetns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Labels;

    fn labels(mode: Option<&str>) -> Labels {
        mode.map(|m| (DATAPLANE_MODE_LABEL.to_owned(), m.to_owned()))
            .into_iter()
            .collect()
    }

    #[derive(Clone, Copy)]
    struct Case {
        name: &'static str,
        /// `None`: the namespace is unknown.
        ns: Option<Option<&'static str>>,
        pod: Option<&'static str>,
        host_network: bool,
        ip: bool,
        netns: bool,
        want: Want,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        Enrolled,
        Pending(Pending),
        Not(NotEnrolled),
    }

    const READY: Case = Case {
        name: "",
        ns: Some(Some("ambient")),
        pod: None,
        host_network: false,
        ip: true,
        netns: true,
        want: Want::Enrolled,
    };

    #[test]
    fn enrollment_table() {
        use NotEnrolled::*;
        use Pending::*;
        #[rustfmt::skip]
        let cases = [
            Case { name: "ambient namespace, plain pod", ..READY },
            Case { name: "ambient namespace, pod opts out", pod: Some("none"), want: Want::Not(OptedOut), ..READY },
            Case { name: "ambient namespace, pod says ambient too", pod: Some("ambient"), ..READY },
            Case { name: "ambient namespace, unrelated pod value", pod: Some("sidecar"), ..READY },
            Case { name: "plain namespace, plain pod", ns: Some(None), want: Want::Not(NotSelected), ..READY },
            Case { name: "plain namespace, ambient pod (Istio: pod label enrolls)", ns: Some(None), pod: Some("ambient"), ..READY },
            Case { name: "none namespace, ambient pod", ns: Some(Some("none")), pod: Some("ambient"), ..READY },
            Case { name: "none namespace, plain pod", ns: Some(Some("none")), want: Want::Not(NotSelected), ..READY },
            Case { name: "unknown namespace, plain pod", ns: None, want: Want::Not(NotSelected), ..READY },
            Case { name: "unknown namespace, ambient pod", ns: None, pod: Some("ambient"), ..READY },
            Case { name: "label value is case-sensitive", ns: Some(Some("Ambient")), want: Want::Not(NotSelected), ..READY },
            Case { name: "hostNetwork in ambient namespace", host_network: true, want: Want::Not(HostNetwork), ..READY },
            Case { name: "hostNetwork with ambient pod label", host_network: true, pod: Some("ambient"), want: Want::Not(HostNetwork), ..READY },
            Case { name: "no IP yet", ip: false, want: Want::Pending(NoIp), ..READY },
            Case { name: "no netns yet", netns: false, want: Want::Pending(NoNetns), ..READY },
            Case { name: "neither IP nor netns", ip: false, netns: false, want: Want::Pending(NoIp), ..READY },
            Case { name: "opted out and not ready", pod: Some("none"), ip: false, want: Want::Not(OptedOut), ..READY },
            Case { name: "not selected and not ready", ns: Some(None), netns: false, want: Want::Not(NotSelected), ..READY },
        ];
        for case in cases {
            let ns = case.ns.map(|mode| Namespace {
                name: "ns".into(),
                labels: labels(mode),
            });
            let pod = Pod {
                uid: "u".into(),
                name: "p".into(),
                namespace: "ns".into(),
                service_account: "default".into(),
                labels: labels(case.pod),
                ip: case.ip.then(|| "10.0.0.1".parse().unwrap()),
                netns: case.netns.then(|| "/proc/1/ns/net".into()),
                host_network: case.host_network,
            };
            let got = match enrollment(ns.as_ref(), &pod) {
                Enrollment::Enrolled { netns } => {
                    assert_eq!(netns, Path::new("/proc/1/ns/net"), "{}", case.name);
                    Want::Enrolled
                }
                Enrollment::Pending(p) => Want::Pending(p),
                Enrollment::NotEnrolled(n) => Want::Not(n),
            };
            assert_eq!(got, case.want, "case: {}", case.name);
        }
    }
}
