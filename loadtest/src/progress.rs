//! The live progress bar on stderr: rate, errors, elapsed time and remaining stock, redrawn
//! every [`PROGRESS_TICK`]. Hidden with `--quiet` or when stderr is not a terminal (CI logs
//! and pipes get the tables only).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::Live;

/// Redraw period.
pub const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// A running bar; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    done: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `stock`: the sellable seats (the bar then shows seats taken); otherwise the bar shows
    /// time against `duration`.
    pub fn start(
        label: &str,
        live: Arc<Live>,
        stock: Option<u64>,
        duration: Duration,
        quiet: bool,
    ) -> Progress {
        let visible = !quiet && std::io::stderr().is_terminal();
        let bar = if visible {
            let length = stock.unwrap_or(duration.as_millis() as u64).max(1);
            let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix:>8} [{bar:30.cyan/blue}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        let done = Arc::new(AtomicBool::new(false));
        let task = visible.then(|| {
            let (bar, done) = (bar.clone(), done.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut last_requests = 0;
                let mut last = Instant::now();
                let mut ticker = tokio::time::interval(PROGRESS_TICK);
                while !done.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let requests = live.requests.load(Ordering::Relaxed);
                    let errors = live.errors.load(Ordering::Relaxed);
                    let remaining = live.remaining.load(Ordering::Relaxed);
                    let dt = last.elapsed().as_secs_f64().max(1e-3);
                    let rate = (requests - last_requests) as f64 / dt;
                    last_requests = requests;
                    last = Instant::now();
                    let elapsed = started.elapsed();
                    let stock_text = match stock {
                        Some(total) => {
                            let remaining = remaining.max(0) as u64;
                            bar.set_position(total.saturating_sub(remaining));
                            format!(", stock {remaining}/{total}")
                        }
                        None => {
                            bar.set_position(elapsed.as_millis() as u64);
                            String::new()
                        }
                    };
                    bar.set_message(format!(
                        "{rate:>7.0} req/s, {requests} requests, {errors} errors, {:.1}/{:.0} s{stock_text}",
                        elapsed.as_secs_f64(),
                        duration.as_secs_f64()
                    ));
                }
            })
        });
        Progress { bar, done, task }
    }

    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
