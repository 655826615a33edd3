//! The loss configuration: a weighted list of terms, each selected by name with its
//! hyper-parameters (like TRL's `loss_type` list + `loss_weights`), and its evaluation.
//!
//! ```toml
//! [[terms]]
//! name = "epa"          # one of LOSS_NAMES, or an alias (both from the registry below)
//! beta = 0.1
//! w = 1.0
//!
//! [[terms]]
//! name = "sft"
//! weight = 0.05
//! ```

use anyhow::{Context, Result, ensure};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::LossOutput;
use super::batch::{PromptLosses, ScoreBatch};
use super::metrics::{Metrics, RewardKind, batch_metrics};
use super::term::Loss;

/// The registry of loss terms: one line per term, `Variant(file::Params) = "name",` with optional
/// doc comment and serde attributes (aliases). It defines [`LossTerm`] (the `name`-tagged enum read
/// from `[[terms]]`), [`LOSS_NAMES`], [`LossTerm::name`] and [`LossTerm::as_loss`]; see
/// [`Loss`] for how to add a term.
macro_rules! loss_registry {
    ($($(#[$attr:meta])* $variant:ident($file:ident::$params:ident) = $name:tt,)*) => {
        /// One term of the loss, tagged by `name`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(tag = "name")]
        pub enum LossTerm {
            $($(#[$attr])* #[serde(rename = $name)] $variant(super::$file::$params),)*
        }

        /// All accepted term names (aliases excluded).
        pub const LOSS_NAMES: &[&str] = &[$($name),*];

        impl LossTerm {
            /// The term's name as `name = ...` spells it (an alias gives the canonical name).
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            /// The term's parameters, as the [`Loss`] they define.
            pub fn as_loss(&self) -> &dyn Loss {
                match self {
                    $(Self::$variant(p) => p,)*
                }
            }

            /// The term's parameters, mutable, as the [`Loss`] they define.
            pub fn as_loss_mut(&mut self) -> &mut dyn Loss {
                match self {
                    $(Self::$variant(p) => p,)*
                }
            }
        }
    };
}

loss_registry! {
    /// EPA: the positive against strong and weak negatives in one logsumexp, with w and λ weights.
    Epa(epa::EpaParams) = "epa",
    /// DPO (sigmoid); with `label_smoothing` > 0 it is cDPO.
    #[serde(alias = "sigmoid", alias = "cdpo")]
    Dpo(dpo::DpoParams) = "dpo",
    /// Robust DPO (Chowdhury et al. 2024): unbiased under label flips with probability ε.
    Robust(dpo::RobustParams) = "robust",
    /// IPO: squared distance of the log-ratio margin to 1/(2β).
    Ipo(dpo::IpoParams) = "ipo",
    /// Hinge (SLiC): max(0, 1 − βΔ) on the log-ratio margin Δ.
    #[serde(alias = "slic")]
    Hinge(dpo::HingeParams) = "hinge",
    /// SimPO: reference-free, on per-token average log-probs, with a target margin γ.
    Simpo(simpo::SimpoParams) = "simpo",
    /// Pairwise NCA (TRL's `nca_pair`): a sigmoid per candidate instead of a shared softmax.
    NcaPair(nca::NcaPairParams) = "nca_pair",
    /// K-way NCA over the positive and negatives, with soft (true-score) or one-hot targets.
    Nca(nca::NcaParams) = "nca",
    /// InfoNCA: K-way softmax cross-entropy against targets from the true scores (or one-hot).
    Infonca(infonca::InfoNcaParams) = "infonca",
    /// Plackett–Luce likelihood of the candidates' ranking by their true scores.
    PlackettLuce(plackett_luce::PlackettLuceParams) = "plackett_luce",
    /// NLL of the positive (an SFT / RPO-style regulariser); reference-free.
    Sft(sft::SftParams) = "sft",
}

impl LossTerm {
    /// This term with default hyper-parameters, by name (aliases accepted).
    pub fn from_name(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::json!({ "name": name }))
            .map_err(|_| anyhow::anyhow!("unknown loss name '{name}'; expected one of {}", LOSS_NAMES.join(", ")))
    }

    /// Weight of the term in the total loss.
    pub fn weight(&self) -> f64 {
        self.as_loss().weight()
    }

    /// Sets the weight of the term in the total loss.
    pub fn set_weight(&mut self, weight: f64) {
        self.as_loss_mut().set_weight(weight)
    }

    /// β of the term (None for `sft`).
    pub fn beta(&self) -> Option<f64> {
        self.as_loss().beta()
    }

    /// The weight is finite and ≥ 0, and the term's own hyper-parameters are in range.
    pub fn validate(&self) -> Result<()> {
        let w = self.weight();
        ensure!(w.is_finite() && w >= 0.0, "weight must be finite and ≥ 0, got {w}");
        self.as_loss().validate()
    }

    /// The term's loss per prompt.
    pub fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        self.as_loss().per_prompt(batch)
    }

    /// Reference-free terms (SimPO, SFT) never read `ref_logps`.
    pub fn needs_reference(&self) -> bool {
        self.as_loss().needs_reference()
    }

    /// Terms that read `true_scores` (soft labels, rankings).
    pub fn needs_true_scores(&self) -> bool {
        self.as_loss().needs_true_scores()
    }

    /// Terms that read weak-negative columns.
    pub fn uses_weak(&self) -> bool {
        self.as_loss().uses_weak()
    }
}

/// `x` must be finite and > 0.
pub(crate) fn check_positive(name: &str, x: f64) -> Result<()> {
    ensure!(x.is_finite() && x > 0.0, "{name} must be finite and > 0, got {x}");
    Ok(())
}

/// A configured loss: the weighted sum of its terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// The terms; the total loss is Σ weight × (mean over prompts of the term).
    pub terms: Vec<LossTerm>,
    /// β of the `rewards/*` metrics; default: the first term's β (0.1 if none has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_beta: Option<f64>,
}

impl Default for LossConfig {
    /// EPA with β = 0.1, w = 1, all negatives.
    fn default() -> Self {
        Self { terms: vec![LossTerm::Epa(Default::default())], metrics_beta: None }
    }
}

impl LossConfig {
    /// TRL style: term names with default hyper-parameters and optional weights (default 1).
    pub fn from_names(names: &[&str], weights: Option<&[f64]>) -> Result<Self> {
        if let Some(w) = weights {
            ensure!(w.len() == names.len(), "{} loss weights for {} loss names", w.len(), names.len());
        }
        let mut terms = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let mut term = LossTerm::from_name(name)?;
            if let Some(w) = weights {
                term.set_weight(w[i]);
            }
            terms.push(term);
        }
        let cfg = Self { terms, metrics_beta: None };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates a TOML document with a `[[terms]]` list. A term that does not
    /// parse is named by index, `name` and the line of its `[[terms]]` header.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let cfg: Self = match toml::from_str(text) {
            Ok(cfg) => cfg,
            Err(e) => {
                let err = locate_term_error(text).unwrap_or_else(|| anyhow::anyhow!(e));
                return Err(err.context("invalid loss configuration"));
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every value in range; errors name the term (index and name) and the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.terms.is_empty(), "loss configuration has no terms (give at least one [[terms]] with a name)");
        for (i, term) in self.terms.iter().enumerate() {
            term.validate().with_context(|| format!("loss term #{} ('{}')", i + 1, term.name()))?;
        }
        if let Some(b) = self.metrics_beta {
            check_positive("metrics_beta", b)?;
        }
        Ok(())
    }

    /// Whether some term needs `ref_logps` (else the reference model need not run).
    pub fn needs_reference(&self) -> bool {
        self.terms.iter().any(LossTerm::needs_reference)
    }

    /// Whether some term needs `true_scores`.
    pub fn needs_true_scores(&self) -> bool {
        self.terms.iter().any(LossTerm::needs_true_scores)
    }

    /// Whether some term reads weak negatives (else the data loader need not build them).
    pub fn uses_weak(&self) -> bool {
        self.terms.iter().any(LossTerm::uses_weak)
    }

    /// Metric label of each term: its name, suffixed `#2`, `#3`… when repeated.
    pub fn labels(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        self.terms
            .iter()
            .map(|t| {
                let n = seen.entry(t.name()).or_default();
                *n += 1;
                if *n == 1 { t.name().to_string() } else { format!("{}#{n}", t.name()) }
            })
            .collect()
    }

    fn reward_kind(&self, batch: &ScoreBatch) -> RewardKind {
        let first = self.terms.iter().find_map(|t| t.beta().map(|b| (b, t.needs_reference())));
        let beta = self.metrics_beta.or(first.map(|f| f.0)).unwrap_or(0.1);
        match (first, &batch.ref_logps) {
            (Some((_, true)), Some(_)) | (None, Some(_)) => RewardKind::LogRatio { beta },
            _ => RewardKind::AvgLogp { beta },
        }
    }

    /// The weighted loss (`[1]`, differentiable w.r.t. `policy_logps`) and its metrics.
    ///
    /// Prompts a term cannot use (masked positive, no real negative) are skipped by that term;
    /// a batch no term can use gives a zero loss (still attached to the graph) and
    /// `prompts/skipped = 1`. Non-finite scores give a non-finite loss, not an error: the caller
    /// decides (the trainer's `optim.on_non_finite`).
    pub fn compute(&self, batch: &ScoreBatch) -> Result<LossOutput> {
        self.validate()?;
        batch.check()?;
        let n = batch.dims().0;
        let mut metrics = Metrics::default();
        // Keeps the output attached to policy_logps even when every prompt is skipped.
        let mut loss: Tensor<1> = batch.policy().sum().mul_scalar(0.0);
        let mut used: Option<Tensor<1>> = None;
        for (term, label) in self.terms.iter().zip(self.labels()) {
            let ctx = || format!("loss term '{label}'");
            let pp = term.per_prompt(batch).with_context(ctx)?;
            let sum = scalar(pp.values.clone().sum())?;
            let count = scalar(pp.valid.clone().sum())?;
            metrics.add_loss_term(&label, term.weight(), sum, count);
            loss = loss + pp.mean().mul_scalar(term.weight());
            used = Some(match used {
                None => pp.valid,
                Some(u) => u.max_pair(pp.valid),
            });
        }
        let used = used.map(|u| scalar(u.sum())).transpose()?.unwrap_or(0.0);
        metrics.add("prompts/skipped", n as f64 - used, n as f64);
        batch_metrics(&mut metrics, batch, self.reward_kind(batch))?;
        Ok(LossOutput { loss, metrics })
    }
}

/// Serde reports errors inside an internally tagged term at the start of the whole `terms`
/// array; re-parse term by term to say which one is wrong.
fn locate_term_error(text: &str) -> Option<anyhow::Error> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let terms = table.get("terms")?.as_array()?;
    let headers: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with("[[terms]]")).map(|(i, _)| i + 1).collect();
    terms.iter().enumerate().find_map(|(i, term)| {
        let err = term.clone().try_into::<LossTerm>().err()?;
        let name = term.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let line = headers.get(i).map(|l| format!(", [[terms]] at line {l}")).unwrap_or_default();
        Some(anyhow::anyhow!("loss term #{} (name = '{name}'{line}): {err}", i + 1))
    })
}

/// Host value of a one-element tensor.
fn scalar(t: Tensor<1>) -> Result<f64> {
    let v = t.into_data().try_into_vec_as::<f64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    v.first().copied().context("empty tensor")
}
