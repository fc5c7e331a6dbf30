//! The operator's commands that read files instead of asking a control unit: a spec
//! checked (`validate`) or drawn (`graph`), an execution unit's ledger replayed
//! (`ledger`).

use std::path::Path;

use paygrid_control_unit::spec::{SpecLimits, compile};
use serde_json::Value;

use super::{GraphFormat, UsageError, ValidateArgs, read};
use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::output;

/// `paygrid validate`: the spec compiled (and an input checked against it); exit 2 with
/// every error, each at its line, when it does not compile.
pub fn validate(args: ValidateArgs, json: bool) -> anyhow::Result<u8> {
    let text = read(&args.file)?;
    let limits = SpecLimits::default();
    let result = compile(&text, &limits).and_then(|spec| {
        if args.input.is_empty() {
            return Ok(spec);
        }
        let input = args.input.build().map_err(|e| {
            paygrid_control_unit::spec::SpecErrors(vec![
                paygrid_control_unit::spec::SpecError::new(e.to_string()),
            ])
        })?;
        spec.check_input(&input, &limits).map(|_| spec)
    });
    match result {
        Ok(spec) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "name": spec.name, "version": spec.version, "tasks": spec.tasks.len()})
                );
            } else {
                println!(
                    "{}: valid ({}@{}, {} tasks)",
                    args.file.display(),
                    spec.name,
                    spec.version,
                    spec.tasks.len()
                );
            }
            Ok(EXIT_OK)
        }
        Err(errors) => {
            if json {
                let items: Vec<Value> = errors
                    .0
                    .iter()
                    .map(|e| serde_json::json!({"message": e.message, "task": e.task, "line": e.position.map(|p| p.line), "column": e.position.map(|p| p.column)}))
                    .collect();
                println!("{}", serde_json::json!({"valid": false, "errors": items}));
            } else {
                for error in &errors.0 {
                    eprintln!("{}:{error}", args.file.display());
                }
            }
            Ok(EXIT_USAGE)
        }
    }
}

/// `paygrid graph`: the spec's task graph as DOT or Mermaid.
pub fn graph(file: &Path, format: GraphFormat) -> anyhow::Result<u8> {
    let text = read(file)?;
    let spec = match compile(&text, &SpecLimits::default()) {
        Ok(spec) => spec,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{}:{error}", file.display());
            }
            return Ok(EXIT_USAGE);
        }
    };
    print!(
        "{}",
        output::graph(&spec, matches!(format, GraphFormat::Mermaid))
    );
    Ok(EXIT_OK)
}

/// `paygrid ledger`: replays the ledger journal and reports; exit 1 if out of balance.
pub fn ledger(data_dir: &Path, json: bool) -> anyhow::Result<u8> {
    let path = data_dir.join("ledger.sqlite3");
    if !path.exists() {
        anyhow::bail!(UsageError(format!("no ledger at {}", path.display())));
    }
    let (_, entries) = paygrid_agents::journal::Journal::open(&path)?;
    let ledger = paygrid_agents::ledger::Ledger::replay(&entries);
    let balanced = ledger.is_balanced();
    let counts = ledger.transfer_counts();
    if json {
        let balances: Vec<Value> = ledger
            .balances()
            .iter()
            .map(|(account, currency, b)| serde_json::json!({"account": account, "currency": currency, "debits_pending": b.debits_pending, "credits_pending": b.credits_pending, "debits_posted": b.debits_posted, "credits_posted": b.credits_posted}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"balanced": balanced, "postings": entries.len(), "transfers": counts, "balances": balances})
        );
    } else {
        println!(
            "ledger {}: {} postings, transfers {counts:?}, {}",
            path.display(),
            entries.len(),
            if balanced {
                "balanced"
            } else {
                "OUT OF BALANCE"
            }
        );
        for (account, currency, b) in ledger.balances() {
            println!(
                "  {account:<30} {currency}  pending Dr {:>12} Cr {:>12}  posted Dr {:>12} Cr {:>12}",
                b.debits_pending, b.credits_pending, b.debits_posted, b.credits_posted
            );
        }
    }
    Ok(if balanced { EXIT_OK } else { EXIT_FAILED })
}
