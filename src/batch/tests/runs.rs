//! Runs of a file through a fake order-processor: what is sent, how it is counted, and
//! what later runs remember. No test waits on the wall clock: requests are held and let go
//! through channels, and back-off pauses pass on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batch::Error;
use batch::summary::Outcome;
use serde_json::json;
use support::{FakeOrderProcessor, answer, orders_file, refusal, runner, settings};

#[tokio::test]
async fn a_run_sends_every_chunk_and_sums_the_outcomes() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1, 2, 3, 4, 5]);
    let summary = runner(&sink, &file, settings(2, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(sink.requests(), vec![vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!(
        (summary.read, summary.submitted, summary.inserted),
        (5, 5, 5)
    );
    assert!(summary.counts_add_up());
}

#[tokio::test]
async fn an_unchanged_file_is_not_sent_again() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1, 2, 3]);
    let runner = runner(&sink, &file, settings(2, 1));
    runner.run("test", None).await.unwrap();
    let second = runner.run("test", None).await.unwrap();
    assert_eq!(second.outcome, Outcome::Unchanged);
    assert_eq!((second.read, second.skipped, second.submitted), (3, 3, 0));
    assert_eq!(sink.requests().len(), 2);
}

#[tokio::test]
async fn a_changed_file_is_sent_again() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1, 2, 3]);
    let runner = runner(&sink, &file, settings(2, 1));
    runner.run("test", None).await.unwrap();
    std::fs::copy(orders_file(&[1, 2, 3, 4]).path(), file.path()).unwrap();
    let second = runner.run("test", None).await.unwrap();
    assert_eq!(second.outcome, Outcome::Completed);
    assert_eq!(
        (second.submitted, second.inserted, second.already_present),
        (4, 1, 3)
    );
}

#[tokio::test]
async fn a_file_written_again_with_the_same_content_is_still_unchanged() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1, 2, 3]);
    let runner = runner(&sink, &file, settings(2, 1));
    runner.run("test", None).await.unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(file.path())
        .unwrap()
        .set_modified(later)
        .unwrap();
    let second = runner.run("test", None).await.unwrap();
    assert_eq!((second.outcome, second.read), (Outcome::Unchanged, 3));
    assert_eq!(sink.requests().len(), 2);
}

#[tokio::test]
async fn a_file_changed_behind_its_old_size_and_time_is_sent_again() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1, 2, 3]);
    let runner = runner(&sink, &file, settings(2, 1));
    runner.run("test", None).await.unwrap();
    let modified = std::fs::metadata(file.path()).unwrap().modified().unwrap();
    // Ids 1, 2 and 4 take as many bytes as 1, 2 and 3.
    std::fs::copy(orders_file(&[1, 2, 4]).path(), file.path()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file.path())
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let second = runner.run("test", None).await.unwrap();
    assert_eq!(second.outcome, Outcome::Completed);
    assert_eq!((second.inserted, second.already_present), (1, 2));
}

#[tokio::test]
async fn an_invalid_order_holds_back_no_valid_order_and_the_file_is_read_once() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1, 2, -3, 4, 5]);
    let runner = runner(&sink, &file, settings(2, 1));
    let first = runner.run("test", None).await.unwrap();
    assert_eq!(sink.requests(), vec![vec![1, 2], vec![4, 5]]);
    assert_eq!(first.outcome, Outcome::Partial);
    assert_eq!((first.rejected, first.submitted, first.inserted), (1, 4, 4));
    // Nothing is left to retry: the file is settled, and not read past its digest again.
    let second = runner.run("test", None).await.unwrap();
    assert_eq!(sink.requests().len(), 2);
    assert_eq!(
        (second.outcome, second.skipped, second.rejected),
        (Outcome::Unchanged, 5, 0)
    );
    assert!(first.counts_add_up() && second.counts_add_up());
}

#[tokio::test]
async fn an_order_order_processor_judges_otherwise_is_set_aside_as_another_release() {
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, |ids| {
        ids.contains(&2).then(|| {
            answer(422, &json!({ "error": {
                "code": "invalid_orders", "message": "1 order is invalid; nothing was stored",
                "details": [{ "index": 1, "orderid": 2, "field": "price", "reason": "too high" }],
            }}))
        })
    }));
    let file = orders_file(&[1, 2, 3]);
    let summary = runner(&sink, &file, settings(2, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(
        (summary.unsendable, summary.inserted, summary.rejected),
        (2, 1, 0)
    );
    let unsent = &summary.unsendable_chunks[0];
    assert!(unsent.reason.contains("price too high"), "{unsent:?}");
    assert_eq!(unsent.what_to_change, batch::outcome::SAME_VERSION);
    assert!(summary.counts_add_up());
}

#[tokio::test]
async fn the_summary_lists_twenty_spans_that_cannot_be_sent_and_counts_the_rest() {
    let refused = || refusal(404, "not_found", "no such app");
    let sink = Arc::new(FakeOrderProcessor::new(
        usize::MAX,
        move |_| Some(refused()),
    ));
    let file = orders_file(&(1..=25).collect::<Vec<_>>());
    let summary = runner(&sink, &file, settings(1, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(summary.unsendable, 25);
    let first: Vec<u64> = summary.unsendable_chunks.iter().map(|s| s.first).collect();
    assert_eq!(
        first,
        (0..20).collect::<Vec<_>>(),
        "the first 20, in file order"
    );
    assert_eq!(summary.unsendable_chunks_not_listed, Some(5));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["unsendable_chunks_not_listed"], 5);

    let one = orders_file(&[1]);
    let summary = runner(&sink, &one, settings(1, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(summary.unsendable_chunks_not_listed, None);
    let json = serde_json::to_value(&summary).unwrap();
    assert!(json.get("unsendable_chunks_not_listed").is_none(), "{json}");
}

#[tokio::test]
async fn chunks_over_order_processors_limit_are_split_and_the_rest_are_cut_smaller() {
    let sink = Arc::new(FakeOrderProcessor::new(2, |_| None));
    let file = orders_file(&(1..=12).collect::<Vec<_>>());
    let summary = runner(&sink, &file, settings(5, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!((summary.inserted, summary.rejected), (12, 0));
    assert_eq!(sink.stored_ids(), (1..=12).collect::<Vec<_>>());
    let refused = sink.requests().iter().filter(|r| r.len() > 2).count();
    assert_eq!(refused, 2, "{:?}", sink.requests());
}

#[tokio::test]
async fn a_single_order_refused_as_too_large_cannot_be_sent_and_the_others_are_stored() {
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, |ids| {
        ids.contains(&3).then(|| {
            refusal(
                413,
                "too_large_for_binding",
                "the binding call is too large",
            )
        })
    }));
    let file = orders_file(&(1..=6).collect::<Vec<_>>());
    let summary = runner(&sink, &file, settings(4, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(sink.stored_ids(), vec![1, 2, 4, 5, 6]);
    assert_eq!(
        (summary.unsendable, summary.rejected, summary.outcome),
        (1, 0, Outcome::Partial)
    );
    let unsent = &summary.unsendable_chunks[0];
    assert_eq!((unsent.chunk, unsent.first, unsent.orders), (0, 2, 1));
    assert!(
        unsent.what_to_change.contains("request body limits"),
        "{unsent:?}"
    );
    assert!(summary.counts_add_up());
}

#[tokio::test(start_paused = true)]
async fn a_chunk_that_cannot_be_sent_is_tried_again_after_a_pause_that_doubles() {
    let broken = Arc::new(AtomicBool::new(true));
    let still_broken = Arc::clone(&broken);
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, move |ids| {
        (ids.contains(&1) && still_broken.load(Ordering::SeqCst)).then(|| {
            answer(
                404,
                &json!({ "errorCode": "ERR_DIRECT_INVOKE", "message": "no such method" }),
            )
        })
    }));
    let file = orders_file(&[1, 2, 3, 4]);
    let runner = runner(&sink, &file, settings(2, 1));
    let attempts = || sink.requests().iter().filter(|r| r.contains(&1)).count();

    let first = runner.run("test", None).await.unwrap();
    assert_eq!((first.unsendable, first.inserted, attempts()), (2, 2, 1));
    assert_eq!(first.unsendable_chunks[0].next_attempt_in_secs, 10);
    assert!(
        first.unsendable_chunks[0]
            .reason
            .contains("ERR_DIRECT_INVOKE")
    );

    let waiting = runner.run("test", None).await.unwrap();
    assert_eq!((waiting.unsendable, waiting.skipped, attempts()), (2, 2, 1));

    tokio::time::advance(Duration::from_secs(10)).await;
    let again = runner.run("test", None).await.unwrap();
    assert_eq!((again.unsendable, attempts()), (2, 2));
    assert_eq!(again.unsendable_chunks[0].next_attempt_in_secs, 20);

    tokio::time::advance(Duration::from_secs(19)).await;
    runner.run("test", None).await.unwrap();
    assert_eq!(attempts(), 2);

    broken.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    let fixed = runner.run("test", None).await.unwrap();
    assert_eq!(
        (fixed.outcome, fixed.inserted, attempts()),
        (Outcome::Completed, 2, 3)
    );
    assert_eq!(
        runner.run("test", None).await.unwrap().outcome,
        Outcome::Unchanged
    );
}

#[tokio::test(start_paused = true)]
async fn one_chunk_that_keeps_failing_does_not_stop_the_chunks_after_it() {
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, |ids| {
        ids.contains(&3)
            .then(|| refusal(503, "unavailable", "storage is unavailable"))
    }));
    let file = orders_file(&(1..=8).collect::<Vec<_>>());
    let mut settings = settings(2, 1);
    settings.max_retries = 2;
    let summary = runner(&sink, &file, settings)
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(sink.stored_ids(), vec![1, 2, 5, 6, 7, 8]);
    assert_eq!((summary.deferred, summary.outcome), (2, Outcome::Partial));
    let tries = sink.requests().iter().filter(|r| r.contains(&3)).count();
    assert_eq!(tries, 3, "the first attempt and two retries");
    assert!(summary.counts_add_up());
}

#[tokio::test(start_paused = true)]
async fn when_order_processor_looks_down_the_rest_waits_for_the_next_run() {
    let down = Arc::new(AtomicBool::new(true));
    let is_down = Arc::clone(&down);
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, move |_| {
        is_down
            .load(Ordering::SeqCst)
            .then(|| refusal(503, "unavailable", "storage is unavailable"))
    }));
    let file = orders_file(&(1..=8).collect::<Vec<_>>());
    let mut settings = settings(2, 1);
    settings.max_retries = 1;
    let runner = runner(&sink, &file, settings);
    let first = runner.run("test", None).await.unwrap();
    // Two chunks, each tried twice; then nothing more is sent.
    assert_eq!(
        sink.requests(),
        vec![vec![1, 2], vec![1, 2], vec![3, 4], vec![3, 4]]
    );
    assert_eq!(
        (first.deferred, first.submitted, first.outcome),
        (8, 4, Outcome::Partial)
    );
    assert!(first.counts_add_up());

    down.store(false, Ordering::SeqCst);
    let second = runner.run("test", None).await.unwrap();
    assert_eq!((second.inserted, second.outcome), (8, Outcome::Completed));
}

#[tokio::test(start_paused = true)]
async fn chunks_travel_at_most_in_flight_at_once_and_all_arrive() {
    let (sink, mut gate) = FakeOrderProcessor::storing().with_gate(|_| true);
    let sink = Arc::new(sink);
    let file = orders_file(&(1..=40).collect::<Vec<_>>());
    let runner = runner(&sink, &file, settings(4, 3));
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run("test", None).await }
    });
    for _ in 0..3 {
        gate.arrived.recv().await.unwrap();
    }
    // On the paused clock this returns only once no task can do anything else: a fourth
    // request would have arrived by then.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(gate.arrived.try_recv().is_err(), "a fourth chunk was sent");
    assert_eq!(sink.in_flight.lock().unwrap().0, 3);

    gate.permits.add_permits(10);
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!((summary.submitted, summary.inserted), (40, 40));
    assert_eq!(sink.in_flight.lock().unwrap().1, 3);
}

#[tokio::test]
async fn a_tick_during_a_run_is_skipped() {
    let (sink, mut gate) = FakeOrderProcessor::storing().with_gate(|_| true);
    let sink = Arc::new(sink);
    let file = orders_file(&[1]);
    let runner = runner(&sink, &file, settings(10, 1));
    let first = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run("test", None).await }
    });
    gate.arrived.recv().await.unwrap();
    assert!(matches!(
        runner.run("test", None).await,
        Err(Error::RunInProgress)
    ));
    gate.permits.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().outcome, Outcome::Completed);
    assert_eq!(sink.requests().len(), 1);
}

#[tokio::test]
async fn cancelling_during_a_chunk_defers_every_order_not_stored() {
    let (sink, mut gate) = FakeOrderProcessor::storing().with_gate(|ids| ids.contains(&5));
    let sink = Arc::new(sink);
    let file = orders_file(&(1..=10).collect::<Vec<_>>());
    let runner = runner(&sink, &file, settings(2, 1));
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run("test", None).await }
    });
    // The file is read and two chunks are stored; the third is on its way.
    assert_eq!(gate.arrived.recv().await.unwrap(), vec![5, 6]);
    runner.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.outcome, Outcome::Cancelled);
    assert_eq!(
        (summary.read, summary.inserted, summary.deferred),
        (10, 4, 6)
    );
    assert!(summary.counts_add_up());
    assert_eq!(sink.stored_ids(), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_cancelled_runner_starts_no_run() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = orders_file(&[1]);
    let runner = runner(&sink, &file, settings(10, 1));
    runner.cancel();
    let summary = runner.run("test", None).await.unwrap();
    assert_eq!((summary.outcome, summary.read), (Outcome::Cancelled, 0));
    assert!(sink.requests().is_empty());
}

#[tokio::test]
async fn an_unreadable_file_fails_the_run_and_sends_nothing() {
    let sink = Arc::new(FakeOrderProcessor::storing());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        r#"{"orders":[{"orderid":1,"customer":"A","price":1},"#,
    )
    .unwrap();
    let summary = runner(&sink, &file, settings(10, 1))
        .run("test", None)
        .await
        .unwrap();
    assert_eq!(summary.outcome, Outcome::Failed);
    assert!(
        summary
            .error
            .unwrap()
            .contains("is not a valid orders file: EOF while parsing")
    );
    assert!(sink.requests().is_empty());
}

/// Reads in small blocks, as a large file would be read.
fn small_blocks(chunk_size: usize) -> batch::Settings {
    let mut settings = settings(chunk_size, 1);
    settings.block = 64;
    settings
}

#[tokio::test]
async fn a_file_read_in_small_blocks_is_sent_as_one_read_at_once() {
    // Id 1 twice, the same way: one order, sent once.
    let ids = [1, 2, 3, 1, 4, 5, 6, 7, 8];
    let mut results = Vec::new();
    for settings in [settings(2, 1), small_blocks(2)] {
        let sink = Arc::new(FakeOrderProcessor::storing());
        let file = orders_file(&ids);
        let summary = runner(&sink, &file, settings)
            .run("test", None)
            .await
            .unwrap();
        assert!(summary.counts_add_up());
        results.push((summary.inserted, summary.duplicates, sink.requests()));
    }
    assert_eq!(
        results[0],
        (8, 1, vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7, 8]])
    );
    assert_eq!(results[0], results[1]);
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_deadline_leaves_the_rest_for_the_next_run() {
    let (sink, mut gate) = FakeOrderProcessor::storing().with_gate(|ids| ids.contains(&3));
    let sink = Arc::new(sink);
    let file = orders_file(&(1..=6).collect::<Vec<_>>());
    let mut settings = settings(2, 1);
    settings.deadline = Duration::from_secs(60);
    let runner = runner(&sink, &file, settings);
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run("test", None).await }
    });
    assert_eq!(gate.arrived.recv().await.unwrap(), vec![3, 4]);
    tokio::time::advance(Duration::from_secs(61)).await;
    let summary = run.await.unwrap().unwrap();
    assert_eq!(
        (summary.outcome, summary.inserted, summary.deferred),
        (Outcome::Partial, 2, 4)
    );
    assert!(summary.counts_add_up());
    gate.permits.add_permits(10);
    let next = runner.run("test", None).await.unwrap();
    assert_eq!(
        (
            next.outcome,
            next.skipped,
            next.inserted + next.already_present
        ),
        (Outcome::Completed, 2, 4)
    );
}

#[tokio::test]
async fn a_file_that_changes_while_it_is_read_fails_and_keeps_what_was_stored() {
    let file = orders_file(&(1..=10).collect::<Vec<_>>());
    let path = file.path().to_owned();
    let once = AtomicBool::new(true);
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, move |ids| {
        if ids == [1, 2] && once.swap(false, Ordering::SeqCst) {
            // An order not read again yet says something else now.
            let content = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, content.replace(r#""C9""#, r#""D9""#)).unwrap();
        }
        None
    }));
    let runner = runner(&sink, &file, small_blocks(2));
    let summary = runner.run("test", None).await.unwrap();
    assert_eq!(summary.outcome, Outcome::Failed);
    assert!(
        summary
            .error
            .as_deref()
            .unwrap()
            .contains("changed while it was being read")
    );
    assert!(summary.inserted >= 2, "{summary:?}");
    assert_eq!(summary.inserted + summary.deferred, 10);
    assert!(summary.counts_add_up());
    let again = runner.run("test", None).await.unwrap();
    assert_eq!(again.outcome, Outcome::Completed);
    assert_eq!(again.inserted + again.already_present, 10);
}

#[tokio::test]
async fn a_panic_in_a_run_is_answered_500_and_the_next_run_works() {
    let first = Arc::new(AtomicBool::new(true));
    let sink = Arc::new(FakeOrderProcessor::new(usize::MAX, move |_| {
        assert!(!first.swap(false, Ordering::SeqCst), "a bug in the sink");
        None
    }));
    let file = orders_file(&[1, 2]);
    let state = batch::AppState {
        runner: runner(&sink, &file, settings(10, 1)),
        sidecar: common::dapr::Sidecar::new(9, None, Duration::from_secs(1)).unwrap(),
        app_api_token: common::dapr::AppApiToken::new(None),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, batch::router(state, "cron")).into_future());
    let client = reqwest::Client::new();
    let post = |route: &str| client.post(format!("http://{address}/{route}")).send();

    let aborted = post("runs").await.unwrap();
    assert_eq!(aborted.status(), 500);
    let body: serde_json::Value = aborted.json().await.unwrap();
    assert_eq!(body["error"]["code"], "run_aborted");
    let next = post("cron").await.unwrap();
    assert_eq!(next.status(), 200);
    let summary: serde_json::Value = next.json().await.unwrap();
    assert_eq!(summary["outcome"], "completed", "{summary}");
    server.abort();
}
