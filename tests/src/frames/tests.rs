use super::*;

const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 2), 40000);
const B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 2), 8080);

/// An Ethernet/IPv4/TCP frame, with Ethernet padding to the 60-byte minimum.
fn tcp_frame(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

fn frames(list: Vec<Vec<u8>>) -> Frames {
    Frames::new(
        list.into_iter()
            .map(|data| Frame {
                interface: 1,
                at: Duration::ZERO,
                data,
            })
            .collect(),
    )
}

#[test]
fn parses_a_segment_and_ignores_ethernet_padding() {
    let f = tcp_frame(A, B, 7, b"hi");
    let s = tcp_segment(&f).unwrap();
    assert_eq!((s.src, s.dst, s.seq, s.payload), (A, B, 7, &b"hi"[..]));
}

#[test]
fn non_tcp_and_malformed_frames_are_not_segments() {
    let mut arp = tcp_frame(A, B, 0, b"");
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(tcp_segment(&arp), None);
    let mut udp = tcp_frame(A, B, 0, b"x");
    udp[23] = 17;
    assert_eq!(tcp_segment(&udp), None);
    let mut fragment = tcp_frame(A, B, 0, b"x");
    fragment[20] = 0x20; // more fragments
    assert_eq!(tcp_segment(&fragment), None);
    let mut bad_offset = tcp_frame(A, B, 0, b"x");
    bad_offset[46] = 0xf0; // 60-byte TCP header in a short frame
    assert_eq!(tcp_segment(&bad_offset), None);
    for len in 0..54 {
        assert_eq!(
            tcp_segment(&tcp_frame(A, B, 0, b"")[..len]),
            None,
            "len {len}"
        );
    }
}

#[test]
fn finds_a_marker_split_across_segments_out_of_order() {
    let f = frames(vec![
        tcp_frame(A, B, 1003, b"KER-42 tail"),
        tcp_frame(A, B, 1000, b"MAR"),
        tcp_frame(A, B, 1002, b"RKE"), // retransmission overlapping both
    ]);
    assert!(f.contains_bytes(b"MARKER-42"));
    assert!(!f.contains_bytes(b"MARKER-43"));
    assert_eq!(f.tcp_flows()[0].runs, vec![b"MARKER-42 tail".to_vec()]);
}

#[test]
fn directions_and_gaps_are_not_stitched_together() {
    let f = frames(vec![
        tcp_frame(A, B, 0, b"MAR"),
        tcp_frame(B, A, 0, b"KER"),
        tcp_frame(A, B, 10, b"KER"),
    ]);
    assert!(!f.contains_bytes(b"MARKER"));
    let flows = f.tcp_flows();
    assert_eq!(flows.len(), 2);
    let ab = flows.iter().find(|fl| fl.src == A).unwrap();
    assert_eq!(ab.runs, vec![b"MAR".to_vec(), b"KER".to_vec()]);
    assert_eq!(ab.len(), 6);
}

#[test]
fn sequence_numbers_wrap() {
    let f = frames(vec![
        tcp_frame(A, B, u32::MAX - 1, b"MA"),
        tcp_frame(A, B, 0, b"RKER"),
    ]);
    assert!(f.contains_bytes(b"MARKER"));
}

#[test]
fn raw_frames_are_searched_too() {
    let mut udp = tcp_frame(A, B, 0, b"in-a-udp-datagram");
    udp[23] = 17;
    let f = frames(vec![udp]);
    assert!(f.contains_bytes(b"udp-datagram"));
    assert!(f.tcp_flows().is_empty());
    assert_eq!(f.between(*A.ip(), *B.ip()).count(), 0);
}
