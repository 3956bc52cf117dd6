//! The ack thread: runs the writer's acks, in order, off the writer's critical path.
//!
//! An ack wakes its caller (a task on another thread), and a wake-up costs a system call and,
//! on a busy machine, a context switch: after each `fdatasync` (0.4 ms on average) the writer
//! spent 0.5 to 1.5 ms on about a dozen futex wakes before its next batch (`strace -T -p` of
//! the writer thread during a c=64 run of the comparison kit's client). The writer now hands each batch's acks over in one message
//! and goes on; this thread runs them in submission order, so an ack never overtakes an
//! earlier one, a failure included.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{Ack, WalError};

/// Batches of acks handed over and not yet run, at most: the writer waits beyond it (the
/// acks are far cheaper than the commits they follow, so it is only reached if a caller's
/// ack blocks). Each batch holds at most one group commit's ops.
pub const ACK_BATCHES_MAX: usize = 1024;

pub(crate) type AckBatch = (Vec<Ack>, Result<(), WalError>);

/// Starts the ack thread; the writer holds the sender, whose drop ends the thread.
pub(crate) fn start(name: &str) -> Result<(Sender<AckBatch>, JoinHandle<()>), WalError> {
    let (tx, rx) = crossbeam_channel::bounded(ACK_BATCHES_MAX);
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(rx))
        .map_err(|e| WalError::Io(format!("cannot start the ack thread: {e}")))?;
    Ok((tx, thread))
}

/// Runs every handed-over batch until the writer drops its sender.
fn run(rx: Receiver<AckBatch>) {
    for (acks, result) in rx {
        for ack in acks {
            call(ack, result.clone());
        }
    }
}

pub(crate) fn call(ack: Ack, result: Result<(), WalError>) {
    // A panicking ack must not take the other acks down with it; the panic hook has already
    // reported it.
    let _ = catch_unwind(AssertUnwindSafe(move || ack(result)));
}
