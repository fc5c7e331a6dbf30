//! A sleep that ends when it should, for the benchmark agent.
//!
//! Tokio's timer rounds every deadline up to its next 1 ms tick, so `sleep(1 ms)` lasts
//! about 2 ms (docs/benchmarks.md). This timer is one thread holding a deadline heap: it
//! waits on its channel until the earliest deadline (a futex wait, tens of microseconds
//! late at most), then wakes every sleeper whose deadline passed through a oneshot. One
//! thread for every sleeper, not one per sleep; the channel is bounded, and a sleep that
//! finds it full falls back to tokio's timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Sleeps queued to the timer thread but not yet in its heap.
const QUEUE_MAX: usize = 4_096;

struct Sleeper {
    deadline: Instant,
    /// Tie-breaker so the heap never compares senders.
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Sleeper {}
impl PartialOrd for Sleeper {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sleeper {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

fn timer() -> &'static SyncSender<(Instant, oneshot::Sender<()>)> {
    static TIMER: OnceLock<SyncSender<(Instant, oneshot::Sender<()>)>> = OnceLock::new();
    TIMER.get_or_init(|| {
        let (sender, receiver) = sync_channel(QUEUE_MAX);
        std::thread::Builder::new()
            .name("precise-timer".into())
            .spawn(move || run(receiver))
            .expect("the timer thread starts");
        sender
    })
}

fn run(receiver: Receiver<(Instant, oneshot::Sender<()>)>) {
    let mut heap: BinaryHeap<Reverse<Sleeper>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(s)| s.deadline <= now) {
            if let Some(Reverse(sleeper)) = heap.pop() {
                let _ = sleeper.wake.send(()); // a dropped sleeper no longer waits
            }
        }
        let next = match heap.peek() {
            Some(Reverse(s)) => receiver.recv_timeout(s.deadline - now),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((deadline, wake)) => {
                seq += 1;
                heap.push(Reverse(Sleeper {
                    deadline,
                    seq,
                    wake,
                }));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Sleeps for `duration`, ending within tens of microseconds of it.
pub async fn sleep(duration: Duration) {
    let deadline = Instant::now() + duration;
    let (wake, woken) = oneshot::channel();
    match timer().try_send((deadline, wake)) {
        Ok(()) => {
            let _ = woken.await;
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_at_least_as_long_as_asked_and_in_deadline_order() {
        let started = Instant::now();
        let (done, mut order) = tokio::sync::mpsc::channel(8);
        for ms in [30u64, 10, 20] {
            let done = done.clone();
            tokio::spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                let _ = done.send(ms).await;
            });
        }
        drop(done);
        let mut woke = Vec::new();
        while let Some(ms) = order.recv().await {
            woke.push(ms);
        }
        assert_eq!(woke, vec![10, 20, 30]);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
