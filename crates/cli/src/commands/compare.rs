//! `octopoll compare`: two JSON reports → how each headline figure moved, and
//! an exit code for the limits.

use std::path::Path;
use std::process::ExitCode;

use octopoll_report::compare::compare as compare_reports;
use octopoll_scenario::file::ScenarioError;

use crate::args::CompareArgs;
use crate::commands::THRESHOLD_BREACHED;

/// Prints the comparison; exits 99 when a limit was breached.
pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let (base, new) = (read_report(&args.base)?, read_report(&args.new)?);
    let comparison = compare_reports(&base, &new, &args.max_worse);
    println!(
        "octopoll compare: {} → {}",
        args.base.display(),
        args.new.display()
    );
    print!("{comparison}");
    Ok(if comparison.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(THRESHOLD_BREACHED)
    })
}

/// A JSON report of `octopoll run`; one that cannot be read is a bad input
/// like a bad scenario (exit 2), blamed on the file.
pub fn read_report(path: &Path) -> Result<serde_json::Value, ScenarioError> {
    let refuse = |message: String| ScenarioError {
        location: path.display().to_string(),
        key: "report".into(),
        message,
    };
    let text = std::fs::read(path).map_err(|error| refuse(format!("reading it: {error}")))?;
    serde_json::from_slice(&text).map_err(|error| refuse(format!("not a JSON report: {error}")))
}
