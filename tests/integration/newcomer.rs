//! The mistakes a newcomer makes on day one, as they make them (issue 25, "Confusing"): each gets
//! one line that names what was typed and what would work.

use crate::harness::run_to_end;

/// Runs recluster with `args`; asserts a usage error (status 2, one line); returns that line.
fn usage_error(args: &[&str]) -> String {
    let (code, stdout, stderr) = run_to_end(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn a_typo_keeps_the_similar_name_on_its_one_line() {
    let line = usage_error(&["--workrs", "2", "--", "true"]);
    assert!(
        line.starts_with(
            "recluster: error: unexpected argument '--workrs' (did you mean '--workers'?)"
        ),
        "{line}"
    );
    let line = usage_error(&["ctl", "stauts"]);
    assert!(line.contains("'stauts'"), "{line}");
    assert!(
        line.contains("did you mean") && line.contains("'status'"),
        "{line}"
    );
}
