//! The day document's JSON Schema (docs/upload-format.schema.json, for
//! suppliers and other tools) agrees with the documents the agent makes and
//! with what `DayDocument::parse` (the collector's check) refuses.
//!
//! The documents are those of the bundled morning capture (two practices
//! and Unassigned through a real Kamailio), made as the agent makes them.

use cbt_agent::config::Config;
use cbt_proto::upload::{AgentInfo, DayDocument, Quality};
use cbt_tests::workspace_root;
use serde_json::Value;

fn documents() -> Vec<Value> {
    let root = workspace_root().join("tests/fixtures");
    let config = Config::load(&root.join("morning.toml")).unwrap();
    let (site, book) = cbt_agent::replay::calls_of(&config, [3; 32], &[root.join("morning.pcap")]);
    let agg = book.aggregate(&site);
    assert!(agg.days().len() >= 3, "two practices and Unassigned");
    agg.days()
        .iter()
        .map(|((practice, date), day)| {
            let codes = site.practices.iter().find(|p| &p.ods == practice).map(|p| p.codes.clone()).unwrap_or_default();
            let mut d = DayDocument::new(
                AgentInfo { id: "morning".into(), version: "test".into() },
                practice,
                &codes,
                *date,
                "Europe/London",
                agg.wait_buckets(),
                agg.duration_buckets(),
                day,
                Quality { activity_recorded: true, hours_without_capture: vec![0, 1, 2], sip_messages: 5000, ..Quality::default() },
            );
            d.revision = 1;
            d.generated_at = "2025-11-04T12:00:00Z".into();
            serde_json::to_value(&d).unwrap()
        })
        .collect()
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(workspace_root().join("docs/upload-format.schema.json")).unwrap();
    jsonschema::options().should_validate_formats(true).build(&serde_json::from_str(&text).unwrap()).expect("the schema compiles")
}

#[test]
fn the_agents_documents_are_valid_by_the_published_schema() {
    let v = schema();
    for d in documents() {
        let errors: Vec<String> = v.iter_errors(&d).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{} {}: {errors:#?}", d["practice"], d["date"]);
        DayDocument::parse(&serde_json::to_vec(&d).unwrap()).expect("and the collector's check takes them");
    }
}

#[test]
fn what_the_collector_refuses_the_schema_refuses_too() {
    let v = schema();
    let d = documents().remove(0);
    let edits: Vec<(&str, Box<dyn Fn(&mut Value)>)> = vec![
        ("unknown member", Box::new(|d| d["caller"] = "07700900123".into())),
        ("negative count", Box::new(|d| d["by_time"]["CBT001"]["08:00-09:59"] = (-1).into())),
        ("missing band", Box::new(|d| { d["by_time"]["CBT002"].as_object_mut().unwrap().remove("18:00-18:29"); })),
        ("missing indicator", Box::new(|d| { d["by_time"].as_object_mut().unwrap().remove("CBT006"); })),
        ("bad practice code", Box::new(|d| d["practice"] = "b82005".into())),
        ("revision 0", Box::new(|d| d["revision"] = 0.into())),
        ("version 2", Box::new(|d| d["version"] = 2.into())),
        ("other schema", Box::new(|d| d["schema"] = "x".into())),
        ("hour 24", Box::new(|d| d["quality"]["hours_without_capture"] = serde_json::json!([24]))),
        ("negative wait", Box::new(|d| d["dpn"]["answered_waits_s"] = serde_json::json!([-1.0]))),
        ("missing quality", Box::new(|d| { d.as_object_mut().unwrap().remove("quality"); })),
    ];
    for (what, edit) in edits {
        let mut bad = d.clone();
        edit(&mut bad);
        assert!(!v.is_valid(&bad), "{what}: the schema accepts it");
        assert!(DayDocument::parse(&serde_json::to_vec(&bad).unwrap()).is_err(), "{what}: parse accepts it");
    }
}
