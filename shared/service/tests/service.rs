//! The service shell: ready only once started, a failing task or start stops the service.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use pagestream_service::{CommonArgs, Service, Shell, ShellError, SupervisorError};
use secrecy::SecretString;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

/// A service whose start waits for `started` and whose one task fails on `fail`.
#[derive(Debug, Clone, clap::Parser)]
struct TestService {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(skip = SocketAddr::from(([127, 0, 0, 1], 0)))]
    ops_listen: SocketAddr,
    #[arg(skip)]
    started: Arc<Notify>,
    #[arg(skip)]
    fail: Arc<Notify>,
    #[arg(skip)]
    start_error: Option<String>,
}

impl TestService {
    fn new(start_error: Option<&str>) -> Self {
        Self {
            common: CommonArgs {
                nats_url: SecretString::from("nats://127.0.0.1:1"),
                subject_root: "test".into(),
                nats_replicas: None,
                log_format: Default::default(),
            },
            ops_listen: free_port(),
            started: Arc::default(),
            fail: Arc::default(),
            start_error: start_error.map(str::to_owned),
        }
    }
}

impl Service for TestService {
    const NAME: &'static str = "test-service";
    type Error = Failure;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn ops_listen(&self) -> SocketAddr {
        self.ops_listen
    }

    async fn start(self, shell: &Shell) -> Result<(), Failure> {
        self.started.notified().await;
        if let Some(reason) = self.start_error {
            return Err(Failure(reason));
        }
        let fail = self.fail.clone();
        shell.supervisor().spawn("worker", async move {
            fail.notified().await;
            Err::<(), _>(Failure("worker broke".into()))
        });
        Ok(())
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    for _ in 0..100 {
        if let Ok(response) = reqwest::get(format!("http://{addr}{path}")).await {
            return Some(response.status().as_u16());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_service_is_ready_once_started_and_a_failing_task_stops_it() {
    let service = TestService::new(None);
    let (addr, started, fail) = (
        service.ops_listen,
        service.started.clone(),
        service.fail.clone(),
    );
    let running = tokio::spawn(pagestream_service::run(service, None));

    assert_eq!(status(addr, "/healthz").await, Some(200));
    assert_eq!(
        status(addr, "/readyz").await,
        Some(503),
        "ready before start"
    );
    started.notify_one();
    let mut ready = None;
    for _ in 0..100 {
        ready = status(addr, "/readyz").await;
        if ready == Some(200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ready, Some(200), "not ready after start");
    assert_eq!(status(addr, "/metrics").await, Some(200));

    fail.notify_one();
    let result = running.await.expect("join");
    match result {
        Err(ShellError::Supervisor(SupervisorError::TaskFailed { task, reason })) => {
            assert_eq!(task, "worker");
            assert_eq!(reason, "worker broke");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        TcpListener::bind(addr).is_ok(),
        "the ops listener outlived the service"
    );
}

#[tokio::test]
async fn a_start_that_fails_names_the_service_and_stops_the_ops_listener() {
    let service = TestService::new(Some("cannot reach the database"));
    let (addr, started) = (service.ops_listen, service.started.clone());
    let running = tokio::spawn(pagestream_service::run(service, None));
    assert_eq!(status(addr, "/healthz").await, Some(200));
    started.notify_one();
    let error = running
        .await
        .expect("join")
        .expect_err("a failed start must fail the service");
    assert!(matches!(
        error,
        ShellError::Start {
            service: "test-service",
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "test-service did not start: cannot reach the database"
    );
    assert!(
        TcpListener::bind(addr).is_ok(),
        "the ops listener outlived the failed start"
    );
}
