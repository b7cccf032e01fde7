//! The energy ledger: turns the work each dispatched kernel reports ([`Work`], from the kernel
//! contract) into an energy estimate with the per-operation energies of
//! M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014 (45 nm,
//! 0.9 V) — the table most efficiency papers cite (see ../shared/NOTES-wgpu.md).
//!
//! It is an *estimate of dynamic energy of arithmetic and data movement*, not a wall-socket
//! measurement: it leaves out static and idle power, caches between DRAM and the cores, register
//! files, instruction issue and control, and address arithmetic. Its value is the ratio between
//! two runs counted the same way (a low-bit graph against the same model dense in f32).

use std::fmt;

use crate::kernel::Work;

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
    /// One byte to or from workgroup memory (a small SRAM).
    pub sram_byte: f64,
}

/// Horowitz, ISSCC 2014, 45 nm. DRAM: 1300–2600 pJ per 64-bit access; the low end (162.5 pJ per
/// byte) is used so that data movement is, if anything, under-priced. Workgroup memory: an 8 KB
/// SRAM, 10 pJ per 64-bit read (1.25 pJ per byte).
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
    sram_byte: 10.0 / 8.0,
};

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
    /// Workgroup-memory traffic.
    pub sram: f64,
}

impl Energy {
    /// All parts.
    pub fn total(&self) -> f64 {
        self.f32_arith + self.f16_arith + self.int_arith + self.dram + self.sram
    }

    /// Prices `w` with `t`.
    pub fn of(w: &Work, t: &EnergyTable) -> Self {
        let pj = 1e-12;
        let n = |v: u64| v as f64;
        Energy {
            f32_arith: (n(w.f32_add) * t.f32_add + n(w.f32_mul) * t.f32_mul) * pj,
            f16_arith: (n(w.f16_add) * t.f16_add + n(w.f16_mul) * t.f16_mul) * pj,
            int_arith: (n(w.i8_add) * t.i8_add
                + n(w.i8_mul) * t.i8_mul
                + n(w.i32_add + w.bit_ops) * t.i32_add
                + n(w.i32_mul) * t.i32_mul)
                * pj,
            dram: n(w.dram_read + w.dram_write) * t.dram_byte * pj,
            sram: n(w.sram_read + w.sram_write) * t.sram_byte * pj,
        }
    }
}

/// A ledger of dispatched work, per kernel name, priced with an [`EnergyTable`].
#[derive(Clone, Debug)]
pub struct Ledger {
    table: EnergyTable,
    entries: Vec<(String, Work, u64)>,
    measured: Option<(f64, String)>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(HOROWITZ_45NM)
    }
}

impl Ledger {
    /// An empty ledger priced with `table`.
    pub fn new(table: EnergyTable) -> Self {
        Self { table, entries: Vec::new(), measured: None }
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

    /// Records `times` dispatches of a kernel doing `work` each (from `Prepared::work`).
    pub fn add(&mut self, kernel: &str, work: Work, times: u64) {
        match self.entries.iter_mut().find(|(k, _, _)| k == kernel) {
            Some((_, w, n)) => {
                *w += work * times;
                *n += times;
            }
            None => self.entries.push((kernel.to_string(), work * times, times)),
        }
    }

    /// Records one run of a prepared kernel.
    pub fn record(&mut self, prepared: &crate::Prepared) {
        self.add(prepared.name(), prepared.work(), 1);
    }

    /// All work recorded.
    pub fn work(&self) -> Work {
        self.entries.iter().fold(Work::default(), |acc, (_, w, _)| acc + *w)
    }

    /// The energy of all work recorded.
    pub fn energy(&self) -> Energy {
        Energy::of(&self.work(), &self.table)
    }

    /// Energy of this ledger divided by `baseline`'s (below 1: this run is cheaper).
    pub fn ratio_to(&self, baseline: &Ledger) -> f64 {
        self.energy().total() / baseline.energy().total()
    }
}

impl fmt::Display for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "energy ledger (estimate; Horowitz ISSCC 2014, 45 nm; dynamic energy of arithmetic and data movement)"
        )?;
        writeln!(
            f,
            "{:<24} {:>8} {:>12} {:>12} {:>12} {:>12}",
            "kernel", "runs", "arith µJ", "DRAM µJ", "SRAM µJ", "total µJ"
        )?;
        for (k, w, n) in &self.entries {
            let e = Energy::of(w, &self.table);
            let arith = e.f32_arith + e.f16_arith + e.int_arith;
            writeln!(
                f,
                "{k:<24} {n:>8} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
                arith * 1e6,
                e.dram * 1e6,
                e.sram * 1e6,
                e.total() * 1e6
            )?;
        }
        let e = self.energy();
        writeln!(
            f,
            "total: {:.3} µJ = f32 {:.3} + f16 {:.3} + int {:.3} (arithmetic) + DRAM {:.3} + SRAM {:.3}",
            e.total() * 1e6,
            e.f32_arith * 1e6,
            e.f16_arith * 1e6,
            e.int_arith * 1e6,
            e.dram * 1e6,
            e.sram * 1e6
        )?;
        write!(f, "left out: static and idle power, caches, register files, instruction issue, address arithmetic")?;
        if let Some((j, source)) = &self.measured {
            write!(
                f,
                "\nmeasured ({source}): {:.3} µJ, {:.1}x the estimate (whole board over the run's wall time)",
                j * 1e6,
                j / e.total().max(f64::MIN_POSITIVE)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn ledger_sums_runs_and_compares_to_a_baseline() {
        let dense = Work { f32_mul: 100, f32_add: 100, dram_read: 400, ..Work::default() };
        let ternary = Work { i8_mul: 100, i32_add: 100, dram_read: 25, ..Work::default() };
        let mut base = Ledger::default();
        base.add("gemv", dense, 50);
        let mut low = Ledger::default();
        low.add("gemv_q", ternary, 30);
        low.add("gemv_q", ternary, 20);
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
