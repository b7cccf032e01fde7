//! The energy ledger: turns the work each dispatched kernel reports ([`Work`], from the kernel
//! contract) into an energy estimate with the per-operation energies of
//! M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014 (45 nm,
//! 0.9 V) — the table most efficiency papers cite (see ../shared/NOTES-wgpu.md).
//!
//! Memory is priced on two levels ([`Cache`]): the bytes a launch binds ([`Footprint`]) are
//! device-memory (DRAM) traffic once, as they must be; the loads its workgroups count beyond them
//! (a GEMM's tiles re-reading the same rows) are re-reads, served by the L2 when the launch's
//! bound bytes fit it and from DRAM when they do not. Without a cache every counted load is DRAM
//! traffic: that upper bound is printed beside the estimate.
//!
//! It is an *estimate of dynamic energy of arithmetic and data movement*, not a wall-socket
//! measurement: it leaves out static and idle power, register files, instruction issue and
//! control, and address arithmetic. Its value is the ratio between two runs counted the same way
//! (a low-bit graph against the same model dense in f32).

use std::fmt;

use crate::error::Result;
use crate::gpu::Capabilities;
use crate::kernel::{Footprint, Kernel, Work};

/// Energy per operation or byte, in picojoules.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EnergyTable {
    /// 32-bit float add.
    pub f32_add: f64,
    /// 32-bit float multiply.
    pub f32_mul: f64,
    /// 16-bit float add.
    pub f16_add: f64,
    /// 16-bit float multiply.
    pub f16_mul: f64,
    /// 8-bit integer add.
    pub i8_add: f64,
    /// 8-bit integer multiply.
    pub i8_mul: f64,
    /// 32-bit integer add (bitwise and shift operations are priced the same).
    pub i32_add: f64,
    /// 32-bit integer multiply.
    pub i32_mul: f64,
    /// One byte to or from device memory (DRAM).
    pub dram_byte: f64,
    /// One byte re-read from the L2 (a large SRAM).
    pub l2_byte: f64,
    /// One byte to or from workgroup memory (a small SRAM).
    pub sram_byte: f64,
}

/// Horowitz, ISSCC 2014, 45 nm. DRAM: 1300–2600 pJ per 64-bit access; the low end (162.5 pJ per
/// byte) is used so that data movement is, if anything, under-priced. L2: a 1 MB SRAM, 100 pJ per
/// 64-bit access (12.5 pJ per byte). Workgroup memory: an 8 KB SRAM, 10 pJ per 64-bit read
/// (1.25 pJ per byte).
pub const HOROWITZ_45NM: EnergyTable = EnergyTable {
    f32_add: 0.9,
    f32_mul: 3.7,
    f16_add: 0.4,
    f16_mul: 1.1,
    i8_add: 0.03,
    i8_mul: 0.2,
    i32_add: 0.1,
    i32_mul: 3.1,
    dram_byte: 1300.0 / 8.0,
    l2_byte: 100.0 / 8.0,
    sram_byte: 10.0 / 8.0,
};

/// Where a launch's re-reads (counted loads beyond the bytes it binds) are served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Cache {
    /// No cache: every counted load is DRAM traffic. The upper bound.
    None,
    /// An L2 of `bytes`: a launch whose bound bytes fit it has its re-reads priced as L2 reads;
    /// one whose bound bytes do not fit pays DRAM for them.
    L2 {
        /// Capacity in bytes.
        bytes: u64,
    },
}

impl Cache {
    /// A laptop GPU's L2, 4 MiB: the ledger's default (the smaller cache, so the dearer estimate).
    pub const LAPTOP: Cache = Cache::L2 { bytes: 4 << 20 };
    /// A data-centre GPU's L2, 50 MiB (NVIDIA H100).
    pub const DATA_CENTRE: Cache = Cache::L2 { bytes: 50 << 20 };

    /// Whether a launch binding `f` has its re-reads served by this cache.
    pub fn serves(&self, f: &Footprint) -> bool {
        match *self {
            Cache::None => false,
            Cache::L2 { bytes } => f.bound <= bytes,
        }
    }
}

impl fmt::Display for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cache::None => write!(f, "no cache"),
            Cache::L2 { bytes } if bytes % (1 << 20) == 0 => write!(f, "L2 {} MiB", bytes >> 20),
            Cache::L2 { bytes } => write!(f, "L2 {bytes} bytes"),
        }
    }
}

/// Energy of some work, by part, in joules.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Energy {
    /// f32 arithmetic.
    pub f32_arith: f64,
    /// f16 arithmetic.
    pub f16_arith: f64,
    /// Integer arithmetic, bit operations included.
    pub int_arith: f64,
    /// Device-memory traffic.
    pub dram: f64,
    /// Re-reads served by the L2.
    pub l2: f64,
    /// Workgroup-memory traffic.
    pub sram: f64,
}

impl Energy {
    /// All parts.
    pub fn total(&self) -> f64 {
        self.f32_arith + self.f16_arith + self.int_arith + self.dram + self.l2 + self.sram
    }

    /// All arithmetic.
    pub fn arith(&self) -> f64 {
        self.f32_arith + self.f16_arith + self.int_arith
    }

    /// Prices `w` with `t`, every counted load and store as DRAM traffic (no cache).
    pub fn of(w: &Work, t: &EnergyTable) -> Self {
        Self::priced(w, &Footprint::default(), t, Cache::None)
    }

    /// Prices one launch doing `w` over buffers `f` with `t`: compulsory traffic (the bytes
    /// bound, at most the bytes counted) from DRAM; re-reads and re-writes from the L2 when
    /// `cache` serves the launch, else from DRAM too.
    pub fn priced(w: &Work, f: &Footprint, t: &EnergyTable, cache: Cache) -> Self {
        let pj = 1e-12;
        let n = |v: u64| v as f64;
        let again = f.re_read(w) + f.re_written(w);
        let compulsory = w.dram_bytes() - again;
        let (dram, l2) = if cache.serves(f) { (compulsory, again) } else { (compulsory + again, 0) };
        Energy {
            f32_arith: (n(w.f32_add) * t.f32_add + n(w.f32_mul) * t.f32_mul) * pj,
            f16_arith: (n(w.f16_add) * t.f16_add + n(w.f16_mul) * t.f16_mul) * pj,
            int_arith: (n(w.i8_add) * t.i8_add
                + n(w.i8_mul) * t.i8_mul
                + n(w.i32_add + w.bit_ops) * t.i32_add
                + n(w.i32_mul) * t.i32_mul)
                * pj,
            dram: n(dram) * t.dram_byte * pj,
            l2: n(l2) * t.l2_byte * pj,
            sram: n(w.sram_read + w.sram_write) * t.sram_byte * pj,
        }
    }

    fn scaled(self, k: f64) -> Self {
        Energy {
            f32_arith: self.f32_arith * k,
            f16_arith: self.f16_arith * k,
            int_arith: self.int_arith * k,
            dram: self.dram * k,
            l2: self.l2 * k,
            sram: self.sram * k,
        }
    }
}

impl std::ops::Add for Energy {
    type Output = Energy;
    fn add(self, o: Energy) -> Energy {
        Energy {
            f32_arith: self.f32_arith + o.f32_arith,
            f16_arith: self.f16_arith + o.f16_arith,
            int_arith: self.int_arith + o.int_arith,
            dram: self.dram + o.dram,
            l2: self.l2 + o.l2,
            sram: self.sram + o.sram,
        }
    }
}

/// Launches of one kernel at one shape: the work and footprint of each, and how many ran.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    kernel: String,
    work: Work,
    footprint: Footprint,
    runs: u64,
}

impl Entry {
    fn energy(&self, t: &EnergyTable, cache: Cache) -> Energy {
        Energy::priced(&self.work, &self.footprint, t, cache).scaled(self.runs as f64)
    }
}

/// A ledger of dispatched work, per kernel and shape, priced with an [`EnergyTable`] and a
/// [`Cache`].
#[derive(Clone, Debug)]
pub struct Ledger {
    table: EnergyTable,
    cache: Cache,
    entries: Vec<Entry>,
    measured: Option<(f64, String)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(HOROWITZ_45NM)
    }
}

impl Ledger {
    /// An empty ledger priced with `table` and [`Cache::LAPTOP`].
    pub fn new(table: EnergyTable) -> Self {
        Self { table, cache: Cache::LAPTOP, entries: Vec::new(), measured: None }
    }

    /// The same ledger priced with `cache`.
    pub fn with_cache(self, cache: Cache) -> Self {
        Self { cache, ..self }
    }

    /// The cache the estimate assumes.
    pub fn cache(&self) -> Cache {
        self.cache
    }

    /// Attaches a measurement of the same run (joules, and what measured it, e.g. "NVML board
    /// energy counter, NVIDIA H100"), printed beside the estimate — never added to it.
    pub fn set_measured(&mut self, joules: f64, source: impl Into<String>) {
        self.measured = Some((joules, source.into()));
    }

    /// The attached measurement, joules.
    pub fn measured(&self) -> Option<f64> {
        self.measured.as_ref().map(|m| m.0)
    }

    /// Records `times` launches of a kernel doing `work` each over buffers of `footprint` (from
    /// `Prepared::work` and `Prepared::footprint`, or `Kernel::work` and `Kernel::footprint`).
    pub fn add(&mut self, kernel: &str, work: Work, footprint: Footprint, times: u64) {
        match self.entries.iter_mut().find(|e| e.kernel == kernel && e.work == work && e.footprint == footprint) {
            Some(e) => e.runs += times,
            None => self.entries.push(Entry { kernel: kernel.to_string(), work, footprint, runs: times }),
        }
    }

    /// Adds every launch `other` recorded (e.g. the parts of a request spread over adapters).
    pub fn absorb(&mut self, other: &Ledger) {
        for e in &other.entries {
            self.add(&e.kernel, e.work, e.footprint, e.runs);
        }
    }

    /// The same launches made `n` times over (e.g. a one-image request's ledger for `n` images
    /// drawn one a request).
    pub fn repeated(&self, n: u64) -> Ledger {
        let entries = self.entries.iter().map(|e| Entry { runs: e.runs * n, ..e.clone() }).collect();
        Ledger { entries, measured: None, ..self.clone() }
    }

    /// Launches of `kernel` recorded (every shape).
    pub fn runs(&self, kernel: &str) -> u64 {
        self.entries.iter().filter(|e| e.kernel == kernel).map(|e| e.runs).sum()
    }

    /// Records `times` launches of `kernel` on a device with `caps` under `label`, counted from
    /// its own reports (work and footprint), without a device.
    pub fn add_kernel(&mut self, label: &str, kernel: &dyn Kernel, caps: &Capabilities, times: u64) -> Result<()> {
        self.add(label, kernel.work(caps)?, kernel.footprint(caps)?, times);
        Ok(())
    }

    /// Records one run of a prepared kernel.
    pub fn record(&mut self, prepared: &crate::Prepared) {
        self.add(prepared.name(), prepared.work(), prepared.footprint(), 1);
    }

    /// All work recorded.
    pub fn work(&self) -> Work {
        self.entries.iter().fold(Work::default(), |acc, e| acc + e.work * e.runs)
    }

    /// Compulsory device-memory bytes (each launch's bound bytes, at most what it counted) and
    /// the bytes counted beyond them (re-reads and re-writes), over all launches.
    pub fn traffic(&self) -> (u64, u64) {
        self.entries.iter().fold((0, 0), |(c, a), e| {
            let again = e.footprint.re_read(&e.work) + e.footprint.re_written(&e.work);
            (c + (e.work.dram_bytes() - again) * e.runs, a + again * e.runs)
        })
    }

    /// The energy of all work recorded, with the ledger's cache.
    pub fn energy(&self) -> Energy {
        self.energy_with(self.cache)
    }

    /// The energy of all work recorded, priced with `cache`.
    pub fn energy_with(&self, cache: Cache) -> Energy {
        self.entries.iter().fold(Energy::default(), |acc, e| acc + e.energy(&self.table, cache))
    }

    /// The upper bound: every counted load and store priced as DRAM traffic.
    pub fn energy_no_cache(&self) -> Energy {
        self.energy_with(Cache::None)
    }

    /// Energy of this ledger divided by `baseline`'s, each with its own cache (below 1: this run
    /// is cheaper).
    pub fn ratio_to(&self, baseline: &Ledger) -> f64 {
        self.energy().total() / baseline.energy().total()
    }
}

impl fmt::Display for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "energy ledger (estimate; Horowitz ISSCC 2014, 45 nm; dynamic energy of arithmetic and data movement; {})",
            self.cache
        )?;
        writeln!(
            f,
            "{:<24} {:>8} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "kernel", "runs", "arith µJ", "DRAM µJ", "L2 µJ", "SRAM µJ", "total µJ"
        )?;
        let mut names: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !names.contains(&e.kernel.as_str()) {
                names.push(&e.kernel);
            }
        }
        for k in names {
            let of_k = self.entries.iter().filter(|e| e.kernel == k);
            let runs: u64 = of_k.clone().map(|e| e.runs).sum();
            let e = of_k.fold(Energy::default(), |acc, e| acc + e.energy(&self.table, self.cache));
            writeln!(
                f,
                "{k:<24} {runs:>8} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
                e.arith() * 1e6,
                e.dram * 1e6,
                e.l2 * 1e6,
                e.sram * 1e6,
                e.total() * 1e6
            )?;
        }
        let e = self.energy();
        writeln!(
            f,
            "total: {:.3} µJ = f32 {:.3} + f16 {:.3} + int {:.3} (arithmetic) + DRAM {:.3} + L2 {:.3} + SRAM {:.3}",
            e.total() * 1e6,
            e.f32_arith * 1e6,
            e.f16_arith * 1e6,
            e.int_arith * 1e6,
            e.dram * 1e6,
            e.l2 * 1e6,
            e.sram * 1e6
        )?;
        let (compulsory, again) = self.traffic();
        writeln!(
            f,
            "no-cache bound: {:.3} µJ (every counted load from DRAM); {}: {:.3} µJ; device-memory bytes: {compulsory} compulsory, {again} re-read",
            self.energy_no_cache().total() * 1e6,
            Cache::DATA_CENTRE,
            self.energy_with(Cache::DATA_CENTRE).total() * 1e6,
        )?;
        write!(f, "left out: static and idle power, register files, instruction issue, address arithmetic")?;
        if let Some((j, source)) = &self.measured {
            write!(
                f,
                "\nmeasured ({source}): {:.3} µJ, {:.1}x the estimate, {:.1}x the no-cache bound (whole board over the run's wall time)",
                j * 1e6,
                j / e.total().max(f64::MIN_POSITIVE),
                j / self.energy_no_cache().total().max(f64::MIN_POSITIVE)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::BufferReq;

    #[test]
    fn prices_each_part_with_the_table() {
        let w = Work {
            f32_mul: 1000,
            f32_add: 1000,
            i8_mul: 4000,
            bit_ops: 10,
            dram_read: 8,
            sram_write: 8,
            ..Work::default()
        };
        let e = Energy::of(&w, &HOROWITZ_45NM);
        assert!((e.f32_arith - 4600e-12).abs() < 1e-18);
        assert!((e.int_arith - (800.0 + 1.0) * 1e-12).abs() < 1e-18);
        assert!((e.dram - 1300e-12).abs() < 1e-18);
        assert!((e.sram - 10e-12).abs() < 1e-18);
        assert_eq!(e.l2, 0.0);
    }

    #[test]
    fn bound_bytes_are_dram_once_and_re_reads_hit_the_l2_when_they_fit() {
        // A GEMM-like launch: binds 3 MiB (2 MiB read, 1 MiB written), counts 10 MiB of loads.
        let mib = 1u64 << 20;
        let w = Work { dram_read: 10 * mib, dram_write: mib, f32_mul: 7, ..Work::default() };
        let f = Footprint { read: 2 * mib, written: mib, bound: 3 * mib };
        let t = HOROWITZ_45NM;
        let dram = |bytes: u64| bytes as f64 * t.dram_byte * 1e-12;
        let l2 = |bytes: u64| bytes as f64 * t.l2_byte * 1e-12;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1e-30);

        // Fits a 4 MiB L2: 3 MiB compulsory from DRAM, the 8 MiB of re-reads from the L2.
        let fits = Energy::priced(&w, &f, &t, Cache::LAPTOP);
        assert!(close(fits.dram, dram(3 * mib)) && close(fits.l2, l2(8 * mib)), "{fits:?}");
        // Does not fit a 2 MiB L2: everything counted is DRAM, as with no cache at all.
        let spills = Energy::priced(&w, &f, &t, Cache::L2 { bytes: 2 * mib });
        let bound = Energy::priced(&w, &f, &t, Cache::None);
        assert!(close(spills.dram, dram(11 * mib)) && spills.l2 == 0.0);
        assert_eq!(spills, bound);
        assert_eq!(bound, Energy::of(&w, &t));
        assert!(fits.total() < bound.total());
        // Arithmetic does not depend on the cache.
        assert_eq!((fits.f32_arith, fits.sram), (bound.f32_arith, bound.sram));

        // A launch that counts fewer bytes than it binds (reads part of a buffer): no re-reads.
        let partial = Work { dram_read: mib, ..Work::default() };
        let e = Energy::priced(&partial, &f, &t, Cache::LAPTOP);
        assert!(close(e.dram, dram(mib)) && e.l2 == 0.0);

        // The ledger prices each shape by its own footprint: two entries under one name, one
        // fitting the default (laptop) L2 and one not.
        let mut ledger = Ledger::default();
        ledger.add("gemm", w, f, 2);
        let big = Footprint { read: 40 * mib, written: mib, bound: 41 * mib };
        let w_big = Work { dram_read: 100 * mib, dram_write: mib, ..Work::default() };
        ledger.add("gemm", w_big, big, 1);
        let expect = fits.total() * 2.0 + Energy::priced(&w_big, &big, &t, Cache::None).total();
        assert!(close(ledger.energy().total(), expect));
        assert_eq!(ledger.traffic(), (2 * 11 * mib - 2 * 8 * mib + 41 * mib, 2 * 8 * mib + 60 * mib));
        // A data-centre L2 holds the big launch too; no cache is the dearest.
        let dc = ledger.energy_with(Cache::DATA_CENTRE).total();
        assert!(dc < ledger.energy().total() && ledger.energy().total() < ledger.energy_no_cache().total());
        let text = ledger.to_string();
        assert!(text.contains("L2 4 MiB") && text.contains("no-cache bound") && text.contains("L2 50 MiB"), "{text}");
        // One row per kernel name.
        assert_eq!(text.lines().filter(|l| l.starts_with("gemm ")).count(), 1, "{text}");

        // Repeated: every launch n times over, priced per launch as before (so the same cache
        // verdicts), with no measurement carried over.
        ledger.set_measured(1.0, "a meter");
        let three = ledger.repeated(3);
        assert_eq!(three.runs("gemm"), 9);
        assert!(close(three.energy().total(), 3.0 * ledger.energy().total()));
        assert!(close(three.energy_no_cache().total(), 3.0 * ledger.energy_no_cache().total()));
        let (c, a) = ledger.traffic();
        assert_eq!(three.traffic(), (3 * c, 3 * a));
        assert_eq!(three.measured(), None);
    }

    #[test]
    fn footprint_of_requirements_counts_read_write_tensors_once_in_bound() {
        let reqs = [
            BufferReq::input("x", 100),
            BufferReq::weight("w", 1000),
            BufferReq { written: true, ..BufferReq::input("state", 40) },
            BufferReq::output("y", 10),
        ];
        let f = Footprint::of(&reqs);
        assert_eq!(f, Footprint { read: 1140, written: 50, bound: 1150 });
    }

    #[test]
    fn ledger_sums_runs_and_compares_to_a_baseline() {
        let dense = Work { f32_mul: 100, f32_add: 100, dram_read: 400, ..Work::default() };
        let ternary = Work { i8_mul: 100, i32_add: 100, dram_read: 25, ..Work::default() };
        let mut base = Ledger::default();
        base.add("gemv", dense, Footprint::streaming(&dense), 50);
        let mut low = Ledger::default();
        low.add("gemv_q", ternary, Footprint::streaming(&ternary), 30);
        low.add("gemv_q", ternary, Footprint::streaming(&ternary), 20);
        assert_eq!(low.work(), ternary * 50);
        let r = low.ratio_to(&base);
        let expect =
            Energy::of(&(ternary * 50), &HOROWITZ_45NM).total() / Energy::of(&(dense * 50), &HOROWITZ_45NM).total();
        assert!((r - expect).abs() < 1e-12 && r < 0.1);
        let text = low.to_string();
        assert!(text.contains("left out") && text.contains("Horowitz") && text.contains("gemv_q"));
        assert!(!text.contains("measured"));
        // A measurement is printed beside the estimate, not added to it.
        let before = low.energy().total();
        low.set_measured(before * 40.0, "test meter");
        assert_eq!(low.energy().total(), before);
        assert_eq!(low.measured(), Some(before * 40.0));
        let text = low.to_string();
        assert!(text.contains("measured (test meter)") && text.contains("40.0x"), "{text}");
    }
}
