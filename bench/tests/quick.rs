//! The benchmark's quick form on every adapter found (lavapipe's Vulkan and llvmpipe's GL here;
//! both are required when CI=true), its reports checked against the field table in the README,
//! and `--compare` over them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// (path, type) of every field the README documents.
fn documented() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let table = readme
        .split("<!-- bench-fields -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /bench-fields -->").next())
        .expect("the README's bench-fields table");
    let fields: Vec<(String, String)> = table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let path = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((path.to_string(), cells.get(2)?.to_string()))
        })
        .collect();
    assert!(fields.len() > 30, "only {} documented fields", fields.len());
    fields
}

/// The values at `path` (`a.b[].c`: every element of the array `a.b`, which must not be empty).
fn values<'a>(v: &'a Value, path: &str) -> Result<Vec<&'a Value>, String> {
    let mut at = vec![v];
    for part in path.split('.') {
        let (key, each) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        let mut next = Vec::new();
        for v in at {
            let child = v.get(key).ok_or_else(|| format!("`{path}`: no `{key}`"))?;
            if each {
                let items = child.as_array().ok_or_else(|| format!("`{path}`: `{key}` is not an array"))?;
                if items.is_empty() {
                    return Err(format!("`{path}`: `{key}` is empty"));
                }
                next.extend(items);
            } else {
                next.push(child);
            }
        }
        at = next;
    }
    Ok(at)
}

fn check(report: &Value, fields: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, ty) in fields {
        match values(report, path) {
            Err(e) => problems.push(e),
            Ok(vs) => {
                for v in vs {
                    let ok = match ty.as_str() {
                        "number" => v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
                        "number or null" => v.is_null() || v.as_f64().is_some_and(f64::is_finite),
                        "string" => v.is_string(),
                        "bool" => v.is_boolean(),
                        other => {
                            problems.push(format!("`{path}`: undocumented type `{other}`"));
                            true
                        }
                    };
                    if !ok {
                        problems.push(format!("`{path}` is {v}, not a {ty}"));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn quick_form_writes_the_documented_fields_on_every_adapter() {
    let fields = documented();
    let out = std::env::temp_dir().join(format!("milliwatt-bench-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_milliwatt-bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .env_remove("WGPU_BACKEND")
        .env_remove("WGPU_ADAPTER_NAME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "milliwatt-bench --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut reports: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    reports.sort();
    let mut backends = Vec::new();
    for path in &reports {
        let report: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let problems = check(&report, &fields);
        assert!(problems.is_empty(), "{}:\n{}", path.display(), problems.join("\n"));
        assert_eq!(report["quick"], Value::Bool(true));
        // The quick form's two models ran, and the ledger's bounds are ordered.
        let rows = report["end_to_end"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{}", path.display());
        for row in rows {
            let j = &row["ledger_j_per_image"];
            assert!(j["laptop_l2"].as_f64() <= j["no_cache"].as_f64(), "{row}");
            assert!(row["ratio_to_conventional"].as_f64().unwrap() < 0.2, "{row}");
        }
        backends.push(report["adapter"]["backend"].as_str().unwrap().to_string());
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!backends.is_empty(), "no report written:\n{stdout}");
    if ci {
        for b in ["Vulkan", "Gl"] {
            assert!(backends.iter().any(|x| x == b), "CI needs a {b} report; got {backends:?}");
        }
    }
    // The documented check catches a missing field.
    let mut broken: Value = serde_json::from_str(&std::fs::read_to_string(&reports[0]).unwrap()).unwrap();
    broken["adapter"].as_object_mut().unwrap().remove("backend");
    assert!(!check(&broken, &fields).is_empty());
    // --compare reads them back.
    let compare = Command::new(env!("CARGO_BIN_EXE_milliwatt-bench")).arg("--compare").args(&reports).output().unwrap();
    let text = String::from_utf8_lossy(&compare.stdout);
    assert!(compare.status.success() && text.contains("end to end: images/s") && text.contains("student-2"), "{text}");
    std::fs::remove_dir_all(&out).unwrap();
}
