//! Ranking metrics over all items: HR@K, NDCG@K and MRR.
//!
//! For one user the candidates are every item 1..=N except those in the
//! user's history (the held-out target itself always stays a candidate);
//! padding (column 0) is never ranked. The target's rank is the number of
//! candidates scoring strictly higher than it (0 = top).

use serde::{Deserialize, Serialize};

/// Rank of `target` among the candidates; `scores` has one entry per item
/// table row (index 0 = padding). Returns `None` when the target's score is
/// not finite (a broken model, never a rank).
pub fn rank_of_target(scores: &[f32], target: u32, history: &[u32]) -> Option<usize> {
    let t = target as usize;
    let target_score = scores[t];
    if !target_score.is_finite() {
        return None;
    }
    let above = |j: usize| j != 0 && j != t && scores[j] > target_score;
    let mut rank = (1..scores.len()).filter(|&j| above(j)).count();
    // Seen items scoring higher would have been counted: take them out once each.
    let mut seen: Vec<u32> = history.to_vec();
    seen.sort_unstable();
    seen.dedup();
    rank -= seen.iter().filter(|&&j| above(j as usize)).count();
    Some(rank)
}

/// Accumulates ranks into HR@K, NDCG@K and MRR.
#[derive(Clone, Debug)]
pub struct RankingAccumulator {
    ks: Vec<usize>,
    hits: Vec<f64>,
    ndcg: Vec<f64>,
    reciprocal_rank: f64,
    users: usize,
}

impl RankingAccumulator {
    /// An empty accumulator for the cut-offs `ks`.
    pub fn new(ks: &[usize]) -> Self {
        RankingAccumulator {
            ks: ks.to_vec(),
            hits: vec![0.0; ks.len()],
            ndcg: vec![0.0; ks.len()],
            reciprocal_rank: 0.0,
            users: 0,
        }
    }

    /// Adds one user's target rank.
    pub fn add(&mut self, rank: usize) {
        for (i, &k) in self.ks.iter().enumerate() {
            if rank < k {
                self.hits[i] += 1.0;
                self.ndcg[i] += 1.0 / ((rank + 2) as f64).log2();
            }
        }
        self.reciprocal_rank += 1.0 / (rank + 1) as f64;
        self.users += 1;
    }

    /// The means over the users added.
    pub fn finish(&self) -> RankingMetrics {
        let n = self.users.max(1) as f64;
        RankingMetrics {
            users: self.users,
            at: self
                .ks
                .iter()
                .enumerate()
                .map(|(i, &k)| MetricsAtK {
                    k,
                    hr: self.hits[i] / n,
                    ndcg: self.ndcg[i] / n,
                })
                .collect(),
            mrr: self.reciprocal_rank / n,
        }
    }
}

/// HR and NDCG at one cut-off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsAtK {
    /// The cut-off.
    pub k: usize,
    /// Hit rate: share of users whose target ranks in the top k.
    pub hr: f64,
    /// Mean of `1 / log2(rank + 2)` over users ranking in the top k.
    pub ndcg: f64,
}

/// Ranking quality over a set of users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// Users evaluated.
    pub users: usize,
    /// HR@K and NDCG@K for every requested K.
    pub at: Vec<MetricsAtK>,
    /// Mean reciprocal rank (not truncated).
    pub mrr: f64,
}

impl RankingMetrics {
    /// HR@k, if k was requested.
    pub fn hr(&self, k: usize) -> Option<f64> {
        self.at.iter().find(|m| m.k == k).map(|m| m.hr)
    }

    /// NDCG@k, if k was requested.
    pub fn ndcg(&self, k: usize) -> Option<f64> {
        self.at.iter().find(|m| m.k == k).map(|m| m.ndcg)
    }

    /// `HR@10 0.0610  NDCG@10 0.0260  MRR 0.0250`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .at
            .iter()
            .map(|m| format!("HR@{k} {:.4}  NDCG@{k} {:.4}", m.hr, m.ndcg, k = m.k))
            .collect();
        parts.push(format!("MRR {:.4}", self.mrr));
        parts.join("  ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_strictly_higher_unseen_items_only() {
        // items 1..=5; padding (0) scores highest and must not count.
        let scores = [9.0, 0.5, 0.9, 0.1, 0.7, 0.5];
        // target 1 (0.5): higher are 2 (0.9) and 4 (0.7); 5 ties and does not count.
        assert_eq!(rank_of_target(&scores, 1, &[]), Some(2));
        // 2 was seen: only 4 remains above.
        assert_eq!(rank_of_target(&scores, 1, &[2, 2, 3]), Some(1));
        // The target in its own history is still ranked.
        assert_eq!(rank_of_target(&scores, 1, &[1, 2, 4]), Some(0));
        assert_eq!(rank_of_target(&[0.0, f32::NAN, 1.0], 1, &[]), None);
    }

    #[test]
    fn metrics_match_hand_computation() {
        let mut acc = RankingAccumulator::new(&[1, 10]);
        for rank in [0, 3, 20] {
            acc.add(rank);
        }
        let m = acc.finish();
        assert_eq!(m.users, 3);
        assert!((m.hr(1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.hr(10).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.ndcg(1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let ndcg10 = (1.0 + 1.0 / 5f64.log2()) / 3.0;
        assert!((m.ndcg(10).unwrap() - ndcg10).abs() < 1e-12);
        assert!((m.mrr - (1.0 + 0.25 + 1.0 / 21.0) / 3.0).abs() < 1e-12);
    }
}
