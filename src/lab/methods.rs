//! The methods the lab compares, and which candidates each one's score matrix holds.

use serde::Serialize;

use super::data::PrefData;
use super::loss_api::Role;

/// A training objective of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum MethodKind {
    /// Bradley-Terry: one row per pair the round's ranking implies (k(k−1)/2 rows; the
    /// better-ranked answer is the row's positive). All pairs, not just best-vs-rest, so that a
    /// response that never wins still has comparisons it won and the BT MLE on the compared
    /// responses is finite (with best-vs-rest it often is not, and DPO never converges).
    Dpo,
    /// IPO on the same pairs as DPO.
    Ipo,
    /// Plackett-Luce over each round's full sampled ranking.
    PlackettLuce,
    /// InfoNCA with soft labels from rank scores (k−1−rank), not from r* (that would leak the truth).
    Infonca,
    /// EPA with the round's strong negatives only.
    EpaStrong,
    /// EPA with n weak negatives only.
    EpaWeak,
    /// EPA with the strong negatives and n weak negatives.
    Epa,
}

impl MethodKind {
    /// Every method, in report order (the default of `--methods`).
    pub const ALL: [MethodKind; 7] = [
        MethodKind::Dpo,
        MethodKind::Ipo,
        MethodKind::PlackettLuce,
        MethodKind::Infonca,
        MethodKind::EpaStrong,
        MethodKind::EpaWeak,
        MethodKind::Epa,
    ];
}

/// A method and its number of weak negatives (0 unless it uses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Method {
    /// Which loss: DPO, IPO, Plackett-Luce, InfoNCA or an EPA variant.
    pub kind: MethodKind,
    /// Weak negatives per row (0 for methods without them).
    pub n_weak: usize,
}

impl Method {
    /// A method; `n_weak` is kept only for `EpaWeak` and `Epa` (0 otherwise).
    pub fn new(kind: MethodKind, n_weak: usize) -> Method {
        let uses = matches!(kind, MethodKind::EpaWeak | MethodKind::Epa);
        Method { kind, n_weak: if uses { n_weak } else { 0 } }
    }

    /// Stable name used in results.json, the report and plots.
    pub fn label(&self) -> String {
        match self.kind {
            MethodKind::Dpo => "dpo".into(),
            MethodKind::Ipo => "ipo".into(),
            MethodKind::PlackettLuce => "plackett_luce".into(),
            MethodKind::Infonca => "infonca".into(),
            MethodKind::EpaStrong => "epa_strong".into(),
            MethodKind::EpaWeak => format!("epa_weak{}", self.n_weak),
            MethodKind::Epa => format!("epa_strong+weak{}", self.n_weak),
        }
    }
}

/// One row of a score matrix: a prompt and its candidate ids.
#[derive(Clone, Debug)]
pub struct Row {
    /// The prompt x (index into the world).
    pub prompt: usize,
    /// Candidate response ids, one per column, in the order of [`ScoreRows::roles`].
    pub ids: Vec<usize>,
    /// 1 = real candidate, 0 = padding (weak pool too small).
    pub mask: Vec<f32>,
    /// Ordinal scores (higher = better) for InfoNCA; 0 elsewhere.
    pub scores: Vec<f32>,
}

/// The rows and column roles a method trains on.
#[derive(Clone, Debug)]
pub struct ScoreRows {
    /// Role of each column (positive, strong or weak negative), shared by every row.
    pub roles: Vec<Role>,
    /// The rows, over all prompts.
    pub rows: Vec<Row>,
}

/// Lays the preference data out as the score-matrix rows of `method`.
pub fn layout(method: &Method, data: &PrefData) -> ScoreRows {
    let k = data.rounds.first().map_or(2, |r| r.ranked.len());
    let mut rows = Vec::new();
    let roles: Vec<Role> = match method.kind {
        MethodKind::Dpo | MethodKind::Ipo => {
            for r in &data.rounds {
                for (i, &better) in r.ranked.iter().enumerate() {
                    for &worse in &r.ranked[i + 1..] {
                        rows.push(Row {
                            prompt: r.prompt,
                            ids: vec![better, worse],
                            mask: vec![1.0; 2],
                            scores: vec![1.0, 0.0],
                        });
                    }
                }
            }
            vec![Role::Positive, Role::Strong]
        }
        MethodKind::PlackettLuce | MethodKind::Infonca | MethodKind::EpaStrong => {
            for r in &data.rounds {
                let scores = (0..k).map(|i| (k - 1 - i) as f32).collect();
                rows.push(Row { prompt: r.prompt, ids: r.ranked.clone(), mask: vec![1.0; k], scores });
            }
            std::iter::once(Role::Positive).chain(std::iter::repeat_n(Role::Strong, k - 1)).collect()
        }
        MethodKind::EpaWeak | MethodKind::Epa => {
            let strong = if method.kind == MethodKind::Epa { k - 1 } else { 0 };
            let n = method.n_weak;
            for r in &data.rounds {
                let mut ids = r.ranked[..1 + strong].to_vec();
                let mut mask = vec![1.0; 1 + strong];
                for j in 0..n {
                    match r.weak.get(j) {
                        Some(&y) => {
                            ids.push(y);
                            mask.push(1.0);
                        }
                        None => {
                            ids.push(r.ranked[0]);
                            mask.push(0.0);
                        }
                    }
                }
                let scores = vec![0.0; ids.len()];
                rows.push(Row { prompt: r.prompt, ids, mask, scores });
            }
            std::iter::once(Role::Positive)
                .chain(std::iter::repeat_n(Role::Strong, strong))
                .chain(std::iter::repeat_n(Role::Weak, n))
                .collect()
        }
    };
    ScoreRows { roles, rows }
}
