//! The report as JUnit XML, for CI systems that show test results: one test
//! case per threshold, and one per invariant a run must hold whatever its
//! thresholds (no request lost or counted twice, every fault carried out, not
//! stopped early). The format is the common subset CI systems read (Jenkins,
//! GitLab, GitHub's test reporters): `testsuites` › `testsuite` › `testcase`,
//! a failing case holding a `failure` with a message.

use std::fmt::Write;

use crate::report::Report;

/// One test case: its name, and why it failed if it did.
struct Case {
    name: String,
    failure: Option<String>,
}

/// The report's thresholds and invariants as a JUnit XML document; the suite
/// is named after the scenario (`octopoll run` when it has no name).
///
/// ```
/// # use octopoll_report::Report;
/// # fn show(report: &Report) {
/// let xml = octopoll_report::junit::render(report);
/// assert!(xml.starts_with("<?xml"));
/// # }
/// ```
pub fn render(report: &Report) -> String {
    let mut cases: Vec<Case> = report
        .thresholds
        .iter()
        .map(|verdict| Case {
            name: format!("threshold {}", verdict.asked()),
            failure: (!verdict.passed).then(|| verdict.to_string()),
        })
        .collect();
    let requests = &report.requests;
    let faults_failed: Vec<String> = report
        .faults
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.fault)))
        .collect();
    let invariants = [
        (
            "no request lost",
            (requests.lost > 0).then(|| format!("{} requests were lost", requests.lost)),
        ),
        (
            "no request counted twice",
            (requests.counted_twice > 0)
                .then(|| format!("{} request ends counted twice", requests.counted_twice)),
        ),
        (
            "every fault carried out",
            (!faults_failed.is_empty()).then(|| faults_failed.join("; ")),
        ),
        (
            "the run ran to its end",
            report
                .aborted
                .as_ref()
                .map(|a| format!("aborted at {:.1} s by {}", a.at_s, a.threshold))
                .or_else(|| report.interrupted.then(|| "interrupted".to_owned())),
        ),
    ];
    cases.extend(invariants.into_iter().map(|(name, failure)| Case {
        name: name.to_owned(),
        failure,
    }));
    let suite = report.name.as_deref().unwrap_or("octopoll run");
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let time = report.run.duration_s;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"octopoll\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">",
        cases.len()
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">",
        escape(suite),
        cases.len()
    );
    for case in &cases {
        let name = escape(&case.name);
        match &case.failure {
            None => {
                let _ = writeln!(
                    xml,
                    "    <testcase classname=\"octopoll\" name=\"{name}\"/>"
                );
            }
            Some(why) => {
                let why = escape(why);
                let _ = writeln!(
                    xml,
                    "    <testcase classname=\"octopoll\" name=\"{name}\">\n      <failure message=\"{why}\">{why}</failure>\n    </testcase>"
                );
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Text as XML character data or an attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Control characters XML 1.0 cannot hold at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => escaped.push('\u{FFFD}'),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::Counts;
    use crate::report::RunFacts;
    use crate::verdict::Verdict;

    fn report() -> Report {
        let facts = RunFacts {
            nodes: 1,
            agents: 1,
            topology: Default::default(),
            queue: Default::default(),
            seed: 1,
            duration_s: 2.5,
            connections: 1,
            coverage: 1.0,
            full_coverage_ms: Some(1),
            coverage_matrix: Default::default(),
        };
        let mut report = Report::new(facts, &Counts::default(), &[]);
        report.name = Some("a <b> & c".into());
        report.thresholds = vec![
            Verdict::at_most("failed_max", 0.0, Some(0.0)),
            Verdict::at_least("coverage_min", 0.99, Some(0.5)),
        ];
        report
    }

    #[test]
    fn each_threshold_and_invariant_is_a_case_and_failures_say_why() {
        let xml = render(&report());
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<testsuites name=\"octopoll\" tests=\"6\" failures=\"1\" time=\"2.500\">
  <testsuite name=\"a &lt;b&gt; &amp; c\" tests=\"6\" failures=\"1\" errors=\"0\" time=\"2.500\">
    <testcase classname=\"octopoll\" name=\"threshold failed_max 0\"/>
    <testcase classname=\"octopoll\" name=\"threshold coverage_min 0.99\">
      <failure message=\"coverage_min 0.99: 0.5 (BREACHED by 0.49)\">coverage_min 0.99: 0.5 (BREACHED by 0.49)</failure>
    </testcase>
    <testcase classname=\"octopoll\" name=\"no request lost\"/>
    <testcase classname=\"octopoll\" name=\"no request counted twice\"/>
    <testcase classname=\"octopoll\" name=\"every fault carried out\"/>
    <testcase classname=\"octopoll\" name=\"the run ran to its end\"/>
  </testsuite>
</testsuites>
"
        );
    }

    #[test]
    fn an_interrupted_run_fails_its_last_case() {
        let mut report = report();
        report.interrupted = true;
        let xml = render(&report);
        assert!(xml.contains("failures=\"2\""), "{xml}");
        assert!(xml.contains("<failure message=\"interrupted\">"), "{xml}");
    }

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            escape("p(99) < 50 & \"x\" 'y' >\u{1}\n"),
            "p(99) &lt; 50 &amp; &quot;x&quot; &apos;y&apos; &gt;\u{FFFD}\n"
        );
    }
}
