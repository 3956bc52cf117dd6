//! The scenarios, and what they share: the run's context, CPU metering, campaign set-up
//! and the invariant check that ends every scenario.

pub mod booking;
pub mod ceiling;
pub mod clinic;
pub mod crash;
pub mod expiry;
pub mod flood;
pub mod launch;
pub mod slot_cancel;
pub mod steady;

use std::sync::Arc;

use crate::campaign::{self, CampaignSpec, SetUp};
use crate::checker::{self, CheckOptions};
use crate::cli::Args;
use crate::client::{Api, Tokens};
use crate::cpu::{self, CpuMeter};
use crate::ledger::Ledger;
use crate::report::{CheckEntry, ScenarioReport};

/// Share of the sellable seats added as extra citizens by default, so a launch can sell out
/// even though some citizens release their hold.
pub const EXTRA_CITIZENS_PCT: u64 = 20;

/// What every scenario gets.
#[derive(Clone)]
pub struct Ctx {
    pub args: Arc<Args>,
    pub api: Api,
    pub tokens: Arc<Tokens>,
    pub seed: u64,
    /// The run's id prefix; each scenario adds its own name.
    pub prefix: String,
    /// The server's process id, for its CPU use (spawned, or `--server-pid`).
    pub server_pid: Option<u32>,
}

impl Ctx {
    /// The campaign of `scenario`, sized by the flags; `citizens` overrides the default
    /// (every sellable seat plus [`EXTRA_CITIZENS_PCT`]).
    pub fn campaign_spec(&self, scenario: &str, citizens: Option<usize>) -> CampaignSpec {
        let a = &self.args;
        let mut spec = CampaignSpec {
            prefix: format!("{}-{scenario}", self.prefix),
            clinics: a.clinics,
            slots_per_clinic: a.slots_per_clinic,
            capacity: a.capacity,
            doses: a.doses,
            citizens: 0,
        };
        let sellable = spec.sellable();
        spec.citizens = citizens
            .or(a.citizens)
            .unwrap_or_else(|| (sellable + sellable * EXTRA_CITIZENS_PCT / 100).max(1) as usize);
        spec
    }

    /// Sets the campaign up, saying so on stderr (it takes seconds for a large one, before
    /// any progress bar).
    pub async fn set_up(&self, spec: &CampaignSpec) -> Result<SetUp, String> {
        if !self.args.quiet {
            eprintln!(
                "holdfast-load: setting up campaign {}: {} clinics x {} slots, {} citizens ...",
                spec.prefix, spec.clinics, spec.slots_per_clinic, spec.citizens
            );
        }
        campaign::set_up(&self.api, &self.tokens.authority(), spec).await
    }

    /// A fresh ledger for `spec`'s campaign, knowing the stock each clinic received at
    /// set-up (one batch of `doses`; the set-up fails unless every stock call answered 200),
    /// so the checker can hold `on_hand` to it.
    pub fn ledger_for(&self, spec: &CampaignSpec) -> Arc<Ledger> {
        let ledger = Ledger::new();
        let vaccine = spec.vaccine();
        for clinic in spec.clinic_ids() {
            ledger.record_received(&clinic, &vaccine, spec.doses);
        }
        Arc::new(ledger)
    }

    /// Runs the invariant checker over `clinic_ids` with the run's ledger.
    pub async fn check(
        &self,
        api: &Api,
        after: &str,
        clinic_ids: &[String],
        ledger: &Ledger,
    ) -> CheckEntry {
        let token = self.tokens.authority_token();
        // The waitlists first (see `fetch_waitlists` for why the order matters).
        let waitlists =
            checker::fetch_waitlists(&api.http, &token, &ledger.waitlist_citizens()).await;
        let picture = match waitlists {
            Ok(waitlists) => checker::fetch_picture(&api.http, &token, clinic_ids)
                .await
                .map(|picture| checker::Picture {
                    waitlists,
                    ..picture
                }),
            Err(e) => Err(e),
        };
        match picture {
            Ok(picture) => {
                let options = CheckOptions {
                    one_active_per_citizen: self.args.check_one_active_per_citizen,
                    expiry_slack: self.args.expiry_slack,
                    no_show_grace: Some(self.args.no_show_grace),
                };
                let report = checker::check(&picture, ledger, &options);
                CheckEntry::from_report(after, &report)
            }
            Err(e) => CheckEntry::unavailable(after, e),
        }
    }
}

/// Client and server CPU over a scenario, and the server's memory at its end.
pub struct Meters {
    client: CpuMeter,
    server: Option<CpuMeter>,
    server_pid: Option<u32>,
}

impl Meters {
    pub fn start(server_pid: Option<u32>) -> Meters {
        Meters {
            client: CpuMeter::for_self(),
            server: server_pid.map(CpuMeter::start),
            server_pid,
        }
    }

    pub fn finish(&self, report: &mut ScenarioReport) {
        report.client_cpu_pct = self.client.percent();
        report.server_cpu_pct = self.server.as_ref().and_then(CpuMeter::percent);
        report.client_cpu_us_per_request =
            cpu::us_per_request(self.client.seconds_used(), report.requests);
        report.server_cpu_us_per_request = cpu::us_per_request(
            self.server.as_ref().and_then(CpuMeter::seconds_used),
            report.requests,
        );
        let resident = self.server_pid.and_then(crate::memory::resident);
        report.server_rss_mib = resident.map(|r| r.now_mib);
        report.server_rss_peak_mib = resident.map(|r| r.peak_mib);
    }
}
