//! When klippy's batch mode runs its background flush between reads of G-code: a model of its
//! G-code reader (`GCodeIO._process_data`) under its reactor's dispatch order.
//!
//! klippy reads its input file 4096 bytes at a time and runs the complete lines of a read in one
//! *call*. Each pass of its reactor loop checks file descriptors first, then timers; so after a
//! call that never yielded, the background flush timer runs (if due) before the next read. When
//! a move yields to the reactor (`_check_pause` early in a print), another dispatcher takes over:
//! it reads the next chunk into the call's pending lines (unless the reader stopped reading: 20 or
//! more lines came in since the call's current list of lines began, or the input ended; it reads
//! again only once the call is over), runs the flush timer, and resumes the call, which runs
//! those lines too. The resumed call runs inside that dispatcher's pass over its timers, past
//! the flush timer, so when it finishes the reactor goes on to the next read — a new call — and
//! the flush timer waits until after that one (at the end of the input, klippy exits without
//! it).
//!
//! The G-code is fed one chunk at a time, so a chunk read ahead at a yield is not known yet when
//! the yield happens: whether the reader is still registered after that read (and so whether the
//! next yield reads again) is settled when the chunk is fed. Yields that happen meanwhile wait in
//! order. All yields while one chunk runs belong to the same inner batch of the call (Klipper's
//! `pending_commands` list), which is what the 20-line limit counts per.

use std::collections::VecDeque;

/// Lines waiting in a call from which klippy's reader stops reading ahead.
pub const READ_AHEAD_LINES: usize = 20;

/// klippy's batch-mode G-code reader as the reactor runs it (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct BatchReader {
    /// A call is under way (klippy's `is_processing_data`).
    in_call: bool,
    /// The call yielded to the reactor at least once.
    yielded: bool,
    /// The reader stopped reading at yields until the call is over (klippy unregistered its
    /// `fd_handle`).
    unregistered: bool,
    /// The inner batch of the call the chunk now running belongs to (0: the chunk that began it).
    batch: u32,
    /// The next chunk was read at a yield of this call, into this inner batch; its line count
    /// (and with it whether the reader stays registered) is known once it is fed.
    read_ahead: Option<u32>,
    /// Yields after that read whose own read waits on it: (inner batch, how many), in order.
    waiting: VecDeque<(u32, u32)>,
    /// The inner batch that reads ahead went into last, and how many lines they brought.
    acc: (u32, usize),
}

impl BatchReader {
    /// A reader before its first read.
    pub fn new() -> Self {
        Self::default()
    }

    /// klippy reads the next chunk, with `newlines` line ends: it begins a new call, or it is the
    /// chunk a yield of the current call read ahead.
    pub fn read(&mut self, newlines: usize) {
        let Some(batch) = self.read_ahead.take() else {
            self.in_call = true;
            self.yielded = false;
            self.unregistered = false;
            self.batch = 0;
            self.waiting.clear();
            self.acc = (0, 0);
            return;
        };
        self.batch = batch;
        if self.acc.0 != batch {
            self.acc = (batch, 0);
        }
        self.acc.1 += newlines;
        if self.acc.1 >= READ_AHEAD_LINES {
            self.unregistered = true;
        }
        self.next_waiting_read();
    }

    /// The chunk last read has run, yielding `yields` times to the reactor. Returns whether the
    /// reactor runs its timers now: the call is over and never yielded.
    pub fn processed(&mut self, yields: u32) -> bool {
        if yields > 0 {
            self.yielded = true;
            self.waiting.push_back((self.batch, yields));
            if self.read_ahead.is_none() {
                self.next_waiting_read();
            }
        }
        if self.read_ahead.is_some() {
            return false;
        }
        let run_timers = self.in_call && !self.yielded;
        self.in_call = false;
        self.yielded = false;
        self.unregistered = false;
        self.waiting.clear();
        run_timers
    }

    /// Whether a call is under way: a chunk read ahead at one of its yields is still to come.
    pub fn reading_ahead(&self) -> bool {
        self.read_ahead.is_some()
    }

    /// The oldest waiting yield reads the next chunk, if the reader is still registered.
    fn next_waiting_read(&mut self) {
        if self.unregistered {
            self.waiting.clear();
            return;
        }
        let Some(front) = self.waiting.front_mut() else {
            return;
        };
        self.read_ahead = Some(front.0 + 1);
        front.1 -= 1;
        if front.1 == 0 {
            self.waiting.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// klippy's loop, run directly on a whole input: `chunks[i]` is (line ends in chunk i, the
    /// yields while its lines run). Returns, for each chunk, whether the reactor ran its timers
    /// right after it.
    fn klippy(chunks: &[(usize, u32)]) -> Vec<bool> {
        let mut timers_after = vec![false; chunks.len()];
        let mut next = 0;
        while next < chunks.len() {
            // A new call: the reader reads one chunk and runs its lines (the dispatcher's
            // greenlet), then the lines read at yields, batch by batch.
            let mut batch = vec![next];
            next += 1;
            let mut registered = true;
            let mut yielded = false;
            let mut last = batch[0];
            while !batch.is_empty() {
                let mut pending_lines = 0;
                let mut read_now = Vec::new();
                for &c in &batch {
                    for _ in 0..chunks[c].1 {
                        yielded = true;
                        if registered {
                            if next == chunks.len() {
                                registered = false; // end of input
                            } else {
                                read_now.push(next);
                                pending_lines += chunks[next].0;
                                next += 1;
                                if pending_lines >= READ_AHEAD_LINES {
                                    registered = false;
                                }
                            }
                        }
                    }
                    last = c;
                }
                batch = read_now;
            }
            timers_after[last] = !yielded;
        }
        timers_after
    }

    fn model(chunks: &[(usize, u32)]) -> Vec<bool> {
        let mut r = BatchReader::new();
        chunks
            .iter()
            .map(|&(lines, yields)| {
                r.read(lines);
                r.processed(yields)
            })
            .collect()
    }

    #[test]
    fn timers_run_after_a_call_that_did_not_yield() {
        assert_eq!(model(&[(100, 0), (100, 0)]), [true, true]);
    }

    /// Case j of the oracle: one chunk whose first flushed move yields; the reader reads the end
    /// of the input while yielded, and klippy exits without running the flush timer again.
    #[test]
    fn a_call_that_yielded_is_followed_by_the_next_read() {
        let mut r = BatchReader::new();
        r.read(34);
        assert!(!r.processed(1));
        assert!(r.reading_ahead(), "the end of input was read at the yield");
    }

    /// The chunk read at a yield joins the call; the flush timer waits until after the next
    /// call.
    #[test]
    fn a_chunk_read_at_a_yield_joins_the_call() {
        assert_eq!(
            model(&[(140, 1), (140, 0), (140, 0), (140, 0)]),
            [false, false, true, true]
        );
    }

    /// With fewer than 20 lines waiting the reader keeps reading at later yields.
    #[test]
    fn short_chunks_keep_the_reader_reading() {
        let chunks = [(5, 3), (5, 0), (5, 0), (30, 0), (5, 0), (5, 0)];
        assert_eq!(model(&chunks), klippy(&chunks));
        assert_eq!(model(&chunks), [false, false, false, false, true, true]);
    }

    proptest! {
        /// The chunk-at-a-time model decides as klippy's loop does on any input.
        #[test]
        fn the_model_follows_klippys_loop(
            chunks in proptest::collection::vec(
                (0usize..30, prop_oneof![4 => Just(0u32), 1 => 1u32..4]),
                1..40,
            )
        ) {
            prop_assert_eq!(model(&chunks), klippy(&chunks));
        }
    }
}
