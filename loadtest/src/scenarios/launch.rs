//! `launch`: every citizen tries to book at once (closed loop, `--connections`), until the
//! campaign is sold out or `--duration` passes; staff administer `--administer-pct` of the
//! confirmed appointments as they come, and a clinic cancels `--cancel-slots` slots once a
//! quarter of the seats is taken (see `slot_cancel.rs`); reports the time to sell out and
//! the clinic figures, and checks the invariants at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::progress::Progress;
use crate::report::{ClinicFigures, LaunchFigures, ScenarioReport};
use crate::stats::{Live, Op};

use super::booking::{self, Booker, BookerPlan, EndReason};
use super::clinic;
use super::slot_cancel;
use super::{Ctx, Meters};

pub async fn run(ctx: &Ctx) -> Result<ScenarioReport, String> {
    let args = &ctx.args;
    let spec = ctx.campaign_spec("launch", None);
    let set_up = ctx.set_up(&spec).await?;
    let ledger = ctx.ledger_for(&spec);
    let staff = booking::staff_tokens(&ctx.tokens, &spec);
    let live = Arc::new(Live::new(Some(spec.sellable() as i64)));
    let booker = Arc::new(Booker::new(
        args,
        ctx.tokens.clone(),
        &spec,
        BookerPlan {
            api: ctx.api.clone(),
            ledger: ledger.clone(),
            live: live.clone(),
            staff: staff.clone(),
            next_citizen: Arc::new(AtomicUsize::new(0)),
            returned: Default::default(),
            waitlist_joins: Default::default(),
            duration: args.duration,
            seed: ctx.seed,
            key_prefix: format!("{}-k", spec.prefix),
            cancel_confirmed_pct: 0,
            administer_pct: args.administer_pct,
            refused_retries: 0,
            waitlist_pct: 0,
        },
    ));
    let meters = Meters::start(ctx.server_pid);
    let progress = Progress::start(
        "launch",
        live.clone(),
        Some(spec.sellable()),
        args.duration,
        args.quiet,
    );
    let canceller = (args.cancel_slots > 0).then(|| {
        let (booker, count, sellable, duration) = (
            booker.clone(),
            args.cancel_slots,
            spec.sellable(),
            args.duration,
        );
        tokio::spawn(async move {
            slot_cancel::wait_for_launch_moment(&booker, sellable, duration).await;
            slot_cancel::cancel_slots(&booker, count, 0).await
        })
    });
    let result = booking::run(booker.clone(), args.connections).await;
    let slot_cancels = match canceller {
        Some(task) => Some(
            task.await
                .map_err(|e| format!("launch: slot cancellations failed: {e}"))?,
        ),
        None => None,
    };
    progress.finish();
    let mut report = ScenarioReport::new("launch", &result.stats, result.seconds, args.connections);
    meters.finish(&mut report);
    report.campaign = Some(set_up);
    report.retries = booker.retries.load(Ordering::Relaxed);
    report.slot_cancels = slot_cancels;
    let s = &result.stats;
    report.launch = Some(LaunchFigures {
        end_reason: result.end_reason.name().to_string(),
        sell_out_s: result.sell_out.map(|d| d.as_secs_f64()),
        sellable: spec.sellable(),
        created: s.count_status(Op::Hold, 201),
        confirmed: s.count_status(Op::Confirm, 200),
        released: s.count_status(Op::Release, 200),
        abandoned: booker.abandoned.load(Ordering::Relaxed),
        citizens_served: booker.citizens_served.load(Ordering::Relaxed),
        sold_out_checks: result.sold_out_checks,
    });
    if result.end_reason == EndReason::CitizensExhausted {
        report.notes.push(
            "every citizen had its turn before the campaign sold out: raise --citizens".to_string(),
        );
    }
    report.checks.push(
        ctx.check(&ctx.api, "end", &spec.clinic_ids(), &ledger)
            .await,
    );
    report.clinic = Some(ClinicFigures::new(args, &ledger, report.checks.last()));
    report
        .failures
        .extend(clinic::refused_own_tokens(&result.stats));
    report.decide();
    Ok(report)
}
