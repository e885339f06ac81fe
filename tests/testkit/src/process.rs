//! Processes and ports for the stack: where daprd and the service binaries are, ports
//! nothing else will take, a process killed when dropped, and one started again whenever
//! it exits (as Container Apps restarts a replica's containers).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::workspace_root;

/// The daprd to use: `DAPRD`, else `~/.dapr/bin/daprd`, else `daprd` on PATH.
pub fn daprd() -> PathBuf {
    if let Ok(path) = std::env::var("DAPRD") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").map(PathBuf::from).unwrap_or_default();
    let installed = home.join(".dapr/bin/daprd");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("daprd")
}

/// Builds the service binaries (debug, or release for benchmarks) once per process and
/// returns their directory.
pub fn binaries(release: bool) -> &'static Path {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let (cell, profile) = if release {
        (&RELEASE, "release")
    } else {
        (&DEBUG, "debug")
    };
    cell.get_or_init(|| {
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(workspace_root())
            .args(["build", "--bins", "-p", "batch", "-p", "order-processor"])
            .env("SQLX_OFFLINE", "true");
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo build");
        assert!(status.success(), "building the services failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join("target"));
        target.join(profile)
    })
}

/// A port nothing listens on right now, below Linux's ephemeral range (32768 and up), from
/// which the kernel picks the source ports of outgoing connections: a port taken from there
/// could be in use by a connection before the process meant for it binds it. Never the same
/// port twice in one test process; other processes start elsewhere in the range.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::AtomicU32 as Counter;
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    static NEXT: OnceLock<Counter> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        Counter::new(
            u32::try_from(RandomState::new().hash_one(std::process::id()) % u64::from(COUNT))
                .unwrap_or(0),
        )
    });
    for _ in 0..COUNT {
        let port =
            u16::try_from(FIRST + next.fetch_add(1, Ordering::Relaxed) % COUNT).expect("port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT)
}

/// A process that is killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that is started again whenever it exits, as Container Apps does with a
/// replica's containers; stopped (and killed) when dropped.
pub(crate) struct Supervised {
    pub(crate) child: Arc<Mutex<Child>>,
    stop: Arc<AtomicBool>,
    pub(crate) restarts: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    pub(crate) fn start(start: impl Fn() -> Child + Send + 'static) -> Self {
        let child = Arc::new(Mutex::new(start()));
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU32::new(0));
        let thread = {
            let (child, stop, restarts) = (child.clone(), stop.clone(), restarts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                    let mut current = child.lock().unwrap();
                    if !stop.load(Ordering::Acquire)
                        && let Ok(Some(_)) = current.try_wait()
                    {
                        restarts.fetch_add(1, Ordering::AcqRel);
                        *current = start();
                    }
                }
            })
        };
        Self {
            child,
            stop,
            restarts,
            thread: Some(thread),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}
