//! Privacy rules (interface only until the ingest branch lands; replaced by it).

use serde::Deserialize;

use crate::error::InvalidInput;
use crate::sample::Batch;

/// What to do with one label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyAction {
    /// Remove the label.
    Drop,
    /// Replace the value with a keyed pseudonym.
    Hash,
    /// Keep it.
    Keep,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRule {
    /// The label name.
    pub label: String,
    /// The action.
    pub action: PrivacyAction,
}

/// A tenant's rules.
#[derive(Debug, Clone)]
pub struct Privacy {
    rules: Vec<PrivacyRule>,
}

impl Privacy {
    /// Builds the rules.
    pub fn new(rules: &[PrivacyRule], _key: [u8; 32]) -> Result<Self, InvalidInput> {
        Ok(Self {
            rules: rules.to_vec(),
        })
    }

    /// Applies the rules.
    pub fn apply(&self, batch: Batch) -> Batch {
        let _ = &self.rules;
        batch
    }
}
