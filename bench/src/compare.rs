//! `--compare`: reports side by side, each figure with its ratio to the first report's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

type BoxError = Box<dyn std::error::Error>;

/// Prints the reports at `paths` side by side.
pub fn print(paths: &[PathBuf]) -> Result<(), BoxError> {
    let mut reports = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not a report ({e})", p.display()))?;
        if v.get("schema").and_then(Value::as_u64) != Some(1) {
            return Err(format!("{}: not a milliwatt-bench report of schema 1", p.display()).into());
        }
        reports.push(v);
    }
    let name = |r: &Value| {
        format!(
            "{} ({})",
            r["adapter"]["name"].as_str().unwrap_or("?"),
            r["adapter"]["backend"].as_str().unwrap_or("?")
        )
    };
    println!("\nreports (ratios are to report 1):");
    for (i, r) in reports.iter().enumerate() {
        println!("  {}: {}, host {}", i + 1, name(r), r["host_cpu"].as_str().unwrap_or("?"));
    }
    let roofs = [
        ("copy GB/s", "/kernels/copy_gbps"),
        ("FMA f32 GFLOP/s", "/kernels/fma_gflops_f32"),
        ("FMA f16 GFLOP/s", "/kernels/fma_gflops_f16"),
    ];
    println!("\n{:<44}{}", "roof", header(reports.len()));
    for (label, pointer) in roofs {
        let values: Vec<Option<f64>> = reports.iter().map(|r| r.pointer(pointer).and_then(Value::as_f64)).collect();
        println!("{label:<44}{}", cells(&values, false));
    }
    // Kernels: time per (kernel, shape, elem), in the first report's order.
    let mut keys: Vec<String> = Vec::new();
    let mut times: Vec<BTreeMap<String, f64>> = Vec::new();
    for r in &reports {
        let mut map = BTreeMap::new();
        for rec in r["kernels"]["records"].as_array().into_iter().flatten() {
            let key = format!(
                "{} {} {}",
                rec["kernel"].as_str().unwrap_or("?"),
                rec["shape"].as_str().unwrap_or("?"),
                rec["elem"].as_str().unwrap_or("?")
            );
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            if let Some(s) = rec["seconds"].as_f64() {
                map.insert(key, s * 1e3);
            }
        }
        times.push(map);
    }
    println!("\n{:<44}{}", "kernel shape elem (ms)", header(reports.len()));
    for key in &keys {
        let values: Vec<Option<f64>> = times.iter().map(|m| m.get(key).copied()).collect();
        println!("{key:<44}{}", cells(&values, true));
    }
    // End to end.
    let mut models: Vec<String> = Vec::new();
    for r in &reports {
        for row in r["end_to_end"].as_array().into_iter().flatten() {
            let m = row["model"].as_str().unwrap_or("?").to_string();
            if !models.contains(&m) {
                models.push(m);
            }
        }
    }
    let field = |r: &Value, model: &str, pointer: &str| {
        r["end_to_end"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["model"].as_str() == Some(model)))
            .and_then(|row| row.pointer(pointer))
            .and_then(Value::as_f64)
    };
    for (label, pointer, lower_better) in [
        ("images/s", "/images_per_s", false),
        ("ms per step", "/step_ms", true),
        ("ledger J/image (laptop L2)", "/ledger_j_per_image/laptop_l2", true),
        ("NVML J/image", "/nvml_j_per_image", true),
    ] {
        println!("\n{:<44}{}", format!("end to end: {label}"), header(reports.len()));
        for m in &models {
            let values: Vec<Option<f64>> = reports.iter().map(|r| field(r, m, pointer)).collect();
            if values.iter().any(Option::is_some) {
                println!("{m:<44}{}", cells(&values, lower_better));
            }
        }
    }
    Ok(())
}

fn header(n: usize) -> String {
    (1..=n).map(|i| format!("{:>22}", format!("report {i}"))).collect()
}

/// Each value with its ratio to the first (`time`: first / value, so > 1 is faster; else
/// value / first).
fn cells(values: &[Option<f64>], time: bool) -> String {
    let first = values.first().copied().flatten();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match (v, first) {
            (None, _) => format!("{:>22}", "-"),
            (Some(v), _) if i == 0 => format!("{:>22}", format!("{v:.4}")),
            (Some(v), Some(f)) if *v > 0.0 && f > 0.0 => {
                let ratio = if time { f / v } else { v / f };
                format!("{:>22}", format!("{v:.4} ({ratio:.2}x)"))
            }
            (Some(v), _) => format!("{:>22}", format!("{v:.4}")),
        })
        .collect()
}
