//! Reading every preference-data shape (JSONL, JSON arrays, Parquet written here), grouping rules, and
//! malformed input: errors name file, line/row and field; nothing panics, even on random bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use epa::data::{DataConfig, OnBadRow, PreferenceGroup, Prompt, ShapeKind, Strategy, Ties, load_groups};
use epa::text::Message;
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn jsonl(dir: &Path, name: &str, rows: &[serde_json::Value]) -> PathBuf {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    write(dir, name, text.as_bytes())
}

fn load(cfg: &DataConfig) -> Vec<PreferenceGroup> {
    load_groups(cfg).unwrap().0.into_iter().map(|(_, g)| g).collect()
}

fn err_of(cfg: &DataConfig) -> String {
    format!("{:#}", load_groups(cfg).unwrap_err())
}

#[test]
fn standard_strings_with_scores_and_several_rejected() {
    let d = tempfile::tempdir().unwrap();
    let p = jsonl(
        d.path(),
        "std.jsonl",
        &[
            json!({"prompt": "2+2?", "chosen": "4", "rejected": "5", "score_chosen": 9.0, "score_rejected": 2}),
            json!({"prompt": "Sky?", "chosen": "blue", "rejected": ["green", "red"]}),
        ],
    );
    let (groups, report) = load_groups(&DataConfig::for_path(&p)).unwrap();
    assert_eq!(report.files[0].shape, ShapeKind::Standard);
    assert_eq!(groups.len(), 2);
    let g = &groups[0].1;
    assert_eq!(g.prompt, Prompt::Text("2+2?".into()));
    assert_eq!((g.positive.text.as_str(), g.positive.score), ("4", Some(9.0)));
    assert_eq!((g.strong[0].text.as_str(), g.strong[0].score), ("5", Some(2.0)));
    let g = &groups[1].1;
    assert_eq!(g.strong.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), ["green", "red"]);
    assert_eq!(groups[1].0.to_string(), format!("{}: line 2", p.display()));
}

#[test]
fn implicit_prompt_is_the_shared_prefix() {
    let d = tempfile::tempdir().unwrap();
    let p = jsonl(
        d.path(),
        "imp.jsonl",
        &[
            json!({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"}),
            json!({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
               "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bye"}]}),
        ],
    );
    let mut cfg = DataConfig::for_path(&p);
    let gs = load(&cfg);
    // TRL's rule: cut at the first difference, the space goes with the response.
    assert_eq!(gs[0].prompt, Prompt::Text("\n\nHuman: Hi\n\nAssistant:".into()));
    assert_eq!(gs[0].positive.text, " Hello there");
    assert_eq!(gs[0].strong[0].text, " Go away");
    assert_eq!(gs[1].prompt, Prompt::Messages(vec![Message::user("Hi")]));
    assert_eq!((gs[1].positive.text.as_str(), gs[1].strong[0].text.as_str()), ("Hello", "Bye"));
    // Responses sharing their first word: the delimiter keeps it in the responses.
    let p2 =
        jsonl(d.path(), "imp2.jsonl", &[json!({"chosen": "Q: x\nA: I think so", "rejected": "Q: x\nA: I doubt it"})]);
    cfg.paths = vec![p2];
    assert_eq!(load(&cfg)[0].prompt, Prompt::Text("Q: x\nA: I".into()));
    cfg.fields.implicit_prompt_delimiter = Some("A:".into());
    let g = &load(&cfg)[0];
    assert_eq!(g.prompt, Prompt::Text("Q: x\nA:".into()));
    assert_eq!(g.positive.text, " I think so");
}

#[test]
fn conversational_trl_and_ultrafeedback_binarized_rows() {
    let d = tempfile::tempdir().unwrap();
    let user = json!({"role": "user", "content": "Name a fruit."});
    let p = jsonl(
        d.path(),
        "conv.jsonl",
        &[
            // TRL conversational: prompt messages, responses as [assistant].
            json!({"prompt": [{"role": "system", "content": "Be short."}, user],
               "chosen": [{"role": "assistant", "content": "Apple."}],
               "rejected": [{"role": "assistant", "content": "Carrot."}]}),
            // ultrafeedback_binarized: prompt string, chosen/rejected repeat the user turn.
            json!({"prompt": "Name a fruit.", "chosen": [user, {"role": "assistant", "content": "Pear."}],
               "rejected": [user, {"role": "assistant", "content": "Stone."}], "score_chosen": 8.5, "score_rejected": 3.0}),
            // content as a list of text parts
            json!({"prompt": [{"role": "user", "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "one."}]}],
               "chosen": "Fig.", "rejected": "Rock."}),
        ],
    );
    let (gs, report) = load_groups(&DataConfig::for_path(&p)).unwrap();
    assert_eq!(report.conversational_rows, 3);
    assert_eq!(
        gs[0].1.prompt,
        Prompt::Messages(vec![Message::new("system", "Be short."), Message::user("Name a fruit.")])
    );
    assert_eq!(gs[0].1.positive.text, "Apple.");
    assert_eq!(gs[1].1.prompt, Prompt::Text("Name a fruit.".into()));
    assert_eq!((gs[1].1.positive.text.as_str(), gs[1].1.strong[0].score), ("Pear.", Some(3.0)));
    assert_eq!(gs[2].1.prompt, Prompt::Messages(vec![Message::user("Name one.")]));
    // Prompt text identity ignores the form: the string and the single user turn are one prompt.
    assert_eq!(gs[1].1.prompt.key(), Prompt::Messages(vec![Message::user("Name a fruit.")]).key());
}

fn multi_rows() -> Vec<serde_json::Value> {
    vec![
        json!({"prompt": "p1", "responses": ["a", "b", "c", "d"], "scores": [3, 9, 5, 1]}),
        json!({"prompt": "p2", "responses": ["a", "b", "c"], "scores": [7, 7, 2]}),
        json!({"prompt": "p3", "responses": ["a", "b", "c"], "ranks": [2, 1, 3]}),
    ]
}

#[test]
fn multi_response_grouping_strategies_ties_and_gaps() {
    let d = tempfile::tempdir().unwrap();
    let p = jsonl(d.path(), "multi.jsonl", &multi_rows());
    let mut cfg = DataConfig::for_path(&p);
    let texts = |g: &PreferenceGroup| g.strong.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    let gs = load(&cfg);
    assert_eq!(gs[0].positive.text, "b");
    assert_eq!(texts(&gs[0]), ["c", "a", "d"]);
    // p2: "a" and "b" tie at the top: the tie is dropped by default.
    assert_eq!((gs[1].positive.text.as_str(), texts(&gs[1])), ("a", vec!["c".to_owned()]));
    assert_eq!((gs[2].positive.text.as_str(), texts(&gs[2])), ("b", vec!["a".to_owned(), "c".to_owned()]));
    let (_, report) = load_groups(&cfg).unwrap();
    assert_eq!(report.dropped_candidates["tied with the positive"], 1);

    cfg.grouping.ties = Ties::Keep;
    assert_eq!(texts(&load(&cfg)[1]), ["b", "c"]);
    cfg.grouping.ties = Ties::Drop;
    cfg.grouping.min_score_gap = 4.0;
    let gs = load(&cfg);
    assert_eq!(texts(&gs[0]), ["c", "a", "d"].map(String::from)[..3].to_vec()); // gaps 4, 6, 8
    assert_eq!(gs.len(), 2, "p3 (rank gaps of 1 and 2) has no negative 4 below the best");

    cfg.grouping.min_score_gap = 0.0;
    cfg.grouping.strategy = Strategy::BestVsWorst;
    assert_eq!(texts(&load(&cfg)[0]), ["d"]);
    cfg.grouping.strategy = Strategy::BestVsRandom;
    let a: Vec<_> = load(&cfg).iter().map(texts).collect();
    assert!(a.iter().all(|t| t.len() == 1));
    assert_eq!(a, load(&cfg).iter().map(texts).collect::<Vec<_>>(), "deterministic under the seed");
    let draws: std::collections::HashSet<_> = (0..20)
        .map(|s| {
            cfg.seed = s;
            texts(&load(&cfg)[0])
        })
        .collect();
    assert!(draws.len() > 1, "the seed changes the draw");
}

fn ultrafeedback_raw_row(instruction: &str, scores: [serde_json::Value; 4]) -> serde_json::Value {
    let completions: Vec<_> = scores
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"model": format!("m{i}"), "response": format!("answer {i} to {instruction}"),
                             "overall_score": s, "annotations": {"helpfulness": {"Rating": "4"}}})
        })
        .collect();
    json!({"source": "evol", "instruction": instruction, "models": ["m0", "m1", "m2", "m3"], "completions": completions})
}

#[test]
fn ultrafeedback_raw_jsonl_with_string_and_missing_ratings() {
    let d = tempfile::tempdir().unwrap();
    let mut rows = vec![
        ultrafeedback_raw_row("q1", [json!(6.5), json!(8.0), json!("7"), json!(2)]),
        ultrafeedback_raw_row("q2", [json!(5), json!("N/A"), json!(null), json!(3)]),
    ];
    rows[1]["completions"][3]["response"] = json!("");
    let p = jsonl(d.path(), "uf.jsonl", &rows);
    let (gs, report) = load_groups(&DataConfig::for_path(&p)).unwrap();
    assert_eq!(report.files[0].shape, ShapeKind::MultiResponse);
    assert_eq!(gs[0].1.positive.text, "answer 1 to q1");
    assert_eq!(gs[0].1.strong.iter().map(|c| c.score.unwrap()).collect::<Vec<_>>(), [7.0, 6.5, 2.0]);
    // q2: two unscored and one empty response are skipped and reported; one scored response is left.
    assert_eq!(gs.len(), 1);
    assert_eq!(report.dropped_candidates["response without a score"], 2);
    assert_eq!(report.dropped_candidates["empty response"], 1);
    assert_eq!(report.dropped_rows["no negative left after score filtering"], 1);
    assert!(
        report.problems.iter().any(|m| m.contains("line 2: field `completions[3].response`: empty response")),
        "{:?}",
        report.problems
    );
    // A fine-grained rating reached by a dotted path.
    let mut cfg = DataConfig::for_path(&p);
    cfg.fields.completion_score = "annotations.helpfulness.Rating".into();
    cfg.grouping.ties = Ties::Keep;
    assert_eq!(load(&cfg)[0].strong.len(), 3);
}

#[test]
fn json_array_files_and_json_lines_named_json() {
    let d = tempfile::tempdir().unwrap();
    let arr =
        write(d.path(), "a.json", json!([{"prompt": "x", "chosen": "y", "rejected": "z"}, 5]).to_string().as_bytes());
    let mut cfg = DataConfig::for_path(&arr);
    assert!(err_of(&cfg).contains("a.json: element 1: expected a JSON object, found a number"), "{}", err_of(&cfg));
    cfg.on_bad_row = OnBadRow::Skip;
    assert_eq!(load(&cfg).len(), 1);
    let lines = write(d.path(), "l.json", b"{\"prompt\": \"x\", \"chosen\": \"y\", \"rejected\": \"z\"}\n");
    assert_eq!(load(&DataConfig::for_path(&lines)).len(), 1);
    let broken = write(d.path(), "b.json", b"[\n{\"prompt\": \"x\",\n \"chosen\": }\n]");
    assert!(
        err_of(&DataConfig::for_path(&broken)).contains("b.json: line 3: bad JSON"),
        "{}",
        err_of(&DataConfig::for_path(&broken))
    );
}

#[test]
fn malformed_rows_name_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let good = r#"{"prompt": "p", "chosen": "c", "rejected": "r"}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad JSON on line 3", format!("{good}\n{good}\n{{\"prompt\": \n").into_bytes(), "line 3: bad JSON"),
        (
            "missing field",
            format!("{good}\n{{\"prompt\": \"p\", \"chosen\": \"c\"}}\n").into_bytes(),
            "line 2: field `rejected`: missing field",
        ),
        (
            "wrong type",
            "{\"prompt\": \"p\", \"chosen\": 7, \"rejected\": \"r\"}\n".as_bytes().to_vec(),
            "line 1: field `chosen`: expected a string or a list of messages, found a number",
        ),
        (
            "empty response",
            format!("{good}\n\n{{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"  \"}}\n").into_bytes(),
            "line 3: field `rejected`: empty response",
        ),
        (
            "bad message",
            "{\"prompt\": [{\"content\": \"x\"}], \"chosen\": \"c\", \"rejected\": \"r\"}\n".to_string().into_bytes(),
            "line 1: field `prompt[0].role`: missing field",
        ),
        (
            "non-UTF-8",
            [good.as_bytes(), b"\n{\"prompt\": \"\xff\xfe\", \"chosen\": \"c\", \"rejected\": \"r\"}\n"].concat(),
            "line 2: not valid UTF-8",
        ),
        ("not an object", format!("{good}\n[1, 2]\n").into_bytes(), "line 2: expected a JSON object, found a list"),
    ];
    for (what, bytes, expected) in cases {
        let p = write(d.path(), "bad.jsonl", &bytes);
        let mut cfg = DataConfig::for_path(&p);
        let msg = err_of(&cfg);
        assert!(msg.contains(&format!("{}: {expected}", p.display())), "{what}: {msg}");
        cfg.on_bad_row = OnBadRow::Skip;
        let (gs, report) = load_groups(&cfg).unwrap();
        assert_eq!(report.rows_dropped(), 1, "{what}");
        assert_eq!(gs.len(), report.rows_read - 1, "{what}");
    }
}

#[test]
fn a_10_mb_line_is_refused_without_stopping_the_file() {
    let d = tempfile::tempdir().unwrap();
    let big = format!("{{\"prompt\": \"p\", \"chosen\": \"{}\", \"rejected\": \"r\"}}", "x".repeat(10 << 20));
    let text = format!("{big}\n{{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}}\n");
    let p = write(d.path(), "big.jsonl", text.as_bytes());
    let mut cfg = DataConfig::for_path(&p);
    let msg = err_of(&cfg);
    assert!(msg.contains("big.jsonl: line 1: line is 10485") && msg.contains("max_line_bytes"), "{msg}");
    cfg.on_bad_row = OnBadRow::Skip;
    let (gs, report) = load_groups(&cfg).unwrap();
    assert_eq!((gs.len(), report.dropped_rows["line too long"]), (1, 1));
    assert_eq!(gs[0].0.pos, epa::data::RowPos::Line(2));
}

#[test]
fn unknown_shape_and_unknown_extension_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = jsonl(d.path(), "odd.jsonl", &[json!({"question": "q", "answer": "a"})]);
    let msg = err_of(&DataConfig::for_path(&p));
    assert!(
        msg.contains("odd.jsonl: line 1: cannot tell the dataset shape from the fields [question, answer]"),
        "{msg}"
    );
    let p = write(d.path(), "data.csv", b"a,b\n");
    assert!(err_of(&DataConfig::for_path(&p)).contains("cannot tell the format"));
}

#[test]
fn config_round_trips_through_toml() {
    let cfg = DataConfig::from_toml(
        "paths = [\"a.parquet\"]\nshape = \"multi_response\"\n[fields]\ncompletion_score = \"fine-grained_score\"\n\
         [grouping]\nstrategy = \"best_vs_random\"\nmin_score_gap = 1.0\n[weak]\nk = 3\nsource = \"chosen\"\nscope = \"dataset\"\n",
    )
    .unwrap();
    assert_eq!(cfg.shape, ShapeKind::MultiResponse);
    assert_eq!(cfg.grouping.strategy, Strategy::BestVsRandom);
    assert_eq!(cfg.weak.k, 3);
    assert_eq!(cfg.truncation, Default::default());
    let back = DataConfig::from_toml(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert!(DataConfig::from_toml("[grouping]\nstrategy = \"best\"\n").is_err());
    assert!(DataConfig::from_toml("bogus = 1\n").is_err(), "unknown keys are refused");
}

// ---------- Parquet ----------

fn message_list_type() -> DataType {
    let fields =
        Fields::from(vec![Field::new("content", DataType::Utf8, true), Field::new("role", DataType::Utf8, true)]);
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
}

fn message_list(convs: &[&[(&str, &str)]]) -> ArrayRef {
    let fields =
        Fields::from(vec![Field::new("content", DataType::Utf8, true), Field::new("role", DataType::Utf8, true)]);
    let sb = StructBuilder::new(fields, vec![Box::new(StringBuilder::new()), Box::new(StringBuilder::new())]);
    let mut lb = ListBuilder::new(sb);
    for conv in convs {
        for (role, content) in *conv {
            let s = lb.values();
            s.field_builder::<StringBuilder>(0).unwrap().append_value(content);
            s.field_builder::<StringBuilder>(1).unwrap().append_value(role);
            s.append(true);
        }
        lb.append(true);
    }
    Arc::new(lb.finish())
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn ultrafeedback_binarized(path: &Path) {
    let prompts = ["Name a fruit.", "Name a colour."];
    let chosen = message_list(&[
        &[("user", prompts[0]), ("assistant", "Apple.")],
        &[("user", prompts[1]), ("assistant", "Red.")],
    ]);
    let rejected = message_list(&[
        &[("user", prompts[0]), ("assistant", "Rock.")],
        &[("user", prompts[1]), ("assistant", "Loud.")],
    ]);
    let schema = Schema::new(vec![
        Field::new("prompt", DataType::Utf8, true),
        Field::new("prompt_id", DataType::Utf8, true),
        Field::new("chosen", message_list_type(), true),
        Field::new("rejected", message_list_type(), true),
        Field::new("messages", message_list_type(), true),
        Field::new("score_chosen", DataType::Float64, true),
        Field::new("score_rejected", DataType::Float64, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(prompts.to_vec())),
            Arc::new(StringArray::from(vec!["id0", "id1"])),
            chosen.clone(),
            rejected,
            chosen,
            Arc::new(Float64Array::from(vec![8.0, 7.5])),
            Arc::new(Float64Array::from(vec![3.0, 7.5])),
        ],
    )
    .unwrap();
    write_parquet(path, &batch);
}

#[test]
fn parquet_ultrafeedback_binarized_shape() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("train_prefs.parquet");
    ultrafeedback_binarized(&p);
    let (gs, report) = load_groups(&DataConfig::for_path(&p)).unwrap();
    assert_eq!(report.files[0].shape, ShapeKind::Standard);
    assert_eq!(gs.len(), 1, "the second row is a tie (7.5 vs 7.5) and is dropped");
    assert_eq!(report.dropped_rows["no negative left after score filtering"], 1);
    let g = &gs[0].1;
    assert_eq!(g.prompt, Prompt::Text("Name a fruit.".into()));
    assert_eq!((g.positive.text.as_str(), g.positive.score), ("Apple.", Some(8.0)));
    assert_eq!((g.strong[0].text.as_str(), g.strong[0].score), ("Rock.", Some(3.0)));
    assert_eq!(gs[0].0.to_string(), format!("{}: row 0", p.display()));
    assert!(report.problems[0].contains("row 1: field `rejected`: tied with the positive"), "{:?}", report.problems);
}

#[test]
fn parquet_ultrafeedback_raw_completions() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("uf_raw.parquet");
    let fields = Fields::from(vec![
        Field::new("response", DataType::Utf8, true),
        Field::new("overall_score", DataType::Float64, true),
    ]);
    let sb = StructBuilder::new(fields.clone(), vec![Box::new(StringBuilder::new()), Box::new(Float64Builder::new())]);
    let mut lb = ListBuilder::new(sb);
    for row in
        [[("r0", 6.0), ("r1", 9.0), ("r2", 4.0), ("r3", 7.0)], [("s0", 1.0), ("s1", 2.0), ("s2", 3.0), ("s3", 8.0)]]
    {
        for (resp, score) in row {
            let s = lb.values();
            s.field_builder::<StringBuilder>(0).unwrap().append_value(resp);
            s.field_builder::<Float64Builder>(1).unwrap().append_value(score);
            s.append(true);
        }
        lb.append(true);
    }
    let schema = Schema::new(vec![
        Field::new("instruction", DataType::Utf8, true),
        Field::new("completions", DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true))), true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from(vec!["q0", "q1"])), Arc::new(lb.finish())],
    )
    .unwrap();
    write_parquet(&p, &batch);
    let (gs, report) = load_groups(&DataConfig::for_path(&p)).unwrap();
    assert_eq!(report.files[0].shape, ShapeKind::MultiResponse);
    assert_eq!(gs[0].1.positive.text, "r1");
    assert_eq!(gs[0].1.strong.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), ["r3", "r0", "r2"]);
    assert_eq!(gs[1].1.positive.text, "s3");
    assert_eq!(gs[1].1.strong.len(), 3);
}

#[test]
fn parquet_with_a_different_schema_names_file_and_column() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("other.parquet");
    let schema =
        Schema::new(vec![Field::new("question", DataType::Utf8, true), Field::new("answer", DataType::Utf8, true)]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from(vec!["q"])) as ArrayRef, Arc::new(StringArray::from(vec!["a"]))],
    )
    .unwrap();
    write_parquet(&p, &batch);
    let msg = err_of(&DataConfig::for_path(&p));
    assert!(msg.contains("other.parquet") && msg.contains("question, answer"), "{msg}");
    let mut cfg = DataConfig::for_path(&p);
    cfg.shape = ShapeKind::Standard;
    let msg = err_of(&cfg);
    assert!(
        msg.contains("other.parquet: field `prompt`: no such column (the file's columns are: question, answer)"),
        "{msg}"
    );
    // Right columns, wrong type: the row and field are named.
    let p = d.path().join("typed.parquet");
    let schema = Schema::new(vec![
        Field::new("prompt", DataType::Utf8, true),
        Field::new("chosen", DataType::Float64, true),
        Field::new("rejected", DataType::Utf8, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(vec!["p"])) as ArrayRef,
            Arc::new(Float64Array::from(vec![1.0])),
            Arc::new(StringArray::from(vec!["r"])),
        ],
    )
    .unwrap();
    write_parquet(&p, &batch);
    let msg = err_of(&DataConfig::for_path(&p));
    assert!(
        msg.contains("typed.parquet: row 0: field `chosen`: expected a string or a list of messages, found a number"),
        "{msg}"
    );
}

// ---------- random bytes ----------

/// Random and mutated bytes in every format: each read ends in Ok or Err, never a panic.
#[test]
fn random_bytes_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let valid_pq = d.path().join("valid.parquet");
    ultrafeedback_binarized(&valid_pq);
    let pq = std::fs::read(&valid_pq).unwrap();
    let good =
        br#"{"prompt": "p", "chosen": [{"role": "assistant", "content": "c"}], "rejected": "r", "score_chosen": 1}"#;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let alphabet = b"{}[]\":,\\ \n\tabcpromptchosenrejected0123456789.-eE\xff\xc3";
    let mut outcomes = [0usize; 2];
    let mut deep_parquet_errors = 0;
    for i in 0..300 {
        let len = rng.random_range(0..400);
        let bytes: Vec<u8> = match i % 4 {
            0 => (0..len).map(|_| rng.random()).collect(),
            1 => (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect(),
            2 => {
                let mut b = good.to_vec();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    b[at] = alphabet[rng.random_range(0..alphabet.len())];
                }
                b
            }
            _ => {
                // Corrupt the pages, not the footer (whose sizes would only make the decoder allocate).
                let footer = u32::from_le_bytes(pq[pq.len() - 8..pq.len() - 4].try_into().unwrap()) as usize;
                let end = pq.len() - 8 - footer;
                let mut b = pq.clone();
                for _ in 0..rng.random_range(1..20) {
                    let at = rng.random_range(4..end);
                    b[at] = rng.random();
                }
                b
            }
        };
        let names: &[&str] = if i % 4 == 3 { &["f.parquet"] } else { &["f.jsonl", "f.json", "f.parquet"] };
        for name in names {
            let p = write(d.path(), name, &bytes);
            for on_bad_row in [OnBadRow::Fail, OnBadRow::Skip] {
                let mut cfg = DataConfig::for_path(&p);
                cfg.on_bad_row = on_bad_row;
                let r = std::panic::catch_unwind(|| load_groups(&cfg).map(|(g, _)| g.len()));
                let r = r.unwrap_or_else(|_| panic!("reader panicked on case {i} ({name})"));
                if let Err(e) = &r
                    && format!("{e:#}").contains("decoding rows")
                {
                    deep_parquet_errors += 1;
                }
                outcomes[usize::from(r.is_ok())] += 1;
            }
        }
    }
    assert!(deep_parquet_errors > 0, "corrupt pages reach the page decoder and come back as errors");
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "both errors and successes occur: {outcomes:?}");
}

// ---------- inspect ----------

#[test]
fn inspect_reports_counts_drops_lengths_and_rendered_examples() {
    use epa::data::inspect::{InspectOptions, inspect_to_string};
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "mixed.jsonl",
        format!(
            "{}\n{}\n{{broken\n{}\n",
            json!({"prompt": "Describe the sea.", "chosen": "Wide and calm.", "rejected": "Dry."}),
            json!({"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": ["Rock.", "Chair."]}),
            json!({"prompt": "Hi", "chosen": "", "rejected": "x"}),
        )
        .as_bytes(),
    );
    let args = |tokenizer: Option<PathBuf>, json: bool| InspectOptions {
        files: vec![p.clone()],
        config: None,
        tokenizer,
        shape: None,
        max_length: None,
        max_prompt_length: None,
        chat_template: Some(epa::data::ChatTemplateUse::Always),
        examples: 1,
        json,
    };
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    let out = inspect_to_string(&args(Some(tok.clone()), false)).unwrap();
    assert!(out.contains("rows 4 (0 conversational) → groups 2 with 5 candidates; rows dropped 2"), "{out}");
    assert!(out.contains("dropped rows: bad JSON: 1") && out.contains("dropped rows: empty response: 1"), "{out}");
    assert!(out.contains("mixed.jsonl: line 3: bad JSON"), "{out}");
    assert!(out.contains("mixed.jsonl: line 4: field `chosen`: empty response"), "{out}");
    assert!(
        out.contains("prompt + response length (tokens), per response:")
            && out.contains("prompt length (tokens):")
            && out.contains("  n 2  min"),
        "{out}"
    );
    assert!(out.contains("<|im_start|>user\nDescribe the sea.<|im_end|>\n<|im_start|>assistant\n"), "{out}");
    assert!(out.contains("[Positive") && out.contains("Wide and calm.<|im_end|>"), "{out}");
    assert!(out.contains("prompts through the chat template: 2 of 2"), "{out}");
    // The default (TRL's rule): string prompts verbatim, and the report says so.
    let verbatim = InspectOptions { chat_template: None, ..args(Some(tok.clone()), false) };
    let out = inspect_to_string(&verbatim).unwrap();
    assert!(out.contains("prompts through the chat template: 0 of 2"), "{out}");
    assert!(out.contains("tokens\nDescribe the sea.\n") && !out.contains("<|im_start|>user"), "{out}");
    let js: serde_json::Value = serde_json::from_str(&inspect_to_string(&args(Some(tok), true)).unwrap()).unwrap();
    assert_eq!(js["groups"], 2);
    assert_eq!(js["strong_per_group"]["2"], 1);
    assert_eq!(js["length_unit"], "tokens");
    let out = inspect_to_string(&args(None, false)).unwrap();
    assert!(out.contains("prompt length (characters):") && out.contains("groups 2"), "{out}");
}

#[test]
fn a_folder_of_shards_is_read_in_name_order_and_max_rows_stops_early() {
    let d = tempfile::tempdir().unwrap();
    let row = |p: &str| json!({"prompt": p, "chosen": "c", "rejected": "r"});
    jsonl(d.path(), "train-00001.jsonl", &[row("b1"), row("b2")]);
    jsonl(d.path(), "train-00000.jsonl", &[row("a1"), row("a2")]);
    write(d.path(), "README.md", b"# not data");
    let mut cfg = DataConfig::for_path(d.path());
    let prompts = |cfg: &DataConfig| load(cfg).into_iter().map(|g| g.prompt.key()).collect::<Vec<_>>();
    assert_eq!(prompts(&cfg), ["a1", "a2", "b1", "b2"]);
    cfg.max_rows = Some(3);
    assert_eq!(prompts(&cfg), ["a1", "a2", "b1"]);
    let empty = tempfile::tempdir().unwrap();
    assert!(err_of(&DataConfig::for_path(empty.path())).contains("no .parquet, .jsonl or .json files"));
}
