#![warn(unreachable_pub)]
//! strom-service: a service's named parts: every long-running task of a service is spawned
//! here under a name, and the service runs until one of them ends or it is
//! told to stop.
//!
//! Why one type: a service used to keep some tasks alive only through guards
//! nobody watched, so a listener or a reporter that died was silently gone.
//! Here a part that ends (returns, fails or panics) stops the whole service
//! with its name in the error; the process supervisor restarts it. Stopping
//! aborts every part; what each part must finish first (sessions, files) it
//! does in its own `Drop` or in the service's stop sequence.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// The running parts of one service.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

/// Why [`Tasks::run_until`] returned.
#[derive(Debug)]
pub enum Ended {
    /// The stop signal came; every part was aborted.
    Stopped,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `part` as the task `name` of this service.
    pub fn spawn<F>(&mut self, name: &'static str, part: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let id = self.set.spawn(part).id();
        self.names.insert(id, name);
    }

    /// Runs `part`, which never ends by itself (a loop), as the task `name`.
    pub fn spawn_loop<F>(&mut self, name: &'static str, part: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, async move {
            part.await;
            Ok(())
        });
    }

    /// The names of the parts, in no particular order.
    pub fn names(&self) -> Vec<&'static str> {
        self.names.values().copied().collect()
    }

    /// Waits until `stop` resolves (then aborts every part and returns
    /// [`Ended::Stopped`]) or a part ends (then aborts the others and
    /// returns an error naming it: a part of a service never ends on its own).
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<Ended> {
        if self.set.is_empty() {
            stop.await;
            return Ok(Ended::Stopped);
        }
        tokio::select! {
            Some(done) = self.set.join_next_with_id() => {
                let (id, result) = match done {
                    Ok((id, result)) => (id, result.map_err(|e| e.context("failed"))),
                    Err(e) => (e.id(), Err(anyhow::anyhow!("{e}"))),
                };
                let name = self.names.get(&id).copied().unwrap_or("a task");
                self.set.shutdown().await;
                match result {
                    Ok(()) => anyhow::bail!("{name} stopped"),
                    Err(e) => Err(e.context(format!("{name} stopped"))),
                }
            }
            () = stop => {
                self.set.shutdown().await;
                Ok(Ended::Stopped)
            }
        }
    }
}

/// A job that is done once it has succeeded (a registration, say), as a
/// part: after it, the part waits for the service to stop.
pub async fn once(job: impl Future<Output = ()>) {
    job.await;
    std::future::pending::<()>().await
}

/// Tells the services of one process to stop (`strom dev` runs three).
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

/// Resolves once [`StopHandle::stop`] is called (or the handle is gone).
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// A handle to stop with, and the [`Stop`] to give each service.
pub fn stop_pair() -> (StopHandle, Stop) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (StopHandle(tx), Stop(rx))
}

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// What a command's process waits for: the first SIGINT or SIGTERM. It is
/// logged; a second one ends the process at once (exit status 130), for
/// the operator whose stop takes too long.
pub async fn stop_requested() {
    let signal = stop_signal().await;
    tracing::info!(signal, "stopping");
    tokio::spawn(async {
        let again = stop_signal().await;
        tracing::warn!(signal = again, "second signal: exiting at once");
        std::process::exit(130);
    });
}

/// Resolves at the first SIGINT or SIGTERM (on other systems: Ctrl-C) and
/// says which it was.
pub async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut int, mut term) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_part_that_returns_stops_the_service_by_name() {
        let mut tasks = Tasks::new();
        tasks.spawn_loop("forever", std::future::pending());
        tasks.spawn("short", async { Ok(()) });
        let err = tasks.run_until(std::future::pending()).await.unwrap_err();
        assert_eq!(err.to_string(), "short stopped");
    }

    #[tokio::test]
    async fn a_part_that_fails_or_panics_is_named_with_its_cause() {
        let mut tasks = Tasks::new();
        tasks.spawn("listener", async { anyhow::bail!("address in use") });
        let err = tasks.run_until(std::future::pending()).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "listener stopped: failed: address in use"
        );

        let mut tasks = Tasks::new();
        tasks.spawn_loop("reporter", async { panic!("bug") });
        let err = tasks.run_until(std::future::pending()).await.unwrap_err();
        assert!(err.to_string().starts_with("reporter stopped"), "{err:#}");
        assert!(format!("{err:#}").contains("panicked"), "{err:#}");
    }

    #[tokio::test]
    async fn stopping_aborts_every_part_and_drops_what_it_held() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(dropped.clone());
        let mut tasks = Tasks::new();
        tasks.spawn_loop("holder", async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        let ended = tasks
            .run_until(tokio::time::sleep(Duration::from_millis(10)))
            .await
            .unwrap();
        assert!(matches!(ended, Ended::Stopped));
        assert!(dropped.load(Ordering::SeqCst), "the part was not dropped");
    }

    #[tokio::test]
    async fn one_stop_reaches_every_service() {
        let (handle, stop) = stop_pair();
        let a = tokio::spawn(Tasks::new().run_until(stop.clone().wait()));
        let b = tokio::spawn(Tasks::new().run_until(stop.wait()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!a.is_finished() && !b.is_finished());
        handle.stop();
        assert!(matches!(a.await.unwrap().unwrap(), Ended::Stopped));
        assert!(matches!(b.await.unwrap().unwrap(), Ended::Stopped));
    }

    #[tokio::test]
    async fn a_service_without_parts_waits_for_the_stop() {
        let ended = Tasks::new().run_until(async {}).await.unwrap();
        assert!(matches!(ended, Ended::Stopped));
    }
}
