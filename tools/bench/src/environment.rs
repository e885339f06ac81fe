//! What the figures were measured on: the machine, the versions and the commit, so that
//! two reports can be compared (or known not to be comparable).

use std::fs;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine and the software under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// Memory, in GiB.
    pub memory_gib: f64,
    /// Operating system, from `/etc/os-release`.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rust: String,
    /// `daprd --version` of the sidecars.
    pub dapr: String,
    /// PostgreSQL's `server_version`.
    pub postgres: String,
    /// The commit measured, with `-dirty` when the work tree had changes.
    pub commit: String,
    /// Load averages (1, 5, 15 min) when the benchmark started: work of other processes.
    pub load_at_start: String,
    /// How busy the cores were in the second before the benchmark started (0–1): a
    /// measure of the noise from other processes.
    pub busy_before_start: f64,
}

/// The first line of a command's output, or `unknown`.
pub fn command_line(program: impl AsRef<std::ffi::OsStr>, args: &[&str], dir: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(|l| l.trim().to_owned()))
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The CPU model.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Total memory in GiB.
pub fn memory_gib() -> f64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

/// The operating system's pretty name.
pub fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The kernel release.
pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The commit of the work tree at `root`, `-dirty` when it has uncommitted changes.
pub fn commit(root: &Path) -> String {
    let head = command_line("git", &["rev-parse", "--short=12", "HEAD"], root);
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .map(|out| !out.stdout.is_empty())
        .unwrap_or(false);
    if dirty { format!("{head}-dirty") } else { head }
}
