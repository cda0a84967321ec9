//! Seccomp: each refused call tried with both walls (nsjail.cfg's policy and
//! the job's own filter), with each alone and with neither, so every refusal
//! is shown to come from the wall that should make it, and the list of each
//! wall is proven whole on its own.

use std::collections::BTreeMap;

use crate::harness::{answer_bound, Checks, Jail, Kind, Ran, Scratch};

const PROBE: &str = include_str!("../probes/seccomp.py");

/// What one call gave in one run.
type Results = BTreeMap<String, String>;

pub async fn seccomp<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("seccomp");
    let scratch = Scratch::new(&format!("seccomp-{}", K::NAME));
    let no_policy = scratch.policy(|cfg| strip_lines(cfg, "seccomp_string:"));
    let no_filter = scratch.runner_without_job_filter();

    // (run, without the jail policy, without the job filter)
    let mut results: BTreeMap<&str, (Ran, Results)> = BTreeMap::new();
    for (run, drop_policy, drop_filter) in [
        ("both", false, false),
        ("policy", false, true),
        ("filter", true, false),
        ("none", true, true),
    ] {
        let ran = if run == "both" {
            jail.probe(PROBE, answer_bound()).await.ran
        } else {
            let control = Jail::<K>::start(&format!("seccomp-{run}"), |config| {
                if drop_policy {
                    config.config_file = no_policy.clone();
                }
                if drop_filter {
                    config.runner_dir = no_filter.clone();
                }
            })
            .await;
            let ran = control.probe(PROBE, answer_bound()).await.ran;
            control.close().await;
            ran
        };
        checks.context(ran.describe(&format!("seccomp-{run}")));
        let calls: Results = ran
            .lines("SYSCALL")
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let (name, _walls, result) = (words.next()?, words.next()?, words.next()?);
                Some((name.to_string(), result.to_string()))
            })
            .collect();
        let made = ran.lines("SYSCALL").count();
        checks.check(
            format!(
                "seccomp: the {run} run made all {} calls and answered (made {made})",
                ran.line("CALLS")
            ),
            ran.answered() && ran.line("CALLS") == made.to_string(),
        );
        results.insert(run, (ran, calls));
    }

    let get = |run: &str, name: &str| {
        results[run]
            .1
            .get(name)
            .cloned()
            .unwrap_or_else(|| "?".into())
    };
    let both = &results["both"].0;
    let (mut on_policy, mut on_filter) = (0, 0);
    let (mut policy_leaks, mut filter_leaks) = (Vec::new(), Vec::new());
    let (mut policy_passes, mut kernel_too) = (Vec::new(), Vec::new());
    for line in both.lines("SYSCALL") {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, walls, result, want] = words[..] else {
            checks.check(
                format!("seccomp: a well-formed SYSCALL line ({line})"),
                false,
            );
            continue;
        };
        let (policy, filter, none) = (get("policy", name), get("filter", name), get("none", name));
        let context =
            format!("jail policy alone: {policy}; job filter alone: {filter}; neither: {none}");
        if result == want {
            checks.check(format!("seccomp: {name} -> {result} ({context})"), true);
        } else {
            checks.check(
                format!("seccomp: {name} -> {result}, want {want} ({context})"),
                false,
            );
        }
        if walls.contains('P') {
            on_policy += 1;
            if policy != want {
                policy_leaks.push(format!("{name}={policy}"));
            }
        } else if policy != want {
            policy_passes.push(name.to_string());
        }
        if walls.contains('J') {
            on_filter += 1;
            if filter != want {
                filter_leaks.push(format!("{name}={filter}"));
            }
        }
        if none == want {
            kernel_too.push(name.to_string());
        }
    }
    let leaked = |leaks: &[String]| {
        if leaks.is_empty() {
            String::new()
        } else {
            format!(" (let through: {})", leaks.join(" "))
        }
    };
    checks.check(
        format!(
            "seccomp: nsjail.cfg's policy alone refuses all {on_policy} calls of its list{}",
            leaked(&policy_leaks)
        ),
        on_policy > 0 && policy_leaks.is_empty(),
    );
    checks.check(
        format!(
            "seccomp: the job's own filter alone refuses all {on_filter} calls of its list, \
             installed before the script{}",
            leaked(&filter_leaks)
        ),
        on_filter > 0 && filter_leaks.is_empty(),
    );
    checks.check(
        "personality(0xffffffff), the query, is still allowed",
        both.has("PERSONA_QUERY 0"),
    );
    checks.info(format!(
        "seccomp: the jail policy lets through, for the zygote, and only the job filter \
         refuses: {}",
        policy_passes.join(" ")
    ));
    checks.info(format!(
        "seccomp: with neither wall the kernel itself refuses (no capability for it): {}; \
         every other refusal above comes from a wall",
        kernel_too.join(" ")
    ));
}

/// `text` without its lines that start with `prefix`.
fn strip_lines(text: &str, prefix: &str) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with(prefix)).collect();
    assert!(
        kept.len() < text.lines().count(),
        "no {prefix} line to remove"
    );
    kept.join("\n") + "\n"
}
