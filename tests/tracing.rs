//! The `tracing` feature: task spans with their fields and parents, the
//! process pool's worker events. A recording layer, installed once for the
//! whole binary (the pools emit on their own threads), keeps every span and
//! event; each test finds its own by a marker or a pid.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use concurrent_futures::{
    Error, ProcessPoolBuilder, ProcessPoolExecutor, ThreadPoolExecutor, task,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct SpanRec {
    name: &'static str,
    fields: HashMap<String, String>,
    /// Index of the parent span in `Log::spans`.
    parent: Option<usize>,
}

#[derive(Clone, Debug)]
struct EventRec {
    fields: HashMap<String, String>,
    /// Index of the span the event is in.
    span: Option<usize>,
}

impl EventRec {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Log {
    spans: Vec<SpanRec>,
    /// Live span ids to their index (the registry reuses ids).
    live: HashMap<u64, usize>,
    events: Vec<EventRec>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Recorder;

static LOG: OnceLock<Mutex<Log>> = OnceLock::new();

fn log() -> std::sync::MutexGuard<'static, Log> {
    LOG.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id());
        let mut log = log();
        let parent = parent.and_then(|p| log.live.get(&p.into_u64()).copied());
        let index = log.spans.len();
        log.spans.push(SpanRec {
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        log.live.insert(id.into_u64(), index);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut log = log();
        if let Some(&i) = log.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut log.spans[i].fields));
        }
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.event_span(event).map(|s| s.id());
        let mut log = log();
        let span = span.and_then(|s| log.live.get(&s.into_u64()).copied());
        log.events.push(EventRec { fields, span });
    }
    fn on_close(&self, id: Id, _: Context<'_, S>) {
        log().live.remove(&id.into_u64());
    }
}

/// Installs the recorder as the global subscriber (once).
fn record() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

fn events_where(pred: impl Fn(&EventRec) -> bool) -> Vec<EventRec> {
    log().events.iter().filter(|e| pred(e)).cloned().collect()
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> &'a str {
    fields.get(name).map_or("", String::as_str)
}

#[test]
fn a_thread_pool_task_runs_in_its_span_a_child_of_the_submitting_span() {
    record();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("traced")
        .build()
        .unwrap();
    let outer = tracing::info_span!("submitter", test = "thread-propagation");
    let line = line!() + 2;
    let future = outer.in_scope(|| {
        pool.submit(|| tracing::info!(marker = "inside-thread-task", "hello from the task"))
            .unwrap()
    });
    future.result_timeout(LIMIT).unwrap();

    let inside = events_where(|e| field(&e.fields, "marker") == "inside-thread-task");
    assert_eq!(inside.len(), 1, "{inside:?}");
    let log = log();
    let task = inside[0].span.expect("the task's event is in a span");
    let span = &log.spans[task];
    assert_eq!(span.name, "task");
    assert_eq!(field(&span.fields, "executor"), "thread");
    let at = field(&span.fields, "at");
    assert!(at.starts_with(&format!("tests/tracing.rs:{line}:")), "{at}");
    assert!(
        field(&span.fields, "thread").starts_with("traced"),
        "{span:?}"
    );
    // Propagation: the task's span is a child of the submitter's.
    let parent = &log.spans[span.parent.expect("the task span has a parent")];
    assert_eq!(parent.name, "submitter");
    assert_eq!(field(&parent.fields, "test"), "thread-propagation");
    // Its start and end are events in it.
    let messages: Vec<&str> = log
        .events
        .iter()
        .filter(|e| e.span == Some(task))
        .map(EventRec::message)
        .collect();
    assert_eq!(
        messages,
        ["task started", "hello from the task", "task finished"]
    );
}

#[test]
fn a_failed_thread_pool_task_says_so_in_its_span() {
    record();
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let future = pool.submit(|| -> u32 { panic!("traced panic") }).unwrap();
    assert!(matches!(
        future.result_timeout(LIMIT),
        Err(Error::Panicked { .. })
    ));
    let failed = events_where(|e| {
        e.message() == "task failed" && field(&e.fields, "error").contains("traced panic")
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
}

#[task]
fn traced_whoami() -> u32 {
    std::process::id()
}

/// Tells the test's control socket `ctl` it runs, waits for the test's
/// word (60 s at most), then exits with `code`.
#[task]
fn traced_exit_when_told(ctl: String, code: i32) -> u32 {
    let mine = format!("{ctl}.task");
    let socket = UnixDatagram::bind(&mine).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    UnixDatagram::unbound()
        .unwrap()
        .send_to(mine.as_bytes(), &ctl)
        .unwrap();
    let _ = socket.recv(&mut [0u8; 1]);
    std::process::exit(code)
}

#[task]
fn traced_refuse() -> Result<(), String> {
    Err("no licence".to_owned())
}

#[test]
fn a_process_pool_task_span_names_its_task_and_worker_and_a_death_is_an_event() {
    record();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let pid = pool
        .submit(traced_whoami, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap()
        .to_owned();

    {
        let log = log();
        let spans: Vec<&SpanRec> = log
            .spans
            .iter()
            .filter(|s| s.name == "task" && field(&s.fields, "pid") == pid.to_string())
            .collect();
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert!(
            field(&spans[0].fields, "task").ends_with("traced_whoami"),
            "{spans:?}"
        );
        assert_eq!(field(&spans[0].fields, "executor"), "process");
        assert_eq!(field(&spans[0].fields, "pid"), pid.to_string());
        assert_eq!(field(&spans[0].fields, "items"), "1");
    }
    let started = events_where(|e| {
        e.message() == "worker started" && field(&e.fields, "pid") == pid.to_string()
    });
    assert_eq!(started.len(), 1, "{started:?}");

    // The only worker dies with exit code 7 while a second task waits: the
    // death is an event with its cause, and a replacement starts.
    let dir = std::env::temp_dir().join(format!("cf-tracing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("ctl.sock");
    let _ = std::fs::remove_file(&ctl);
    let control = UnixDatagram::bind(&ctl).unwrap();
    control.set_read_timeout(Some(LIMIT)).unwrap();
    let ctl = ctl.to_str().unwrap().to_owned();
    let dying = pool.submit(traced_exit_when_told, (ctl, 7)).unwrap();
    let next = pool.submit(traced_whoami, ()).unwrap();
    // The task runs (so `next` is queued behind it): let it exit.
    let mut buf = [0u8; 512];
    let n = control.recv(&mut buf).expect("the task announces itself");
    let task_socket = std::str::from_utf8(&buf[..n]).unwrap().to_owned();
    control.send_to(b"x", &task_socket).unwrap();
    assert!(matches!(
        dying.result_timeout(LIMIT),
        Err(Error::WorkerDied { .. })
    ));
    let replacement = *next.result_timeout(LIMIT).unwrap();
    assert_ne!(replacement, pid);
    let died = events_where(|e| {
        e.message() == "worker died" && field(&e.fields, "pid") == pid.to_string()
    });
    assert_eq!(died.len(), 1, "{died:?}");
    assert_eq!(field(&died[0].fields, "executor"), "process");
    assert_eq!(field(&died[0].fields, "cause"), "exit code 7");
    let replaced = events_where(|e| {
        e.message() == "worker replaced" && field(&e.fields, "pid") == pid.to_string()
    });
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    // The failed task's span says why.
    let failed = events_where(|e| {
        e.message() == "task failed" && field(&e.fields, "error").contains("exit code 7")
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_initializer_failure_is_an_event() {
    record();
    let pool = ProcessPoolBuilder::new()
        .max_workers(1)
        .initializer(traced_refuse, ())
        .build()
        .unwrap();
    let outcome = pool
        .submit(traced_whoami, ())
        .and_then(|f| f.result_timeout(LIMIT).cloned());
    assert!(matches!(outcome, Err(Error::BrokenPool(_))), "{outcome:?}");
    let failed = events_where(|e| e.message() == "initializer failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let event = &failed[0];
    assert_eq!(field(&event.fields, "executor"), "process");
    assert!(
        field(&event.fields, "initializer").ends_with("traced_refuse"),
        "{event:?}"
    );
    assert!(
        field(&event.fields, "cause").contains("no licence"),
        "{event:?}"
    );
    assert!(
        field(&event.fields, "pid").parse::<u32>().is_ok(),
        "{event:?}"
    );
}
