//! What Linux says about processes and the machine, from `/proc`: resident memory (now and
//! its peak, which can be reset), CPU time per process, and how busy the whole machine was.

use std::fs;
use std::process::Command;

use anyhow::Context;

/// A field of `/proc/<pid>/status` in KiB, e.g. `VmRSS` (resident now) or `VmHWM` (the
/// peak since start or since [`reset_peak`]).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is not running"))?;
    parse_status_kib(&status, field).with_context(|| format!("no {field} for process {pid}"))
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Resets a process's peak resident memory (`VmHWM`) to what it holds now (Linux 4.0+,
/// `clear_refs` 5). Returns whether that worked.
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time (user + system) a process has used, in clock ticks; with `children`, also
/// that of its children that have exited and been waited for.
pub fn cpu_ticks(pid: u32, children: bool) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is not running"))?;
    let fields = stat_fields(&stat).with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    let own = field(14)? + field(15)?;
    Ok(if children {
        own + field(16)? + field(17)?
    } else {
        own
    })
}

/// The parent of a process.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.get(1)?.parse().ok()
}

/// The fields of a `/proc/<pid>/stat` line after the command name (which may hold spaces
/// and parentheses, so it is skipped up to its last `)`): state, ppid, ...
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// The children of `parent` that run now.
pub fn children(parent_pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent(*pid) == Some(parent_pid))
        .collect()
}

/// CPU time used by a server and all its processes (PostgreSQL's postmaster and its
/// backends), including backends that have exited, in clock ticks.
pub fn tree_cpu_ticks(root: u32) -> anyhow::Result<u64> {
    let mut total = cpu_ticks(root, true)?;
    for child in children(root) {
        total += cpu_ticks(child, false).unwrap_or(0);
    }
    Ok(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The machine's CPU counters from `/proc/stat`: (busy, total) ticks over all cores.
pub fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_machine_ticks(&stat).context("no cpu line in /proc/stat")
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The load averages line of `/proc/loadavg` (1, 5 and 15 minutes).
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t    10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_resident_memory_and_cpu_time() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        cpu_ticks(pid, true).unwrap();
        assert!(parent(pid).is_some());
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a (b) c) S 7 1 1 0 -1 0 0 0 0 0 11 22 33 44 20 0 1 0";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "7");
        assert_eq!(fields[14 - 3], "11");
    }

    #[test]
    fn machine_ticks_count_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_machine_ticks(stat), Some((150, 1000)));
    }
}
