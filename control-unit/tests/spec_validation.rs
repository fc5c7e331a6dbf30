//! Spec validation: every rejection names the task and, for YAML, the line and column.
#![allow(clippy::unwrap_used)]

use paygrid_control_unit::spec::{SpecErrors, SpecLimits, compile};
use proptest::prelude::*;

fn errors(text: &str) -> SpecErrors {
    compile(text, &SpecLimits::default()).expect_err("spec should be rejected")
}

const HEADER: &str = "apiVersion: paygrid/v1\nkind: Workflow\nname: t\nversion: 1\n";

/// The example specs shipped in examples/specs all compile.
#[test]
fn shipped_examples_compile() {
    for name in [
        "card-payment",
        "refund",
        "marketplace-split",
        "settlement-batch",
    ] {
        let path = format!(
            "{}/../examples/specs/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("example spec exists");
        let spec = compile(&text, &SpecLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(spec.name, name);
    }
}

/// A cycle is printed as `a -> b -> c -> a`, naming a task on it and its line.
#[test]
fn cycle_is_printed() {
    let text = format!(
        "{HEADER}tasks:\n  - id: a\n    skill: s\n    needs: [c]\n  - id: b\n    skill: s\n    needs: [a]\n  - id: c\n    skill: s\n    needs: [b]\n"
    );
    let errors = errors(&text);
    let error = &errors.0[0];
    assert!(
        ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
            .iter()
            .any(|cycle| error.message.contains(cycle)),
        "{error}"
    );
    assert!(error.task.is_some());
    assert!(error.position.is_some_and(|p| p.line >= 6), "{error}");
}

/// An unknown dependency names the task, the line of `needs`, and suggests a near name.
#[test]
fn unknown_dependency_is_named() {
    let text = format!(
        "{HEADER}tasks:\n  - id: authorize\n    skill: s\n  - id: capture\n    skill: s\n    needs: [authorise]\n"
    );
    let error = &errors(&text).0[0];
    assert_eq!(error.task.as_deref(), Some("capture"));
    assert_eq!(error.position.map(|p| p.line), Some(10));
    assert!(
        error.message.contains("unknown task `authorise`"),
        "{error}"
    );
    assert!(
        error.message.contains("did you mean `authorize`"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("line 10, column 5: task `capture`:"),
        "{error}"
    );
}

/// A duplicate id points at the second declaration and mentions the first.
#[test]
fn duplicate_id_is_rejected() {
    let text = format!("{HEADER}tasks:\n  - id: a\n    skill: s\n  - id: a\n    skill: s\n");
    let error = &errors(&text).0[0];
    assert_eq!(error.task.as_deref(), Some("a"));
    assert_eq!(error.position.map(|p| p.line), Some(8));
    assert!(
        error
            .message
            .contains("duplicate task id `a` (first declared at line 6)"),
        "{error}"
    );
}

/// References to unknown tasks, to tasks that are not upstream, and malformed paths.
#[test]
fn unknown_output_references_are_rejected() {
    let text = format!(
        "{HEADER}tasks:\n  - id: a\n    skill: s\n  - id: b\n    skill: s\n    needs: [a]\n    with: {{ x: \"{{{{ tasks.ghost.output.id }}}}\" }}\n"
    );
    let error = &errors(&text).0[0];
    assert_eq!(error.task.as_deref(), Some("b"));
    assert_eq!(error.position.map(|p| p.line), Some(11));
    assert!(error.message.contains("unknown task `ghost`"), "{error}");

    let text = format!(
        "{HEADER}tasks:\n  - id: a\n    skill: s\n  - id: b\n    skill: s\n    with: {{ x: \"{{{{ tasks.a.output.id }}}}\" }}\n"
    );
    let error = &errors(&text).0[0];
    assert!(
        error.message.contains("not upstream: add `a` to needs"),
        "{error}"
    );

    let text = format!(
        "{HEADER}tasks:\n  - id: a\n    skill: s\n    with: {{ x: \"{{{{ inputs.missing }}}}\" }}\n"
    );
    assert!(
        errors(&text).0[0]
            .message
            .contains("undeclared input `inputs.missing`")
    );
}

/// An output field a registered skill never produces is caught at submit.
#[test]
fn unknown_output_field_is_rejected_against_the_catalog() {
    struct Catalog;
    impl paygrid_control_unit::spec::SkillCatalog for Catalog {
        fn output_fields(&self, skill: &str) -> Option<Vec<String>> {
            (skill == "gateway.authorize")
                .then(|| vec!["authorization_id".into(), "gateway".into()])
        }
    }
    let text = format!(
        "{HEADER}tasks:\n  - id: authorize\n    skill: gateway.authorize\n  - id: capture\n    skill: s\n    needs: [authorize]\n    with: {{ id: \"{{{{ tasks.authorize.output.authorisation_id }}}}\" }}\n"
    );
    let spec = compile(&text, &SpecLimits::default()).unwrap();
    let errors = spec.check_outputs(&Catalog);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].task.as_deref(), Some("capture"));
    assert!(
        errors[0]
            .message
            .contains("unknown output `tasks.authorize.output.authorisation_id`")
    );
    assert!(errors[0].message.contains("authorization_id, gateway"));
}

/// A malformed duration names the task and the `timeout` line.
#[test]
fn malformed_duration_is_rejected() {
    let text = format!("{HEADER}tasks:\n  - id: a\n    skill: s\n    timeout: 10 seconds\n");
    let error = &errors(&text).0[0];
    assert_eq!(error.task.as_deref(), Some("a"));
    assert_eq!(error.position.map(|p| p.line), Some(8));
    assert!(
        error.message.contains("malformed duration `10 seconds`"),
        "{error}"
    );
}

/// YAML syntax and unknown fields are reported with serde's line and the task there.
#[test]
fn syntax_errors_carry_line_and_task() {
    let text = format!("{HEADER}tasks:\n  - id: a\n    skill: s\n    nedds: [b]\n");
    let error = &errors(&text).0[0];
    assert!(error.message.contains("unknown field `nedds`"), "{error}");
    assert_eq!(error.position.map(|p| p.line), Some(8));
    assert_eq!(error.task.as_deref(), Some("a"));
}

/// Bad priorities, oversized specs and too many tasks are refused with the limit named.
#[test]
fn limits_and_priorities() {
    let text = format!("{HEADER}priority: urgent\ntasks:\n  - id: a\n    skill: s\n");
    assert!(
        errors(&text).0[0]
            .message
            .contains("unknown priority `urgent`")
    );

    let limits = SpecLimits {
        spec_bytes_max: 10,
        ..SpecLimits::default()
    };
    let error = compile(HEADER, &limits).unwrap_err();
    assert!(error.0[0].message.contains("the limit is 10 bytes"));

    let mut text = format!("{HEADER}tasks:\n");
    for i in 0..501 {
        text.push_str(&format!("  - id: t{i}\n    skill: s\n"));
    }
    assert!(errors(&text).0[0].message.contains("the limit is 500"));
}

/// Inputs are checked against their declared types, with defaults filled in.
#[test]
fn inputs_are_checked() {
    let text = format!(
        "{HEADER}inputs:\n  amount_minor: {{ type: integer, minimum: 1 }}\n  currency: {{ type: string, pattern: \"^[A-Z]{{3}}$\" }}\n  merchant: {{ type: string, default: acme }}\ntasks:\n  - id: a\n    skill: s\n"
    );
    let spec = compile(&text, &SpecLimits::default()).unwrap();
    let limits = SpecLimits::default();
    let ok = spec
        .check_input(
            &serde_json::json!({"amount_minor": 5, "currency": "EUR"}),
            &limits,
        )
        .unwrap();
    assert_eq!(ok["merchant"], "acme");
    let bad = spec
        .check_input(
            &serde_json::json!({"amount_minor": 1.5, "currency": "eur", "extra": 1}),
            &limits,
        )
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("input `amount_minor` must be an integer"),
        "{bad}"
    );
    assert!(bad.contains("input `currency` must match"), "{bad}");
    assert!(bad.contains("input `extra` is not declared"), "{bad}");
    let missing = spec
        .check_input(&serde_json::json!({}), &limits)
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("input `amount_minor` is required"),
        "{missing}"
    );
}

/// JSON specs parse the same way and report positions too.
#[test]
fn json_specs_are_accepted() {
    let text = r#"{
  "apiVersion": "paygrid/v1", "kind": "Workflow", "name": "j", "version": 1,
  "tasks": [
    { "id": "a", "skill": "s" },
    { "id": "b", "skill": "s", "needs": ["a"], "timeout": "5q" }
  ]
}"#;
    let error = &errors(text).0[0];
    assert_eq!(error.task.as_deref(), Some("b"));
    assert!(error.message.contains("unknown unit `q`"));
}

/// Generated acyclic task graphs written as YAML compile to the same graph.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..25).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                proptest::collection::btree_set(0..i.max(1), 0..=i.min(3))
                    .prop_map(move |s| s.into_iter().filter(|d| *d < i).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>()
    })
}

fn render(needs: &[Vec<usize>]) -> String {
    let mut text = format!("{HEADER}tasks:\n");
    for (i, deps) in needs.iter().enumerate() {
        let list: Vec<String> = deps.iter().map(|d| format!("t{d}")).collect();
        text.push_str(&format!(
            "  - id: t{i}\n    skill: s{}\n    needs: [{}]\n",
            i % 3,
            list.join(", ")
        ));
    }
    text
}

proptest! {
    #[test]
    fn generated_dags_round_trip(needs in dag()) {
        let spec = compile(&render(&needs), &SpecLimits::default()).unwrap();
        prop_assert_eq!(spec.tasks.len(), needs.len());
        for (i, deps) in needs.iter().enumerate() {
            let got: Vec<usize> = spec.tasks[i].needs.iter().map(|n| *n as usize).collect();
            prop_assert_eq!(&got, deps);
        }
        let position: Vec<usize> = {
            let mut p = vec![0; needs.len()];
            for (at, task) in spec.topological_order.iter().enumerate() { p[*task as usize] = at; }
            p
        };
        for (i, deps) in needs.iter().enumerate() {
            for d in deps { prop_assert!(position[*d] < position[i]); }
        }
    }

    #[test]
    fn adding_a_back_edge_is_reported_as_a_cycle(needs in dag(), pick in any::<prop::sample::Index>()) {
        // Find an edge i -> d and add d -> i: a cycle through both.
        let edges: Vec<(usize, usize)> = needs.iter().enumerate().flat_map(|(i, ds)| ds.iter().map(move |d| (i, *d))).collect();
        prop_assume!(!edges.is_empty());
        let (i, d) = edges[pick.index(edges.len())];
        let mut needs = needs;
        needs[d].push(i);
        let errors = compile(&render(&needs), &SpecLimits::default()).unwrap_err();
        prop_assert!(errors.0.iter().any(|e| e.message.contains("dependency cycle")), "{}", errors);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = compile(&text, &SpecLimits::default());
    }
}

/// `waitFor` is checked like the rest: labels, a count in range, a known onTimeout, and
/// not together with a skill.
#[test]
fn wait_for_is_validated() {
    let bad = format!(
        "{HEADER}tasks:\n  - id: w\n    skill: s\n    waitFor: {{ labels: {{}}, count: 0, onTimeout: shrug }}\n"
    );
    let errors = compile(&bad, &SpecLimits::default())
        .unwrap_err()
        .to_string();
    assert!(errors.contains("not several"), "{errors}");
    let bad = format!(
        "{HEADER}tasks:\n  - id: w\n    waitFor: {{ labels: {{}}, count: 0, onTimeout: shrug }}\n"
    );
    let errors = compile(&bad, &SpecLimits::default())
        .unwrap_err()
        .to_string();
    for expected in [
        "at least one label",
        "count must be 1 to 1000000",
        "onTimeout `shrug`",
    ] {
        assert!(errors.contains(expected), "{expected} in {errors}");
    }
}
