//! Restarts the sidecar when it runs without the PostgreSQL binding although the app's own
//! database login works. The binding signs in when the sidecar starts; when that fails
//! (in Azure, a revision that starts before the bootstrap has created the app's role),
//! `ignoreErrors` keeps the sidecar up without it instead of crash-looping, and daprd never
//! tries again. Once the app's own login works (its migrations have run and the database
//! answers), a new sidecar would load the binding: the watch asks the sidecar to shut down,
//! and its supervisor (Container Apps; `scripts/run.sh` and the tests locally) starts it
//! again. Restarts back off, so a binding that fails for another reason (its own settings)
//! cannot cause a restart loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::dapr::{Sidecar, SidecarError};
use sqlx::PgPool;
use tokio::time::Instant;

/// How often the sidecar's components are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// The wait after a restart before the next one; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait between two restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// What the watch needs from the sidecar; the real one, or a fake in tests.
pub trait SidecarControl: Send + Sync + 'static {
    /// Whether the sidecar has loaded the component `name`.
    fn has_component(&self, name: &str) -> impl Future<Output = Result<bool, SidecarError>> + Send;
    /// Asks the sidecar to shut down.
    fn shutdown(&self) -> impl Future<Output = Result<(), SidecarError>> + Send;
}

impl SidecarControl for Sidecar {
    async fn has_component(&self, name: &str) -> Result<bool, SidecarError> {
        Sidecar::has_component(self, name).await
    }

    async fn shutdown(&self) -> Result<(), SidecarError> {
        Sidecar::shutdown(self).await
    }
}

/// Whether the database takes the app's login now; the real pool, or a fake in tests.
pub trait DatabaseProbe: Send + Sync + 'static {
    /// True when a new sidecar's binding could sign in too.
    fn accepts_login(&self) -> impl Future<Output = bool> + Send;
}

/// The app's database: its migrations have run and it answers.
pub struct AppDatabase {
    /// The app's pool.
    pub pool: PgPool,
    /// Set once the migrations have run.
    pub schema_ready: Arc<AtomicBool>,
}

impl DatabaseProbe for AppDatabase {
    async fn accepts_login(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
            && tokio::time::timeout(Duration::from_secs(2), crate::db::ping(&self.pool))
                .await
                .is_ok_and(|ping| ping.is_ok())
    }
}

/// Watches one sidecar for one binding.
pub struct BindingWatch<S, D> {
    sidecar: S,
    binding: String,
    database: D,
}

impl<S: SidecarControl, D: DatabaseProbe> BindingWatch<S, D> {
    /// A watch of `binding` on `sidecar`, acting only while `database` takes the login.
    pub fn new(sidecar: S, binding: impl Into<String>, database: D) -> Self {
        Self {
            sidecar,
            binding: binding.into(),
            database,
        }
    }

    /// Runs until the task is dropped or aborted.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = FIRST_BACKOFF;
        let mut next_restart = Instant::now();
        loop {
            ticks.tick().await;
            match self.sidecar.has_component(&self.binding).await {
                Ok(true) => backoff = FIRST_BACKOFF,
                // Down or restarting: nothing to do until it answers.
                Err(_) => {}
                Ok(false) if Instant::now() < next_restart => {}
                // A new sidecar could not sign in either.
                Ok(false) if !self.database.accepts_login().await => {}
                Ok(false) => {
                    tracing::warn!(
                        binding = %self.binding,
                        next_at_the_earliest_in_s = backoff.as_secs(),
                        "the sidecar runs without the binding, which could not sign in when it \
                         started; the database takes our login now, so restarting the sidecar \
                         (if this repeats, the binding's own settings are wrong: see the \
                         sidecar's log)"
                    );
                    if let Err(error) = self.sidecar.shutdown().await {
                        tracing::warn!(%error, "the sidecar did not take the shutdown request");
                    }
                    next_restart = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A sidecar whose binding appears after a set number of restarts (never, with `None`).
    #[derive(Clone)]
    struct FakeSidecar(Arc<Mutex<FakeState>>);

    struct FakeState {
        restarts: u32,
        loads_binding_after: Option<u32>,
        reachable: bool,
    }

    impl FakeSidecar {
        fn new(loads_binding_after: Option<u32>) -> Self {
            Self(Arc::new(Mutex::new(FakeState {
                restarts: 0,
                loads_binding_after,
                reachable: true,
            })))
        }

        fn restarts(&self) -> u32 {
            self.0.lock().unwrap().restarts
        }
    }

    impl SidecarControl for FakeSidecar {
        async fn has_component(&self, name: &str) -> Result<bool, SidecarError> {
            assert_eq!(name, "sqldb");
            let state = self.0.lock().unwrap();
            if !state.reachable {
                return Err(SidecarError::Unhealthy {
                    url: "fake".to_owned(),
                    status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                });
            }
            Ok(state
                .loads_binding_after
                .is_some_and(|after| state.restarts >= after))
        }

        async fn shutdown(&self) -> Result<(), SidecarError> {
            self.0.lock().unwrap().restarts += 1;
            Ok(())
        }
    }

    /// A database that takes the login while its flag is set.
    struct FakeDatabase(Arc<AtomicBool>);

    impl DatabaseProbe for FakeDatabase {
        async fn accepts_login(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }

    /// Starts a watch; the database takes the login while the returned flag is set.
    fn watch(sidecar: &FakeSidecar, ready: bool) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(ready));
        let watch = BindingWatch::new(sidecar.clone(), "sqldb", FakeDatabase(Arc::clone(&flag)));
        tokio::spawn(watch.run());
        flag
    }

    /// Lets the watch run for `duration` of paused time.
    async fn elapse(duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_sidecar_with_its_binding_is_left_alone() {
        let sidecar = FakeSidecar::new(Some(0));
        watch(&sidecar, true);
        elapse(Duration::from_secs(3600)).await;
        assert_eq!(sidecar.restarts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_restarted_while_the_database_refuses_the_app() {
        let sidecar = FakeSidecar::new(Some(1));
        let ready = watch(&sidecar, false);
        elapse(Duration::from_secs(3600)).await;
        assert_eq!(
            sidecar.restarts(),
            0,
            "a restart cannot help before the role exists"
        );

        ready.store(true, Ordering::Release);
        elapse(CHECK_EVERY).await;
        assert_eq!(
            sidecar.restarts(),
            1,
            "restarted as soon as the login works"
        );
        elapse(Duration::from_secs(3600)).await;
        assert_eq!(sidecar.restarts(), 1, "the new sidecar has the binding");
    }

    #[tokio::test(start_paused = true)]
    async fn a_binding_that_never_loads_is_retried_with_growing_pauses() {
        let sidecar = FakeSidecar::new(None);
        watch(&sidecar, true);
        // Checks at 0, 5, 10, ... s; restarts at 0, 30, 90, 210, 450, 930, 1830, 2730, ...
        elapse(Duration::from_secs(1)).await;
        assert_eq!(sidecar.restarts(), 1, "at once");
        elapse(Duration::from_secs(26)).await;
        assert_eq!(
            sidecar.restarts(),
            1,
            "not again within the first back-off (t = 27 s)"
        );
        elapse(Duration::from_secs(6)).await;
        assert_eq!(sidecar.restarts(), 2, "t = 33 s");
        elapse(Duration::from_secs(3602 - 33)).await;
        assert_eq!(
            sidecar.restarts(),
            8,
            "t = 3602 s: the pauses doubled up to 15 minutes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_sidecar_is_not_restarted() {
        let sidecar = FakeSidecar::new(None);
        sidecar.0.lock().unwrap().reachable = false;
        watch(&sidecar, true);
        elapse(Duration::from_secs(3600)).await;
        assert_eq!(sidecar.restarts(), 0);
    }
}
