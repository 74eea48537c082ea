//! One supervisor per service: every task shares a cancellation token, the first task to fail (or
//! a signal) cancels all, and shutdown waits for the tasks within a bound.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("task {task} failed: {reason}")]
    TaskFailed { task: String, reason: String },
    #[error("tasks did not stop within {0:?}")]
    ShutdownTimeout(Duration),
}

#[derive(Clone, Default)]
pub struct Supervisor {
    cancel: CancellationToken,
    tracker: TaskTracker,
    first_failure: Arc<Mutex<Option<SupervisorError>>>,
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token every task watches; cancelling it stops the service.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs a task. If it returns an error, or ends while the service is still running, every
    /// other task is cancelled.
    pub fn spawn<F, E>(&self, name: &str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let name = name.to_owned();
        let cancel = self.cancel.clone();
        let first_failure = self.first_failure.clone();
        self.tracker.spawn(async move {
            let result = task.await;
            let failure = match result {
                Err(error) => Some(error.to_string()),
                Ok(()) if !cancel.is_cancelled() => Some("ended unexpectedly".to_owned()),
                Ok(()) => None,
            };
            if let Some(reason) = failure {
                tracing::error!(task = %name, %reason, "task failed; stopping the service");
                if let Ok(mut slot) = first_failure.lock() {
                    slot.get_or_insert(SupervisorError::TaskFailed { task: name, reason });
                }
                cancel.cancel();
            }
        });
    }

    /// Waits for Ctrl-C/SIGTERM or a task failure, then stops everything within `grace`.
    pub async fn run(self, grace: Duration) -> Result<(), SupervisorError> {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = shutdown_signal() => {
                tracing::info!("shutdown requested");
                self.cancel.cancel();
            }
        }
        self.tracker.close();
        let stopped = tokio::time::timeout(grace, self.tracker.wait()).await;
        if let Some(failure) = self
            .first_failure
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
        {
            return Err(failure);
        }
        stopped.map_err(|_| SupervisorError::ShutdownTimeout(grace))
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_task_stops_the_others() {
        let supervisor = Supervisor::new();
        let token = supervisor.token();
        supervisor.spawn("worker", async move {
            token.cancelled().await;
            Ok::<(), String>(())
        });
        supervisor.spawn("broken", async { Err::<(), _>("boom") });
        let result = supervisor.run(Duration::from_secs(5)).await;
        match result {
            Err(SupervisorError::TaskFailed { task, reason }) => {
                assert_eq!(task, "broken");
                assert_eq!(reason, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn shutdown_is_bounded() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stubborn", async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), String>(())
        });
        supervisor.token().cancel();
        let result = supervisor.run(Duration::from_millis(100)).await;
        assert!(matches!(result, Err(SupervisorError::ShutdownTimeout(_))));
    }
}
