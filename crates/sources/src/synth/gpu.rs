//! One synthetic H100: its job, and the physics that turn utilisation into
//! power, heat and clocks.
//!
//! Every quantity moves as a first-order lag toward a target, `x += (1 −
//! e^(−dt/τ))·(target − x)`, so the model is stable for any scrape
//! interval. Targets:
//! - utilisation: the job's level plus noise (0 when idle; τ = 2 s);
//! - memory-copy utilisation: utilisation × the job's ratio;
//! - framebuffer: the job's allocation (τ = 8 s while it loads), the
//!   driver's few MiB once the job ends (freed at once);
//! - power: idle draw + (700 W − idle) × utilisation × the job's intensity ×
//!   the SM clock's share of boost, capped at 700 W;
//! - temperature: ambient + the card's cooling coefficient × power
//!   (τ = 40 s, the heatsink's lag);
//! - SM clock: 345 MHz idle, 1980 MHz boost under load, less 45 MHz per °C
//!   above 83 °C (thermal throttling), in 15 MHz steps; memory clock 2619.

use crate::rng::Rng;

/// An H100 80GB HBM3 as DCGM reports it: FB_TOTAL 81559 MiB of which 552
/// are reserved, so FB_USED + FB_FREE is always 81007 (as in real exports).
pub const FB_MIB: u32 = 81_559 - 552;
pub const MODEL: &str = "NVIDIA H100 80GB HBM3";
pub const DRIVER_VERSION: &str = "535.129.03";
pub(crate) const SM_CLOCK_IDLE: f64 = 345.0;
pub(crate) const SM_CLOCK_BOOST: f64 = 1980.0;
pub(crate) const MEM_CLOCK: f64 = 2619.0;
pub(crate) const POWER_MAX: f64 = 700.0;
/// What the driver holds with no job.
const FB_IDLE_MIB: f64 = 7.0;
const THROTTLE_FROM_C: f64 = 83.0;

/// What kind of work a job is; it sets the job's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    Training,
    Inference,
    Video,
}

/// A job on one or more GPUs of a host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Target utilisation, percent.
    util: f64,
    /// Noise around it (standard deviation, percent).
    jitter: f64,
    /// Share of the card's power range drawn at full utilisation.
    intensity: f64,
    /// Memory-copy utilisation per utilisation.
    copy_ratio: f64,
    fb_mib: f64,
    enc: f64,
    dec: f64,
}

impl Job {
    /// A new job's levels.
    pub(crate) fn new(kind: JobKind, rng: &mut Rng) -> Job {
        let (util, jitter, intensity, copy_ratio, fb) = match kind {
            JobKind::Training => (
                rng.range(90.0, 100.0),
                2.0,
                rng.range(0.35, 0.95),
                rng.range(0.3, 0.8),
                rng.range(60_000.0, 80_000.0),
            ),
            JobKind::Inference => (
                rng.range(20.0, 80.0),
                12.0,
                rng.range(0.3, 0.7),
                rng.range(0.2, 0.5),
                rng.range(15_000.0, 50_000.0),
            ),
            JobKind::Video => (
                rng.range(10.0, 40.0),
                5.0,
                rng.range(0.2, 0.4),
                rng.range(0.1, 0.3),
                rng.range(2_000.0, 8_000.0),
            ),
        };
        let (enc, dec) = match kind {
            JobKind::Video => (rng.range(20.0, 90.0), rng.range(20.0, 90.0)),
            _ => (0.0, 0.0),
        };
        Job {
            util,
            jitter,
            intensity,
            copy_ratio,
            fb_mib: fb,
            enc,
            dec,
        }
    }
}

/// What a GPU reports in one scrape, as DCGM rounds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub(crate) util: f64,
    pub(crate) mem_copy: f64,
    pub(crate) power: f64,
    pub(crate) temp: f64,
    pub(crate) fb_used: f64,
    pub(crate) fb_free: f64,
    pub(crate) dec: f64,
    pub(crate) enc: f64,
    pub(crate) sm_clock: f64,
    pub(crate) mem_clock: f64,
}

/// One card's state.
#[derive(Debug, Clone)]
pub(crate) struct Gpu {
    /// The job running, if any.
    pub(crate) job: Option<Job>,
    /// Seconds until the job ends, or until an idle card is ready for one.
    pub(crate) remaining: f64,
    idle_watts: f64,
    ambient: f64,
    /// Degrees per watt at steady state.
    cooling: f64,
    util: f64,
    mem_copy: f64,
    fb_used: f64,
    power: f64,
    temp: f64,
    sm_clock: f64,
    enc: f64,
    dec: f64,
}

/// `1 − e^(−dt/τ)`: how far a lag moves toward its target in `dt`.
fn lag(dt: f64, tau: f64) -> f64 {
    1.0 - (-dt / tau).exp()
}

impl Gpu {
    pub(crate) fn new(ambient: f64, rng: &mut Rng) -> Gpu {
        let idle_watts = rng.range(66.0, 74.0);
        let cooling = rng.range(0.075, 0.09);
        Gpu {
            job: None,
            remaining: 0.0,
            idle_watts,
            ambient,
            cooling,
            util: 0.0,
            mem_copy: 0.0,
            fb_used: FB_IDLE_MIB,
            power: idle_watts,
            temp: ambient + cooling * idle_watts,
            sm_clock: SM_CLOCK_IDLE,
            enc: 0.0,
            dec: 0.0,
        }
    }

    /// Starts `job`, for `seconds`.
    pub(crate) fn start(&mut self, job: Job, seconds: f64) {
        self.job = Some(job);
        self.remaining = seconds;
    }

    /// Ends the job (its memory is freed at once); idle for `seconds`.
    pub(crate) fn stop(&mut self, seconds: f64) {
        self.job = None;
        self.remaining = seconds;
        self.fb_used = FB_IDLE_MIB;
    }

    /// Jumps to the state the current job would have settled in, as if it
    /// had been running a while (a fleet that was busy before we looked).
    pub(crate) fn settle(&mut self, rng: &mut Rng) {
        for _ in 0..30 {
            self.advance(10.0, rng);
        }
    }

    /// Moves the card `dt` seconds forward.
    pub(crate) fn advance(&mut self, dt: f64, rng: &mut Rng) {
        if dt <= 0.0 {
            return;
        }
        let (util, copy, fb, enc, dec) = match &self.job {
            Some(job) => {
                let util = (job.util + job.jitter * rng.normal()).clamp(0.0, 100.0);
                let copy = (util * job.copy_ratio + 2.0 * rng.normal()).clamp(0.0, 100.0);
                let fb = job.fb_mib + 40.0 * rng.normal();
                // Only video jobs touch the encoder and decoder.
                let codec = |level: f64, rng: &mut Rng| {
                    if level > 0.0 {
                        (level + 3.0 * rng.normal()).clamp(0.0, 100.0)
                    } else {
                        0.0
                    }
                };
                let enc = codec(job.enc, rng);
                let dec = codec(job.dec, rng);
                (util, copy, fb, enc, dec)
            }
            None => (0.0, 0.0, FB_IDLE_MIB, 0.0, 0.0),
        };
        let fast = lag(dt, 2.0);
        self.util += fast * (util - self.util);
        self.mem_copy += fast * (copy - self.mem_copy);
        self.enc += fast * (enc - self.enc);
        self.dec += fast * (dec - self.dec);
        self.fb_used += lag(dt, 8.0) * (fb - self.fb_used);
        self.sm_clock = self.clock_for(rng);
        let intensity = self.job.map_or(0.0, |j| j.intensity);
        let dynamic = (POWER_MAX - self.idle_watts)
            * (self.util / 100.0)
            * intensity
            * (self.sm_clock / SM_CLOCK_BOOST);
        let power = self.idle_watts + dynamic + 1.5 * rng.normal();
        self.power = power.clamp(self.idle_watts * 0.9, POWER_MAX);
        let steady = self.ambient + self.cooling * self.power;
        self.temp += lag(dt, 40.0) * (steady - self.temp);
    }

    /// Boost under load, less when hot; idle otherwise.
    fn clock_for(&self, rng: &mut Rng) -> f64 {
        if self.job.is_none() && self.util < 1.0 {
            return SM_CLOCK_IDLE;
        }
        let throttle = 45.0 * (self.temp - THROTTLE_FROM_C).max(0.0);
        let dip = if rng.chance(0.05) { 15.0 } else { 0.0 };
        let mhz = (SM_CLOCK_BOOST - throttle - dip).max(1_290.0);
        (mhz / 15.0).floor() * 15.0
    }

    /// What DCGM would report now.
    pub(crate) fn reading(&self) -> Reading {
        let fb_used = self.fb_used.round().clamp(0.0, f64::from(FB_MIB));
        let util = if self.util < 0.5 { 0.0 } else { self.util };
        Reading {
            util: util.round(),
            mem_copy: self.mem_copy.round(),
            power: (self.power * 1000.0).round() / 1000.0,
            temp: self.temp.round(),
            fb_used,
            fb_free: f64::from(FB_MIB) - fb_used,
            dec: self.dec.round(),
            enc: self.enc.round(),
            sm_clock: self.sm_clock,
            mem_clock: MEM_CLOCK,
        }
    }
}
