//! A bounded pool of worker threads that runs tasks with retries, backoff and timeouts.
//!
//! Plain Rust, so `cargo test` covers it without Python; `lib.rs` plugs Python callables in
//! through the [`Task`] trait.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Work the pool runs, one attempt at a time, and the events of its life.
///
/// The event methods are called on a worker thread; a panic in any of them is contained.
pub trait Task: Send + Sync + 'static {
    type Output: Send + 'static;
    type Error: Send + 'static;

    fn run(&self, attempt: u32) -> Result<Self::Output, Self::Error>;
    fn started(&self, attempt: u32);
    /// Returns whether the output was recorded; if not (or on a panic) the task counts as failed.
    fn succeeded(&self, attempt: u32, output: Self::Output) -> bool;
    fn retrying(&self, attempt: u32, failure: &Failure<Self::Error>, delay: Duration);
    fn failed(&self, attempt: u32, failure: Failure<Self::Error>);
}

/// Why an attempt failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// `Task::run` returned an error.
    Raised(E),
    /// The attempt was still running when its timeout passed.
    TimedOut(Duration),
    /// `Task::run` panicked, or its thread could not be started.
    Crashed(String),
}

/// Keeps `Instant` arithmetic clear of overflow whatever the policy says; no sane policy waits
/// longer than this before a retry.
const LONGEST_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);

/// How often and how patiently one task is attempted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub timeout: Option<Duration>,
}

impl RetryPolicy {
    /// The longest wait after failed attempt `attempt`: `base * 2**(attempt-1)`, capped at
    /// `backoff_max`.
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
        let seconds = self.backoff_base.as_secs_f64() * 2f64.powi(doublings);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(Duration::MAX)
            .min(self.backoff_max)
            .min(LONGEST_BACKOFF)
    }

    /// Full jitter: the wait is `unit` (a draw from `[0, 1)`) times the cap, so retries of
    /// many tasks that failed together spread out instead of arriving together.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        self.backoff_cap(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A uniform draw from `[0, 1)`.
fn random_unit() -> f64 {
    // Every `RandomState` gets fresh random SipHash keys: random enough for jitter, no extra crate.
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Where a task starts in this pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The number of its first attempt here: above 1 for a task that another runner began.
    pub attempt: u32,
    /// How long to wait before that attempt, e.g. what is left of a retry delay.
    pub delay: Duration,
}

impl Start {
    /// Attempt 1, at once.
    pub const FIRST: Start = Start {
        attempt: 1,
        delay: Duration::ZERO,
    };
}

/// Why the pool refused work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolError {
    QueueFull,
    Closed,
    /// Not a single worker thread could be started.
    NoWorkers(String),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::QueueFull => f.write_str("the task queue is full"),
            PoolError::Closed => f.write_str("the pool is draining and takes no new work"),
            PoolError::NoWorkers(why) => write!(f, "no worker thread could be started: {why}"),
        }
    }
}

impl std::error::Error for PoolError {}

/// A snapshot of what the pool holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Submitted or waiting to retry, not running.
    pub queued: usize,
    pub running: usize,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
}

/// What a `drain` left behind.
pub struct Drained<T> {
    /// Every task the pool took and did not finish: still running, or dropped by the stop.
    pub unfinished: Vec<String>,
    /// The queued and waiting-to-retry tasks the stop took out of the pool, handed over so the
    /// caller drops them where it is safe to (`lib.rs` holds the GIL).
    pub dropped: Vec<Arc<T>>,
}

/// How long `drain` waits, once its deadline has passed, for events under way to be delivered.
/// A listener that takes longer may still finish after `drain` returned.
const EVENT_GRACE: Duration = Duration::from_secs(5);

struct Entry<T> {
    id: String,
    task: Arc<T>,
    policy: RetryPolicy,
    attempt: u32,
}

struct State<T> {
    workers_started: bool,
    /// Set by `drain`: no new work is taken.
    closed: bool,
    /// Set when `drain` returns: nothing more is started and no event is called; what is
    /// queued or waiting to retry is dropped, and a running attempt's result is dropped.
    stopped: bool,
    /// Events being delivered right now; `drain` waits for them before it returns.
    notifying: usize,
    /// Tasks the stop dropped, unfinished, and running tasks whose results were dropped after it.
    abandoned: Vec<String>,
    /// Queue slots taken by `reserve` and not yet used by `submit`.
    reserved: usize,
    queue: VecDeque<Entry<T>>,
    /// Keyed by due time, then by a unique number so equal times do not collide.
    retries: BTreeMap<(Instant, u64), Entry<T>>,
    running: BTreeMap<u64, String>,
    next_key: u64,
    succeeded: u64,
    failed: u64,
    retried: u64,
}

impl<T> State<T> {
    fn take_slot(&mut self, capacity: usize) -> Result<(), PoolError> {
        if self.closed {
            Err(PoolError::Closed)
        } else if !self.has_room(capacity) {
            Err(PoolError::QueueFull)
        } else {
            self.reserved += 1;
            Ok(())
        }
    }

    fn new_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn has_room(&self, capacity: usize) -> bool {
        self.reserved + self.queue.len() < capacity
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.retries.is_empty() && self.running.is_empty()
    }

    fn unfinished(&self) -> Vec<String> {
        let queued = self.queue.iter().map(|entry| &entry.id);
        let waiting = self.retries.values().map(|entry| &entry.id);
        self.running
            .values()
            .chain(queued)
            .chain(waiting)
            .chain(&self.abandoned)
            .cloned()
            .collect()
    }

    /// Takes out what is queued or waiting to retry, which a stopped pool never runs.
    fn take_waiting(&mut self) -> Vec<Arc<T>> {
        let waiting = std::mem::take(&mut self.retries).into_values();
        let entries: Vec<_> = self.queue.drain(..).chain(waiting).collect();
        let ids = entries.iter().map(|entry| entry.id.clone());
        self.abandoned.extend(ids);
        entries.into_iter().map(|entry| entry.task).collect()
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Draws the jitter factor of a retry's delay; fixed only by tests.
    jitter: fn() -> f64,
    /// Workers wait here for queued work or a retry falling due.
    work_ready: Condvar,
    /// `drain` waits here for the pool to become idle.
    work_done: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is only changed in short non-panicking sections, so a poisoned lock still
        // holds consistent state; a worker must never die of it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes leave to call one event; `false` once the pool has stopped. The leave is given back
    /// with `end_event`, or by `work` together with the record of the attempt's outcome.
    fn begin_event(&self) -> bool {
        let mut state = self.lock();
        if !state.stopped {
            state.notifying += 1;
        }
        !state.stopped
    }

    /// Waits on `work_done` until `settled` holds or `deadline` passes (`None`: no deadline).
    fn wait_done<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<T>>,
        deadline: Option<Instant>,
        settled: impl Fn(&State<T>) -> bool,
    ) -> MutexGuard<'a, State<T>> {
        while !settled(&state) {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                break;
            }
            state = self
                .work_done
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state
    }

    /// Gives back the leave of `begin_event`; returns whether the pool has stopped meanwhile.
    fn end_event(&self) -> bool {
        let mut state = self.lock();
        state.notifying -= 1;
        self.work_done.notify_all();
        state.stopped
    }
}

/// Runs submitted tasks on `workers` threads, holding at most `capacity` tasks that have not started.
pub struct Pool<T: Task> {
    shared: Arc<Shared<T>>,
    workers: NonZeroUsize,
    capacity: usize,
}

impl<T: Task> Pool<T> {
    /// Makes a pool; its threads start with the first `submit`, so a pool made before a
    /// `fork()` leaves the child nothing to wait for.
    pub fn new(workers: NonZeroUsize, capacity: usize) -> Self {
        let state = State {
            workers_started: false,
            closed: false,
            stopped: false,
            notifying: 0,
            abandoned: Vec::new(),
            reserved: 0,
            queue: VecDeque::new(),
            retries: BTreeMap::new(),
            running: BTreeMap::new(),
            next_key: 0,
            succeeded: 0,
            failed: 0,
            retried: 0,
        };
        let shared = Shared {
            state: Mutex::new(state),
            jitter: random_unit,
            work_ready: Condvar::new(),
            work_done: Condvar::new(),
        };
        Pool {
            shared: Arc::new(shared),
            workers,
            capacity,
        }
    }

    /// Takes one queue slot for a later `submit`.
    pub fn reserve(&self) -> Result<(), PoolError> {
        self.shared.lock().take_slot(self.capacity)
    }

    /// Gives back a slot taken by `reserve` that will not be submitted.
    pub fn release(&self) {
        let mut state = self.shared.lock();
        state.reserved = state.reserved.saturating_sub(1);
    }

    /// Queues a task, using a reserved slot if one is held and taking a free one otherwise.
    /// A held reservation is used up whatever the outcome, so a caller never releases after
    /// `submit`. Retries of the task never need a slot.
    pub fn submit(
        &self,
        id: String,
        task: T,
        policy: RetryPolicy,
        start: Start,
    ) -> Result<(), PoolError> {
        let mut state = self.shared.lock();
        let had_reservation = state.reserved > 0;
        if had_reservation {
            state.reserved -= 1;
        }
        if state.closed {
            return Err(PoolError::Closed);
        }
        if !had_reservation && !state.has_room(self.capacity) {
            return Err(PoolError::QueueFull);
        }
        if !state.workers_started {
            self.start_workers()?;
            state.workers_started = true;
        }
        let entry = Entry {
            id,
            task: Arc::new(task),
            policy,
            attempt: start.attempt.max(1),
        };
        if start.delay.is_zero() {
            state.queue.push_back(entry);
        } else {
            // Waits like a retry that is due later.
            let key = state.new_key();
            let due = Instant::now() + start.delay.min(LONGEST_BACKOFF);
            state.retries.insert((due, key), entry);
        }
        self.shared.work_ready.notify_one();
        Ok(())
    }

    fn start_workers(&self) -> Result<(), PoolError> {
        let mut last_error = None;
        let mut started = 0;
        for number in 0..self.workers.get() {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name(format!("task-worker-{number}"))
                .spawn(move || work(&shared));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => last_error = Some(error.to_string()),
            }
        }
        match last_error {
            Some(why) if started == 0 => Err(PoolError::NoWorkers(why)),
            _ => Ok(()),
        }
    }

    /// Stops taking new work and waits up to `timeout` for queued, running and
    /// waiting-to-retry tasks to finish, then stops the pool.
    ///
    /// Once `drain` has returned the pool starts nothing and calls no event: what is queued or
    /// waiting to retry is taken out and handed back in [`Drained::dropped`], a running attempt
    /// that ends later has its result dropped, and the workers exit. Every task not finished is
    /// named in [`Drained::unfinished`]; a later `drain` names them again.
    pub fn drain(&self, timeout: Duration) -> Drained<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.work_ready.notify_all();
        state = self.shared.wait_done(state, deadline, State::is_idle);
        state.stopped = true;
        self.shared.work_ready.notify_all();
        // An event under way is delivered before `drain` returns, and its outcome counted, so a
        // task is never both reported unfinished and recorded as finished.
        let grace_end = Instant::now().checked_add(EVENT_GRACE);
        state = self
            .shared
            .wait_done(state, grace_end, |state| state.notifying == 0);
        let dropped = state.take_waiting();
        Drained {
            unfinished: state.unfinished(),
            dropped,
        }
    }

    pub fn counters(&self) -> Counters {
        let state = self.shared.lock();
        Counters {
            queued: state.queue.len() + state.retries.len(),
            running: state.running.len(),
            succeeded: state.succeeded,
            failed: state.failed,
            retried: state.retried,
        }
    }
}

impl<T: Task> Drop for Pool<T> {
    fn drop(&mut self) {
        // Workers finish what is queued, then exit instead of waiting forever; a stopped pool
        // drops here, in its owner's thread, what reached it too late for `drain`.
        let mut state = self.shared.lock();
        state.closed = true;
        let late = if state.stopped {
            state.take_waiting()
        } else {
            Vec::new()
        };
        self.shared.work_ready.notify_all();
        drop(state);
        drop(late);
    }
}

/// The loop of one worker thread.
fn work<T: Task>(shared: &Shared<T>) {
    while let Some((key, entry)) = next_entry(shared) {
        let outcome = attempt(shared, entry);
        // Leaving `running`, being counted and giving back the leave of the outcome's event
        // happen together, so counters add up and `drain` sees the task either way, not both.
        let mut state = shared.lock();
        let id = state.running.remove(&key);
        if !matches!(outcome, Outcome::Abandoned) {
            state.notifying -= 1;
        }
        match outcome {
            Outcome::Succeeded => state.succeeded += 1,
            Outcome::Failed => state.failed += 1,
            Outcome::Retry(entry, delay) => {
                state.retried += 1;
                // If the pool stopped meanwhile, `drain` (or `Drop`) takes the entry out again.
                state.retries.insert((Instant::now() + delay, key), entry);
                // An idle worker may be waiting with no deadline: make it see the new one.
                shared.work_ready.notify_one();
            }
            Outcome::Abandoned => state.abandoned.extend(id),
        }
        shared.work_done.notify_all();
    }
}

/// Waits for the next entry to run, due retries first; `None` once the pool has stopped, or is
/// closed and has nothing left to start.
fn next_entry<T>(shared: &Shared<T>) -> Option<(u64, Entry<T>)> {
    let mut state = shared.lock();
    loop {
        if state.stopped {
            return None;
        }
        let now = Instant::now();
        let next_due = state.retries.first_key_value().map(|(&(due, _), _)| due);
        let entry = match next_due {
            Some(due) if due <= now => state.retries.pop_first().map(|(_, entry)| entry),
            _ => state.queue.pop_front(),
        };
        if let Some(entry) = entry {
            let key = state.new_key();
            state.running.insert(key, entry.id.clone());
            return Some((key, entry));
        }
        state = match next_due {
            Some(due) => {
                shared
                    .work_ready
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None if state.closed => return None,
            None => shared
                .work_ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// How an attempt ended. All but `Abandoned` hold the leave of the event that reported it.
enum Outcome<T> {
    Succeeded,
    Failed,
    /// Run the entry again after the delay.
    Retry(Entry<T>, Duration),
    /// The pool stopped first: no event reported it, and its result is dropped.
    Abandoned,
}

/// Runs one attempt and reports its events, unless the pool stops first.
fn attempt<T: Task>(shared: &Shared<T>, entry: Entry<T>) -> Outcome<T> {
    let Entry {
        task,
        policy,
        attempt,
        ..
    } = &entry;
    let attempt = *attempt;
    if !shared.begin_event() {
        return Outcome::Abandoned;
    }
    contain(|| task.started(attempt));
    if shared.end_event() {
        return Outcome::Abandoned;
    }
    // The attempt may still begin just after a `drain` returned; it is reported unfinished.
    let result = call(task, attempt, policy.timeout);
    if !shared.begin_event() {
        // Stopped while it ran: nobody hears of the result, which is dropped here.
        return Outcome::Abandoned;
    }
    match result {
        Ok(output) => match contain(|| task.succeeded(attempt, output)) {
            Some(true) => Outcome::Succeeded,
            _ => Outcome::Failed,
        },
        Err(failure) if attempt < policy.max_attempts => {
            let delay = policy.backoff(attempt, (shared.jitter)());
            contain(|| task.retrying(attempt, &failure, delay));
            let next = Entry {
                attempt: attempt + 1,
                ..entry
            };
            Outcome::Retry(next, delay)
        }
        Err(failure) => {
            contain(|| task.failed(attempt, failure));
            Outcome::Failed
        }
    }
}

/// Runs `f`, keeping a panic in it from unwinding into the worker loop; `None` if it panicked.
fn contain<R>(f: impl FnOnce() -> R) -> Option<R> {
    // The panic hook has already reported the panic; the worker goes on with its next task.
    panic::catch_unwind(AssertUnwindSafe(f)).ok()
}

fn call<T: Task>(
    task: &Arc<T>,
    attempt: u32,
    timeout: Option<Duration>,
) -> Result<T::Output, Failure<T::Error>> {
    let Some(timeout) = timeout else {
        return call_contained(task.as_ref(), attempt);
    };
    // A running call cannot be interrupted (Python offers no safe way to stop a thread), so it
    // runs on a thread of its own that the worker abandons at the deadline; the abandoned call
    // runs to its end and its result is dropped.
    let (sender, receiver) = mpsc::sync_channel(1);
    let task = Arc::clone(task);
    let spawned = thread::Builder::new()
        .name("task-attempt".into())
        .spawn(move || sender.send(call_contained(task.as_ref(), attempt)));
    if let Err(error) = spawned {
        return Err(Failure::Crashed(format!(
            "could not start a thread: {error}"
        )));
    }
    match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Failure::TimedOut(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Failure::Crashed(
            "the attempt thread ended without a result".into(),
        )),
    }
}

fn call_contained<T: Task>(task: &T, attempt: u32) -> Result<T::Output, Failure<T::Error>> {
    match panic::catch_unwind(AssertUnwindSafe(|| task.run(attempt))) {
        Ok(result) => result.map_err(Failure::Raised),
        Err(payload) => Err(Failure::Crashed(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("the task panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone, Debug, PartialEq)]
    enum Event {
        Started(u32),
        Succeeded(u32, u32),
        Retrying(u32, Duration),
        Failed(u32, String),
    }

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<(String, Event)>>>);

    impl Log {
        fn push(&self, id: &str, event: Event) {
            self.0.lock().unwrap().push((id.to_owned(), event));
        }

        fn of(&self, id: &str) -> Vec<Event> {
            let log = self.0.lock().unwrap();
            log.iter()
                .filter(|(logged, _)| logged == id)
                .map(|(_, event)| event.clone())
                .collect()
        }
    }

    type Behaviour = Box<dyn Fn(u32) -> Result<u32, String> + Send + Sync>;

    struct Probe {
        id: String,
        log: Log,
        behaviour: Behaviour,
    }

    impl Task for Probe {
        type Output = u32;
        type Error = String;

        fn run(&self, attempt: u32) -> Result<u32, String> {
            (self.behaviour)(attempt)
        }
        fn started(&self, attempt: u32) {
            self.log.push(&self.id, Event::Started(attempt));
        }
        fn succeeded(&self, attempt: u32, output: u32) -> bool {
            self.log.push(&self.id, Event::Succeeded(attempt, output));
            output != UNRECORDABLE
        }
        fn retrying(&self, attempt: u32, _: &Failure<String>, delay: Duration) {
            self.log.push(&self.id, Event::Retrying(attempt, delay));
        }
        fn failed(&self, attempt: u32, failure: Failure<String>) {
            let why = match failure {
                Failure::Raised(error) => error,
                Failure::TimedOut(after) => format!("timed out after {after:?}"),
                Failure::Crashed(why) => why,
            };
            self.log.push(&self.id, Event::Failed(attempt, why));
        }
    }

    /// Holds tasks back until the test opens it.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn open(&self) {
            *self.0.0.lock().unwrap() = true;
            self.0.1.notify_all();
        }

        fn wait(&self) {
            let open = self.0.0.lock().unwrap();
            drop(self.0.1.wait_while(open, |open| !*open).unwrap());
        }
    }

    const SOON: Duration = Duration::from_secs(5);
    /// An output the probe's `succeeded` event cannot record.
    const UNRECORDABLE: u32 = 999;

    fn pool(workers: usize, capacity: usize) -> Pool<Probe> {
        Pool::new(NonZeroUsize::new(workers).unwrap(), capacity)
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            timeout: None,
        }
    }

    fn submit(
        pool: &Pool<Probe>,
        log: &Log,
        id: &str,
        policy: RetryPolicy,
        behaviour: impl Fn(u32) -> Result<u32, String> + Send + Sync + 'static,
    ) -> Result<(), PoolError> {
        let probe = Probe {
            id: id.to_owned(),
            log: log.clone(),
            behaviour: Box::new(behaviour),
        };
        pool.submit(id.to_owned(), probe, policy, Start::FIRST)
    }

    fn blocked_on(gate: &Gate) -> impl Fn(u32) -> Result<u32, String> + Send + Sync + 'static {
        let gate = gate.clone();
        move |_| {
            gate.wait();
            Ok(0)
        }
    }

    fn wait_until(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + SOON;
        while !condition() {
            assert!(Instant::now() < deadline, "condition not met in time");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn threads_start_on_first_submit_not_before() {
        let pool = pool(3, 4);
        pool.reserve().unwrap();
        pool.release();
        let _ = pool.counters();
        // Every worker thread holds a handle on the shared state: none yet.
        assert_eq!(Arc::strong_count(&pool.shared), 1);

        submit(&pool, &Log::default(), "a", policy(1), Ok).unwrap();
        assert_eq!(Arc::strong_count(&pool.shared), 4);
        assert!(pool.drain(SOON).unfinished.is_empty());
    }

    #[test]
    fn a_full_queue_refuses_work_and_running_tasks_free_their_slot() {
        let (pool, log, gate) = (pool(1, 2), Log::default(), Gate::default());
        submit(&pool, &log, "running", policy(1), blocked_on(&gate)).unwrap();
        wait_until(|| pool.counters().running == 1);

        submit(&pool, &log, "b", policy(1), Ok).unwrap();
        submit(&pool, &log, "c", policy(1), Ok).unwrap();
        assert_eq!(
            submit(&pool, &log, "d", policy(1), Ok),
            Err(PoolError::QueueFull)
        );
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));
        assert_eq!(pool.counters().queued, 2);

        gate.open();
        assert!(pool.drain(SOON).unfinished.is_empty());
        assert_eq!(pool.counters().succeeded, 3);
    }

    #[test]
    fn reservations_hold_slots_until_submitted_or_released() {
        let (pool, log, gate) = (pool(1, 2), Log::default(), Gate::default());
        pool.reserve().unwrap();
        pool.reserve().unwrap();
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));
        pool.release();
        pool.reserve().unwrap();

        // Each submit uses up one reservation and takes no further slot.
        submit(&pool, &log, "a", policy(1), blocked_on(&gate)).unwrap();
        wait_until(|| pool.counters().running == 1);
        submit(&pool, &log, "b", policy(1), Ok).unwrap();
        pool.reserve().unwrap();
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));

        // Releasing more than was reserved cannot make room that is not there.
        pool.release();
        pool.release();
        pool.reserve().unwrap();
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));

        submit(&pool, &log, "c", policy(1), Ok).unwrap();
        assert_eq!(
            submit(&pool, &log, "d", policy(1), Ok),
            Err(PoolError::QueueFull)
        );
        gate.open();
        assert!(pool.drain(SOON).unfinished.is_empty());
    }

    #[test]
    fn a_failing_task_is_retried_until_it_succeeds() {
        let (pool, log) = (pool(2, 4), Log::default());
        let flaky = |attempt| match attempt {
            1 | 2 => Err(format!("failure {attempt}")),
            _ => Ok(attempt * 10),
        };
        submit(&pool, &log, "flaky", policy(5), flaky).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());

        let events = log.of("flaky");
        let kinds: Vec<_> = events
            .iter()
            .map(|event| match event {
                Event::Retrying(attempt, delay) => {
                    assert!(*delay <= policy(5).backoff_cap(*attempt));
                    Event::Retrying(*attempt, Duration::ZERO)
                }
                other => other.clone(),
            })
            .collect();
        let expected = [
            Event::Started(1),
            Event::Retrying(1, Duration::ZERO),
            Event::Started(2),
            Event::Retrying(2, Duration::ZERO),
            Event::Started(3),
            Event::Succeeded(3, 30),
        ];
        assert_eq!(kinds, expected);
        let counters = pool.counters();
        assert_eq!(
            (counters.succeeded, counters.retried, counters.failed),
            (1, 2, 0)
        );
    }

    #[test]
    fn a_result_that_cannot_be_recorded_counts_as_a_failure() {
        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "odd", policy(3), |_| Ok(UNRECORDABLE)).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());
        assert_eq!(
            log.of("odd").len(),
            2,
            "no retry: the work itself succeeded"
        );
        let counters = pool.counters();
        assert_eq!((counters.succeeded, counters.failed), (0, 1));
    }

    #[test]
    fn a_task_out_of_attempts_fails_with_its_last_error() {
        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "doomed", policy(2), |attempt| {
            Err(format!("failure {attempt}"))
        })
        .unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());

        let events = log.of("doomed");
        assert_eq!(events.last(), Some(&Event::Failed(2, "failure 2".into())));
        assert_eq!(events.len(), 4);
        let counters = pool.counters();
        assert_eq!(
            (counters.succeeded, counters.retried, counters.failed),
            (0, 1, 1)
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_stays_below_it() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            timeout: None,
        };
        let caps: Vec<_> = [1, 2, 3, 4, 5, 60, u32::MAX]
            .map(|attempt| policy.backoff_cap(attempt).as_millis())
            .into();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000, 1000]);

        assert_eq!(policy.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(policy.backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(policy.backoff(3, 7.0), Duration::from_millis(400));

        let draws: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|unit| (0.0..1.0).contains(unit)));
        assert!(draws.iter().any(|&unit| unit < 0.1));
        assert!(draws.iter().any(|&unit| unit > 0.9));
    }

    #[test]
    fn absurd_backoff_settings_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: 2,
            backoff_base: Duration::MAX,
            backoff_max: Duration::MAX,
            timeout: None,
        };
        assert_eq!(policy.backoff_cap(u32::MAX), LONGEST_BACKOFF);
    }

    #[test]
    fn drain_reports_running_queued_and_waiting_tasks_and_refuses_new_work() {
        let mut pool = pool(1, 4);
        // Every retry waits its full cap, so the waiting task is still waiting at the deadline.
        Arc::get_mut(&mut pool.shared).unwrap().jitter = || 1.0;
        let (log, gate) = (Log::default(), Gate::default());
        let slow_retry = RetryPolicy {
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            ..policy(2)
        };
        submit(&pool, &log, "waiting", slow_retry, |_| Err("no".into())).unwrap();
        wait_until(|| pool.counters().retried == 1);
        submit(&pool, &log, "running", policy(1), blocked_on(&gate)).unwrap();
        wait_until(|| log.of("running") == [Event::Started(1)]);
        submit(&pool, &log, "queued", policy(1), Ok).unwrap();

        let drained = pool.drain(Duration::from_millis(20));
        let mut unfinished = drained.unfinished;
        unfinished.sort();
        assert_eq!(unfinished, ["queued", "running", "waiting"]);
        assert_eq!(pool.reserve(), Err(PoolError::Closed));
        assert_eq!(
            submit(&pool, &log, "late", policy(1), Ok),
            Err(PoolError::Closed)
        );

        // The stop took out what had not started; the caller holds the last handle on each.
        let mut dropped: Vec<_> = drained.dropped.iter().map(|task| task.id.clone()).collect();
        dropped.sort();
        assert_eq!(dropped, ["queued", "waiting"]);
        assert!(
            drained
                .dropped
                .iter()
                .all(|task| Arc::strong_count(task) == 1)
        );
        assert_eq!(pool.counters().queued, 0);

        // The running attempt ends after the stop: its result is dropped, no event reports it,
        // nothing else starts, and every worker exits.
        gate.open();
        wait_until(|| Arc::strong_count(&pool.shared) == 1);
        assert_eq!(log.of("running"), [Event::Started(1)]);
        assert_eq!(log.of("queued"), []);
        let attempt_one = log.of("waiting");
        assert!(matches!(
            attempt_one[..],
            [Event::Started(1), Event::Retrying(1, _)]
        ));
        let counters = pool.counters();
        assert_eq!((counters.succeeded, counters.failed), (0, 0));
        // Still unfinished: a later drain names them again.
        let mut again = pool.drain(Duration::ZERO).unfinished;
        again.sort();
        assert_eq!(again, ["queued", "running", "waiting"]);
    }

    #[test]
    fn an_event_under_way_at_the_deadline_is_delivered_before_drain_returns() {
        /// Reports success only once the test lets it.
        struct SlowToRecord(Gate, Arc<AtomicUsize>);
        impl Task for SlowToRecord {
            type Output = ();
            type Error = ();
            fn run(&self, _: u32) -> Result<(), ()> {
                Ok(())
            }
            fn started(&self, _: u32) {}
            fn succeeded(&self, _: u32, _: ()) -> bool {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.wait();
                true
            }
            fn retrying(&self, _: u32, _: &Failure<()>, _: Duration) {}
            fn failed(&self, _: u32, _: Failure<()>) {}
        }
        let (gate, recording) = (Gate::default(), Arc::new(AtomicUsize::new(0)));
        let pool = Pool::new(NonZeroUsize::MIN, 4);
        let task = SlowToRecord(gate.clone(), recording.clone());
        pool.submit("t".into(), task, policy(1), Start::FIRST)
            .unwrap();
        wait_until(|| recording.load(Ordering::SeqCst) == 1);

        let opener = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            gate.open();
        });
        let drained = pool.drain(Duration::ZERO);
        opener.join().unwrap();
        // Recorded, so not unfinished: a task is never both.
        assert!(drained.unfinished.is_empty(), "{:?}", drained.unfinished);
        assert_eq!(pool.counters().succeeded, 1);
    }

    #[test]
    fn submit_after_drain_uses_up_the_reservation() {
        let pool = pool(1, 1);
        pool.reserve().unwrap();
        assert!(pool.drain(Duration::ZERO).unfinished.is_empty());
        assert_eq!(
            submit(&pool, &Log::default(), "a", policy(1), Ok),
            Err(PoolError::Closed)
        );
        assert_eq!(pool.shared.lock().reserved, 0);
    }

    #[test]
    fn an_attempt_past_its_timeout_fails_without_holding_the_worker() {
        let (pool, log, gate) = (pool(1, 4), Log::default(), Gate::default());
        let timed = RetryPolicy {
            timeout: Some(Duration::from_millis(20)),
            ..policy(1)
        };
        submit(&pool, &log, "stuck", timed, blocked_on(&gate)).unwrap();
        submit(&pool, &log, "next", policy(1), Ok).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());
        gate.open();

        let why = "timed out after 20ms".to_owned();
        assert_eq!(log.of("stuck").last(), Some(&Event::Failed(1, why)));
        assert_eq!(log.of("next").last(), Some(&Event::Succeeded(1, 1)));
    }

    #[test]
    fn a_fast_attempt_under_a_timeout_returns_its_result() {
        let (pool, log) = (pool(1, 4), Log::default());
        let timed = RetryPolicy {
            timeout: Some(SOON),
            ..policy(1)
        };
        submit(&pool, &log, "quick", timed, |_| Ok(7)).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());
        assert_eq!(log.of("quick").last(), Some(&Event::Succeeded(1, 7)));
    }

    #[test]
    fn panics_in_a_task_or_its_events_do_not_kill_the_worker() {
        struct PanickyEvents;
        impl Task for PanickyEvents {
            type Output = ();
            type Error = ();
            fn run(&self, _: u32) -> Result<(), ()> {
                Ok(())
            }
            fn started(&self, _: u32) {
                panic!("listener bug");
            }
            fn succeeded(&self, _: u32, _: ()) -> bool {
                panic!("listener bug");
            }
            fn retrying(&self, _: u32, _: &Failure<()>, _: Duration) {}
            fn failed(&self, _: u32, _: Failure<()>) {}
        }
        let events_pool = Pool::new(NonZeroUsize::MIN, 4);
        for id in ["a", "b"] {
            let submitted = events_pool.submit(id.into(), PanickyEvents, policy(1), Start::FIRST);
            submitted.unwrap();
        }
        assert!(events_pool.drain(SOON).unfinished.is_empty());
        // A result whose `succeeded` event panicked was never recorded.
        assert_eq!(events_pool.counters().failed, 2);

        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "bug", policy(1), |_| panic!("task bug")).unwrap();
        submit(&pool, &log, "fine", policy(1), Ok).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());
        let why = "the task panicked: task bug".to_owned();
        assert_eq!(log.of("bug").last(), Some(&Event::Failed(1, why)));
        assert_eq!(log.of("fine").last(), Some(&Event::Succeeded(1, 1)));
    }

    #[test]
    fn no_more_tasks_run_at_once_than_there_are_workers() {
        let (pool, log) = (pool(2, 16), Log::default());
        let now_running = Arc::new(AtomicUsize::new(0));
        let most_running = Arc::new(AtomicUsize::new(0));
        for number in 0..8 {
            let (now_running, most_running) = (now_running.clone(), most_running.clone());
            submit(&pool, &log, &format!("t{number}"), policy(1), move |_| {
                let running = now_running.fetch_add(1, Ordering::SeqCst) + 1;
                most_running.fetch_max(running, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
                now_running.fetch_sub(1, Ordering::SeqCst);
                Ok(0)
            })
            .unwrap();
        }
        assert!(pool.drain(SOON).unfinished.is_empty());
        assert_eq!(most_running.load(Ordering::SeqCst), 2);
        assert_eq!(pool.counters().succeeded, 8);
    }

    #[test]
    fn a_task_can_start_later_and_at_a_later_attempt() {
        let (pool, log) = (pool(1, 1), Log::default());
        let probe = Probe {
            id: "resumed".into(),
            log: log.clone(),
            behaviour: Box::new(|attempt| Err(format!("failure {attempt}"))),
        };
        let start = Start {
            attempt: 3,
            delay: Duration::from_millis(30),
        };
        let submitted = Instant::now();
        pool.submit("resumed".into(), probe, policy(3), start)
            .unwrap();
        // Waiting to start, like a retry, it holds no queue slot.
        assert_eq!(pool.counters().queued, 1);
        pool.reserve().unwrap();
        pool.release();

        assert!(pool.drain(SOON).unfinished.is_empty());
        assert!(submitted.elapsed() >= Duration::from_millis(30));
        let events = log.of("resumed");
        let last = Event::Failed(3, "failure 3".into());
        assert_eq!(events, [Event::Started(3), last]);
    }
}
