//! config.json's data part: written today with the whole input description,
//! and config.json files from before it still load.

use sasrec_data::{DataSpec, SplitMethod};
use sasrec_data::{Format, InputSpec, TimeUnit};

#[test]
fn an_older_config_json_data_part_still_loads() {
    // As written before input descriptions existed.
    let old = r#"{"ratings":"ratings.csv","format":null,"user_fraction":1.0,"sample_seed":0,
        "min_rating":null,"min_user_interactions":0,"min_item_interactions":0,
        "split":"leave-one-out","valid_fraction":0.1,"split_seed":42}"#;
    let spec: DataSpec = serde_json::from_str(old).unwrap();
    assert_eq!(spec.input, InputSpec::default());
    assert_eq!(spec.split, SplitMethod::LeaveOneOut);
    let old_dat = old
        .replace(r#""format":null"#, r#""format":"dat""#)
        .replace("leave-one-out", "random-users");
    let spec: DataSpec = serde_json::from_str(&old_dat).unwrap();
    assert_eq!(spec.input.format, Some(Format::Dat));
    assert_eq!(spec.split, SplitMethod::RandomUsers);
}

#[test]
fn the_input_description_round_trips_at_the_top_level() {
    let mut spec: DataSpec = serde_json::from_str(
        r#"{"ratings":"events.parquet","user_fraction":1.0,"sample_seed":0,"min_rating":null,
        "min_user_interactions":0,"min_item_interactions":0,"split":"leave-one-out",
        "valid_fraction":0.1,"split_seed":42}"#,
    )
    .unwrap();
    spec.input = InputSpec {
        format: Some(Format::Parquet),
        user_col: Some("visitor".into()),
        item_col: Some("product".into()),
        time_col: Some("ts".into()),
        time_unit: Some(TimeUnit::Ms),
        ..InputSpec::default()
    };
    let json: serde_json::Value = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["user_col"], "visitor");
    assert_eq!(json["format"], "parquet");
    assert_eq!(json["time_unit"], "ms");
    assert_eq!(json["split"], "leave-one-out");
    assert_eq!(serde_json::from_value::<DataSpec>(json).unwrap(), spec);
    assert!(serde_json::from_str::<DataSpec>(r#"{"split":"sideways"}"#).is_err());
}
