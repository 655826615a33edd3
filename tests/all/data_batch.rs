//! Tokenised group store (against transformers' ids), truncation rules, the weak-negative sampler's
//! properties and resumable batching.

use crate::common::fixture;
use std::collections::HashSet;

use epa::data::{
    BatchConfig, Batcher, BatcherState, Candidate, ChatTemplateUse, DataConfig, GroupStore, OverLength,
    PreferenceGroup, Prompt, PromptTruncation, Role, RowLoc, RowPos, TokenCandidate, TokenGroup, TruncationConfig,
    WeakConfig, WeakScope, WeakSource,
};
use epa::text::{Message, TextCodec};
use serde_json::{Value, json};

/// A store built from token ids keeps them, positive first, with roles, scores and shared prompt keys.
#[test]
fn store_from_tokens_keeps_ids_roles_scores_and_prompt_keys() {
    let cand = |ids: &[u32], score| TokenCandidate { ids: ids.to_vec(), score };
    let store = GroupStore::from_tokens([
        TokenGroup { prompt_ids: vec![1, 2], positive: cand(&[3], Some(1.0)), strong: vec![cand(&[4, 5], None)] },
        TokenGroup { prompt_ids: vec![6], positive: cand(&[7], None), strong: vec![cand(&[8], Some(0.0)); 2] },
        TokenGroup { prompt_ids: vec![1, 2], positive: cand(&[9], None), strong: vec![cand(&[10], None)] },
    ]);
    assert_eq!((store.len(), store.num_candidates(), store.max_length()), (3, 7, None));
    let g = store.group(1);
    assert_eq!((g.prompt_ids(), g.num_strong(), g.candidate_indices()), (&[6][..], 2, 2..5));
    let got: Vec<_> = g.candidates().map(|c| (c.ids().to_vec(), c.role(), c.score(), c.group())).collect();
    let strong = (vec![8], Role::Strong, Some(0.0), 1);
    assert_eq!(got, [(vec![7], Role::Positive, None, 1), strong.clone(), strong]);
    assert_eq!(store.candidate(1).ids(), &[4, 5]);
    let keys: Vec<u32> = store.groups().map(|g| g.prompt_key()).collect();
    assert_eq!(keys, [0, 1, 0]);
    assert_eq!(store.group(2).source(), RowLoc { file: "<memory>".into(), pos: RowPos::Element(2) });
    assert!(GroupStore::from_tokens([]).is_empty());
}

/// `trunc` with string prompts through the chat template (these tests' expected ids are templated).
fn cfg(trunc: &TruncationConfig) -> DataConfig {
    DataConfig { truncation: trunc.clone(), chat_template: ChatTemplateUse::Always, ..Default::default() }
}

fn codec() -> TextCodec {
    TextCodec::from_hf_folder(&fixture("tiny-llama")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The golden groups as a JSONL file (prompt, chosen, rejected), built into a store: every prompt ++
/// response must equal transformers' input_ids, and the weak pairs (answers to the next prompt scored under
/// this one) too.
#[test]
fn store_ids_match_transformers_golden_sequences() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny-llama/golden.json")).unwrap()).unwrap();
    let seqs = golden["sequences"].as_array().unwrap();
    let user_of = |s: &Value| {
        let t = s["text"].as_str().unwrap();
        t.strip_prefix("<|im_start|>user\n").unwrap().split("<|im_end|>").next().unwrap().to_owned()
    };
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("golden.jsonl");
    let mut lines = String::new();
    for g in golden["groups"].as_array().unwrap() {
        let pos = &seqs[g["positive"].as_u64().unwrap() as usize];
        let neg = &seqs[g["strong"][0].as_u64().unwrap() as usize];
        lines += &format!(
            "{}\n",
            json!({"prompt": [{"role": "user", "content": user_of(pos)}], "chosen": pos["response"], "rejected": neg["response"]})
        );
    }
    std::fs::write(&path, lines).unwrap();
    let codec = codec();
    let (store, report) = GroupStore::build(&DataConfig::for_path(&path), &codec).unwrap();
    assert_eq!((store.len(), report.groups, report.candidates), (3, 3, 6));
    for (gi, g) in golden["groups"].as_array().unwrap().iter().enumerate() {
        let group = store.group(gi);
        let whole = |c: usize| [group.prompt_ids(), store.candidate(c).ids()].concat();
        let pos = group.positive();
        assert_eq!(pos.role(), Role::Positive);
        assert_eq!(whole(pos.index()), ids(&seqs[g["positive"].as_u64().unwrap() as usize]["input_ids"]));
        let strong: Vec<_> = group.strong().collect();
        assert_eq!(strong.len(), 1);
        assert_eq!(whole(strong[0].index()), ids(&seqs[g["strong"][0].as_u64().unwrap() as usize]["input_ids"]));
        // Weak: the next group's responses, scored under this prompt.
        let next = store.group((gi + 1) % 3);
        for (w, c) in g["weak"].as_array().unwrap().iter().zip(next.candidates()) {
            assert_eq!(whole(c.index()), ids(&seqs[w.as_u64().unwrap() as usize]["input_ids"]));
        }
    }
}

fn group(prompt: &str, pos: &str, negs: &[&str]) -> PreferenceGroup {
    PreferenceGroup {
        prompt: Prompt::Text(prompt.into()),
        positive: Candidate { text: pos.into(), score: Some(1.0) },
        strong: negs.iter().map(|n| Candidate { text: (*n).into(), score: Some(0.0) }).collect(),
    }
}

#[test]
fn truncation_keeps_prompt_ends_and_drops_what_cannot_fit() {
    let codec = codec();
    let long_prompt = "word ".repeat(40);
    let groups = vec![
        group(&long_prompt, "short answer", &["another short answer"]),
        group("hi", "fine", &["also fine", &"long ".repeat(60)]),
        group("hi again", &"long ".repeat(60), &["fine"]),
        group("one more", "fine", &[&"long ".repeat(60)]),
    ];
    let full = codec.encode_prompt(&[Message::user(long_prompt.clone())]).unwrap().ids;
    assert!(full.len() > 30);
    let trunc = TruncationConfig {
        max_length: Some(50),
        over_length: OverLength::Drop,
        max_prompt_length: Some(20),
        ..Default::default()
    };
    let (store, report) = GroupStore::from_groups(&groups, &cfg(&trunc), &codec);
    assert_eq!(store.len(), 2);
    assert_eq!(report.prompts_truncated, 1);
    // keep_end: BOS (<|im_start|>) + the last 19 tokens.
    let p = store.group(0).prompt_ids();
    assert_eq!(p.len(), 20);
    assert_eq!(p[0], 1);
    assert_eq!(&p[1..], &full[full.len() - 19..]);
    assert_eq!(store.group(1).num_strong(), 1, "the over-long negative is dropped, the group kept");
    // group 1's long negative, and group 3's (whose row then has no strong negative left).
    assert_eq!(report.dropped_candidates["prompt + response longer than max_length"], 2);
    assert_eq!(report.dropped_rows["positive longer than max_length"], 1);
    assert_eq!(report.dropped_rows["no strong negative fits max_length"], 1);
    for g in store.groups() {
        for c in g.candidates() {
            assert!(g.prompt_ids().len() + c.ids().len() <= 50);
            assert_eq!(*c.ids().last().unwrap(), 201, "responses are never cut: they end with <|im_end|>\\n");
        }
    }
    let keep_start = TruncationConfig { prompt: PromptTruncation::KeepStart, ..trunc.clone() };
    let (store, _) = GroupStore::from_groups(&groups[..1], &cfg(&keep_start), &codec);
    assert_eq!(store.group(0).prompt_ids(), &full[..20]);
    let drop = TruncationConfig { prompt: PromptTruncation::Drop, ..trunc };
    let (store, report) = GroupStore::from_groups(&groups[..1], &cfg(&drop), &codec);
    assert_eq!((store.len(), report.dropped_rows["prompt longer than max_prompt_length"]), (0, 1));
}

/// Many groups, some sharing a prompt text (as datasets with several pairs per prompt do).
fn corpus(n: usize) -> (GroupStore, Vec<String>) {
    let mut groups = Vec::new();
    let mut texts = Vec::new();
    for i in 0..n {
        let topic = i % (n * 2 / 3); // ~1/3 of the prompts repeat another's text
        let prompt = format!("Tell me about topic {topic}.");
        let negs: Vec<String> = (0..1 + i % 3).map(|j| format!("Wrong {j} about {i}.")).collect();
        let negs: Vec<&str> = negs.iter().map(String::as_str).collect();
        groups.push(group(&prompt, &format!("Right about {i}{}", " and more".repeat(i % 7)), &negs));
        texts.push(prompt);
    }
    let (store, report) = GroupStore::from_groups(&groups, &cfg(&TruncationConfig::default()), &codec());
    assert_eq!(store.len(), n, "{}", report.summary());
    (store, texts)
}

fn check_weak(store: &GroupStore, texts: &[String], weak: &WeakConfig, p: usize) {
    let batch = BatchConfig { prompts_per_batch: p, ..Default::default() };
    let mut b = Batcher::with(store, &batch, weak, 3).unwrap();
    let mut exact = 0;
    for _ in 0..3 * b.batches_per_epoch() {
        let batch = b.next_batch();
        let in_batch: HashSet<usize> = batch.groups.iter().map(|g| g.group).collect();
        for bg in &batch.groups {
            let my_text = &texts[bg.group];
            let distinct: HashSet<_> = bg.weak.iter().collect();
            assert_eq!(distinct.len(), bg.weak.len(), "no repeats");
            for &c in &bg.weak {
                let cand = store.candidate(c);
                assert_ne!(&texts[cand.group()], my_text, "never a response to the same prompt text");
                match weak.source {
                    WeakSource::Chosen => assert_eq!(cand.role(), Role::Positive),
                    WeakSource::Rejected => assert_eq!(cand.role(), Role::Strong),
                    WeakSource::Both => {}
                }
                if weak.scope == WeakScope::InBatch {
                    assert!(in_batch.contains(&cand.group()), "in-batch weak negatives come from the batch");
                }
            }
            // Exact count whenever enough eligible responses exist.
            let pool: Vec<usize> = match weak.scope {
                WeakScope::InBatch => in_batch.iter().flat_map(|&g| store.group(g).candidate_indices()).collect(),
                WeakScope::Dataset => (0..store.num_candidates()).collect(),
            };
            let eligible = pool
                .iter()
                .filter(|&&c| {
                    let cand = store.candidate(c);
                    &texts[cand.group()] != my_text
                        && match weak.source {
                            WeakSource::Chosen => cand.role() == Role::Positive,
                            WeakSource::Rejected => cand.role() == Role::Strong,
                            WeakSource::Both => true,
                        }
                })
                .count();
            assert_eq!(bg.weak.len(), weak.k.min(eligible));
            exact += usize::from(bg.weak.len() == weak.k);
        }
    }
    if weak.k <= 3 {
        assert!(exact > 0, "the exact-count branch is exercised");
    }
}

#[test]
fn weak_negatives_never_same_prompt_exact_count_every_source_and_scope() {
    let (store, texts) = corpus(60);
    for scope in [WeakScope::InBatch, WeakScope::Dataset] {
        for source in [WeakSource::Chosen, WeakSource::Rejected, WeakSource::Both] {
            for k in [1, 3, 40] {
                check_weak(&store, &texts, &WeakConfig { k, source, scope }, 4);
            }
        }
    }
}

#[test]
fn weak_negatives_respect_max_length_under_the_new_prompt() {
    let codec = codec();
    let groups = vec![
        group(&"long prompt ".repeat(12), "a", &["b"]),
        group("short", &"very long answer ".repeat(8), &["c"]),
        group("other", "d", &["e"]),
    ];
    // max_length: just enough for every group's own pairs, too little for group 0's prompt + group 1's answer.
    let len = |g: &PreferenceGroup, c: &Candidate| {
        codec.encode_pair(&g.prompt.messages(), &c.text).unwrap().input_ids().len()
    };
    let own = groups.iter().flat_map(|g| std::iter::once(&g.positive).chain(&g.strong).map(move |c| (g, c)));
    let max_length = own.map(|(g, c)| len(g, c)).max().unwrap();
    assert!(len(&groups[0], &groups[1].positive) > max_length);
    let trunc = TruncationConfig { max_length: Some(max_length), over_length: OverLength::Drop, ..Default::default() };
    let (store, report) = GroupStore::from_groups(&groups, &cfg(&trunc), &codec);
    assert_eq!(store.len(), 3, "{}", report.summary());
    let weak = WeakConfig { k: 10, source: WeakSource::Both, scope: WeakScope::Dataset };
    let batch = BatchConfig { prompts_per_batch: 3, ..Default::default() };
    let mut b = Batcher::with(&store, &batch, &weak, 0).unwrap();
    for _ in 0..5 {
        for bg in b.next_batch().groups {
            let plen = store.group(bg.group).prompt_ids().len();
            for &c in &bg.weak {
                assert!(plen + store.candidate(c).ids().len() <= max_length);
            }
            if bg.group == 0 {
                assert_eq!(bg.weak.len(), 3, "c, d, e fit under prompt 0; group 1's long answer does not");
            }
        }
    }
}

fn stream(b: &mut Batcher, n: usize) -> Vec<epa::data::Batch> {
    (0..n).map(|_| b.next_batch()).collect()
}

#[test]
fn batches_cover_each_group_once_per_epoch_and_are_deterministic() {
    let (store, _) = corpus(50);
    let cfg = DataConfig { seed: 11, ..Default::default() };
    let mut b = Batcher::new(&store, &cfg).unwrap();
    let per_epoch = b.batches_per_epoch();
    assert_eq!(per_epoch, 50usize.div_ceil(cfg.batch.prompts_per_batch));
    let epoch0 = stream(&mut b, per_epoch);
    let mut seen: Vec<usize> = epoch0.iter().flat_map(|x| x.groups.iter().map(|g| g.group)).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert!(epoch0.iter().all(|x| x.epoch == 0));
    let epoch1 = stream(&mut b, per_epoch);
    assert!(epoch1.iter().all(|x| x.epoch == 1));
    assert_ne!(epoch0, epoch1, "each epoch is reshuffled");
    let mut again = Batcher::new(&store, &cfg).unwrap();
    assert_eq!(stream(&mut again, per_epoch), epoch0, "same seed, same stream");
    let mut other = Batcher::new(&store, &DataConfig { seed: 12, ..cfg.clone() }).unwrap();
    assert_ne!(stream(&mut other, per_epoch), epoch0);
    // Items: positive, strong negatives, then weak negatives, per group.
    let items = epoch0[0].items(&store);
    let g0 = epoch0[0].groups[0].group;
    assert_eq!(items[0].role, Role::Positive);
    assert_eq!(items[0].group, g0);
    let n0 = 1 + store.group(g0).num_strong() + epoch0[0].groups[0].weak.len();
    assert!(items[..n0].iter().all(|i| i.group == g0));
    assert_eq!(items[n0 - 1].role, if epoch0[0].groups[0].weak.is_empty() { Role::Strong } else { Role::Weak });
}

#[test]
fn resuming_from_saved_state_replays_the_same_stream_across_epochs() {
    let (store, _) = corpus(30);
    let cfg = DataConfig { batch: BatchConfig { prompts_per_batch: 4, ..Default::default() }, ..Default::default() };
    let mut a = Batcher::new(&store, &cfg).unwrap();
    let per_epoch = a.batches_per_epoch();
    let _ = stream(&mut a, per_epoch - 2);
    let saved = serde_json::to_string(&a.state()).unwrap();
    let rest = stream(&mut a, 5); // crosses into epoch 1
    assert!(rest.iter().any(|b| b.epoch == 1));
    let mut b = Batcher::new(&store, &cfg).unwrap();
    b.restore(serde_json::from_str::<BatcherState>(&saved).unwrap()).unwrap();
    assert_eq!(stream(&mut b, 5), rest);
    let wrong = BatcherState { seed: 999, ..a.state() };
    assert!(b.restore(wrong).is_err());
}

#[test]
fn length_bucketing_cuts_padding() {
    let (store, _) = corpus(200);
    let padding = |bucket_batches: usize| {
        let cfg = BatchConfig { prompts_per_batch: 8, bucket_batches, ..Default::default() };
        let weak = WeakConfig { k: 0, ..Default::default() };
        let mut b = Batcher::with(&store, &cfg, &weak, 5).unwrap();
        let mut pad = 0usize;
        for _ in 0..b.batches_per_epoch() {
            let lens: Vec<usize> = b.next_batch().groups.iter().map(|g| store.group(g.group).max_len()).collect();
            let max = *lens.iter().max().unwrap();
            pad += lens.iter().map(|l| max - l).sum::<usize>();
        }
        pad
    };
    let (plain, bucketed) = (padding(1), padding(50));
    assert!(bucketed * 2 < plain, "bucketed {bucketed} vs plain {plain}");
}

#[test]
fn drop_last_and_empty_store() {
    let (store, _) = corpus(10);
    let batch = BatchConfig { prompts_per_batch: 4, drop_last: true, ..Default::default() };
    let mut b = Batcher::with(&store, &batch, &WeakConfig::default(), 0).unwrap();
    assert_eq!(b.batches_per_epoch(), 2);
    assert!(stream(&mut b, 6).iter().all(|x| x.groups.len() == 4));
    let empty = GroupStore::default();
    assert!(Batcher::with(&empty, &BatchConfig::default(), &WeakConfig::default(), 0).is_err());
}
