//! Network: no route anywhere, loopback included, only a down `lo`, and no
//! name resolution; proven without sending a packet off the machine.

use crate::harness::{answer_bound, Checks, Jail, Kind};

const PROBE: &str = include_str!("../probes/network.py");

pub async fn network<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("network");
    let ran = jail.probe(PROBE, answer_bound()).await.ran;
    checks.context(ran.describe("network"));
    checks.check("the network probe answered", ran.answered());
    checks.check(
        format!(
            "no route to the world: UDP connect to 192.0.2.1 gives ENETUNREACH (got {})",
            ran.line("UDP4")
        ),
        ran.has("UDP4 ENETUNREACH"),
    );
    checks.check(
        format!(
            "no IPv6 route: UDP connect to 2001:db8::1 fails (got {})",
            ran.line("UDP6")
        ),
        ["ENETUNREACH", "EAFNOSUPPORT", "EADDRNOTAVAIL"]
            .iter()
            .any(|e| ran.has(&format!("UDP6 {e}"))),
    );
    checks.check(
        format!(
            "no route to loopback: TCP to 127.0.0.1 gives ENETUNREACH (got {})",
            ran.line("TCPLO")
        ),
        ran.has("TCPLO ENETUNREACH"),
    );
    checks.check(
        format!("the only interface is lo ({})", ran.line("IFACES")),
        ran.has("IFACES [(1, 'lo')]"),
    );
    checks.check(
        format!("no interface is up (up: {})", ran.line("UP")),
        ran.has("UP []"),
    );
    checks.check(
        format!(
            "name resolution fails, without sending ({})",
            ran.line("DNS")
        ),
        ran.line("DNS").starts_with("FAIL"),
    );
}
