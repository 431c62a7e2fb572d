//! Matching predicted objects to ground-truth objects by IoU, and average
//! precision at a threshold as the cell-segmentation literature defines it
//! (Caicedo et al. 2019, StarDist, Cellpose): AP = TP / (TP + FP + FN).

use std::collections::HashMap;

/// Counts at one IoU threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Matching {
    pub true_positives: u32,
    pub false_positives: u32,
    pub false_negatives: u32,
}

impl Matching {
    /// TP / (TP + FP + FN); 1 when there is nothing to find and nothing found.
    pub fn average_precision(&self) -> f64 {
        let all = self.true_positives + self.false_positives + self.false_negatives;
        if all == 0 {
            1.0
        } else {
            self.true_positives as f64 / all as f64
        }
    }
}

/// Matches objects of `predicted` to objects of `truth` (label images of
/// the same size, 0 = background), one to one, greedily by descending IoU,
/// keeping pairs with IoU >= `threshold`.
pub fn match_labels(truth: &[u32], predicted: &[u32], threshold: f64) -> Matching {
    assert_eq!(truth.len(), predicted.len());
    let mut area_t: HashMap<u32, u32> = HashMap::new();
    let mut area_p: HashMap<u32, u32> = HashMap::new();
    let mut inter: HashMap<(u32, u32), u32> = HashMap::new();
    for (&t, &p) in truth.iter().zip(predicted) {
        if t != 0 {
            *area_t.entry(t).or_default() += 1;
        }
        if p != 0 {
            *area_p.entry(p).or_default() += 1;
        }
        if t != 0 && p != 0 {
            *inter.entry((t, p)).or_default() += 1;
        }
    }
    let mut pairs: Vec<(f64, u32, u32)> = inter
        .iter()
        .map(|(&(t, p), &i)| (i as f64 / (area_t[&t] + area_p[&p] - i) as f64, t, p))
        .filter(|&(iou, _, _)| iou >= threshold)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut used_t, mut used_p) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    let mut tp = 0u32;
    for (_, t, p) in pairs {
        if !used_t.contains(&t) && !used_p.contains(&p) {
            used_t.insert(t);
            used_p.insert(p);
            tp += 1;
        }
    }
    Matching {
        true_positives: tp,
        false_positives: area_p.len() as u32 - tp,
        false_negatives: area_t.len() as u32 - tp,
    }
}

/// AP at IoU `threshold` of one image.
pub fn average_precision(truth: &[u32], predicted: &[u32], threshold: f64) -> f64 {
    match_labels(truth, predicted, threshold).average_precision()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_partial_and_empty_predictions() {
        let truth = vec![0, 1, 1, 1, 0, 2, 2, 2, 0, 3];
        assert_eq!(average_precision(&truth, &truth, 0.5), 1.0);
        // Labels permuted: still perfect.
        let renamed = vec![0, 5, 5, 5, 0, 9, 9, 9, 0, 1];
        assert_eq!(average_precision(&truth, &renamed, 0.5), 1.0);
        // Object 1 found, object 2 merged with background, object 3 missed,
        // one spurious object.
        let pred = vec![4, 1, 1, 1, 0, 2, 0, 0, 0, 0];
        let m = match_labels(&truth, &pred, 0.5);
        // Pred 1 vs truth 1: IoU 1. Pred 2 vs truth 2: IoU 1/3 < 0.5.
        assert_eq!((m.true_positives, m.false_positives, m.false_negatives), (1, 2, 2));
        assert!((m.average_precision() - 0.2).abs() < 1e-12);
        let none = vec![0; 10];
        assert_eq!(average_precision(&truth, &none, 0.5), 0.0);
        assert_eq!(average_precision(&none, &none, 0.5), 1.0);
    }
}
