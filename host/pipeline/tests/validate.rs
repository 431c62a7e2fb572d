//! Parsing and validation: one test per kind of error, each asserting the
//! message and the `file:line:column`.

mod common;

use common::*;
use stagecraft_pipeline::*;

const HYBRID: &str = r#"name: "Hybrid Pipeline"
settings: { parallel: true, max_workers: 4, timeout: 300, rate_limit_delay: 0 }
steps:
  - name: base_image
    type: generate            # a stage name
    params: { prompt: "{{input}}", seed: 7 }
  - type: parallel_group
    name: variations
    max_workers: 3
    fail_fast: true
    timeout: 120
    steps:
      - { name: big, type: upscale, input_from: base_image, params: { factor: 2 } }
      - { name: social, type: social_formats, input_from: base_image }
  - name: report
    type: report_xlsx
    input_from: [big, social]
    retries: 2
    timeout: 30
"#;

/// The one diagnostic, rendered.
fn only(d: &Diagnostics) -> String {
    assert_eq!(d.len(), 1, "expected one diagnostic, got:\n{d}");
    d.iter().next().unwrap().to_string()
}

#[test]
fn the_documented_example_loads_with_positions() {
    let p = load_ok(HYBRID);
    assert_eq!(p.name(), "Hybrid Pipeline");
    let s = p.settings();
    assert!(s.parallel);
    assert_eq!(s.max_workers, Some(4));
    assert_eq!(s.timeout, Some(std::time::Duration::from_secs(300)));
    let names: Vec<&str> = p.steps().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["base_image", "big", "social", "report"]);
    assert_eq!(p.step("base_image").unwrap().pos, Position::new(4, 5));
    assert_eq!(p.step("big").unwrap().pos, Position::new(13, 9));
    let report = p.step("report").unwrap();
    assert_eq!(report.retries, 2);
    assert_eq!(report.timeout, Some(std::time::Duration::from_secs(30)));
    assert_eq!(report.input_from, vec![1, 2]);
    let g = &p.groups()[1];
    assert_eq!((g.name.as_str(), g.max_workers, g.fail_fast), ("variations", Some(3), true));
    assert_eq!(g.timeout, Some(std::time::Duration::from_secs(120)));
    assert_eq!(g.steps, vec![1, 2]);
    assert!(p.step("base_image").unwrap().templated);
    assert!(p.step("base_image").unwrap().uses_pipeline_inputs());

    // The spec keeps the position of every param value.
    let spec = PipelineSpec::parse(HYBRID, "hybrid.yaml").unwrap();
    let spec::NodeSpec::Step(base) = &spec.steps[0] else { panic!() };
    let params = base.params.as_ref().unwrap();
    assert_eq!(params.position_of("/seed"), Position::new(6, 42));
    assert_eq!(base.stage.as_ref().unwrap().pos, Position::new(5, 11));
}

#[test]
fn json_is_accepted() {
    let json = r#"{"name": "j", "steps": [{"name": "a", "type": "generate", "params": {"seed": 1}},
                   {"name": "b", "type": "upscale", "input_from": "a", "params": {"factor": 4}}]}"#;
    let p = load(json, "p.json", &catalog()).unwrap();
    assert_eq!(p.step("b").unwrap().deps, vec![0]);
}

#[test]
fn bad_yaml_reports_line_and_column() {
    let d = load_err("name: x\nsteps:\n  - name: a\n    type: [generate\n");
    let msg = only(&d);
    assert!(msg.starts_with("test.yaml:5:1: invalid YAML:"), "{msg}");
}

#[test]
fn unknown_stage_suggests_the_closest() {
    let d = load_err("steps:\n  - name: a\n    type: upscal\n    params: { factor: 2 }\n");
    assert_eq!(
        only(&d),
        "test.yaml:3:11: step 'a': unknown stage 'upscal' (did you mean 'upscale'?); \
         known stages: generate, report_xlsx, social_formats, upscale, work"
    );
}

#[test]
fn duplicate_step_name() {
    let d = load_err("steps:\n  - { name: a, type: generate }\n  - { name: a, type: generate }\n");
    assert_eq!(only(&d), "test.yaml:3:13: step 'a': duplicate name 'a': already used at test.yaml:2:13");
}

#[test]
fn duplicate_default_names_explain_the_default() {
    let d = load_err("steps:\n  - type: generate\n  - type: generate\n");
    let msg = only(&d);
    assert!(msg.starts_with("test.yaml:3:11: step 'generate': duplicate name 'generate'"), "{msg}");
    assert!(msg.contains("give it a unique 'name'"), "{msg}");
}

#[test]
fn input_from_naming_no_step() {
    let d = load_err("steps:\n  - { name: base, type: generate }\n  - { name: b, type: upscale, input_from: [base, bse], params: { factor: 2 } }\n");
    assert_eq!(only(&d), "test.yaml:3:50: step 'b': input_from names no step: 'bse' (did you mean 'base'?)");
}

#[test]
fn cycle_names_its_steps() {
    let yaml = "steps:
  - { name: a, type: work, input_from: c }
  - { name: b, type: work, input_from: a }
  - { name: c, type: work, input_from: b }
  - { name: d, type: work, input_from: d }
";
    let d = load_err(yaml);
    let msgs: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "test.yaml:2:40: step 'a': dependency cycle between a, c, b: 'a' needs 'c', 'c' needs 'b', 'b' needs 'a'",
            "test.yaml:5:40: step 'd': the step depends on itself (through input_from or a template)",
        ]
    );
}

#[test]
fn template_references_are_dependencies_and_can_cycle() {
    let yaml = "steps:
  - { name: a, type: work, params: { width: '{{steps.b.metadata.w}}' } }
  - { name: b, type: work, input_from: a }
";
    let d = load_err(yaml);
    assert_eq!(only(&d), "test.yaml:2:45: step 'a': dependency cycle between a, b: 'a' needs 'b', 'b' needs 'a'");
}

#[test]
fn params_that_do_not_match_the_schema() {
    let yaml = "steps:\n  - name: up\n    type: upscale\n    params:\n      factor: 3\n";
    let msg = only(&load_err(yaml));
    assert!(
        msg.starts_with("test.yaml:5:15: step 'up': params at '/factor' do not match the schema of stage 'upscale':"),
        "{msg}"
    );
    assert!(msg.contains("3 is not one of"), "{msg}");

    let missing = only(&load_err("steps:\n  - { name: up, type: upscale }\n"));
    assert!(missing.starts_with("test.yaml:2:5: step 'up': params do not match"), "{missing}");
    assert!(missing.contains("\"factor\" is a required property"), "{missing}");

    let wrong_type = only(&load_err("steps:\n  - { name: g, type: generate, params: { seed: \"seven\" } }\n"));
    assert!(wrong_type.starts_with("test.yaml:2:48: step 'g': params at '/seed'"), "{wrong_type}");
    assert!(wrong_type.contains("is not of type \"integer\""), "{wrong_type}");
}

#[test]
fn templated_values_are_not_type_checked_before_rendering() {
    load_ok("steps:\n  - { name: a, type: work }\n  - { name: b, type: upscale, params: { factor: '{{steps.a.metadata.f}}' } }\n");
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let d = load_err(
        "steps:\n  - { name: base, type: generate }\n  - name: b\n    type: social_formats\n    input_form: base\n",
    );
    let msg = only(&d);
    assert!(
        msg.starts_with("test.yaml:5:5: step 'b': unknown key 'input_form' in a step (did you mean 'input_from'?)"),
        "{msg}"
    );
    let settings = only(&load_err("settings: { paralel: false }\nsteps:\n  - { name: a, type: work }\n"));
    assert!(
        settings.starts_with("test.yaml:1:13: unknown key 'paralel' in settings (did you mean 'parallel'?)"),
        "{settings}"
    );
}

#[test]
fn bad_types() {
    let yaml = "settings: { parallel: maybe, max_workers: 0 }
steps:
  - name: a
    type: work
    timeout: \"30s\"
    retries: -1
  - { type: parallel_group, name: g, fail_fast: 1, steps: [ { name: b, type: work, input_from: 5 } ] }
";
    let msgs: Vec<String> = load_err(yaml).iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "test.yaml:1:23: 'parallel' must be true or false, found the string \"maybe\"",
            "test.yaml:1:43: 'max_workers' must be a whole number of at least 1, found the number 0",
            "test.yaml:5:14: step 'a': 'timeout' must be a positive number of seconds, found the string \"30s\"",
            "test.yaml:6:14: step 'a': 'retries' must be a whole number of at least 0, found the number -1",
            "test.yaml:7:49: step 'g': 'fail_fast' must be true or false, found the number 1",
            "test.yaml:7:96: step 'b': 'input_from' must be a step name or a list of step names, found the number 5",
        ]
    );
}

#[test]
fn template_errors() {
    let yaml = "steps:
  - { name: a, type: work }
  - { name: b, type: generate, params: { prompt: '{{steps.aa.metadata.x}}' } }
  - { name: c, type: generate, params: { prompt: 'x {{inptu}}' } }
  - { name: d, type: generate, params: { prompt: '{{input' } }
";
    let msgs: Vec<String> = load_err(yaml).iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert_eq!(
        msgs[0],
        "test.yaml:3:50: step 'b': params at '/prompt': template refers to no step: 'aa' (did you mean 'a'?)"
    );
    assert!(
        msgs[1].starts_with("test.yaml:4:50: step 'c': params at '/prompt': unknown template reference '{{inptu}}'"),
        "{}",
        msgs[1]
    );
    assert!(msgs[2].starts_with("test.yaml:5:50: step 'd': params at '/prompt': unterminated template"), "{}", msgs[2]);
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = "name: many
steps:
  - { name: a, type: generat }
  - { name: a, type: work, input_form: a }
  - { name: c, type: work, input_from: zz, timeout: soon }
";
    let d = load_err(yaml);
    let lines: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(lines, [(3, 22), (4, 13), (4, 28), (5, 40), (5, 53)], "{d}");
    // Display is one diagnostic per line.
    assert_eq!(d.to_string().lines().count(), 5);
}

#[test]
fn structural_errors() {
    assert_eq!(only(&load_err("")), "test.yaml:1:1: the pipeline file is empty");
    assert_eq!(only(&load_err("- a\n")), "test.yaml:1:1: a pipeline must be a mapping, found a list");
    assert_eq!(only(&load_err("name: x\n")), "test.yaml:1:1: the pipeline has no 'steps' list");
    let msg = only(&load_err("steps:\n  - { name: a }\n"));
    assert_eq!(msg, "test.yaml:2:5: step 'a': the step has no 'type' (the stage to run)");
    let msg = only(&load_err("steps:\n  - { name: g, type: parallel_group }\n"));
    assert_eq!(msg, "test.yaml:2:5: step 'g': a parallel_group needs a 'steps' list");
    let msg = only(&load_err("steps:\n  - { name: 'a.b', type: work }\n"));
    assert!(msg.starts_with("test.yaml:2:7: step 'a.b': names may contain only"), "{msg}");
    let msg = only(&load_err("steps:\n  - { name: g, type: parallel_group, steps: [] }\n"));
    assert_eq!(msg, "test.yaml:2:45: 'steps' of group 'g' is empty");
}

#[test]
fn groups_nest_and_group_names_expand_in_input_from() {
    let yaml = "steps:
  - { name: a, type: work }
  - type: parallel_group
    name: outer
    steps:
      - { name: b, type: work, input_from: a }
      - type: parallel_group
        name: inner
        fail_fast: false
        steps:
          - { name: c, type: work, input_from: a }
          - { name: d, type: work, input_from: a }
  - { name: e, type: work, input_from: outer }
";
    let p = load_ok(yaml);
    assert_eq!(p.step("e").unwrap().input_from, vec![1, 2, 3]);
    assert_eq!(p.step("c").unwrap().groups, vec![2, 1, 0]);
    assert!(!p.groups()[2].fail_fast);
    assert!(p.groups()[1].fail_fast);
}

#[test]
fn diagnostics_display_and_serialize() {
    let d = Diagnostic { file: "p.yaml".into(), line: 3, column: 7, step: Some("x".into()), message: "boom".into() };
    assert_eq!(d.to_string(), "p.yaml:3:7: step 'x': boom");
    let no_step = Diagnostic { step: None, ..d.clone() };
    assert_eq!(no_step.to_string(), "p.yaml:3:7: boom");
    assert_eq!(serde_json::to_value(&d).unwrap()["line"], 3);
}
