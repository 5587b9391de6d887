//! A history of one register's operations, taken by concurrent clients of the dictionary, and a
//! check that it is linearizable: that the operations can be put in one order, each at a point
//! between its start and its end, in which every read returns the last value written before it.
//!
//! The search is Lowe's form of the Wing–Gong algorithm (as in Porcupine): it places operations
//! in order of their starts, backtracks when an operation ends unplaced, and remembers each
//! (operations placed, value) state it tried, so a long history with a few concurrent clients is
//! checked in about linear time. Writes must write distinct values.
//!
//! A write whose outcome is unknown (its client failed, or it timed out) may have taken effect
//! at any point after it started, or never: it has no end. A failed read constrains nothing and
//! is not recorded. Used by the OS-process and network-namespace tests.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

/// The operations of a register's history, recorded from any thread.
#[derive(Default)]
pub struct History {
    ops: Mutex<Vec<Recorded>>,
}

struct Recorded {
    op: Op,
    start: Instant,
    /// `None`: a write whose outcome is unknown.
    end: Option<Instant>,
}

#[derive(Clone, Debug)]
enum Op {
    Write(String),
    Read(Option<String>),
}

impl History {
    /// A write of `value` that started at `start` and ends now, acknowledged or not.
    pub fn write(&self, value: &str, start: Instant, acknowledged: bool) {
        let end = acknowledged.then(Instant::now);
        self.push(Op::Write(value.to_string()), start, end);
    }

    /// A read that started at `start` and returned `value` now (`None`: the register was unset).
    pub fn read(&self, value: Option<&str>, start: Instant) {
        let value = value.map(str::to_string);
        self.push(Op::Read(value), start, Some(Instant::now()));
    }

    fn push(&self, op: Op, start: Instant, end: Option<Instant>) {
        let mut ops = self.ops.lock().unwrap();
        ops.push(Recorded { op, start, end });
    }

    /// How many writes were acknowledged and how many reads returned.
    pub fn counts(&self) -> (usize, usize) {
        let ops = self.ops.lock().unwrap();
        let writes = ops
            .iter()
            .filter(|r| matches!(r.op, Op::Write(_)) && r.end.is_some())
            .count();
        let reads = ops.iter().filter(|r| matches!(r.op, Op::Read(_))).count();
        (writes, reads)
    }

    /// Whether the history is linearizable, starting from an unset register; if not, which
    /// operation no order could place.
    pub fn check(&self) -> Result<(), NotLinearizable> {
        let ops = self.ops.lock().unwrap();
        Search::new(&ops).run()
    }
}

/// The operation the deepest search could not place before its end.
#[derive(Debug)]
pub struct NotLinearizable {
    op: Op,
    /// Milliseconds from the history's first start.
    start_ms: f64,
    end_ms: f64,
    placed: usize,
    total: usize,
}

impl fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not linearizable: {:?} from {:.1} ms to {:.1} ms cannot be placed after {} of {} operations",
            self.op, self.start_ms, self.end_ms, self.placed, self.total
        )
    }
}

/// One end of an operation, in the list of events the search walks.
#[derive(Clone, Copy, PartialEq)]
enum Event {
    Start(usize),
    End(usize),
}

/// Values are numbered: the register's state is `Option<u32>`.
#[derive(Clone, Copy)]
enum Step {
    Write(u32),
    Read(Option<u32>),
}

struct Search<'h> {
    ops: &'h [Recorded],
    steps: Vec<Step>,
    /// The events in time order (starts before ends at equal times: the weaker constraint), as
    /// a doubly linked list over `events`, with a head at index `events.len()`.
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Where each operation's start and end events are (an unknown write's end is last).
    start_at: Vec<usize>,
    end_at: Vec<usize>,
}

impl<'h> Search<'h> {
    fn new(ops: &'h [Recorded]) -> Self {
        let mut numbers: HashMap<&str, u32> = HashMap::new();
        let mut number = |value: &'h str| {
            let next = numbers.len() as u32;
            *numbers.entry(value).or_insert(next)
        };
        let steps = ops
            .iter()
            .map(|r| match &r.op {
                Op::Write(value) => Step::Write(number(value)),
                Op::Read(value) => Step::Read(value.as_deref().map(&mut number)),
            })
            .collect();
        // Unknown ends sort after every known time.
        let mut timed: Vec<(Instant, bool, Event)> = Vec::new();
        let mut unended = Vec::new();
        for (i, r) in ops.iter().enumerate() {
            timed.push((r.start, false, Event::Start(i)));
            match r.end {
                Some(end) => timed.push((end, true, Event::End(i))),
                None => unended.push(Event::End(i)),
            }
        }
        timed.sort_by_key(|(at, is_end, _)| (*at, *is_end));
        let events: Vec<Event> = timed
            .into_iter()
            .map(|(_, _, e)| e)
            .chain(unended)
            .collect();
        let head = events.len();
        let mut start_at = vec![0; ops.len()];
        let mut end_at = vec![0; ops.len()];
        for (at, event) in events.iter().enumerate() {
            match *event {
                Event::Start(i) => start_at[i] = at,
                Event::End(i) => end_at[i] = at,
            }
        }
        // Index `head` is the list's head; `next` of the last event is the head again.
        let next = (0..=head).map(|at| (at + 1) % (head + 1)).collect();
        let prev = (0..=head).map(|at| (at + head) % (head + 1)).collect();
        Self {
            ops,
            steps,
            events,
            next,
            prev,
            start_at,
            end_at,
        }
    }

    fn head(&self) -> usize {
        self.events.len()
    }

    fn unlink(&mut self, at: usize) {
        let (prev, next) = (self.prev[at], self.next[at]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes `unlink(at)`; valid when undone in the reverse order of the unlinks.
    fn relink(&mut self, at: usize) {
        let (prev, next) = (self.prev[at], self.next[at]);
        self.next[prev] = at;
        self.prev[next] = at;
    }

    fn run(mut self) -> Result<(), NotLinearizable> {
        let head = self.head();
        let mut value: Option<u32> = None;
        let mut placed = vec![0u64; self.ops.len().div_ceil(64)];
        let mut tried: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
        // The operations placed, in order, each with the value before it.
        let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
        let mut deepest: Option<(usize, usize)> = None;
        let mut at = self.next[head];
        while self.next[head] != head {
            match self.events[at] {
                Event::Start(i) => {
                    let after = match self.steps[i] {
                        Step::Write(written) => Some(Some(written)),
                        Step::Read(read) => (read == value).then_some(value),
                    };
                    if let Some(after) = after {
                        placed[i / 64] |= 1 << (i % 64);
                        if tried.insert((placed.clone(), after)) {
                            stack.push((i, value));
                            value = after;
                            self.unlink(self.start_at[i]);
                            self.unlink(self.end_at[i]);
                            at = self.next[head];
                            continue;
                        }
                        placed[i / 64] &= !(1 << (i % 64));
                    }
                    at = self.next[at];
                }
                Event::End(i) => {
                    if deepest.is_none_or(|(depth, _)| stack.len() > depth) {
                        deepest = Some((stack.len(), i));
                    }
                    let Some((last, before)) = stack.pop() else {
                        let (depth, stuck) = deepest.unwrap_or((0, i));
                        return Err(self.failure(stuck, depth));
                    };
                    placed[last / 64] &= !(1 << (last % 64));
                    value = before;
                    self.relink(self.end_at[last]);
                    self.relink(self.start_at[last]);
                    at = self.next[self.start_at[last]];
                }
            }
        }
        Ok(())
    }

    fn failure(&self, op: usize, placed: usize) -> NotLinearizable {
        let first = self.ops.iter().map(|r| r.start).min().unwrap();
        let ms = |at: Instant| at.duration_since(first).as_secs_f64() * 1e3;
        let recorded = &self.ops[op];
        NotLinearizable {
            op: recorded.op.clone(),
            start_ms: ms(recorded.start),
            end_ms: recorded.end.map_or(f64::INFINITY, ms),
            placed,
            total: self.ops.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A history from (operation, start, end) in milliseconds; `None` as the end of a write:
    /// its outcome is unknown.
    fn history(ops: &[(Op, u64, Option<u64>)]) -> History {
        let zero = Instant::now();
        let at = |ms: u64| zero + Duration::from_millis(ms);
        let history = History::default();
        for (op, start, end) in ops {
            history.push(op.clone(), at(*start), end.map(at));
        }
        history
    }

    fn w(value: &str) -> Op {
        Op::Write(value.into())
    }

    fn r(value: Option<&str>) -> Op {
        Op::Read(value.map(str::to_string))
    }

    #[test]
    fn reads_of_the_last_write_or_of_a_concurrent_one_are_linearizable() {
        let ops = [
            (r(None), 0, Some(1)),
            (w("a"), 2, Some(3)),
            (r(Some("a")), 4, Some(5)),
            // b and c overlap: either order, and a read overlapping both may see either.
            (w("b"), 6, Some(10)),
            (w("c"), 7, Some(11)),
            (r(Some("b")), 8, Some(12)),
            (r(Some("c")), 13, Some(14)),
        ];
        history(&ops).check().unwrap();
    }

    #[test]
    fn a_stale_read_is_not_linearizable() {
        let ops = [
            (w("a"), 0, Some(1)),
            (w("b"), 2, Some(3)),
            (r(Some("a")), 4, Some(5)),
        ];
        let error = history(&ops).check().unwrap_err();
        assert!(
            matches!(error.op, Op::Read(Some(ref v)) if v == "a"),
            "{error}"
        );
    }

    #[test]
    fn two_reads_cannot_see_two_concurrent_writes_in_opposite_orders() {
        let ops = [
            (w("a"), 0, Some(10)),
            (w("b"), 0, Some(10)),
            (r(Some("a")), 1, Some(2)),
            (r(Some("b")), 3, Some(4)),
            (r(Some("a")), 5, Some(6)),
        ];
        history(&ops).check().unwrap_err();
    }

    #[test]
    fn a_write_of_unknown_outcome_may_apply_late_or_never_but_not_twice() {
        let late = [
            (w("a"), 0, Some(1)),
            (w("b"), 2, None),
            (r(Some("a")), 3, Some(4)),
            (r(Some("b")), 100, Some(101)),
        ];
        history(&late).check().unwrap();
        let never = [
            (w("a"), 0, Some(1)),
            (w("b"), 2, None),
            (r(Some("a")), 3, Some(4)),
        ];
        history(&never).check().unwrap();
        let undone = [
            (w("a"), 0, Some(1)),
            (w("b"), 2, None),
            (r(Some("b")), 3, Some(4)),
            (r(Some("a")), 5, Some(6)),
        ];
        history(&undone).check().unwrap_err();
    }

    #[test]
    fn a_value_never_written_is_not_linearizable() {
        let ops = [(w("a"), 0, Some(1)), (r(Some("z")), 2, Some(3))];
        history(&ops).check().unwrap_err();
    }

    #[test]
    fn a_long_history_of_three_overlapping_clients_is_checked_quickly() {
        // Each round: three clients write at once, then each reads the last of them.
        let mut ops = Vec::new();
        for round in 0..2000u64 {
            let t = round * 10;
            for client in 0..3u64 {
                ops.push((w(&format!("{round}-{client}")), t, Some(t + 5)));
            }
            for _ in 0..3 {
                ops.push((r(Some(&format!("{round}-2"))), t + 6, Some(t + 9)));
            }
        }
        let started = Instant::now();
        history(&ops).check().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
