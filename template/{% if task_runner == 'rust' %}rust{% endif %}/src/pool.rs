//! A bounded pool of worker threads that delivers tasks: a queue, timed re-runs, timeouts, drain.
//!
//! The pool decides nothing about a task: each one begins its attempts, runs them and settles
//! them itself (from Python, through the attempt lifecycle every backend shares), and the
//! [`Verdict`] of each attempt tells the pool whether to run the task again, and when. What the
//! pool owns is delivery: the queue bound, the worker threads (and replacing one that died), the
//! timeout of one attempt, how many CPU-bound tasks run at once, and what a drain leaves behind.
//!
//! Plain Rust, so `cargo test` covers it without Python; `lib.rs` plugs Python jobs in through
//! the [`Task`] trait.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Work the pool delivers: one attempt after another, each begun, run and settled by the task.
///
/// All three are called on a worker thread (`run` on a thread of its own under a timeout); a
/// panic in any of them is contained.
pub trait Task: Send + Sync + 'static {
    /// One begun attempt, handed back to `run` and `settle`.
    type Attempt: Send + Sync + 'static;
    type Output: Send + 'static;
    type Error: Send + 'static;

    /// Starts the next attempt, or says why there is none to run. A panic here counts as
    /// [`Verdict::Abandoned`]: whether the attempt began is unknown.
    fn begin(&self) -> Begin<Self::Attempt>;
    fn run(&self, attempt: &Self::Attempt) -> Result<Self::Output, Self::Error>;
    /// Records how the attempt ended and decides what follows. A panic here counts as
    /// [`Verdict::Abandoned`].
    fn settle(
        &self,
        attempt: &Self::Attempt,
        result: Result<Self::Output, Failure<Self::Error>>,
    ) -> Verdict;

    /// Whether its attempts keep a CPU busy throughout: at most the pool's CPU-bound limit of
    /// such tasks run at once (see [`Pool::limit_cpu_bound`]).
    fn cpu_bound(&self) -> bool {
        false
    }
}

/// What `Task::begin` found.
#[derive(Debug)]
pub enum Begin<A> {
    /// Run this attempt.
    Run(A),
    /// No attempt to run: what follows is already decided (done, say, when the task had ended).
    Settled(Verdict),
}

/// What follows an attempt, as its task decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing more to run.
    Done,
    /// Run the task again (`begin` first) after this delay; the wait takes no queue slot.
    RetryAfter(Duration),
    /// The task could not record where it stands (a shutdown came first): it is not finished,
    /// and `drain` reports it so.
    Abandoned,
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

/// Keeps `Instant` arithmetic clear of overflow whatever a task asks for; no sane task waits
/// longer than this before its next attempt.
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

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

/// A snapshot of what the pool holds now. Totals (succeeded, failed, retried) are the tasks'
/// own business: they record their transitions, and count them there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Submitted or waiting for their next attempt, not running.
    pub queued: usize,
    pub running: usize,
    /// Worker threads running now (0 before the first `submit`, and once drained).
    pub workers_alive: usize,
}

/// A worker thread that is not running: it died (a panic that escaped the containment, which
/// only a bug in the pool causes) or could not be started, and `supervise` has not replaced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadWorker {
    /// Its thread's name, which its replacement takes over.
    pub name: String,
    /// The task it was running, put back in the queue to begin again.
    pub requeued: Option<String>,
}

/// What a `drain` left behind.
pub struct Drained<T> {
    /// Every task the pool took and did not finish: still running, dropped by the stop, or
    /// settled as [`Verdict::Abandoned`].
    pub unfinished: Vec<String>,
    /// The queued and waiting tasks the stop took out of the pool, handed over so the caller
    /// drops them where it is safe to (`lib.rs` holds the GIL).
    pub dropped: Vec<Arc<T>>,
}

/// How many nice steps below the rest of the process a worker thread runs (see
/// [`yield_to_the_api`]).
///
/// The workers run CPU-heavy work (the example analysis runs in Rust with the GIL released), and
/// there are TASK_CONCURRENCY of them (8 by default) on however few cores. At equal priority the
/// kernel shares the CPUs evenly among every runnable thread, and the event-loop thread that
/// answers requests waits its turn behind them. At +10 a worker weighs 110 against the loop's
/// 1024, so the loop runs as soon as a request wakes it, while the workers still have every
/// cycle it leaves idle. Not lower: a worker also holds the GIL for a moment (its task's Python
/// part, a progress report), and the loop waiting for that GIL waits as long as the worker waits
/// for a CPU. Measured on 2 cores, 8 workers analysing 200 documents (bench metric 2, 4 rounds
/// interleaved on a shared, noisy host): the median `GET /health` p99 was lowest at +10 (18 ms,
/// against 27 at 0, 25 at +19, 35-37 with SCHED_BATCH, which is therefore not used), p50 moved
/// little, and the analyses finished no later than at 0.
const WORKER_NICENESS: i32 = 10;

/// How long `drain` waits, once its deadline has passed, for calls into tasks under way (a
/// `begin` or `settle` writing the store) to return. One that takes longer may still finish
/// after `drain` returned.
const EVENT_GRACE: Duration = Duration::from_secs(5);

struct Entry<T> {
    id: String,
    task: Arc<T>,
    /// The longest one attempt may run.
    timeout: Option<Duration>,
}

// Not derived: that would ask for `T: Clone`, and only the handle is cloned.
impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            id: self.id.clone(),
            task: Arc::clone(&self.task),
            timeout: self.timeout,
        }
    }
}

struct State<T> {
    workers_started: bool,
    /// Worker threads that have not ended.
    workers_alive: usize,
    /// Worker threads to replace.
    dead: Vec<DeadWorker>,
    /// Set by `drain`: no new work is taken.
    closed: bool,
    /// Set when `drain` returns: nothing more is started and no task is called; what is queued
    /// or waiting is dropped, and a running attempt's result is dropped.
    stopped: bool,
    /// Calls into tasks (`begin`, `settle`) under way; `drain` waits for them before it returns.
    notifying: usize,
    /// Tasks dropped by the stop, running when it came, or settled as abandoned: unfinished.
    abandoned: Vec<String>,
    /// Queue slots taken by `reserve` and not yet used by `submit`.
    reserved: usize,
    queue: VecDeque<Entry<T>>,
    /// Tasks waiting for their next attempt (a `RetryAfter`, a delayed submit), keyed by due
    /// time, then by a unique number so equal times do not collide.
    waiting: BTreeMap<(Instant, u64), Entry<T>>,
    /// A handle on each running entry, so that one whose worker dies is not lost.
    running: BTreeMap<u64, Entry<T>>,
    next_key: u64,
    /// At most this many CPU-bound tasks run at once.
    cpu_bound_limit: usize,
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

    /// Nothing left that could finish by `deadline`: nothing queued or running, and nothing
    /// waiting that falls due before it (a task delayed past the drain is not waited for).
    fn is_settled_by(&self, deadline: Option<Instant>) -> bool {
        let next_due = self.waiting.first_key_value().map(|(&(due, _), _)| due);
        let waits_past = match (next_due, deadline) {
            (None, _) => true,
            (Some(due), Some(deadline)) => due > deadline,
            (Some(_), None) => false,
        };
        self.queue.is_empty() && self.running.is_empty() && waits_past
    }

    /// Puts `entry` aside until `delay` has passed.
    fn wait(&mut self, entry: Entry<T>, delay: Duration) {
        let key = self.new_key();
        let due = Instant::now() + delay.min(LONGEST_WAIT);
        self.waiting.insert((due, key), entry);
    }

    fn unfinished(&self) -> Vec<String> {
        let running = self.running.values().map(|entry| &entry.id);
        let queued = self.queue.iter().map(|entry| &entry.id);
        let waiting = self.waiting.values().map(|entry| &entry.id);
        running
            .chain(queued)
            .chain(waiting)
            .chain(&self.abandoned)
            .cloned()
            .collect()
    }

    /// Takes out what is queued or waiting, which a stopped pool never runs.
    fn take_waiting(&mut self) -> Vec<Arc<T>> {
        let waiting = std::mem::take(&mut self.waiting).into_values();
        let entries: Vec<_> = self.queue.drain(..).chain(waiting).collect();
        let ids = entries.iter().map(|entry| entry.id.clone());
        self.abandoned.extend(ids);
        entries.into_iter().map(|entry| entry.task).collect()
    }
}

impl<T: Task> State<T> {
    /// The next entry to start: waiting ones that are due first, then the queue, each in order.
    /// While the CPU-bound limit is reached a CPU-bound entry is passed over, and keeps its
    /// place: the tasks behind it are not held up, and it starts when a CPU-bound attempt ends.
    fn take_startable(&mut self, now: Instant) -> Option<Entry<T>> {
        let cpu_bound_running = self
            .running
            .values()
            .filter(|entry| entry.task.cpu_bound())
            .count();
        let may_start =
            |entry: &Entry<T>| cpu_bound_running < self.cpu_bound_limit || !entry.task.cpu_bound();
        let due = self
            .waiting
            .range(..=(now, u64::MAX))
            .find(|(_, entry)| may_start(entry))
            .map(|(&key, _)| key);
        if let Some(key) = due {
            return self.waiting.remove(&key);
        }
        let position = self.queue.iter().position(may_start)?;
        self.queue.remove(position)
    }

    /// When the first waiting entry not yet due falls due. (A due one that could not start
    /// waits for a CPU-bound attempt to end, which wakes a worker.)
    fn next_due_after(&self, now: Instant) -> Option<Instant> {
        self.waiting
            .keys()
            .map(|&(due, _)| due)
            .find(|&due| due > now)
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Workers wait here for queued work or a waiting task falling due.
    work_ready: Condvar,
    /// `drain` waits here for the pool to become idle.
    work_done: Condvar,
    /// Set by `kill_a_worker_for_tests`: the next worker to take an entry dies holding it.
    kill_one: AtomicBool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is only changed in short non-panicking sections, so a poisoned lock still
        // holds consistent state; a worker must never die of it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leave to call into a task; `None` once the pool has stopped.
    fn leave(&self) -> Option<Leave<'_, T>> {
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        state.notifying += 1;
        Some(Leave(self))
    }

    fn is_stopped(&self) -> bool {
        self.lock().stopped
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
}

/// A call into a task under way, counted in `notifying` until dropped (on unwinding too), so
/// that `drain` never returns while a task is still recording its outcome.
struct Leave<'a, T>(&'a Shared<T>);

impl<T> Drop for Leave<'_, T> {
    fn drop(&mut self) {
        self.0.lock().notifying -= 1;
        self.0.work_done.notify_all();
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
            workers_alive: 0,
            dead: Vec::new(),
            closed: false,
            stopped: false,
            notifying: 0,
            abandoned: Vec::new(),
            reserved: 0,
            queue: VecDeque::new(),
            waiting: BTreeMap::new(),
            running: BTreeMap::new(),
            next_key: 0,
            cpu_bound_limit: workers.get(),
        };
        let shared = Shared {
            state: Mutex::new(state),
            work_ready: Condvar::new(),
            work_done: Condvar::new(),
            kill_one: AtomicBool::new(false),
        };
        Pool {
            shared: Arc::new(shared),
            workers,
            capacity,
        }
    }

    /// Lets at most `slots` CPU-bound tasks ([`Task::cpu_bound`]) run at once; by default as many
    /// as there are workers. With fewer slots than CPUs, a CPU is always left to the threads
    /// that answer requests. A CPU-bound task waiting for a slot takes no worker, and its wait
    /// is not part of its attempt's timeout.
    pub fn limit_cpu_bound(&self, slots: NonZeroUsize) {
        self.shared.lock().cpu_bound_limit = slots.get();
        // With more slots, entries passed over may start now.
        self.shared.work_ready.notify_all();
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
    /// `submit`. A task waits `delay` before its first attempt, and as long as its verdicts say
    /// before the next ones; waiting never needs a slot. Each attempt may run for `timeout`.
    pub fn submit(
        &self,
        id: String,
        task: T,
        timeout: Option<Duration>,
        delay: Duration,
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
            self.start_workers(&mut state)?;
            state.workers_started = true;
        }
        let entry = Entry {
            id,
            task: Arc::new(task),
            timeout,
        };
        if delay.is_zero() {
            state.queue.push_back(entry);
        } else {
            state.wait(entry, delay);
        }
        self.shared.work_ready.notify_one();
        Ok(())
    }

    /// Starts the first worker threads; those that cannot start are dead, for `supervise` to
    /// try again, unless none can.
    fn start_workers(&self, state: &mut State<T>) -> Result<(), PoolError> {
        let mut last_error = None;
        for number in 0..self.workers.get() {
            let name = format!("task-worker-{number}");
            if let Err(error) = self.start_worker(state, name.clone()) {
                last_error = Some(error);
                let requeued = None;
                state.dead.push(DeadWorker { name, requeued });
            }
        }
        match last_error {
            Some(why) if state.workers_alive == 0 => {
                state.dead.clear();
                Err(PoolError::NoWorkers(why))
            }
            _ => Ok(()),
        }
    }

    fn start_worker(&self, state: &mut State<T>, name: String) -> Result<(), String> {
        let shared = Arc::clone(&self.shared);
        let thread = thread::Builder::new().name(name.clone());
        thread
            .spawn(move || work(&shared, name))
            .map_err(|error| error.to_string())?;
        // Counted here, under the lock, not by the thread: one not yet scheduled is not missing.
        state.workers_alive += 1;
        Ok(())
    }

    /// The worker threads that are not running and not yet replaced.
    pub fn dead_workers(&self) -> Vec<DeadWorker> {
        self.shared.lock().dead.clone()
    }

    /// Starts a worker in place of each dead one and returns those it replaced; one that still
    /// cannot start stays dead, for the next call. A draining pool replaces none.
    pub fn supervise(&self) -> Vec<DeadWorker> {
        let mut state = self.shared.lock();
        if state.closed {
            return Vec::new();
        }
        let dead = std::mem::take(&mut state.dead);
        let mut replaced = Vec::new();
        for worker in dead {
            match self.start_worker(&mut state, worker.name.clone()) {
                Ok(()) => replaced.push(worker),
                Err(_) => state.dead.push(worker),
            }
        }
        replaced
    }

    /// Test support, for `cargo test` and the Python tests alike: the next worker to take an
    /// entry panics outside every containment while it holds it, as a bug in the pool would.
    #[doc(hidden)]
    pub fn kill_a_worker_for_tests(&self) {
        self.shared.kill_one.store(true, Ordering::SeqCst);
    }

    /// Stops taking new work and waits up to `timeout` for queued, running and waiting tasks
    /// to finish (not for those waiting until after `timeout`), then stops the pool.
    ///
    /// Once `drain` has returned the pool starts nothing and calls no task: what is queued or
    /// waiting is taken out and handed back in [`Drained::dropped`], a running attempt that
    /// ends later has its result dropped, and the workers exit. Every task not finished is
    /// named in [`Drained::unfinished`]; a later `drain` names them again.
    pub fn drain(&self, timeout: Duration) -> Drained<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.work_ready.notify_all();
        state = self
            .shared
            .wait_done(state, deadline, |state| state.is_settled_by(deadline));
        state.stopped = true;
        self.shared.work_ready.notify_all();
        // A call into a task under way returns before `drain` does, and its verdict is taken,
        // so a task is never both reported unfinished and recorded as finished.
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
            queued: state.queue.len() + state.waiting.len(),
            running: state.running.len(),
            workers_alive: state.workers_alive,
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

/// One worker thread's stay in the pool, counted in `workers_alive` until it ends however it
/// ends: dropped on unwinding too, so a worker that died is known, and what it held not lost.
struct Worker<'a, T> {
    shared: &'a Shared<T>,
    name: String,
    /// The key of the entry this worker is running.
    holding: Option<u64>,
}

impl<T> Drop for Worker<'_, T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.workers_alive -= 1;
        let held = self.holding.and_then(|key| state.running.remove(&key));
        let requeued = held.map(|entry| {
            let id = entry.id.clone();
            // Died mid-attempt. The entry goes first in line (over the bound: it held no slot
            // while it ran) and runs again from `begin`, which knows, as after a crash of the
            // whole process, what an attempt that began and never settled means for the task.
            if state.stopped {
                state.abandoned.push(entry.id);
            } else {
                state.queue.push_front(entry);
                self.shared.work_ready.notify_one();
            }
            id
        });
        // A worker ends on its own only once the pool is closed; any other end is a death.
        if thread::panicking() {
            let name = std::mem::take(&mut self.name);
            state.dead.push(DeadWorker { name, requeued });
        }
        self.shared.work_done.notify_all();
    }
}

/// Lowers the calling thread's scheduling priority to [`WORKER_NICENESS`] below the process's
/// (its main thread's), so that the threads answering requests come first.
///
/// On Linux a nice value belongs to one thread (`setpriority` on a thread id), and threads it
/// starts (an attempt's, under a timeout) inherit it. Elsewhere it is the whole process's, so
/// nothing is done. A failure (a sandbox that forbids the call) is ignored: the worker runs its
/// tasks at the priority it has, as it would without this.
#[cfg(target_os = "linux")]
fn yield_to_the_api() {
    // SAFETY: system calls that take and return plain integers, about this process's own threads.
    unsafe {
        let process = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
        let niceness = process.saturating_add(WORKER_NICENESS).min(19);
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, niceness);
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_the_api() {}

/// The loop of one worker thread.
fn work<T: Task>(shared: &Shared<T>, name: String) {
    yield_to_the_api();
    let mut worker = Worker {
        shared,
        name,
        holding: None,
    };
    while let Some((key, entry)) = next_entry(shared) {
        worker.holding = Some(key);
        if shared.kill_one.swap(false, Ordering::SeqCst) {
            panic!("a task worker was killed on purpose, to test that it is replaced");
        }
        let (verdict, leave) = attempt(shared, &entry);
        // Leaving `running` and taking up the verdict happen together, so `drain` sees the task
        // either way, not both; the leave is given back only after that.
        let mut state = shared.lock();
        state.running.remove(&key);
        worker.holding = None;
        if entry.task.cpu_bound() {
            // Its slot is free: a CPU-bound entry passed over may start now.
            shared.work_ready.notify_one();
        }
        match verdict {
            Verdict::Done => {}
            Verdict::RetryAfter(delay) => {
                // If the pool stopped meanwhile, `drain` (or `Drop`) takes the entry out again.
                state.wait(entry, delay);
                // An idle worker may be waiting with no deadline: make it see the new one.
                shared.work_ready.notify_one();
            }
            Verdict::Abandoned => state.abandoned.push(entry.id),
        }
        shared.work_done.notify_all();
        drop(state);
        drop(leave);
    }
}

/// Waits for the next entry to run, due waiting ones first; `None` once the pool has stopped,
/// or is closed and has nothing left to start.
fn next_entry<T: Task>(shared: &Shared<T>) -> Option<(u64, Entry<T>)> {
    let mut state = shared.lock();
    loop {
        if state.stopped {
            return None;
        }
        let now = Instant::now();
        if let Some(entry) = state.take_startable(now) {
            let key = state.new_key();
            state.running.insert(key, entry.clone());
            return Some((key, entry));
        }
        let next_due = state.next_due_after(now);
        state = match next_due {
            Some(due) => {
                shared
                    .work_ready
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            // Closed with nothing left to start; a CPU-bound entry that waits for a slot is
            // still to start.
            None if state.closed && state.queue.is_empty() && state.waiting.is_empty() => {
                return None;
            }
            None => shared
                .work_ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// Begins, runs and settles one attempt, unless the pool stops first; the verdict comes with
/// the leave of the call that gave it (none when the pool stopped first: the task is abandoned
/// and no call reports it).
fn attempt<'a, T: Task>(
    shared: &'a Shared<T>,
    entry: &Entry<T>,
) -> (Verdict, Option<Leave<'a, T>>) {
    let task = &entry.task;
    let Some(leave) = shared.leave() else {
        return (Verdict::Abandoned, None);
    };
    let begun = contain(|| task.begin()).unwrap_or(Begin::Settled(Verdict::Abandoned));
    let attempt = match begun {
        Begin::Run(attempt) => Arc::new(attempt),
        Begin::Settled(verdict) => return (verdict, Some(leave)),
    };
    drop(leave);
    if shared.is_stopped() {
        // Begun but never run: the task stays where `begin` left it.
        return (Verdict::Abandoned, None);
    }
    // The attempt may still start just after a `drain` returned; it is reported unfinished.
    let result = call(task, &attempt, entry.timeout);
    let Some(leave) = shared.leave() else {
        // Stopped while it ran: nobody hears of the result, which is dropped here.
        return (Verdict::Abandoned, None);
    };
    let verdict = contain(|| task.settle(&attempt, result)).unwrap_or(Verdict::Abandoned);
    (verdict, Some(leave))
}

/// Runs `f`, keeping a panic in it from unwinding into the worker loop; `None` if it panicked.
fn contain<R>(f: impl FnOnce() -> R) -> Option<R> {
    // The panic hook has already reported the panic; the worker goes on with its next task.
    panic::catch_unwind(AssertUnwindSafe(f)).ok()
}

fn call<T: Task>(
    task: &Arc<T>,
    attempt: &Arc<T::Attempt>,
    timeout: Option<Duration>,
) -> Result<T::Output, Failure<T::Error>> {
    let Some(timeout) = timeout else {
        return call_contained(task.as_ref(), attempt);
    };
    // A running call cannot be interrupted (Python offers no safe way to stop a thread), so it
    // runs on a thread of its own that the worker abandons at the deadline; the abandoned call
    // runs to its end and its result is dropped.
    let (sender, receiver) = mpsc::sync_channel(1);
    let (task, attempt) = (Arc::clone(task), Arc::clone(attempt));
    let spawned = thread::Builder::new()
        .name("task-attempt".into())
        .spawn(move || sender.send(call_contained(task.as_ref(), &attempt)));
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

fn call_contained<T: Task>(task: &T, attempt: &T::Attempt) -> Result<T::Output, Failure<T::Error>> {
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
    use std::sync::atomic::{AtomicU32, AtomicUsize};

    #[derive(Clone, Debug, PartialEq)]
    enum Event {
        Began(u32),
        Succeeded(u32, u32),
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

    /// A task that numbers its attempts and runs `behaviour` in each; a failed attempt is run
    /// again after `retry_delay` until `max_attempts` have run, as the Python lifecycle decides.
    struct Probe {
        id: String,
        log: Log,
        behaviour: Behaviour,
        max_attempts: u32,
        retry_delay: Duration,
        attempts: AtomicU32,
        cpu_bound: bool,
    }

    impl Task for Probe {
        type Attempt = u32;
        type Output = u32;
        type Error = String;

        fn begin(&self) -> Begin<u32> {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            self.log.push(&self.id, Event::Began(attempt));
            Begin::Run(attempt)
        }

        fn run(&self, attempt: &u32) -> Result<u32, String> {
            (self.behaviour)(*attempt)
        }

        fn cpu_bound(&self) -> bool {
            self.cpu_bound
        }

        fn settle(&self, &attempt: &u32, result: Result<u32, Failure<String>>) -> Verdict {
            match result {
                Ok(output) => {
                    self.log.push(&self.id, Event::Succeeded(attempt, output));
                    Verdict::Done
                }
                Err(failure) => {
                    let why = match failure {
                        Failure::Raised(error) => error,
                        Failure::TimedOut(after) => format!("timed out after {after:?}"),
                        Failure::Crashed(why) => why,
                    };
                    self.log.push(&self.id, Event::Failed(attempt, why));
                    if attempt < self.max_attempts {
                        Verdict::RetryAfter(self.retry_delay)
                    } else {
                        Verdict::Done
                    }
                }
            }
        }
    }

    /// A task whose every call is scripted: what `begin` finds and what `settle` decides.
    struct Scripted {
        begin: Box<dyn Fn() -> Begin<()> + Send + Sync>,
        settle: Box<dyn Fn() -> Verdict + Send + Sync>,
        runs: Arc<AtomicUsize>,
    }

    impl Scripted {
        fn new(
            begin: impl Fn() -> Begin<()> + Send + Sync + 'static,
            settle: impl Fn() -> Verdict + Send + Sync + 'static,
        ) -> (Self, Arc<AtomicUsize>) {
            let runs = Arc::new(AtomicUsize::new(0));
            let task = Scripted {
                begin: Box::new(begin),
                settle: Box::new(settle),
                runs: runs.clone(),
            };
            (task, runs)
        }
    }

    impl Task for Scripted {
        type Attempt = ();
        type Output = ();
        type Error = ();

        fn begin(&self) -> Begin<()> {
            (self.begin)()
        }

        fn run(&self, _: &()) -> Result<(), ()> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn settle(&self, _: &(), _: Result<(), Failure<()>>) -> Verdict {
            (self.settle)()
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
    const NOW: Duration = Duration::ZERO;
    const NO_TIMEOUT: Option<Duration> = None;

    fn pool<T: Task>(workers: usize, capacity: usize) -> Pool<T> {
        Pool::new(NonZeroUsize::new(workers).unwrap(), capacity)
    }

    fn probe(
        log: &Log,
        id: &str,
        max_attempts: u32,
        behaviour: impl Fn(u32) -> Result<u32, String> + Send + Sync + 'static,
    ) -> Probe {
        Probe {
            id: id.to_owned(),
            log: log.clone(),
            behaviour: Box::new(behaviour),
            max_attempts,
            retry_delay: Duration::from_millis(1),
            attempts: AtomicU32::new(0),
            cpu_bound: false,
        }
    }

    /// Submits a probe that runs at once, with no timeout.
    fn submit(
        pool: &Pool<Probe>,
        log: &Log,
        id: &str,
        max_attempts: u32,
        behaviour: impl Fn(u32) -> Result<u32, String> + Send + Sync + 'static,
    ) -> Result<(), PoolError> {
        let task = probe(log, id, max_attempts, behaviour);
        pool.submit(id.to_owned(), task, NO_TIMEOUT, NOW)
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

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    /// The nice value of the calling thread, as `getpriority` gives it for its thread id.
    #[cfg(target_os = "linux")]
    fn niceness_of_this_thread() -> i32 {
        // SAFETY: plain integers in and out, about this thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tasks_run_at_a_lower_priority_than_the_thread_that_made_the_pool() {
        // SAFETY: plain integers in and out, about this process.
        let process =
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t) };
        let lowered = (process + WORKER_NICENESS).min(19);
        let here = niceness_of_this_thread();
        // A nice value runs from -20 to 19: shifted, it fits a task's output.
        let seen = |_| Ok((niceness_of_this_thread() + 20) as u32);
        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "on the worker", 1, seen).unwrap();
        // Under a timeout the attempt runs on a thread the worker starts: it inherits the value.
        let timed = probe(&log, "timed", 1, seen);
        pool.submit("timed".into(), timed, Some(SOON), NOW).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());

        let expected = Event::Succeeded(1, (lowered + 20) as u32);
        assert_eq!(log.of("on the worker").last(), Some(&expected));
        assert_eq!(log.of("timed").last(), Some(&expected));
        assert_eq!(
            niceness_of_this_thread(),
            here,
            "the thread that made the pool is unchanged"
        );
    }

    #[test]
    fn cpu_bound_tasks_keep_to_their_limit_and_hold_up_no_other_task() {
        let one = NonZeroUsize::new(1).unwrap();
        let (pool, log, gate) = (pool(3, 8), Log::default(), Gate::default());
        pool.limit_cpu_bound(one);
        let cpu_bound = |id: &str, behaviour| Probe {
            cpu_bound: true,
            ..probe(&log, id, 1, behaviour)
        };
        let first = cpu_bound("first", Box::new(blocked_on(&gate)) as Behaviour);
        pool.submit("first".into(), first, NO_TIMEOUT, NOW).unwrap();
        wait_until(|| pool.counters().running == 1);
        // The one CPU-bound slot is taken: the second waits, taking no worker; a plain task
        // behind it starts on a free worker.
        let short = Duration::from_millis(50);
        let second = cpu_bound("second", Box::new(Ok) as Behaviour);
        pool.submit("second".into(), second, Some(short), NOW)
            .unwrap();
        submit(&pool, &log, "plain", 1, Ok).unwrap();
        wait_until(|| log.of("plain") == [Event::Began(1), Event::Succeeded(1, 1)]);
        assert_eq!(log.of("second"), []);
        assert_eq!(pool.counters().queued, 1);
        assert_eq!(pool.counters().running, 1);

        // Waiting for the slot is not part of the attempt's timeout, however long it lasts.
        thread::sleep(short * 2);
        gate.open();
        assert!(pool.drain(SOON).unfinished.is_empty());
        assert_eq!(log.of("first"), [Event::Began(1), Event::Succeeded(1, 0)]);
        assert_eq!(log.of("second"), [Event::Began(1), Event::Succeeded(1, 1)]);
    }

    #[test]
    fn threads_start_on_first_submit_not_before() {
        let pool = pool(3, 4);
        pool.reserve().unwrap();
        pool.release();
        let _ = pool.counters();
        // Every worker thread holds a handle on the shared state: none yet.
        assert_eq!(Arc::strong_count(&pool.shared), 1);
        assert_eq!(pool.supervise(), []);
        assert_eq!(pool.dead_workers(), []);

        submit(&pool, &Log::default(), "a", 1, Ok).unwrap();
        assert_eq!(Arc::strong_count(&pool.shared), 4);
        assert_eq!(pool.counters().workers_alive, 3);
        assert!(pool.drain(SOON).unfinished.is_empty());
    }

    #[test]
    fn a_full_queue_refuses_work_and_running_tasks_free_their_slot() {
        let (pool, log, gate) = (pool(1, 2), Log::default(), Gate::default());
        submit(&pool, &log, "running", 1, blocked_on(&gate)).unwrap();
        wait_until(|| pool.counters().running == 1);

        submit(&pool, &log, "b", 1, Ok).unwrap();
        submit(&pool, &log, "c", 1, Ok).unwrap();
        assert_eq!(submit(&pool, &log, "d", 1, Ok), Err(PoolError::QueueFull));
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));
        assert_eq!(pool.counters().queued, 2);

        gate.open();
        assert!(pool.drain(SOON).unfinished.is_empty());
        for id in ["running", "b", "c"] {
            assert!(matches!(log.of(id).last(), Some(Event::Succeeded(1, _))));
        }
        assert_eq!(log.of("d"), []);
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
        submit(&pool, &log, "a", 1, blocked_on(&gate)).unwrap();
        wait_until(|| pool.counters().running == 1);
        submit(&pool, &log, "b", 1, Ok).unwrap();
        pool.reserve().unwrap();
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));

        // Releasing more than was reserved cannot make room that is not there.
        pool.release();
        pool.release();
        pool.reserve().unwrap();
        assert_eq!(pool.reserve(), Err(PoolError::QueueFull));

        submit(&pool, &log, "c", 1, Ok).unwrap();
        assert_eq!(submit(&pool, &log, "d", 1, Ok), Err(PoolError::QueueFull));
        gate.open();
        assert!(pool.drain(SOON).unfinished.is_empty());
    }

    #[test]
    fn a_retry_after_verdict_runs_the_next_attempt_after_its_delay() {
        let (pool, log) = (pool(2, 1), Log::default());
        let flaky = |attempt| match attempt {
            1 | 2 => Err(format!("failure {attempt}")),
            _ => Ok(attempt * 10),
        };
        let task = Probe {
            retry_delay: Duration::from_millis(30),
            ..probe(&log, "flaky", 5, flaky)
        };
        let submitted = Instant::now();
        pool.submit("flaky".into(), task, NO_TIMEOUT, NOW).unwrap();
        wait_until(|| log.of("flaky").len() == 2);
        // Waiting for its next attempt, it holds no queue slot.
        assert_eq!(pool.counters().queued, 1);
        pool.reserve().unwrap();
        pool.release();

        assert!(pool.drain(SOON).unfinished.is_empty());
        assert!(submitted.elapsed() >= Duration::from_millis(60));
        let expected = [
            Event::Began(1),
            Event::Failed(1, "failure 1".into()),
            Event::Began(2),
            Event::Failed(2, "failure 2".into()),
            Event::Began(3),
            Event::Succeeded(3, 30),
        ];
        assert_eq!(log.of("flaky"), expected);
    }

    #[test]
    fn a_failure_settled_as_done_is_not_run_again() {
        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "doomed", 2, |attempt| {
            Err(format!("failure {attempt}"))
        })
        .unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());

        let events = log.of("doomed");
        assert_eq!(events.last(), Some(&Event::Failed(2, "failure 2".into())));
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn a_task_with_no_attempt_to_begin_runs_nothing_and_follows_its_verdict() {
        let pool = pool(1, 4);
        let (done, done_runs) = Scripted::new(|| Begin::Settled(Verdict::Done), || Verdict::Done);
        let (gone, gone_runs) =
            Scripted::new(|| Begin::Settled(Verdict::Abandoned), || Verdict::Done);
        // Nothing to run yet; the second look finds an attempt to run.
        let looks = AtomicUsize::new(0);
        let later = move || match looks.fetch_add(1, Ordering::SeqCst) {
            0 => Begin::Settled(Verdict::RetryAfter(Duration::from_millis(5))),
            _ => Begin::Run(()),
        };
        let (later, later_runs) = Scripted::new(later, || Verdict::Done);
        pool.submit("done".into(), done, NO_TIMEOUT, NOW).unwrap();
        pool.submit("gone".into(), gone, NO_TIMEOUT, NOW).unwrap();
        pool.submit("later".into(), later, NO_TIMEOUT, NOW).unwrap();

        assert_eq!(pool.drain(SOON).unfinished, ["gone"]);
        assert_eq!(done_runs.load(Ordering::SeqCst), 0);
        assert_eq!(gone_runs.load(Ordering::SeqCst), 0);
        assert_eq!(later_runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_abandoned_verdict_is_reported_unfinished_and_not_run_again() {
        let pool = pool(1, 4);
        let (task, runs) = Scripted::new(|| Begin::Run(()), || Verdict::Abandoned);
        pool.submit("t".into(), task, NO_TIMEOUT, NOW).unwrap();
        assert_eq!(pool.drain(SOON).unfinished, ["t"]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A later drain names it again.
        assert_eq!(pool.drain(Duration::ZERO).unfinished, ["t"]);
    }

    #[test]
    fn drain_does_not_wait_for_tasks_due_after_its_deadline() {
        let (pool, log) = (pool(1, 4), Log::default());
        let later = probe(&log, "later", 1, Ok);
        pool.submit("later".into(), later, NO_TIMEOUT, Duration::from_secs(60))
            .unwrap();
        let started = Instant::now();
        let drained = pool.drain(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(drained.unfinished, ["later"]);
        assert_eq!(log.of("later"), []);
    }

    #[test]
    fn drain_reports_running_queued_and_waiting_tasks_and_refuses_new_work() {
        let (pool, log, gate) = (pool(1, 4), Log::default(), Gate::default());
        let waiting = Probe {
            retry_delay: Duration::from_secs(60),
            ..probe(&log, "waiting", 2, |_| Err("no".into()))
        };
        pool.submit("waiting".into(), waiting, NO_TIMEOUT, NOW)
            .unwrap();
        wait_until(|| log.of("waiting").len() == 2 && pool.counters().running == 0);
        submit(&pool, &log, "running", 1, blocked_on(&gate)).unwrap();
        wait_until(|| log.of("running") == [Event::Began(1)]);
        submit(&pool, &log, "queued", 1, Ok).unwrap();

        let drained = pool.drain(Duration::from_millis(20));
        let unfinished = sorted(drained.unfinished);
        assert_eq!(unfinished, ["queued", "running", "waiting"]);
        assert_eq!(pool.reserve(), Err(PoolError::Closed));
        assert_eq!(submit(&pool, &log, "late", 1, Ok), Err(PoolError::Closed));

        // The stop took out what had not started; the caller holds the last handle on each.
        let dropped: Vec<_> = drained.dropped.iter().map(|task| task.id.clone()).collect();
        assert_eq!(sorted(dropped), ["queued", "waiting"]);
        let last_handles = drained
            .dropped
            .iter()
            .all(|task| Arc::strong_count(task) == 1);
        assert!(last_handles);
        assert_eq!(pool.counters().queued, 0);

        // The running attempt ends after the stop: its result is dropped, it is not settled,
        // nothing else starts, and every worker exits.
        gate.open();
        wait_until(|| Arc::strong_count(&pool.shared) == 1);
        assert_eq!(log.of("running"), [Event::Began(1)]);
        assert_eq!(log.of("queued"), []);
        assert_eq!(log.of("waiting").len(), 2);
        assert_eq!(pool.counters().workers_alive, 0);
        // Ended by the drain, not dead: nothing is restarted.
        assert_eq!(pool.dead_workers(), []);
        assert_eq!(pool.supervise(), []);
        // Still unfinished: a later drain names them again.
        let again = sorted(pool.drain(Duration::ZERO).unfinished);
        assert_eq!(again, ["queued", "running", "waiting"]);
    }

    #[test]
    fn a_settle_under_way_at_the_deadline_is_taken_before_drain_returns() {
        let (gate, settling) = (Gate::default(), Arc::new(AtomicUsize::new(0)));
        let slow_settle = {
            let (gate, settling) = (gate.clone(), settling.clone());
            move || {
                settling.fetch_add(1, Ordering::SeqCst);
                gate.wait();
                Verdict::Done
            }
        };
        let pool = pool(1, 4);
        let (task, _) = Scripted::new(|| Begin::Run(()), slow_settle);
        pool.submit("t".into(), task, NO_TIMEOUT, NOW).unwrap();
        wait_until(|| settling.load(Ordering::SeqCst) == 1);

        let opener = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            gate.open();
        });
        let drained = pool.drain(Duration::ZERO);
        opener.join().unwrap();
        // Settled, so not unfinished: a task is never both.
        assert!(drained.unfinished.is_empty(), "{:?}", drained.unfinished);
    }

    #[test]
    fn submit_after_drain_uses_up_the_reservation() {
        let pool = pool(1, 1);
        pool.reserve().unwrap();
        assert!(pool.drain(Duration::ZERO).unfinished.is_empty());
        assert_eq!(
            submit(&pool, &Log::default(), "a", 1, Ok),
            Err(PoolError::Closed)
        );
        assert_eq!(pool.shared.lock().reserved, 0);
    }

    #[test]
    fn an_attempt_past_its_timeout_fails_without_holding_the_worker() {
        let (pool, log, gate) = (pool(1, 4), Log::default(), Gate::default());
        let stuck = probe(&log, "stuck", 1, blocked_on(&gate));
        let timeout = Some(Duration::from_millis(20));
        pool.submit("stuck".into(), stuck, timeout, NOW).unwrap();
        submit(&pool, &log, "next", 1, Ok).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());
        gate.open();

        let why = "timed out after 20ms".to_owned();
        assert_eq!(log.of("stuck").last(), Some(&Event::Failed(1, why)));
        assert_eq!(log.of("next").last(), Some(&Event::Succeeded(1, 1)));
    }

    #[test]
    fn a_fast_attempt_under_a_timeout_returns_its_result() {
        let (pool, log) = (pool(1, 4), Log::default());
        let quick = probe(&log, "quick", 1, |_| Ok(7));
        pool.submit("quick".into(), quick, Some(SOON), NOW).unwrap();
        assert!(pool.drain(SOON).unfinished.is_empty());
        assert_eq!(log.of("quick").last(), Some(&Event::Succeeded(1, 7)));
    }

    #[test]
    fn panics_in_a_task_do_not_kill_the_worker() {
        let scripted = pool(1, 4);
        let (panicky_begin, begin_runs) = Scripted::new(|| panic!("begin bug"), || Verdict::Done);
        let (panicky_settle, _) = Scripted::new(|| Begin::Run(()), || panic!("settle bug"));
        scripted
            .submit("begin".into(), panicky_begin, NO_TIMEOUT, NOW)
            .unwrap();
        scripted
            .submit("settle".into(), panicky_settle, NO_TIMEOUT, NOW)
            .unwrap();
        // Whether the task recorded anything is unknown: it is left unfinished.
        assert_eq!(sorted(scripted.drain(SOON).unfinished), ["begin", "settle"]);
        assert_eq!(begin_runs.load(Ordering::SeqCst), 0);

        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "bug", 1, |_| panic!("task bug")).unwrap();
        submit(&pool, &log, "fine", 1, Ok).unwrap();
        wait_until(|| log.of("fine").len() == 2);
        assert_eq!(pool.counters().workers_alive, 1);
        assert!(pool.drain(SOON).unfinished.is_empty());
        let why = "the task panicked: task bug".to_owned();
        assert_eq!(log.of("bug").last(), Some(&Event::Failed(1, why)));
        assert_eq!(log.of("fine").last(), Some(&Event::Succeeded(1, 1)));
    }

    #[test]
    fn a_dead_worker_is_known_until_supervise_replaces_it_and_its_task_is_not_lost() {
        let (pool, log, gate) = (pool(2, 4), Log::default(), Gate::default());
        submit(&pool, &log, "busy", 1, blocked_on(&gate)).unwrap();
        wait_until(|| pool.counters().running == 1);

        pool.kill_a_worker_for_tests();
        submit(&pool, &log, "held", 1, Ok).unwrap();
        // The idle worker took "held" and died holding it: the entry went back in line, and
        // with the other worker busy, waits there for a replacement.
        wait_until(|| !pool.dead_workers().is_empty());
        let dead = pool.dead_workers();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].requeued.as_deref(), Some("held"));
        assert!(dead[0].name.starts_with("task-worker-"));
        let counters = pool.counters();
        let (queued, running, alive) = (counters.queued, counters.running, counters.workers_alive);
        assert_eq!((queued, running, alive), (1, 1, 1));
        assert_eq!(log.of("held"), []);

        assert_eq!(pool.supervise(), dead);
        assert_eq!(pool.dead_workers(), []);
        assert_eq!(pool.supervise(), [], "nothing more is dead");
        wait_until(|| log.of("held").len() == 2);
        assert_eq!(log.of("held"), [Event::Began(1), Event::Succeeded(1, 1)]);
        assert_eq!(pool.counters().workers_alive, 2);
        gate.open();
        assert!(pool.drain(SOON).unfinished.is_empty());
    }

    #[test]
    fn a_task_requeued_by_a_dead_worker_is_reported_unfinished_if_nothing_runs_it() {
        let (pool, log) = (pool(1, 4), Log::default());
        submit(&pool, &log, "first", 1, Ok).unwrap();
        wait_until(|| log.of("first").len() == 2);
        pool.kill_a_worker_for_tests();
        submit(&pool, &log, "held", 1, Ok).unwrap();
        wait_until(|| pool.counters().workers_alive == 0);
        assert_eq!(pool.dead_workers()[0].requeued.as_deref(), Some("held"));
        // No worker left to run it: the drain reports it, still queued, at its deadline, and a
        // draining pool replaces no worker.
        assert_eq!(pool.drain(Duration::from_millis(10)).unfinished, ["held"]);
        assert_eq!(pool.supervise(), []);
        assert_eq!(log.of("held"), []);
    }

    #[test]
    fn no_more_tasks_run_at_once_than_there_are_workers() {
        let (pool, log) = (pool(2, 16), Log::default());
        let now_running = Arc::new(AtomicUsize::new(0));
        let most_running = Arc::new(AtomicUsize::new(0));
        for number in 0..8 {
            let (now_running, most_running) = (now_running.clone(), most_running.clone());
            submit(&pool, &log, &format!("t{number}"), 1, move |_| {
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
        let succeeded = (0..8).filter(|number| {
            let events = log.of(&format!("t{number}"));
            matches!(events.last(), Some(Event::Succeeded(1, 0)))
        });
        assert_eq!(succeeded.count(), 8);
    }

    #[test]
    fn a_task_can_start_later() {
        let (pool, log) = (pool(1, 1), Log::default());
        let submitted = Instant::now();
        let resumed = probe(&log, "resumed", 1, |_| Ok(3));
        let delay = Duration::from_millis(30);
        pool.submit("resumed".into(), resumed, NO_TIMEOUT, delay)
            .unwrap();
        // Waiting to start, it holds no queue slot.
        assert_eq!(pool.counters().queued, 1);
        pool.reserve().unwrap();
        pool.release();

        assert!(pool.drain(SOON).unfinished.is_empty());
        assert!(submitted.elapsed() >= delay);
        assert_eq!(log.of("resumed"), [Event::Began(1), Event::Succeeded(1, 3)]);
    }

    #[test]
    fn an_absurd_delay_does_not_overflow() {
        let pool = pool(1, 1);
        let (task, _) = Scripted::new(|| Begin::Run(()), || Verdict::RetryAfter(Duration::MAX));
        pool.submit("t".into(), task, NO_TIMEOUT, Duration::MAX)
            .unwrap();
        assert_eq!(pool.drain(Duration::from_millis(10)).unfinished, ["t"]);
    }
}
